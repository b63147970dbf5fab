"""Checks of the arguments of bio's public functions, each raising a one-line `ArgumentError` that names the
argument, the value and what is allowed. `diffsci mm` runs the same checks (with its option names), so the
API and the command line accept and refuse the same values."""

import math
import numbers

import torch

from .errors import ArgumentError


def number(name, value, *, low=None, high=None, low_inclusive=False, high_inclusive=False, unit="", owner=None):
    """`value` as a float, checked to be a finite real number within the bounds (None: unbounded)."""
    rule = "a finite number"
    if low is not None:
        rule += f" {'>=' if low_inclusive else '>'} {low:g}"
    if high is not None:
        rule += f"{' and' if low is not None else ''} {'<=' if high_inclusive else '<'} {high:g}"
    rule += f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(name, value, rule, owner)
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value < low or value == low and not low_inclusive)) or \
            (high is not None and (value > high or value == high and not high_inclusive)):
        raise ArgumentError(name, value, rule, owner)
    return value


def integer(name, value, *, low=None, high=None, unit="", owner=None):
    """`value` as an int, checked to be an integer (not a bool or float) within low..high (inclusive)."""
    rule = "an integer"
    if low is not None:
        rule += f" >= {low}"
    if high is not None:
        rule += f"{' and' if low is not None else ''} <= {high}"
    rule += f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, value, rule, owner)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ArgumentError(name, value, rule, owner)
    return value


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
