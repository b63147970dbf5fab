"""A function of tensors recorded once into a frozen TorchScript graph of ATen operations, replayed from C++.

For the small models typical of Bayesian work, Python's dispatch of each tensor operation (and autograd's
bookkeeping) costs more than the arithmetic. ``trace(fn, args)`` runs ``fn`` once on ``args`` under a dispatch
mode, as ``torch.fx``'s ``make_fx`` does (without its start-up cost: importing TorchDynamo, seconds on a small
machine), and records the ATen operations that reach the dispatcher: below autograd and vmap, so a gradient
computed inside ``fn`` and vectorized chains are recorded as plain operations. Operations that do not depend on
the inputs are folded into constants; random operations are recorded, so a replay draws fresh numbers from
torch's generators. Python control flow is taken as it went in the recorded run: a traced function is correct
only if it is a fixed sequence of tensor operations; reading a value out of a tensor (``.item()``, ``bool``)
raises :class:`TraceError`. Users: ``inference.mcmc`` (``jit_compile``: each sampler step) and
``inference.vi.jit`` (the compiled ELBOs).
"""

import functools
import operator
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["ExecutorOptimization", "TraceError", "leaves", "trace"]


def leaves(tree):
    """Every item of nested tuples, lists and dicts, in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in leaves(item)]
    return [tree]


def _clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    return tuple(_clone(item) for item in tree)


class TraceError(RuntimeError):
    """The step cannot be recorded as a fixed graph (it reads a value out of a tensor)."""


def _map(fn, tree):
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map(fn, item) for item in tree)
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    return fn(tree)


aten = torch.ops.aten

# outputs that depend on their inputs' shapes (fixed in a trace) and not on their values
SHAPE_ONLY = {
    aten.zeros_like.default, aten.ones_like.default, aten.full_like.default, aten.empty_like.default,
    aten.new_zeros.default, aten.new_ones.default, aten.new_full.default, aten.new_empty.default,
}


# products that read a strided matrix several times slower than a contiguous one: their constant operands are
# stored contiguous (the values are the same), unless they view a whole storage (see _Recorder._snapshot)
MATMULS = {aten.mv.default, aten.mm.default, aten.bmm.default, aten.addmv.default, aten.addmm.default}


def _is_transposed(tensor):
    """A 2-D tensor laid out as the transpose of a contiguous one (and not contiguous itself)."""
    return tensor.dim() == 2 and min(tensor.shape) > 1 and tensor.stride() == (1, tensor.shape[0])


# arithmetic with a Python number: recorded in its Scalar form (a traced Tensor form would turn the number into a
# tensor constant, which the replay then casts to the other operand's dtype at every call)
SCALAR_FORMS = {
    aten.add.Tensor: aten.add.Scalar, aten.sub.Tensor: aten.sub.Scalar,
    aten.mul.Tensor: aten.mul.Scalar, aten.div.Tensor: aten.div.Scalar,
}


def _key(tree):
    """A hashable form of an operation's arguments (graph nodes stand for tensors)."""
    if isinstance(tree, (tuple, list)):
        return tuple(_key(item) for item in tree)
    if isinstance(tree, dict):
        return tuple((key, _key(value)) for key, value in tree.items())
    return tree


