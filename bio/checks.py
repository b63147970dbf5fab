"""Checks of the arguments of bio's public functions, each raising a one-line `ArgumentError` that names the
argument, the value and what is allowed. `diffsci mm` runs the same checks (with its option names), so the
API and the command line accept and refuse the same values."""

import numbers

import torch

from inference.optim import check_number

from .errors import ArgumentError


def number(name, value, *, low=None, high=None, low_inclusive=False, high_inclusive=False, unit="", owner=None):
    """`value` as a float, checked to be a finite real number (or one-element tensor) within the bounds (None:
    unbounded)."""
    return check_number(owner, name, value, above=None if low_inclusive else low,
                        at_least=low if low_inclusive else None, below=None if high_inclusive else high,
                        at_most=high if high_inclusive else None, unit=unit, make_error=_argument_error(owner))


def integer(name, value, *, low=None, high=None, unit="", owner=None):
    """`value` as an int, checked to be an integer (not a bool or float; an integer tensor of one element is
    accepted) within low..high (inclusive)."""
    return check_number(owner, name, value, at_least=low, at_most=high, integer="strict", unit=unit,
                        make_error=_argument_error(owner))


def _argument_error(owner):
    return lambda name, value, rule: ArgumentError(name, value, rule, owner)


def choice(name, value, choices, owner=None):
    """`value`, checked to be one of `choices` (None, or strings compared with ==)."""
    if not any(value is c or (isinstance(value, str) and isinstance(c, str) and value == c) for c in choices):
        raise ArgumentError(name, value, "one of " + ", ".join(repr(c) for c in choices), owner)
    return value


def flag(name, value, owner=None):
    """`value`, checked to be True or False."""
    if not isinstance(value, bool):
        raise ArgumentError(name, value, "True or False", owner)
    return value


def device(value, name="device", owner=None):
    """A torch.device for `value` (None: CPU), checked to be the CPU or an available CUDA device."""
    rule = "'cpu', 'cuda' or 'cuda:<index>' of an available GPU"
    if value is None:
        return torch.device("cpu")
    if not isinstance(value, (str, torch.device)):
        raise ArgumentError(name, value, rule, owner)
    try:
        result = torch.device(value)
    except (RuntimeError, ValueError):
        raise ArgumentError(name, value, rule, owner) from None
    if result.type == "cpu":
        return result
    if result.type != "cuda":
        raise ArgumentError(name, value, rule, owner)
    if not torch.cuda.is_available():
        raise ArgumentError(name, value, rule, owner, note="CUDA is not available on this machine")
    if result.index is not None and result.index >= torch.cuda.device_count():
        raise ArgumentError(name, value, rule, owner, note=f"this machine has {torch.cuda.device_count()} GPU(s)")
    return result


def dtype(value, name="dtype", owner=None):
    """`value`, checked to be torch.float64 or torch.float32 (the dtypes bio computes energies in)."""
    if value not in (torch.float64, torch.float32) or not isinstance(value, torch.dtype):
        raise ArgumentError(name, value, "torch.float64 or torch.float32", owner)
    return value


def seed(value, name="seed", owner=None):
    """`value` (None: draw one), checked to be an integer 0 <= seed < 2**64 (what torch.Generator accepts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**64:
        raise ArgumentError(name, value, "None or an integer >= 0 and < 2**64", owner)
    return int(value)


__all__ = ["number", "integer", "choice", "flag", "device", "dtype", "seed"]
