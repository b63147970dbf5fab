"""Bayesian ``torch.nn.Module``\\ s (Pyro's ``PyroModule`` and ``PyroSample``, same names and semantics).

    class BNN(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 8)                    # any nn.Module class, made Bayesian-capable
            self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([8, 3]).to_event(2))
            self.fc.bias = PyroSample(lambda self: dist.Normal(0.0, 1.0).expand([8]).to_event(1))

        def forward(self, x, y=None):
            ...

An attribute set to a :class:`PyroSample` becomes a sample site named after its path in the module tree
(``"fc.weight"``; the root's ``name`` prefixes it when given): reading the attribute inside a model runs
``ppl.sample`` (once per call of the outermost module: the value is cached for that call), so every handler,
``NUTS(model)``, autoguides and ``Predictive`` see it like any other site. The remaining ``nn.Parameter``\\ s
are read as ``ppl.param`` sites of the same names while the module is called, so SVI fits them. The prior may be a distribution or a
function of the module returning one.
"""

import torch

from ppl.primitives import param, sample

__all__ = ["PyroModule", "PyroSample"]


class PyroSample:
    """A prior for a :class:`PyroModule` attribute: a distribution, or a function of the module returning one."""

    def __init__(self, prior):
        if not (isinstance(prior, torch.distributions.Distribution) or callable(prior)):
            raise TypeError(f"PyroSample needs a distribution or a function of the module, got {type(prior).__name__}.")
        self.prior = prior


class _Context:
    """Shared by a module tree: how deeply its modules are being called, and the values drawn in this call."""

    def __init__(self):
        self.depth = 0
        self.cache = {}


class _PyroModuleMeta(type(torch.nn.Module)):
    _classes = {}

    def __getitem__(cls, module_class):
        """``PyroModule[nn.Linear]``: the class ``module_class`` with :class:`PyroModule`'s behaviour."""
        if not (isinstance(module_class, type) and issubclass(module_class, torch.nn.Module)):
            raise TypeError(f"PyroModule[...] takes an nn.Module class, got {module_class!r}.")
        if issubclass(module_class, PyroModule):
            return module_class
        if module_class not in cls._classes:
            cls._classes[module_class] = type(f"Pyro{module_class.__name__}", (PyroModule, module_class), {})
        return cls._classes[module_class]


class PyroModule(torch.nn.Module, metaclass=_PyroModuleMeta):
    """An ``nn.Module`` whose attributes can be random (:class:`PyroSample`) and whose parameters are ``ppl``
    params; see the module docstring. ``name``: a prefix for the site names of a root module."""

    def __init__(self, *args, name="", **kwargs):
        object.__setattr__(self, "_pyro_name", name)
        object.__setattr__(self, "_pyro_context", _Context())
        object.__setattr__(self, "_pyro_samples", {})
        super().__init__(*args, **kwargs)

    def _pyro_fullname(self, attribute):
        return f"{self._pyro_name}.{attribute}" if self._pyro_name else attribute

    def _pyro_adopt(self, name, context):
        """Take the path ``name`` and the module tree's shared context (and pass them on to submodules)."""
        object.__setattr__(self, "_pyro_name", name)
        object.__setattr__(self, "_pyro_context", context)
        for child_name, child in self.named_children():
            if isinstance(child, PyroModule):
                child._pyro_adopt(self._pyro_fullname(child_name), context)

    def __setattr__(self, name, value):
        if isinstance(value, PyroSample):
            if name in self._parameters:
                del self._parameters[name]
            self._pyro_samples[name] = value
            return
        if name in getattr(self, "_pyro_samples", {}):
            del self._pyro_samples[name]
        super().__setattr__(name, value)
        if isinstance(value, PyroModule):
            value._pyro_adopt(self._pyro_fullname(name), self._pyro_context)

    def __delattr__(self, name):
        if name in self._pyro_samples:
            del self._pyro_samples[name]
            return
        super().__delattr__(name)

    def __getattr__(self, name):
        samples = self.__dict__.get("_pyro_samples", {})
        if name in samples:
            fullname = self._pyro_fullname(name)
            context = self._pyro_context
            if context.depth and fullname in context.cache:
                return context.cache[fullname]
            prior = samples[name].prior
            if not isinstance(prior, torch.distributions.Distribution):
                prior = prior(self)
            value = sample(fullname, prior)
            if context.depth:
                context.cache[fullname] = value
            return value
        value = super().__getattr__(name)
        if isinstance(value, torch.nn.Parameter) and self._pyro_context.depth:  # (not in __init__ or outside calls)
            return param(self._pyro_fullname(name), value)
        return value

    def __call__(self, *args, **kwargs):
        context = self._pyro_context
        context.depth += 1
        try:
            return super().__call__(*args, **kwargs)
        finally:
            context.depth -= 1
            if context.depth == 0:
                context.cache.clear()
