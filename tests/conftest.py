"""Shared fixtures: devices to parametrize over, and isolation of global state between tests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pyro
import pytest
import torch

import ppl
from ppl.primitives import _STACK

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every available torch device; CUDA runs only where a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(autouse=True)
def _isolate_torch_state():
    """Keep the global RNG and default dtype from leaking between tests."""
    rng = torch.get_rng_state()
    default_dtype = torch.get_default_dtype()
    torch.manual_seed(0)
    yield
    torch.set_rng_state(rng)
    torch.set_default_dtype(default_dtype)


@pytest.fixture(autouse=True)
def _isolate_param_stores():
    """Each test starts with empty param stores (ours and Pyro's) and must leave the handler stack empty."""
    ppl.clear_param_store()
    pyro.clear_param_store()
    yield
    ppl.clear_param_store()
    pyro.clear_param_store()
    assert not _STACK, "a test left effect handlers on the stack"
