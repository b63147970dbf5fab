"""Neural exchange-correlation functionals: a base functional plus learned, constraint-respecting corrections.

    E_xc = E_xc^base + sum_sigma int e_x^LDA[2 rho_sigma] / 2 * f_x(s_sigma[, alpha_sigma])
                     + int rho eps_x^LDA(rho) f_c(rho, zeta, s[, alpha])

Both corrections are enhancement factors on LDA exchange (Kasim & Vinko, PRL 127, 126403 (2021)), each a small
multilayer perceptron written so that constraints hold by construction, whatever its weights:

- the uniform-gas limit: each network is evaluated as f(x) - f(x_uniform), where x_uniform is x with s = 0 (and
  alpha = 1), so the correction vanishes for a uniform density and the base functional's exact LDA limit is kept;
- exact spin scaling of exchange, E_x[rho_a, rho_b] = (E_x[2 rho_a] + E_x[2 rho_b]) / 2: the exchange
  correction is a per-spin-channel term (a :class:`dft.xc.Exchange`);
- uniform coordinate scaling of exchange, E_x[lambda^3 rho(lambda r)] = lambda E_x[rho]: f_x sees only the
  scale-free s and alpha, never the density itself;
- spin-flip symmetry of correlation: f_c sees zeta^2.

A freshly made functional reproduces its base exactly (the last layer of each network starts at zero), so
training starts from the base functional. Inputs are transformed to bounded, smooth features:
log(rho^(1/3)) [rho in bohr^-3], zeta^2, s^2 / (1 + s^2) with s = |grad rho| / (2 (3 pi^2)^(1/3) rho^(4/3)),
and, for a meta-GGA, (1 - alpha) / (1 + alpha) with the iso-orbital indicator alpha = (tau - tau_W) / tau_unif
(tau_W = |grad rho|^2 / (8 rho), tau_unif = 3/10 (3 pi^2)^(2/3) rho^(5/3) d_s(zeta); alpha = 1 in a uniform gas,
0 in one-orbital regions), the variable of SCAN and of the learned meta-GGAs DM21 and Skala.
"""

import math

import torch

from .component import Correlation, Exchange
from .density import opz_pow
from .errors import XCError
from .functional import XCFunctional, get_functional
from .gga import X2S, rho43_and_x2
from .lda import SLATER_C

INPUTS = ("rho", "zeta", "s", "alpha")  # the features a NeuralXC may use
GGA_INPUTS = ("rho", "zeta", "s")  # the default: a GGA-level correction
TAU_UNIFORM = 0.3 * (3 * math.pi ** 2) ** (2 / 3)  # tau of a uniform unpolarized gas is TAU_UNIFORM n^(5/3)
# e_x^LDA of an unpolarized density n is -SLATER_C (n / 2)^(4/3) * 2 = -SLATER_C 2^(-1/3) n^(4/3).
_UNPOLARIZED_LDA_X = SLATER_C * 2 ** (-1 / 3)


def mlp(n_inputs, hidden, generator=None):
    """A float64 perceptron n_inputs -> hidden... -> 1 with SiLU activations (smooth, so potentials and
    second derivatives exist), the last layer zero so that the network starts as the zero function."""
    layers, width = [], n_inputs
    for size in hidden:
        linear = torch.nn.Linear(width, size, dtype=torch.float64)
        bound = 1 / math.sqrt(width)
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        layers += [linear, torch.nn.SiLU()]
        width = size
    last = torch.nn.Linear(width, 1, dtype=torch.float64)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return torch.nn.Sequential(*layers, last)


def _reduced_gradient_feature(s2):
    """s^2 / (1 + s^2): 0 for a uniform density, bounded by 1 in density tails where s grows without bound."""
    return s2 / (1 + s2)


def _alpha_feature(tau, tau_w, tau_unif):
    """(1 - alpha) / (1 + alpha) = (tau_unif - tau + tau_w) / (tau_unif + tau - tau_w): 0 for a uniform gas,
    1 where one orbital dominates (tau = tau_W), in (-1, 1] everywhere."""
    excess = (tau - tau_w).clamp(min=0)  # libxc-style: tau below the von Weizsaecker bound counts as at it
    return (tau_unif - excess) / (tau_unif + excess)


def _uniform_gas_difference(network, features, uniform_columns):
    """network(features) - network(features with the ``uniform_columns`` (s, alpha) at their uniform-gas value
    0), (..., N)."""
    values = network(features).squeeze(-1)
    uniform = features.clone()
    uniform[..., uniform_columns] = 0
    return values - network(uniform).squeeze(-1)


