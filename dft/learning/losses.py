"""Losses for fitting functionals: errors on a :class:`~dft.learning.datasets.Dataset`, weighted and summed.

Terms (each a mean over its data; a term with weight 0 or no data is not computed):

- ``atomization``: (D_e - D_e^exp)^2 [(kcal/mol)^2], D_e = sum_atoms E_atom - E_molecule;
- ``ionization``: (IE - IE^exp)^2 [(kcal/mol)^2], IE = E_cation - E_neutral (vertical);
- ``total_energy``: (E - E_ref)^2 [(kcal/mol)^2];
- ``density``: int (rho - rho_CCSD)^2 dr [bohr^-3] on the calculation's grid, rho through the implicit response
  of the self-consistent density (``dft.response``);
- ``scf_stability``: DM21's regularizer (Kirkpatrick et al., Science 374, 1385 (2021)): the squared orbital
  gradient sum_ai |C_a^T F_theta C_i|^2 [Hartree^2] of the functional's Fock matrix at the base functional's
  converged orbitals, which keeps the learned potential from pulling the density far from a sensible one;
- ``constraints``: penalties for exact constraints broken on a fixed sample of (rho, s, zeta) (Grad DFT-style):
  the local Lieb-Oxford bound on exchange, F_x <= 1.804, and on exchange-correlation, F_xc <= 2.215 (SCAN's
  choices), and correlation non-positivity, e_c <= 0; each a mean squared violation relative to |e_x^LDA|.

Energy gradients w.r.t. the functional's parameters are exact at the converged SCF (Hellmann-Feynman: the
default energy of ``RKS.kernel``); the density term differentiates through the SCF response.
"""

import math
from dataclasses import dataclass, field

import torch

from .. import scf
from ..response import density_matrix
from ..xc.component import Correlation, Exchange
from ..xc.lda import SLATER_C
from . import datasets
from .systems import SCFFailed

TERMS = ("atomization", "ionization", "total_energy", "density", "scf_stability", "constraints")
KCAL = datasets.KCAL_PER_HARTREE
LIEB_OXFORD_X = 1.804
LIEB_OXFORD_XC = 2.215


@dataclass(frozen=True)
class Loss:
    """Weights of the loss terms (module docstring); ``total = sum_t weight_t * term_t``."""

    atomization: float = 1.0
    ionization: float = 1.0
    total_energy: float = 1.0
    density: float = 1.0
    scf_stability: float = 0.0
    constraints: float = 0.0

    def __post_init__(self):
        for name in TERMS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Loss.{name} must be a finite weight >= 0, got {value!r}.")


@dataclass
class Evaluation:
    """One evaluation of a loss: ``total`` (tensor; differentiable when evaluated with grad), ``terms``
    (name -> float, unweighted), ``predictions`` (kind -> {name: (predicted, reference)}, kcal/mol for
    energies) and ``skipped`` (systems whose SCF failed, with the reason)."""

    total: torch.Tensor
    terms: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def evaluate(loss, dataset, calculations):
    """Evaluate ``loss`` on ``dataset`` with ``calculations`` (a :class:`~dft.learning.systems.Calculations` of
    the functional); differentiable w.r.t. the functional's parameters when grad mode is on.

    Data whose SCFs fail (after the retries) are left out of this evaluation and listed in ``skipped``.
    """
    energy_data = _energy_data(dataset)
    needed = {system for term, data in energy_data.items() if getattr(loss, term) > 0
              for _, systems, _, _ in data for system in systems}
    needed |= {(name, 0) for name in dataset.densities} if loss.density > 0 else set()
    if loss.scf_stability > 0:
        needed |= {system for _, systems, _, _ in energy_data["atomization"] for system in systems}
    energies, skipped = {}, {}
    for system in dataset.systems():
        if system in needed:
            try:
                energies[system] = calculations.energy(system)
            except SCFFailed as error:
                skipped[system] = str(error)
    terms, predictions, parts = {}, {}, []

    def add(name, values, weight):
        if values:
            term = torch.stack(values).mean()
            terms[name] = float(term.detach())
            parts.append(weight * term)

    for term, data in energy_data.items():
        if getattr(loss, term) > 0 and data:
            errors, table = [], {}
            for name, systems, combine, reference in data:
                if all(system in energies for system in systems):
                    value = combine(energies) * KCAL
                    table[name] = (float(value.detach()), reference)
                    errors.append((value - reference) ** 2)
            predictions[term] = table
            add(term, errors, getattr(loss, term))
    if loss.density > 0 and dataset.densities:
        add("density", [density_error(calculations, name, dataset.basis) for name in dataset.densities
                        if (name, 0) in energies], loss.density)
    if loss.scf_stability > 0:
        add("scf_stability", [orbital_gradient_norm2(calculations, system) for system in energies],
            loss.scf_stability)
    if loss.constraints > 0:
        add("constraints", [constraint_penalty(calculations.functional)], loss.constraints)
    if not parts:
        reason = "; ".join(skipped.values()) or "no term has both data and a weight above 0"
        raise ValueError(f"the loss has nothing to evaluate: {reason}")
    return Evaluation(sum(parts[1:], parts[0]), terms, predictions, skipped)


def mean_absolute_error(table):
    """Mean |predicted - reference| of a prediction table {name: (predicted, reference)} (e.g. an
    ``Evaluation.predictions`` entry or :func:`atomization_energies`), in the table's unit; NaN when empty."""
    return sum(abs(p - r) for p, r in table.values()) / len(table) if table else float("nan")


