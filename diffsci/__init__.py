"""diffsci: the application layer (CLI, tour) over the import packages ppl, inference, dft and bio.

Nothing in ppl/inference/dft/bio imports this package; it may import all of them.
"""

__version__ = "0.1.0"
