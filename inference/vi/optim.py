"""Optimizers for SVI: torch optimizers applied to named parameters of the param store (Pyro's ``pyro.optim``).

    optim = Adam({"lr": 0.01})                      # any torch optimizer: PyroOptim(torch.optim.SGD, {...})
    optim = ClippedAdam({"lr": 0.01, "clip_norm": 10.0, "lrd": 0.999})
    optim = ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.01}, "gamma": 0.999})

An optimizer is called with ``[(name, unconstrained leaf tensor), ...]`` after the gradients are in place; it
takes one step for those that have a gradient and clears their gradients. One torch optimizer holds every
parameter (in one param group, or one per parameter when ``optim_args`` is a function of the name); it is
built at the first call and grows as new parameters appear. ``state_dict()`` keys the per-parameter state
(Adam's moments, step counts, current learning rates) and the scheduler's state by parameter name, as plain
tensors and numbers, so a checkpoint written with ``torch.save`` loads with ``torch.load(weights_only=True)``
and resumes exactly, even into a fresh optimizer before its parameters exist.

Hyperparameters are checked when the optimizer is made (per-parameter ones, from a callable ``optim_args``,
when the parameter first appears, before any step): a misspelled name, or a value out of its range (``lr``,
``weight_decay`` >= 0; ``eps``, ``clip_norm``, ``gamma`` > 0; ``betas`` in [0, 1); ``lrd`` in (0, 1]; see
``_RANGES``), raises at once rather than stepping uphill or turning the parameters into NaN later.
"""

import inspect
import math

import torch

from inference.optim import check_number

__all__ = [
    "Adam",
    "AdamW",
    "ClippedAdam",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "MultiStepLR",
    "PyroOptim",
    "RMSprop",
    "SGD",
    "StepLR",
]


# The allowed values of the hyperparameters of the torch optimizers and schedulers used here (bounds of
# ``check_number``). ``lr`` = 0 freezes a parameter (per-parameter ``optim_args``); a negative one would climb
# the loss. ``momentum``, ``alpha`` (RMSprop's smoothing) and ``betas`` at 1 or above never forget.
_RANGES = {
    "lr": dict(at_least=0),
    "eps": dict(above=0),
    "weight_decay": dict(at_least=0),
    "momentum": dict(at_least=0, below=1),
    "dampening": dict(at_least=0, at_most=1),
    "alpha": dict(at_least=0, below=1),
    "clip_norm": dict(above=0),
    "clip_value": dict(above=0),
    "lrd": dict(above=0, at_most=1),
    "gamma": dict(above=0),
    "step_size": dict(integer=True, at_least=1),
    "T_max": dict(integer=True, at_least=1),
    "eta_min": dict(at_least=0),
}


def _check_hyperparameters(where, args, constructor=None, skip=("params",)):
    """Raise unless every entry of ``args`` is an argument of ``constructor`` (when given; TypeError) within
    its range (``_RANGES``, ``betas``; ValueError naming it, its value and the range)."""
    if constructor is not None:
        parameters = inspect.signature(constructor).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            known = set(parameters) - set(skip)
            unknown = sorted(set(args) - known)
            if unknown:
                raise TypeError(f"{where}: unknown hyperparameter(s) {unknown}; it takes {sorted(known)}.")
    for name, value in args.items():
        if name == "betas":
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ValueError(f"{where}: betas must be a pair (beta1, beta2) in [0, 1), got {value!r}.")
            for i, beta in enumerate(value):
                check_number(where, f"betas[{i}]", beta, at_least=0, below=1)
        elif name in _RANGES:
            check_number(where, name, value, **_RANGES[name])


