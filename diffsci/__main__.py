import sys

from diffsci.cli import main

sys.exit(main())
