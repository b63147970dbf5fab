"""inference: the shared numerical engine (optimizers, implicit differentiation, MCMC, VI, diagnostics)."""
