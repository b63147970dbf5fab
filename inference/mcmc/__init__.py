"""MCMC: HMC and NUTS on a potential function of flat, batched positions or on a ``ppl`` model, and the driver
that runs chains.

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=500, num_chains=4, seed=0)
    mcmc.run(*model_args, **model_kwargs)    # the model's continuous latent sites, unconstrained
    mcmc.get_samples()["mu"], mcmc.summary(), mcmc.to_arviz()

    kernel = NUTS(potential_fn=U)            # U: positions (C, D) -> potential energies (C,)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=4, seed=0)
    mcmc.run(init_params=z0)                 # z0: (D,) or (4, D); samples under "z"
"""

from .hmc import HMC
from .mcmc import MCMC
from .nuts import NUTS

__all__ = ["HMC", "MCMC", "NUTS"]
