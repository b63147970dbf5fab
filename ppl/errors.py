"""The exceptions raised by ``ppl``: each says what was wrong, at which site, and what to do."""


class PPLError(Exception):
    """Base class of every error raised by ``ppl``."""


class ModelError(PPLError, ValueError):
    """A model cannot be run or turned into a density.

    Raised for duplicate site names, plates that do not broadcast with a site's batch shape, discrete latent
    sites where continuous ones are needed, sites whose log-probability is NaN or infinite at initialization,
    and parameters read before they are initialized. The message names the site.
    """