class NeuralExchange(Exchange):
    """The exchange correction e_x^LDA[2 rho_s] / 2 * f_x(s_s[, alpha_s]) of one spin channel (see the module
    docstring); a meta-GGA when ``alpha``."""

    def __init__(self, hidden, alpha=False, generator=None):
        super().__init__()
        self.family = "mgga" if alpha else "gga"
        self.network = mlp(2 if alpha else 1, hidden, generator)

    def per_spin(self, rho_s, sigma_ss, tau_s=None):
        rho43, x2 = rho43_and_x2(rho_s, sigma_ss)
        columns = [_reduced_gradient_feature(X2S ** 2 * x2)]
        if tau_s is not None:
            # alpha of the spin-scaled density 2 rho_s: tau_unif = 3/10 (6 pi^2)^(2/3) rho_s^(5/3) per channel.
            tau_unif = TAU_UNIFORM * 2 ** (2 / 3) * rho43 * torch.exp(torch.log(rho_s) / 3)
            columns.append(_alpha_feature(tau_s, sigma_ss / (8 * rho_s), tau_unif))
        features = torch.stack(columns, dim=-1)
        return -SLATER_C * rho43 * _uniform_gas_difference(self.network, features, list(range(len(columns))))


class NeuralCorrelation(Correlation):
    """The correlation correction rho eps_x^LDA(rho) f_c(log rho^(1/3), zeta^2, s[, alpha]) (see the module
    docstring); ``inputs`` chooses the features, a subset of ("rho", "zeta", "s", "alpha") with s."""

    dens_threshold = 1e-12

    def __init__(self, inputs, hidden, generator=None):
        super().__init__()
        self.inputs = tuple(inputs)
        self.family = "mgga" if "alpha" in self.inputs else "gga"
        self.network = mlp(len(self.inputs), hidden, generator)

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, tau_a=None, tau_b=None):
        n13 = torch.exp(torch.log(n) / 3)
        columns = {}
        if "rho" in self.inputs:
            columns["rho"] = torch.log(n) / 3
        if "zeta" in self.inputs:
            columns["zeta"] = torch.zeros_like(n) if isinstance(z, float) else z * z
        sigma = sigma_aa + 2 * sigma_ab + sigma_bb
        columns["s"] = _reduced_gradient_feature((2 ** (1 / 3) * X2S) ** 2 * sigma / (n * n13) ** 2)
        if "alpha" in self.inputs:
            d_s = 1.0 if isinstance(z, float) else (opz_pow(z, 5 / 3) + opz_pow(-z, 5 / 3)) / 2
            columns["alpha"] = _alpha_feature(tau_a + tau_b, sigma / (8 * n), TAU_UNIFORM * n * n13 * n13 * d_s)
        features = torch.stack([columns[name] for name in self.inputs], dim=-1)
        uniform = [self.inputs.index(name) for name in ("s", "alpha") if name in self.inputs]
        return -_UNPOLARIZED_LDA_X * n * n13 * _uniform_gas_difference(self.network, features, uniform)


class NeuralXC(XCFunctional):
    """A trainable functional: ``base`` plus the neural exchange and correlation corrections of the module
    docstring. An :class:`XCFunctional`: use it as ``dft.RKS(mol, xc=NeuralXC(...))``.

    Args:
        base: name of the base functional (PySCF syntax, e.g. "pbe", "lda", "b3lyp"); its exact-exchange
            fraction is kept.
        inputs: features of the correlation network, a subset of ("rho", "zeta", "s", "alpha") with s; the
            exchange network uses s (and alpha) alone: the constraints it keeps allow no density input. With
            "alpha" the functional is a meta-GGA (the SCF then computes tau).
        hidden: widths of the hidden layers of each network.
        seed: seed of the networks' initial weights (their output is zero at the start whatever the seed).

    Attributes: ``config`` (the arguments, to rebuild the architecture: see :func:`dft.xc.save`), ``basis``
    (the basis it was trained in, None until a training sets it) and ``metadata`` (training provenance).
    """

    def __init__(self, base="pbe", inputs=GGA_INPUTS, hidden=(16, 16), seed=0):
        inputs = tuple(inputs)
        unknown = [name for name in inputs if name not in INPUTS]
        if unknown or "s" not in inputs or len(set(inputs)) != len(inputs):
            raise XCError(f"inputs must be distinct names from {INPUTS}, s among them (the uniform-gas limit is kept "
                          f"by zeroing the correction at s = 0), got {inputs!r}")
        hidden = tuple(int(size) for size in hidden)
        if not hidden or min(hidden) < 1:
            raise XCError(f"hidden must list at least one positive layer width, got {hidden!r}")
        if not isinstance(base, str):
            raise XCError(f"base must be a functional name such as 'pbe', got {type(base).__name__}")
        base_functional = get_functional(base)
        generator = torch.Generator().manual_seed(int(seed))
        corrections = [NeuralExchange(hidden, "alpha" in inputs, generator), NeuralCorrelation(inputs, hidden, generator)]
        family = "mgga" if "alpha" in inputs or base_functional.family == "mgga" else "gga"
        super().__init__(list(base_functional.components) + corrections, base_functional.weights.tolist() + [1.0, 1.0],
                         hyb=base_functional.hyb, name=f"neural-{base_functional.name}", family=family)
        self.config = {"base": base, "inputs": list(inputs), "hidden": list(hidden), "seed": int(seed)}
        self.basis = None
        self.metadata = {}
