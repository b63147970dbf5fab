"""``jit_compile``: a sampler step traced once into a TorchScript graph, checked against the Python step.

A step of NUTS (one leapfrog step and its tree bookkeeping) is a few dozen small tensor operations plus the
potential and its gradient; for the small models typical of Bayesian work, Python's dispatch of each operation
costs more than the arithmetic. ``JitStep`` records the step once, forward and backward, with
:func:`inference.tracing.trace` (in a real run at the first inputs, so Python control flow is taken as it went
then) and replays the frozen graph, with no Python and no autograd bookkeeping per call. An ATen operation
still costs a few microseconds on the CPU, so the gain is largest where Python dominated (several times, for
small models).

Safety: a traced step is correct only if the step is a fixed sequence of tensor operations (no Python branches on
tensor values, no values read out of torch). The first ``num_checks`` calls of each traced graph also run the
Python step and compare every output (floats within a dtype-dependent tolerance, the rest exactly); on any
mismatch, or if tracing fails, ``JitStep`` warns and runs the Python step from then on. The traced result is
returned even while checking, so a run is the same whether or not it was resumed from a checkpoint.

Model errors: a potential that raises one of ``integrator.MODEL_ERRORS`` at some positions does so from a check
on values (linalg's error checks after a factorization, a Python test of a tensor), which a trace cannot record:
tracing such a step fails, and ``JitStep`` warns and runs the Python step, where ``integrator.PotentialAndGrad``
rejects those positions. (While tracing, ``PotentialAndGrad`` lets every error through: a rejection would be
recorded as a constant.) A traced graph therefore never meets a model error.
"""

import warnings

import torch

from inference.tracing import ExecutorOptimization, leaves, trace

RTOL = {torch.float64: 1e-7, torch.float32: 1e-4}


def _close(traced, eager):
    for a, b in zip(leaves(traced), leaves(eager), strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            rtol = RTOL.get(a.dtype, 1e-3)
            if not torch.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True):
                return False
        elif not torch.equal(a, b):
            return False
    return True


class JitStep:
    """``fn(*args) -> outputs`` (nested tuples of tensors), run from a traced graph per shape, dtype and device
    of the first argument, a tensor (those of the other arguments must follow from it).

    Args:
        fn: the step, a function of tensors only (close over everything else).
        name: names the step in warnings.
        num_checks: how many calls of each new graph are compared with ``fn``.
    """

    def __init__(self, fn, name, num_checks=10):
        self.fn = fn
        self.name = name
        self.num_checks = num_checks
        self.failed = False
        self._graphs = {}
        self._inference_mode = torch.inference_mode()  # reusable: entering it is cheaper than building it

    def __call__(self, *args):
        if self.failed:
            return self.fn(*args)
        first = args[0]
        key = (first.shape, first.dtype, first.device)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                optimize = ExecutorOptimization(first.device.type != "cpu")
                entry = self._graphs[key] = [trace(self.fn, args).forward, self.num_checks, optimize]
            except Exception as error:  # noqa: BLE001 - any failure to trace means: run the Python step
                return self._give_up(f"tracing failed ({type(error).__name__}: {error})", args)
        # no autograd bookkeeping at all (the graph holds the backward pass); on the CPU, TorchScript's plain
        # interpreter: its optimizing executor has no CPU fuser to offer and costs tens of ms per new graph
        with self._inference_mode, entry[2]:
            out = entry[0](*args)
        if entry[1]:
            entry[1] -= 1
            if not _close(out, self.fn(*args)):
                return self._give_up("the traced step disagrees with the Python step", args)
        return out

    def _give_up(self, reason, args):
        warnings.warn(
            f"jit_compile: {self.name}: {reason}; running the Python step instead (slower). Pass "
            "jit_compile=False to the kernel to skip tracing.",
            RuntimeWarning,
            stacklevel=3,
        )
        self.failed = True
        return self.fn(*args)