class PyroOptim:
    """A torch optimizer over named parameters.

    Args:
        optim_constructor: a :class:`torch.optim.Optimizer` subclass.
        optim_args: its keyword arguments (a dict: all parameters share one param group), or a callable
            ``optim_args(param_name) -> dict`` for per-parameter settings (one param group per parameter).
        clip_args: None, ``{"clip_norm": c}`` (rescale each parameter's gradient to 2-norm at most c) or
            ``{"clip_value": c}`` (clamp each gradient entry to [-c, c]), applied before every step.
    """

    def __init__(self, optim_constructor, optim_args, clip_args=None):
        if not (isinstance(optim_args, dict) or callable(optim_args)):
            raise TypeError(f"optim_args must be a dict or a callable of the parameter name, got {optim_args!r}.")
        if clip_args is not None and (not isinstance(clip_args, dict) or set(clip_args) - {"clip_norm", "clip_value"}):
            raise ValueError(f"clip_args must be a dict with 'clip_norm' and/or 'clip_value', got {clip_args!r}.")
        self._label = optim_constructor.__name__.lstrip("_")
        if isinstance(optim_args, dict):
            _check_hyperparameters(self._label, optim_args, optim_constructor)
        _check_hyperparameters(f"{self._label} clip_args", clip_args or {})
        self.optim_constructor = optim_constructor
        self.optim_args = optim_args
        self.clip_args = clip_args or {}
        self.optimizer = None
        self._tensors = {}  # name -> its tensor in the optimizer
        self._groups = {}  # name -> its param group
        self._pending = None  # a loaded state_dict, applied to parameters as they appear
        self._step = None  # the optimizer's step function (see _step_function)

    def __call__(self, params):
        """One step for ``params`` (a list of ``(name, leaf tensor)``) that have gradients; clears them."""
        for name, tensor in params:
            if self._tensors.get(name) is not tensor:
                self._register(name, tensor)
        grads = [tensor for _, tensor in params if tensor.grad is not None]
        if "clip_norm" in self.clip_args:
            for tensor in grads:
                torch.nn.utils.clip_grad_norm_(tensor, self.clip_args["clip_norm"])
        if "clip_value" in self.clip_args:
            torch.nn.utils.clip_grad_value_(grads, self.clip_args["clip_value"])
        if grads:
            self._step()
        for tensor in grads:
            tensor.grad = None

    def _register(self, name, tensor):
        """Put ``name`` in its param group (or swap in a new tensor for it, moving its state along)."""
        old = self._tensors.get(name)
        if old is not None:
            group = self._groups[name]
            group["params"] = [tensor if held is old else held for held in group["params"]]
            state = self.optimizer.state.pop(old, None)
            if state:
                self.optimizer.state[tensor] = state
        else:
            shared = None if callable(self.optim_args) else next(iter(self._groups.values()), None)
            if shared is not None:
                shared["params"].append(tensor)
            else:
                args = self.optim_args
                if callable(args):
                    args = args(name)
                    _check_hyperparameters(f"{self._label} (parameter {name!r})", args, self.optim_constructor)
                if self.optimizer is None:
                    self.optimizer = self.optim_constructor([{"params": [tensor], **args}])
                    self._on_first_group()
                    self._step = self._step_function()
                else:
                    self.optimizer.add_param_group({"params": [tensor], **args})
                    self._on_new_group(self.optimizer.param_groups[-1])
                shared = self.optimizer.param_groups[-1]
            self._groups[name] = shared
        self._tensors[name] = tensor
        if self._pending is not None:
            self._restore(name, tensor)

    def _step_function(self):
        """What a step calls: diffsci's Adams skip the hooks and profiler record that torch wraps around every
        optimizer's ``step``, which cost as much as the update itself on small parameters."""
        return self.optimizer._step_without_hooks if isinstance(self.optimizer, _Adam) else self.optimizer.step

    def _on_first_group(self):
        """Hook for subclasses holding objects built on the torch optimizer (schedulers)."""

    def _on_new_group(self, group):
        """Hook for subclasses: a param group was added after the torch optimizer was built."""

    def _restore(self, name, tensor):
        saved_group = self._pending["param_groups"].get(name)
        if saved_group is not None:
            self._groups[name].update(saved_group)
        saved_state = self._pending["state"].get(name)
        if saved_state is not None:
            self.optimizer.state[tensor] = {
                key: value.to(tensor.device) if torch.is_tensor(value) and key != "step" else value
                for key, value in saved_state.items()
            }

    def state_dict(self):
        """``{"param_groups": {name: its group's hyperparameters}, "state": {name: per-parameter state}}`` (plus
        the scheduler's state for schedulers), with entries loaded but not yet used carried over."""
        state = {"param_groups": {}, "state": {}}
        if self._pending is not None:
            state["param_groups"].update(self._pending["param_groups"])
            state["state"].update(self._pending["state"])
        for name, tensor in self._tensors.items():
            state["param_groups"][name] = {key: value for key, value in self._groups[name].items() if key != "params"}
            if tensor in self.optimizer.state:
                state["state"][name] = dict(self.optimizer.state[tensor])
        return state

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`: now for the parameters already registered, later for the others."""
        self._pending = {"param_groups": dict(state["param_groups"]), "state": dict(state["state"])}
        for name, tensor in self._tensors.items():
            self._restore(name, tensor)


class LRScheduler(PyroOptim):
    """A torch learning-rate scheduler around a torch optimizer (Pyro's ``PyroLRScheduler``).

    ``optim_args`` holds ``"optimizer"`` (the torch optimizer class), ``"optim_args"`` (its arguments, a dict or
    a callable of the parameter name) and the scheduler's own arguments. Call :meth:`step` to advance the
    schedule (Pyro's convention, e.g. once per epoch); ``SVI.run`` calls it once per SVI step.
    """

    def __init__(self, scheduler_constructor, optim_args, clip_args=None):
        optim_args = dict(optim_args)
        if "optimizer" not in optim_args or "optim_args" not in optim_args:
            raise ValueError(
                f"{type(self).__name__} needs {{'optimizer': torch optimizer class, 'optim_args': {{...}}, "
                f"scheduler arguments...}}, got keys {sorted(optim_args)}."
            )
        optim_constructor = optim_args.pop("optimizer")
        inner_args = optim_args.pop("optim_args")
        super().__init__(optim_constructor, inner_args, clip_args)
        _check_hyperparameters(scheduler_constructor.__name__, optim_args, scheduler_constructor, skip=("optimizer",))
        self.scheduler_constructor = scheduler_constructor
        self.scheduler_args = optim_args
        self.scheduler = None
        self._pending_scheduler = None
        self._pending_steps = 0

    def _on_first_group(self):
        self.scheduler = self.scheduler_constructor(self.optimizer, **self.scheduler_args)
        if self._pending_scheduler is not None:
            self.scheduler.load_state_dict(self._pending_scheduler)
            self._pending_scheduler = None

    def _step_function(self):
        return self.optimizer.step  # the scheduler counts the optimizer's steps through torch's hook

    def _on_new_group(self, group):
        group.setdefault("initial_lr", group["lr"])
        if len(self.scheduler.base_lrs) < len(self.optimizer.param_groups):  # else restored with its state
            self.scheduler.base_lrs.append(group["initial_lr"])

    def step(self, *args, **kwargs):
        """Advance the schedule by one step (arguments go to the torch scheduler's ``step``)."""
        if self.scheduler is None:
            raise RuntimeError(f"{type(self).__name__}.step(): no parameter has been optimized yet.")
        self.scheduler.step(*args, **kwargs)

    def state_dict(self):
        state = super().state_dict()
        scheduler = self.scheduler.state_dict() if self.scheduler is not None else self._pending_scheduler
        state["scheduler"] = scheduler
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("scheduler") is not None:
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            else:
                self._pending_scheduler = state["scheduler"]


_ADD_PARAM_GROUP = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", torch.optim.Optimizer.add_param_group)


class _Adam(torch.optim.Optimizer):
    """:class:`torch.optim.Adam`'s update (L2 ``weight_decay`` added to the gradient) as torch's fused kernel:
    one call for all the parameters of a group (of one device and dtype), several times cheaper than torch's
    Adam on the small tensors of a variational family. Steps are counted per parameter (a parameter without a
    gradient neither moves nor counts a step), in a float32 tensor on the parameter's device, as the fused kernel
    wants them."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check_hyperparameters("Adam", dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def step(self, closure=None):
        self._step_without_hooks()

    def add_param_group(self, param_group):
        # torch's, without the wrapper that keeps TorchDynamo out of it: the wrapper imports TorchDynamo on first
        # use (a second or more), which the first SVI step would wait for; nothing here runs under TorchDynamo
        _ADD_PARAM_GROUP(self, param_group)

    def _step_without_hooks(self):
        """The update (what :class:`PyroOptim` calls, see ``_step_function``)."""
        with torch.no_grad():
            for group in self.param_groups:
                params = [tensor for tensor in group["params"] if tensor.grad is not None]
                if params:
                    self._update(group, params, [self.state[tensor] for tensor in params])

    def _update(self, group, params, states):
        for tensor, state in zip(params, states):
            if not state:
                state.update(step=tensor.new_zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(tensor),
                             exp_avg_sq=torch.zeros_like(tensor))
            elif not torch.is_tensor(state["step"]) or state["step"].device != tensor.device:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=tensor.device)
        beta1, beta2 = group["betas"]
        kinds = {}  # the fused kernel takes tensors of one device and dtype per call
        for tensor, state in zip(params, states):
            kinds.setdefault((tensor.device, tensor.dtype), []).append((tensor, state))
        for pairs in kinds.values():
            steps = [state["step"] for _, state in pairs]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [tensor for tensor, _ in pairs], [tensor.grad for tensor, _ in pairs],
                [state["exp_avg"] for _, state in pairs], [state["exp_avg_sq"] for _, state in pairs], [], steps,
                lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                amsgrad=False, maximize=False,
            )


class _ClippedAdam(_Adam):
    """Pyro's ``ClippedAdam``: each gradient entry is clamped to ``[-clip_norm, clip_norm]``, the learning rate
    is multiplied by ``lrd`` at every step (before the update), and ``eps`` is added to ``sqrt(v)`` before the
    bias correction (written with ``torch._foreach_*`` ops, one call per operation for all the parameters of a
    group; steps are Python integers)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=10.0, lrd=1.0):
        _check_hyperparameters("ClippedAdam", dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                                   clip_norm=clip_norm, lrd=lrd))
        torch.optim.Optimizer.__init__(
            self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm, lrd=lrd)
        )

    def _update(self, group, params, states):
        group["lr"] *= group["lrd"]
        grads = torch._foreach_clamp_min([tensor.grad for tensor in params], -group["clip_norm"])
        torch._foreach_clamp_max_(grads, group["clip_norm"])
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        beta1, beta2 = group["betas"]
        for tensor, state in zip(params, states):
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(tensor), exp_avg_sq=torch.zeros_like(tensor))
            state["step"] += 1
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"])
        step_sizes = [-group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                      for state in states]
        torch._foreach_addcdiv_(params, exp_avgs, denominators, step_sizes)


def Adam(optim_args, clip_args=None):
    """Adam over named parameters (``optim_args``: ``lr``, ``betas``, ``eps``, ``weight_decay``, e.g.
    ``{"lr": 0.01}``): :class:`torch.optim.Adam`'s update, in a faster implementation for many small tensors."""
    return PyroOptim(_Adam, optim_args, clip_args)


def AdamW(optim_args, clip_args=None):
    """:class:`torch.optim.AdamW` over named parameters."""
    return PyroOptim(torch.optim.AdamW, optim_args, clip_args)


def SGD(optim_args, clip_args=None):
    """:class:`torch.optim.SGD` over named parameters."""
    return PyroOptim(torch.optim.SGD, optim_args, clip_args)


def RMSprop(optim_args, clip_args=None):
    """:class:`torch.optim.RMSprop` over named parameters."""
    return PyroOptim(torch.optim.RMSprop, optim_args, clip_args)


def ClippedAdam(optim_args):
    """Pyro's ``ClippedAdam``: Adam with elementwise gradient clipping (``clip_norm``, default 10) and a
    learning rate decaying by a factor ``lrd`` (default 1) per step; ``optim_args`` also takes ``lr``,
    ``betas``, ``eps`` and ``weight_decay``."""
    return PyroOptim(_ClippedAdam, optim_args)


def ExponentialLR(optim_args, clip_args=None):
    """:class:`torch.optim.lr_scheduler.ExponentialLR` (``gamma``) around ``optim_args["optimizer"]``."""
    return LRScheduler(torch.optim.lr_scheduler.ExponentialLR, optim_args, clip_args)


def StepLR(optim_args, clip_args=None):
    """:class:`torch.optim.lr_scheduler.StepLR` (``step_size``, ``gamma``) around ``optim_args["optimizer"]``."""
    return LRScheduler(torch.optim.lr_scheduler.StepLR, optim_args, clip_args)


def MultiStepLR(optim_args, clip_args=None):
    """:class:`torch.optim.lr_scheduler.MultiStepLR` (``milestones``, ``gamma``) around
    ``optim_args["optimizer"]``."""
    return LRScheduler(torch.optim.lr_scheduler.MultiStepLR, optim_args, clip_args)


def CosineAnnealingLR(optim_args, clip_args=None):
    """:class:`torch.optim.lr_scheduler.CosineAnnealingLR` (``T_max``, ``eta_min``) around
    ``optim_args["optimizer"]``."""
    return LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, optim_args, clip_args)
