import pyro
import pytest

import ppl
from ppl.primitives import _STACK


@pytest.fixture(autouse=True)
def _clean_ppl_state():
    """Each test starts with empty param stores (ours and Pyro's) and must leave the handler stack empty."""
    ppl.clear_param_store()
    pyro.clear_param_store()
    yield
    ppl.clear_param_store()
    pyro.clear_param_store()
    assert not _STACK, "a test left handlers on the stack"
