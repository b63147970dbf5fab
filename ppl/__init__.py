"""ppl: a probabilistic modelling language (Pyro/NumPyro-style primitives and effect handlers).

Models are Python functions written with the primitives (``sample``, ``param``, ``plate``, ``deterministic``,
``factor``, ``module``); :mod:`ppl.handlers` changes what they do (``trace``, ``seed``, ``condition``, ...);
discrete sites are summed out by enumeration (``config_enumerate``, ``handlers.enum``, ``markov``, ``log_joint``);
:class:`Potential` turns a model into the unconstrained potential that ``inference`` samples and fits.
"""

from ppl import constraints, distributions, handlers, nn, reparam, transforms
from ppl.contract import log_joint
from ppl.enum import config_enumerate, markov
from ppl.errors import ModelError, PPLError
from ppl.initialization import init_to_median, init_to_sample, init_to_uniform, init_to_value
from ppl.log_density import LatentSite, Potential, log_density, unvalidated
from ppl.params import ParamStore, clear_param_store, get_param_store
from ppl.primitives import deterministic, factor, module, param, plate, sample
from ppl.vectorize import max_plate_nesting, vectorized_trace, vectorized_values

__all__ = [
    "LatentSite",
    "ModelError",
    "PPLError",
    "ParamStore",
    "Potential",
    "clear_param_store",
    "config_enumerate",
    "constraints",
    "deterministic",
    "distributions",
    "factor",
    "get_param_store",
    "handlers",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "log_density",
    "log_joint",
    "markov",
    "max_plate_nesting",
    "module",
    "nn",
    "param",
    "plate",
    "reparam",
    "sample",
    "transforms",
    "unvalidated",
    "vectorized_trace",
    "vectorized_values",
]