class _Recorder(TorchDispatchMode):
    """Records the ATen operations that reach the dispatcher (below autograd and vmap, so the backward pass and
    the batching are recorded too) into an FX graph.

    Only operations that depend on the inputs are recorded: the others (on model data and constants, or
    factories like ``zeros_like`` that only read shapes) are computed once, here, and their results become
    constants of the graph (constant folding); an operation seen twice on the same arguments is recorded once
    (common subexpressions). Random operations are always recorded; an in-place operation is recorded on a
    fresh copy of any constant it writes to. Constants that view one storage share one copy (``_snapshot``).
    ``x ** 1`` is recorded as ``x``; the constant operands of matrix products are stored contiguous (unless they
    view a whole storage); with ``transpose_products``, ``constant @ x`` for a transposed ``x`` is
    computed and recorded transposed (see ``_transposed_mm``); arithmetic with Python numbers in its Scalar form.
    """

    @classmethod
    def _should_skip_dynamo(cls):
        # torch would wrap __torch_dispatch__ to keep TorchDynamo out, importing TorchDynamo (seconds) to do so;
        # nothing here runs under TorchDynamo
        return False

    def __init__(self, graph, constants, transpose_products):
        super().__init__()
        self.graph = graph
        self.constants = constants
        self.transpose_products = transpose_products
        self.nodes = {}  # id(tensor) -> node of every input-dependent tensor
        self.alive = []  # those tensors, kept alive so that ids stay unique
        self.seen = {}  # (operation, arguments) -> node
        self.storages = {}  # data pointer of a storage -> (a constant viewing all of it, its copy)

    def bind(self, tensor, node):
        self.nodes[id(tensor)] = node
        self.alive.append(tensor)

    def node(self, value, contiguous=False):
        if not isinstance(value, torch.Tensor):
            return value
        node = self.nodes.get(id(value))
        if node is None:
            name = f"constant{len(self.constants._buffers)}"
            self.constants.register_buffer(name, self._snapshot(value.detach(), contiguous))
            node = self.graph.get_attr(name)
        return node

    def _snapshot(self, value, contiguous):
        """A constant: a copy of its value now (it may be written to later). Constants that view one storage
        share one copy: e.g. a model's data matrix and its transpose in the gradient, two copies of which can
        overflow the cache that one fits in (a logistic regression's two products took 2.5x as long). A
        constant that is not a view of a whole storage is stored contiguous if ``contiguous``."""
        key = value.untyped_storage().data_ptr()
        shared = self.storages.get(key)
        if shared is not None:
            source, snapshot = shared
            offset = snapshot.storage_offset() + value.storage_offset() - source.storage_offset()
            view = snapshot.as_strided(value.shape, value.stride(), offset)
            if torch.equal(view, value):  # (unless written to since)
                return view
        whole = value.numel() * value.element_size() == value.untyped_storage().nbytes() and (
            value.is_contiguous() or (value.dim() == 2 and value.t().is_contiguous())
        )
        layout = torch.contiguous_format if contiguous and not whole else torch.preserve_format
        snapshot = value.clone(memory_format=layout)
        if whole:  # the same layout as the storage's: any view of the storage is a view of the copy
            self.storages[key] = (value, snapshot)
        return snapshot

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        written = [args[i] for i, arg in enumerate(func._schema.arguments[: len(args)])
                   if arg.alias_info is not None and arg.alias_info.is_write]
        random = torch.Tag.nondeterministic_seeded in func.tags
        dynamic = random or written or (func not in SHAPE_ONLY and any(id(t) in self.nodes for t in tensors))
        if not dynamic:
            return func(*args, **kwargs)
        if func is aten.pow.Tensor_Scalar and args[1] == 1 and not kwargs:  # pow's backward has x ** 1: x
            out = func(*args)
            self.bind(out, self.node(args[0]))
            return out
        if (self.transpose_products and func is aten.mm.default and id(args[0]) not in self.nodes
                and _is_transposed(args[1])):
            return self._transposed_mm(*args)
        for tensor in written:
            if id(tensor) not in self.nodes:
                self.bind(tensor, self.graph.call_function(aten.clone.default, (self.node(tensor),)))
        node = functools.partial(self.node, contiguous=func in MATMULS)
        node_args, node_kwargs = _map(node, args), _map(node, kwargs)
        out = func(*args, **kwargs)
        target = func
        if func in SCALAR_FORMS and isinstance(args[1], (int, float)) and not isinstance(args[1], bool):
            target = SCALAR_FORMS[func]
        if written or random:
            self.seen.clear()  # values may have changed under the recorded subexpressions
            node = self.graph.call_function(target, node_args, node_kwargs)
        else:
            key = (target, _key(node_args), _key(node_kwargs))
            node = self.seen.get(key)
            if node is None:
                node = self.seen[key] = self.graph.call_function(target, node_args, node_kwargs)
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, (tuple, list)) and all(isinstance(item, torch.Tensor) for item in out):
            for index, item in enumerate(out):
                self.bind(item, self.graph.call_function(operator.getitem, (node, index)))
        else:
            raise TraceError(f"{func} returns {type(out).__name__}: the step reads a value out of a tensor")
        return out

    def _transposed_mm(self, constant, x):
        """``constant @ x`` for a transposed ``x`` (K, N), as ``(x^T @ constant^T)^T`` (``constant^T`` a view of
        the constant's copy). Vectorized chains meet this with data (M, K) times positions: the chains' dimension
        then becomes the contiguous one, and the product reads both operands in order (the original form is several
        times slower and leaves the result, and what is computed from it, in a strided layout). Values agree to
        rounding (MCMC's ``JitStep`` checks compare them)."""
        out = aten.t.default(aten.mm.default(aten.t.default(x), constant.t().contiguous()))
        key = ("transposed mm", id(constant), self.node(x))
        node = self.seen.get(key)
        if node is None:
            x_t = self.graph.call_function(aten.t.default, (self.node(x),))
            product = self.graph.call_function(aten.mm.default, (x_t, self.node(constant.t(), contiguous=True)))
            node = self.seen[key] = self.graph.call_function(aten.t.default, (product,))
        self.bind(out, node)
        return out


