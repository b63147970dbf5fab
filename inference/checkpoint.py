"""Checkpoint files of long runs (MCMC, SVI, bio's molecular dynamics): written atomically, read safely, and
bound to the run they continue.

A checkpoint is a dict saved with ``torch.save``: its ``kind`` ("MCMC", "SVI", "MD"), the format ``version`` of
that kind, a ``fingerprint`` of the run and the run's own state. It holds tensors, numbers, strings and
containers of them only, and is read with ``torch.load(weights_only=True)``, which never unpickles objects.

The fingerprint is a flat dict, description -> plain value (number, string, tuple), of what the state is only
valid for: the model's site names and shapes, hashes of the data, the settings of the run. Resuming compares it
with the resuming run's and names every entry that differs, so a checkpoint never continues another run.

Data hashes (:func:`digest`): SHA-256 of a canonical encoding of the value. Tensors (and NumPy arrays)
contribute their dtype, shape and bytes (on the CPU; the device does not count); ``None``, booleans, numbers,
strings and bytes their type and ``repr``; lists, tuples and dicts (in sorted key order) their items; any other
object only its qualified name (a function's, or its type's), so a change inside such an object is not seen.

Unreadable files raise :class:`CheckpointError` naming the file and the problem: missing, empty, truncated or
not a torch file, holding objects other than plain data, a checkpoint of another kind or format version.
"""

import hashlib
import inspect
import os
import pickle
import zipfile

import torch

from inference.errors import InferenceError

__all__ = ["CheckpointError", "argument_digests", "check", "digest", "load", "plain", "save"]

_ABSENT = "absent"  # how a fingerprint entry that one side lacks is shown


class CheckpointError(InferenceError, ValueError):
    """A checkpoint cannot be read, or was written for another run (the message names the file and why)."""


def digest(value):
    """A short hash (16 hex digits of SHA-256) of ``value``; see the module docstring for what is hashed."""
    hasher = hashlib.sha256()
    _update(hasher, value)
    return hasher.hexdigest()[:16]


def _update(hasher, value):
    if not isinstance(value, torch.Tensor) and hasattr(value, "__array__") and hasattr(value, "dtype"):
        try:
            value = torch.as_tensor(value)  # a NumPy array: hashed as the tensor of its bytes
        except (TypeError, ValueError, RuntimeError):
            pass  # an array of objects: hashed by its type's name below
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        hasher.update(f"{type(value).__name__} {value!r};".encode())
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__} {len(value)}:".encode())
        for item in value:
            _update(hasher, item)
    elif isinstance(value, dict):
        hasher.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=repr):
            _update(hasher, key)
            _update(hasher, value[key])
    else:
        name = getattr(value, "__qualname__", type(value).__qualname__)
        hasher.update(f"object {name};".encode())


def plain(value):
    """``value`` itself if it is None, a boolean, a number or a string, else its :func:`digest`: a setting as a
    fingerprint entry."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else digest(value)


def argument_digests(fn, args, kwargs):
    """Fingerprint entries for the arguments of a call ``fn(*args, **kwargs)``: ``"data hash of argument 1
    (y)"`` (a positional argument, named from ``fn``'s signature where it has one) or ``"data hash of argument
    y"`` (a keyword argument) -> :func:`digest` of the value."""
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # no signature (a builtin, some callables)
        names = []
    entries = {}
    for i, value in enumerate(args):
        label = f"argument {i} ({names[i]})" if i < len(names) else f"argument {i}"
        entries[f"data hash of {label}"] = digest(value)
    for key, value in kwargs.items():
        entries[f"data hash of argument {key}"] = digest(value)
    return entries


def save(path, kind, version, fingerprint, state):
    """Write ``{"kind", "version", "fingerprint", **state}`` to ``path`` with ``torch.save``, through a temporary
    file and ``os.replace``, so an interrupt never leaves a half-written checkpoint."""
    temporary = f"{os.fspath(path)}.tmp"
    torch.save({"kind": kind, "version": version, "fingerprint": fingerprint, **state}, temporary)
    os.replace(temporary, path)


def load(path, kind, version, map_location=None):
    """Read a checkpoint written by :func:`save` with this ``kind`` and ``version``; returns its dict.

    Raises:
        CheckpointError: the file is missing, empty, truncated or not a torch file, holds objects other than
            plain data, or is a checkpoint of another kind or version.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"checkpoint {name} does not exist (or is not a file).")
    if os.path.getsize(name) == 0:
        raise CheckpointError(f"checkpoint {name} is empty (0 bytes); start the run afresh.")
    if not zipfile.is_zipfile(name):  # torch.save writes a zip archive; a truncated one lacks its directory
        raise CheckpointError(f"checkpoint {name} is truncated or not a torch checkpoint file; start the run afresh.")
    try:
        payload = torch.load(name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {name} holds objects other than tensors, numbers and strings, which are never unpickled: "
            "it was not written by diffsci."
        ) from None
    except Exception as error:  # the zip reader raises RuntimeError (and others) on damaged archives
        raise CheckpointError(f"checkpoint {name} is damaged ({type(error).__name__}); start the run afresh.") from None
    if not isinstance(payload, dict) or "kind" not in payload or "fingerprint" not in payload:
        raise CheckpointError(f"checkpoint {name} is not a diffsci checkpoint (or one of an older format).")
    if payload["kind"] != kind:  # kinds are acronyms read with "an": MCMC, SVI, MD
        raise CheckpointError(f"checkpoint {name} is an {payload['kind']} checkpoint, not an {kind} one.")
    if payload["version"] != version:
        raise CheckpointError(
            f"checkpoint {name} is an {kind} checkpoint of format version {payload['version']}; this version of "
            f"diffsci reads version {version}: start the run afresh."
        )
    return payload


def check(path, payload, fingerprint, advice):
    """Raise :class:`CheckpointError` naming every entry in which ``fingerprint`` (this run's) differs from the
    fingerprint of the loaded checkpoint ``payload``; ``advice`` ends the message (what to do)."""
    saved = payload["fingerprint"]
    differences = [
        f"{key} is {saved.get(key, _ABSENT)} in the checkpoint, {fingerprint.get(key, _ABSENT)} here"
        for key in {**saved, **fingerprint}
        if saved.get(key, _ABSENT) != fingerprint.get(key, _ABSENT)
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)} was written for another run: {'; '.join(differences)}. {advice}"
        )

