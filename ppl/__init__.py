"""ppl: a probabilistic modelling language (Pyro/NumPyro-style primitives and effect handlers)."""
