"""Compiled ELBOs (Pyro's ``JitTrace_ELBO`` and ``JitTraceMeanField_ELBO``): the first step runs eagerly; the
second records the whole estimate and its gradient, model and guide included, into one flat graph of ATen
operations (:func:`inference.tracing.trace`, a fraction of a second), which later steps replay from TorchScript
with fresh random draws from torch's generators, the same draws the eager ELBO would make. Replaying skips the
Python of the handlers, distributions and autograd bookkeeping, which dominates the cost of small models.

The model and guide must be static, as for Pyro's JIT ELBOs and NumPyro's ``jit``: the same sites with the same
shapes in every step, and no Python control flow on tensor values (reading a value out of a tensor while
recording is a clear error rather than a wrong graph). Tensor arguments are inputs of the graph; a new shape,
dtype or device, or a change of a non-tensor argument, records a new graph. Parameters of ``torch.nn`` modules
registered with ``ppl.module`` are not supported. Only ``loss_and_grads`` (what ``SVI.step`` calls) is compiled;
``loss`` and ``differentiable_loss`` run eagerly.
"""

import torch
import torch.utils._pytree as pytree

from inference.errors import InferenceError
from inference.tracing import ExecutorOptimization, trace
from inference.vi.elbo import Trace_ELBO, TraceMeanField_ELBO, _ParamNames
from ppl.handlers import block, substitute
from ppl.log_density import unvalidated
from ppl.params import get_param_store
from ppl.primitives import param
from ppl.transforms import biject_to

__all__ = ["JitTrace_ELBO", "JitTraceMeanField_ELBO"]


def _key(leaf):
    if torch.is_tensor(leaf):
        return ("tensor", leaf.shape, leaf.dtype, leaf.device)
    return leaf if isinstance(leaf, (int, float, str, bool, type(None))) else ("object", id(leaf))


class _Compiled:
    """Replaces ``loss_and_grads`` of an ELBO with a traced graph of the estimate and its gradients."""

    def loss_and_grads(self, model, guide, *args, **kwargs):
        if not self._checked:  # the first step runs eagerly: it validates and builds the guide
            return super().loss_and_grads(model, guide, *args, **kwargs)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (id(model), id(guide), spec, tuple(_key(leaf) for leaf in leaves))
        compiled = self._graphs.get(key)
        if compiled is None:
            compiled = self._graphs[key] = self._compile(model, guide, leaves, spec)
        names, graph, executor = compiled
        store = get_param_store()
        tensors = [store.unconstrained(name) for name in names]
        inputs = [tensor.detach() for tensor in tensors] + [leaf for leaf in leaves if torch.is_tensor(leaf)]
        with executor:
            elbo, *grads = graph(*inputs)
        for name, tensor, grad in zip(names, tensors, grads):
            param(name)  # the graph read these parameters: announce them, as the model and guide would have
            tensor.grad = grad if tensor.grad is None else tensor.grad + grad
        return -float(elbo)

    def _compile(self, model, guide, leaves, spec):
        """Trace the estimate and its gradients into a graph ``(*unconstrained params, *tensor arguments) ->
        (elbo, *gradients of the surrogate loss)``; returns the parameter names and the graph."""
        store = get_param_store()
        args, kwargs = pytree.tree_unflatten(leaves, spec)
        positions = [index for index, leaf in enumerate(leaves) if torch.is_tensor(leaf)]
        # Compiling runs the program twice (to find the parameters it reads, and to record it); the random number
        # generators are restored afterwards, so compiling does not shift the stream of draws.
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        with block(), _ParamNames() as capture:
            self.loss(model, guide, *args, **kwargs)
        names = list(capture.names)
        modules = [name for name in names if "$" in name]
        if modules:
            raise InferenceError(
                f"{type(self).__name__}: parameters of torch modules ({', '.join(map(repr, modules))}) cannot be "
                "compiled; use the eager ELBO (e.g. Trace_ELBO)."
            )
        transforms = [biject_to(store.constraint(name)) for name in names]

        def estimate(*inputs):
            with torch.enable_grad():
                unconstrained = [tensor.detach().requires_grad_(True) for tensor in inputs[: len(names)]]
                full = list(leaves)
                for index, tensor in zip(positions, inputs[len(names) :]):
                    full[index] = tensor
                args, kwargs = pytree.tree_unflatten(full, spec)
                values = {name: transform(tensor) for name, transform, tensor in zip(names, transforms, unconstrained)}
                with block(), unvalidated():
                    elbo, surrogate = self._estimate(
                        substitute(model, data=values), substitute(guide, data=values), args, kwargs
                    )
                grads = torch.autograd.grad(-surrogate, unconstrained, materialize_grads=True)
            return (elbo.detach(), *grads)

        inputs = tuple(store.unconstrained(name).detach() for name in names) + tuple(leaves[i] for i in positions)
        try:
            graph = trace(estimate, inputs)
        except Exception as error:  # noqa: BLE001 - any failure to record means the program is not static
            raise InferenceError(
                f"{type(self).__name__} could not trace the model and guide ({type(error).__name__}: {error}). "
                "Compiled ELBOs need static programs: the same sites and shapes in every step and no Python "
                "control flow on tensor values; use the eager ELBO (e.g. Trace_ELBO) otherwise."
            ) from error
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        device = inputs[0].device if inputs else torch.device("cpu")
        return names, graph, ExecutorOptimization(device.type != "cpu")


class JitTrace_ELBO(_Compiled, Trace_ELBO):
    """:class:`Trace_ELBO`, compiled after its first step (see the module docstring); same arguments."""

    def __init__(self, num_particles=1, max_plate_nesting=None, vectorize_particles=True):
        super().__init__(num_particles, max_plate_nesting, vectorize_particles)
        self._graphs = {}


class JitTraceMeanField_ELBO(_Compiled, TraceMeanField_ELBO):
    """:class:`TraceMeanField_ELBO`, compiled after its first step (see the module docstring); same arguments."""

    def __init__(self, num_particles=1, max_plate_nesting=None, vectorize_particles=True):
        super().__init__(num_particles, max_plate_nesting, vectorize_particles)
        self._graphs = {}