def atomization_energies(functional, names, basis, **options):
    """Atomization energies of G2 molecules ``names`` with ``functional`` (a name, file or module) in ``basis``:
    {name: (D_e, experimental D_e)} in kcal/mol, without gradients; molecules whose SCFs fail are left out.
    ``options``: settings of :class:`~dft.learning.systems.Calculations` (grid_level, conv_tol, ...)."""
    from ..xc import get_functional
    from .systems import Calculations

    with torch.no_grad():
        evaluation = evaluate(Loss(atomization=1.0), datasets.Dataset(basis, atomization=list(names)),
                              Calculations(get_functional(functional), basis, **options))
    return evaluation.predictions["atomization"]


def _energy_data(dataset):
    """The energy data of ``dataset`` by term: (datum name, systems whose energies it needs, the predicted value
    [Hartree] from {system: energy}, the reference [kcal/mol])."""
    def atomization(name):
        atoms = [(symbol, 0) for symbol in datasets.symbols(name)]
        return (name, [(name, 0)] + atoms, lambda e: sum(e[atom] for atom in atoms) - e[(name, 0)],
                datasets.atomization_energy(name))

    def ionization(name):
        return (name, [(name, 0), (name, 1)], lambda e: e[(name, 1)] - e[(name, 0)],
                datasets.ionization_energy(name) / datasets.EV_PER_HARTREE * KCAL)

    def total_energy(name, reference):
        return (name, [(name, 0)], lambda e: e[(name, 0)], reference * KCAL)

    return {"atomization": [atomization(name) for name in dataset.atomization],
            "ionization": [ionization(name) for name in dataset.ionization],
            "total_energy": [total_energy(name, reference) for name, reference in dataset.total_energies]}


def density_error(calculations, name, basis):
    """int (rho - rho_CCSD)^2 dr [bohr^-3] of the converged SCF of ``name`` (after ``calculations.energy``),
    through the implicit response of the density."""
    mf = calculations.solver((name, 0))
    dm = density_matrix(mf)
    total = dm if dm.ndim == 2 else dm[0] + dm[1]
    reference = torch.as_tensor(datasets.reference_density(name, basis), dtype=total.dtype, device=total.device)
    difference = total - (reference if reference.ndim == 2 else reference[0] + reference[1])
    return sum((weights * scf.eval_rho(ao, difference)[0] ** 2).sum() for weights, ao in mf.grid.blocks())


def orbital_gradient_norm2(calculations, system):
    """sum_ai |C_a^T F_theta(D_base) C_i|^2 [Hartree^2] at the base functional's converged orbitals."""
    mf = calculations.solver(system)
    base = calculations.guess_solution(system)
    fock = mf.get_fock(scf.make_rdm1(base.mo_coeff, base.mo_occ))
    coeff, occ = base.mo_coeff, base.mo_occ
    if coeff.ndim == 2:
        coeff, occ, fock = coeff[None], occ[None], fock[None]
    total = 0
    for c, o, f in zip(coeff, occ, fock):
        occupied, virtual = c[:, o > 0], c[:, o == 0]
        total = total + ((virtual.T @ f @ occupied) ** 2).sum()
    return total


def _constraint_sample(dtype, device):
    """A fixed sample of densities n [bohr^-3] and reduced gradients s, as restricted (rho, sigma)."""
    n = torch.logspace(-4, 2, 25, dtype=dtype, device=device)
    s = torch.linspace(0, 5, 26, dtype=dtype, device=device)
    n, s = torch.meshgrid(n, s, indexing="ij")
    n, s = n.reshape(-1), s.reshape(-1)
    sigma = (s * 2 * (3 * math.pi ** 2) ** (1 / 3) * n ** (4 / 3)) ** 2
    return n, sigma


def constraint_penalty(functional):
    """Mean squared violations of the local Lieb-Oxford bounds and of correlation non-positivity on a fixed
    sample of restricted and fully polarized densities (for a meta-GGA at alpha = 0 and 1), relative to
    |e_x^LDA| (dimensionless)."""
    parameter = next(iter(functional.parameters()), None)
    dtype = torch.float64 if parameter is None else parameter.dtype
    device = None if parameter is None else parameter.device
    n, sigma = _constraint_sample(dtype, device)
    zeros = torch.zeros_like(n)
    weights = functional.weights.to(dtype)
    penalties = []
    for spin in (0, 1):
        rho = n if spin == 0 else torch.stack([n, zeros])
        sig = sigma if spin == 0 else torch.stack([sigma, zeros, zeros])
        ex_lda = -SLATER_C * (n if spin else n / 2) ** (4 / 3) * (1 if spin else 2)
        # tau = tau_W + alpha tau_unif; the empty channel of the polarized sample has tau = 0.
        tau_w, tau_unif = sigma / (8 * n), 0.3 * (3 * math.pi ** 2) ** (2 / 3) * n ** (5 / 3) * (2 ** (2 / 3) if spin else 1)
        taus = [tau_w + alpha * tau_unif for alpha in (0.0, 1.0)] if functional.family == "mgga" else [None]
        for tau in taus:
            extra = {} if tau is None else {"tau": tau if spin == 0 else torch.stack([tau, zeros])}
            parts = {kind: sum(w * c(rho, sig, spin=spin, **extra) for w, c in zip(weights, functional.components)
                               if isinstance(c, kind)) for kind in (Exchange, Correlation)}
            ex, ec = parts[Exchange], parts[Correlation]
            scale = ex_lda.abs()
            penalties += [torch.relu((LIEB_OXFORD_X * ex_lda - ex) / scale) ** 2,
                          torch.relu((LIEB_OXFORD_XC * ex_lda - ex - ec) / scale) ** 2,
                          torch.relu(ec / scale) ** 2]
    return torch.cat(penalties).mean()
