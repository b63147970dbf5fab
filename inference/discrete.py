"""``infer_discrete``: draws (or the MAP assignment) of a model's enumerated discrete sites given everything
else (Pyro's ``pyro.infer.infer_discrete``).

    guide_trace = trace(guide).get_trace(data)
    map_model = infer_discrete(replay(config_enumerate(model), trace=guide_trace), first_available_dim=-2,
                               temperature=0)
    trace(map_model).get_trace(data)["assignment"]["value"]

The model runs once under ``ppl.handlers.enum`` (hidden from outer handlers), the enumerated sites are drawn
backwards through the elimination that sums them out (``ppl.contract.sample_enumerated``: max-product at
temperature 0, sum-product at temperature 1), and the model runs again with those values and the first run's
other latent values substituted, under the outer handlers.
"""

import functools

import torch

from ppl.contract import sample_enumerated
from ppl.enum import enum
from ppl.errors import ModelError
from ppl.handlers import block, substitute, trace
from ppl.vectorize import max_plate_nesting

__all__ = ["infer_discrete"]


def infer_discrete(fn=None, first_available_dim=None, temperature=1):
    """Wrap ``fn`` (a model whose discrete sites are marked for enumeration) so that each run gives those sites
    a joint posterior draw (``temperature=1``) or the joint MAP assignment (``temperature=0``).

    Args:
        fn: the model; None gives a decorator.
        first_available_dim: the dim enumeration starts at (``-max_plate_nesting - 1``); None to find it from
            one run of the model.
        temperature: 0 or 1.
    """
    if temperature not in (0, 1):
        raise ValueError(f"infer_discrete: temperature must be 0 (MAP) or 1 (sample), got {temperature!r}.")
    if fn is None:
        return functools.partial(infer_discrete, first_available_dim=first_available_dim, temperature=temperature)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first_dim = first_available_dim
        with block():
            if first_dim is None:
                with torch.no_grad():
                    first_dim = -max_plate_nesting(trace(fn).get_trace(*args, **kwargs)) - 1
            enum_trace = trace(enum(fn, first_available_dim=first_dim)).get_trace(*args, **kwargs)
        values = sample_enumerated(enum_trace, temperature)
        if not values:
            raise ModelError(
                "infer_discrete: no site of the model was enumerated; mark discrete sites with "
                "ppl.config_enumerate (or infer={'enumerate': 'parallel'})."
            )
        for name, site in enum_trace.items():
            # (latent values drawn for each enumerated value carry enumeration dims: those are redrawn)
            if (site["type"] == "sample" and not site["is_observed"] and name not in values
                    and site["value"].dim() - len(site["fn"].event_shape) < -first_dim):
                values[name] = site["value"]
        return substitute(fn, data=values)(*args, **kwargs)

    return wrapper
