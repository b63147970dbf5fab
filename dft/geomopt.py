"""Geometry optimization: minimize the Kohn-Sham energy over the nuclear positions with ``inference.optim``.

Each energy evaluation is an SCF at the trial positions (warm-started from the previous density matrix) and
its forces by autograd (``dft.ks``: variational energy). The optimizer works in Cartesian coordinates, Bohr.
Convergence uses geomeTRIC's five criteria, as PySCF's ``geometric_solver`` sets them (``conv_params``), all
of which must hold at a step: energy change, RMS and max atomic gradient (norms of the per-atom gradient
vectors) and RMS and max atomic displacement since the previous step.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from pyscf.lib import param

from inference.optim import check_number, minimize

from .errors import OptionError
from .ks import RKS, UKS
from .molecule import Molecule

# geomeTRIC's defaults (PySCF's ``geometric_solver`` conv_params): Hartree, Hartree/Bohr, Angstrom.
CONV_PARAMS = {
    "convergence_energy": 1e-6,
    "convergence_grms": 3e-4,
    "convergence_gmax": 4.5e-4,
    "convergence_drms": 1.2e-3,
    "convergence_dmax": 1.8e-3,
}


@dataclass
class GeometryOptimization:
    """What :func:`optimize_geometry` found.

    Attributes:
        mol: the molecule at the last accepted positions (``coords`` detached).
        energy: its total energy, Hartree (a plain 0-d tensor).
        converged: every criterion of ``conv_params`` held at the last step.
        n_steps: optimizer steps taken (each may cost several energy evaluations in the line search).
        message: why it stopped, in words.
        history: one dict per step, the start included: ``energy`` (Hartree), ``grad_rms``, ``grad_max``
            (Hartree/Bohr), ``disp_rms``, ``disp_max`` (Angstrom; 0 at the start).
    """

    mol: Molecule
    energy: torch.Tensor
    converged: bool
    n_steps: int
    message: str
    history: list


def optimize_geometry(mol, xc="lda,vwn", method="lbfgs", max_steps=100, conv_params=None, progress=False,
                      trajectory=None, **options):
    """Relax the nuclear positions of ``mol`` to an energy minimum.

    Args:
        mol: :class:`dft.Molecule` at the starting positions (not modified).
        xc: functional, as for :class:`dft.RKS`.
        method: ``inference.optim.minimize`` method, ``"lbfgs"`` (default) or ``"fire"``.
        max_steps: most optimizer steps, an integer >= 1.
        conv_params: overrides of :data:`CONV_PARAMS` (PySCF/geomeTRIC names and units; finite values > 0).
        progress: show a progress bar (energy, max gradient).
        trajectory: path of an XYZ file to write, one frame (Angstrom) per step, the start included, each with
            its energy in the comment line; its folder must exist.
        options: passed to :class:`dft.RKS` (``mol.spin == 0``) or :class:`dft.UKS`: basis-independent SCF and
            grid options such as ``grid_level``, ``grid_response``, ``density_fit``, ``conv_tol``.

    Returns:
        :class:`GeometryOptimization`.

    Raises:
        SCFNotConvergedError: an SCF along the way did not converge (try ``level_shift``/``damp`` options).
        KeyError: an unknown name in ``conv_params``.
        OptionError: ``max_steps``, a ``conv_params`` value or an SCF option out of range, ``method`` unknown, the
            ``trajectory`` folder missing, ``mol`` not a :class:`dft.Molecule`.
    """
    where = "optimize_geometry"
    if not isinstance(mol, Molecule):
        raise OptionError(f"{where}: mol must be a dft.Molecule, got {type(mol).__name__}.")
    if method not in ("lbfgs", "fire"):
        raise OptionError(f"{where}: method must be 'lbfgs' or 'fire', got {method!r}.")
    max_steps = check_number(where, "max_steps", max_steps, integer=True, at_least=1, error=OptionError)
    criteria = dict(CONV_PARAMS)
    unknown = set(conv_params or {}) - set(criteria)
    if unknown:
        raise KeyError(f"{where}: unknown conv_params {sorted(unknown)}; the names are {sorted(criteria)}.")
    for name, value in (conv_params or {}).items():
        criteria[name] = check_number(where, f"conv_params[{name!r}]", value, above=0, error=OptionError)
    if trajectory is not None and not Path(trajectory).parent.is_dir():
        raise OptionError(f"{where}: the folder of trajectory={str(trajectory)!r} does not exist; create it first.")
    kohn_sham = UKS if mol.spin else RKS
    last = {"dm": None}

    def energy(coords):
        mf = kohn_sham(mol.with_coords(coords), xc=xc, **options)
        e = mf.kernel(dm0=last["dm"], strict=True)
        last["dm"] = mf.make_rdm1().detach()
        return e

    frames, history, accepted = [], [], []
    status = {"converged": False}

    def record(x, f, g):
        """Log an accepted point (the start, then one per step); True (stop) when every criterion holds."""
        x, g = x.detach(), g.detach()
        moved = (x - accepted[-1]).norm(dim=1) * param.BOHR if accepted else x.new_zeros(1)
        per_atom = g.norm(dim=1)
        entry = {"energy": float(f), "grad_rms": float(per_atom.square().mean().sqrt()),
                 "grad_max": float(per_atom.max()), "disp_rms": float(moved.square().mean().sqrt()),
                 "disp_max": float(moved.max())}
        converged = bool(history) and (abs(entry["energy"] - history[-1]["energy"]) < criteria["convergence_energy"]
                                       and entry["grad_rms"] < criteria["convergence_grms"]
                                       and entry["grad_max"] < criteria["convergence_gmax"]
                                       and entry["disp_rms"] < criteria["convergence_drms"]
                                       and entry["disp_max"] < criteria["convergence_dmax"])
        history.append(entry)
        accepted.append(x.clone())
        frames.append(mol.with_coords(x).to_xyz(f"step {len(history) - 1} E = {float(f):.10f} Ha"))
        status["converged"] = converged
        return converged

    def objective(coords):
        e = energy(coords)
        coords.register_hook(lambda g: without_rigid_motions(coords.detach(), g))
        if not accepted:  # the start: logged when the optimizer takes its gradient

            def log_start(g):
                record(coords, e, g)

            coords.register_hook(log_start)
        return e

    # tol=0: only the geomeTRIC criteria (checked in the callback) or max_steps end the run.
    result = minimize(objective, mol.coords.detach(), method=method, tol=0.0, max_steps=max_steps,
                      callback=lambda step, x, f, g: record(x, f, g), progress=progress)
    converged = status["converged"]
    if trajectory is not None:
        Path(trajectory).write_text("".join(frames))
    if converged:
        message = f"converged after {result.n_steps} steps (geomeTRIC criteria {criteria})"
    else:
        message = f"not converged: {result.message}"
    final = mol.with_coords(result.x.detach())
    return GeometryOptimization(final, result.fun.detach(), converged, result.n_steps, message, history)


def without_rigid_motions(coords, g):
    """``g`` (natm, 3) minus its components along rigid translations and rotations of ``coords`` about their
    centroid: the net force and torque, which vanish for the exact energy of a free molecule but not for one
    integrated on a grid that does not turn with the molecule."""
    centred = coords - coords.mean(0)
    eye = torch.eye(3, dtype=g.dtype, device=g.device)
    translations = eye.expand(len(coords), 3, 3).permute(1, 0, 2)  # (3, natm, 3)
    rotations = torch.cross(eye[:, None, :].expand(3, len(coords), 3), centred.expand(3, -1, -1), dim=-1)
    basis = torch.cat([translations, rotations]).reshape(6, -1)
    q, r = torch.linalg.qr(basis.T)
    q = q[:, r.diagonal().abs() > 1e-8 * r.diagonal().abs().max()]  # an atom or a line has fewer rotations
    flat = g.reshape(-1)
    return (flat - q @ (q.T @ flat)).reshape(g.shape)