class _Replay(torch.nn.Module):
    """The recorded graph as a module of the step's (nested) arguments, for ``torch.jit.trace``."""

    def __init__(self, graph_module, structure):
        super().__init__()
        self.graph_module = graph_module
        self.structure = structure

    def forward(self, *args):
        flat = iter(self.graph_module(*leaves(args)))
        return _map(lambda _: next(flat), self.structure)


def trace(fn, args):
    """``fn`` (nested tuples of tensors -> nested tuples of tensors) as a frozen TorchScript function of inputs
    shaped like ``args``."""
    try:
        return _trace(fn, args, transpose_products=True)
    except RuntimeError:  # e.g. a view of a product, which needs the product's own layout
        return _trace(fn, args, transpose_products=False)


def _trace(fn, args, transpose_products):
    # inputs are told apart by identity: an input passed twice would become one input of the graph
    args = _clone(args)
    graph = torch.fx.Graph()
    constants = torch.nn.Module()
    recorder = _Recorder(graph, constants, transpose_products)
    for index, leaf in enumerate(leaves(args)):
        recorder.bind(leaf, graph.placeholder(f"arg{index}"))
    with recorder:
        out = fn(*args)
    graph.output(tuple(recorder.node(leaf) for leaf in leaves(out)))
    graph.eliminate_dead_code()
    replay = _Replay(torch.fx.GraphModule(constants, graph), _map(lambda _: None, out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices and tracer chatter
        return torch.jit.freeze(torch.jit.trace(replay, args, check_trace=False).eval())


class ExecutorOptimization:
    """``torch.jit.optimized_execution(flag)`` as a reusable context manager: the same two calls without a
    generator to build and step per use (microseconds, on every call). Replays on the CPU run best with
    ``flag=False``, TorchScript's plain interpreter: its optimizing executor has no CPU fuser to offer and costs
    tens of milliseconds per new graph."""

    def __init__(self, flag):
        self.flag = flag
        self.stored = []

    def __enter__(self):
        self.stored.append(torch._C._get_graph_executor_optimize())
        torch._C._set_graph_executor_optimize(self.flag)

    def __exit__(self, *exc_info):
        torch._C._set_graph_executor_optimize(self.stored.pop())
