"""Saving and loading functionals, and the learned functionals shipped with diffsci.

A functional file is a ``torch.save`` dict read back with ``torch.load(weights_only=True)`` (tensors, numbers and
strings only: loading never unpickles code). It holds the format version, what rebuilds the architecture (a
:class:`NeuralXC`'s ``config``, or a named functional's name), which constants are trainable, every tensor
(``state_dict``), the basis the functional was trained in and the training metadata (a JSON string).
"""

import json
import os
from pathlib import Path

import torch

from inference import checkpoint

from .component import Component
from .errors import XCError

KIND = "XC"  # the checkpoint kind of functional files (inference.checkpoint)
VERSION = 1
# Functionals shipped in the package (dft/xc/data/NAME.pt), loadable by name: get_functional("nn-pbe").
SHIPPED = ("nn-pbe",)
DATA_DIR = Path(__file__).parent / "data"


def state_of(functional):
    """Detached copies of every tensor of ``functional``: its ``state_dict`` entries and ``"hyb"`` (the
    exact-exchange fraction, a float64 scalar tensor whether or not it is trainable)."""
    state = {k: v.detach().clone() for k, v in functional.state_dict().items()}
    state["hyb"] = torch.as_tensor(functional.hyb, dtype=torch.float64).detach().clone()
    return state


def restore_state(functional, state):
    """Put a :func:`state_of` dict back into ``functional`` (of the same architecture), in place."""
    state = dict(state)
    hyb = state.pop("hyb")
    if "hyb" in functional.state_dict():  # a trainable hyb is a registered parameter, loaded with the rest
        state["hyb"] = hyb
    functional.load_state_dict(state)
    with torch.no_grad():
        if isinstance(functional.hyb, torch.Tensor):
            functional.hyb.copy_(hyb)
        else:
            functional.hyb = float(hyb)


def save(functional, path, metadata=None):
    """Write ``functional`` to ``path``: a :class:`NeuralXC`, or a named functional (``get_functional("pbe")``)
    whose constants may have been made trainable and fitted.

    Args:
        metadata: plain, JSON-serializable training provenance (data, epochs, errors, ...), merged over the
            functional's own ``metadata`` attribute.

    Raises:
        XCError: a functional built from a Python callable (its code cannot be stored as data).
    """
    from .functional import XCFunctional
    from .neural import NeuralXC

    if isinstance(functional, NeuralXC):
        architecture = {"class": "NeuralXC", **functional.config}
    elif isinstance(functional, XCFunctional) and all(isinstance(c, Component) for c in functional.components):
        architecture = {"class": "XCFunctional", "name": functional.name}
    else:
        raise XCError(f"cannot save {type(functional).__name__}: only NeuralXC and named functionals "
                      f"(get_functional('pbe'), ...) are stored as data; save a custom callable's own parameters "
                      f"with torch.save(module.state_dict(), path)")
    tensors = {k: v.cpu() for k, v in state_of(functional).items()}
    hyb = tensors.pop("hyb")
    state = {
        "architecture": json.dumps(architecture),
        "trainable": [name for name, _ in functional.named_parameters()] + (["hyb"] if isinstance(
            functional.hyb, torch.nn.Parameter) else []),
        "state_dict": tensors,
        "hyb": hyb,
        "basis": getattr(functional, "basis", None),
        "metadata": json.dumps({**getattr(functional, "metadata", {}), **(metadata or {})}),
    }
    checkpoint.save(os.fspath(path), KIND, VERSION, {}, state)


def load(path):
    """The functional saved at ``path`` by :func:`save` (trainable constants stay trainable), with its ``basis``
    and ``metadata`` attributes.

    Raises:
        XCError: the file is missing, damaged, not a functional file, or of another format version.
    """
    from .functional import get_functional
    from .neural import NeuralXC

    try:
        payload = checkpoint.load(os.fspath(path), KIND, VERSION)
    except checkpoint.CheckpointError as error:
        raise XCError(f"cannot load a functional: {error}".replace("checkpoint", "functional file")) from None
    architecture = json.loads(payload["architecture"])
    if architecture.pop("class") == "NeuralXC":
        functional = NeuralXC(**architecture)
    else:
        functional = get_functional(architecture["name"])
    trainable = set(payload["trainable"])
    if "hyb" in trainable:
        functional.make_trainable("hyb")
    for name in sorted(trainable - {"hyb"}):
        owner, _, leaf = name.rpartition(".")
        module = functional.get_submodule(owner)
        if leaf in module._buffers:
            module.make_trainable(leaf)
    restore_state(functional, {**payload["state_dict"], "hyb": payload["hyb"]})
    functional.basis = payload["basis"]
    functional.metadata = json.loads(payload["metadata"])
    return functional


def shipped(name):
    """The shipped functional ``name`` (one of ``SHIPPED``), loaded from the package's data."""
    path = DATA_DIR / f"{name}.pt"
    if not path.is_file():
        raise XCError(f"the shipped functional {name!r} is missing from this installation ({path}); reinstall "
                      f"diffsci, or rebuild it with tutorials/fit_xc.py")
    return load(path)
