"""Tour stage 3: fitting an exchange-correlation functional by gradient descent through the SCF.

PBE exchange's kappa and mu start away from their values and are fitted to PBE total energies that PySCF
computes in the run for a few small molecules: each loss evaluation runs one SCF per molecule, and the gradient
w.r.t. the two parameters comes from autograd through the converged SCF (the energy is variational, so no
response equations are needed). The fit should recover kappa = 0.804, mu = 0.2195 (Perdew, Burke, Ernzerhof).

Then the shipped learned functional ``nn-pbe`` (a neural correction to PBE trained on G2-1 atomization energies,
see dft/xc/data/nn-pbe.toml) against PBE on G2-2 molecules it never saw, in its training basis.
"""

from diffsci.tour import plots
from diffsci.tour.report import Section, markdown_table, text_table

TITLE = ("Fitting a functional: PBE's kappa and mu recovered by gradients through the SCF; the learned nn-pbe on "
         "unseen molecules")
MOLECULES = {  # Ångström
    "H2": "H 0 0 0; H 0 0 0.741",
    "LiH": "Li 0 0 0; H 0 0 1.595",
    "H2O": "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470",
    "NH3": "N 0 0 0.112; H 0 0.938 -0.261; H 0.812 -0.469 -0.261; H -0.812 -0.469 -0.261",
    "HF": "F 0 0 0; H 0 0 0.917",
}
START = (0.6, 0.3)  # (kappa, mu) the fit starts from; PBE's are (0.804, 0.2195)
# First-row G2-2 molecules (nn-pbe's test set: never used in its training or epoch selection).
UNSEEN = ["HCOOH", "CH3CHO", "CH3CN", "C2H5", "CH2OCH2", "NCCN", "CH3CH2OH", "C4H4O"]


def pyscf_pbe_energies(basis, names):
    """PySCF's PBE total energies (Hartree) of the named molecules."""
    from pyscf import dft as pyscf_dft
    from pyscf import gto

    energies = {}
    for name in names:
        mf = pyscf_dft.RKS(gto.M(atom=MOLECULES[name], basis=basis, verbose=0), xc="pbe")
        mf.conv_tol = 1e-10
        energies[name] = mf.kernel()
    return energies


def run(ctx):
    import torch

    import dft
    from dft.xc import get_functional
    from inference.optim import minimize

    basis = "6-31g"
    names = ["H2", "LiH", "H2O"] if ctx.quick else list(MOLECULES)
    reference = pyscf_pbe_energies(basis, names)
    molecules = {name: dft.Molecule(MOLECULES[name], basis=basis, device=ctx.device) for name in names}
    functional = get_functional("pbe").to(ctx.device)
    exchange = functional.components[0]
    previous = {}  # warm start: each molecule's last converged density matrix

    def set_parameters(params):
        """Put (kappa, mu) = params into PBE exchange (its constants are buffers; tensors that require grad
        make the SCF energy differentiable in them)."""
        exchange.kappa, exchange.mu = params[0], params[1]

    def energy(name):
        mf = dft.RKS(molecules[name], xc=functional, conv_tol=1e-10)
        value = mf.kernel(dm0=previous.get(name), strict=True)
        previous[name] = mf.make_rdm1().detach()
        return value

    def loss(log_ratio):
        """Mean squared error (mHa^2) of our PBE energies with (kappa, mu) = START * exp(log_ratio) against
        PySCF's (the log keeps both positive and the steps of L-BFGS relative)."""
        set_parameters(start * log_ratio.exp())
        return torch.stack([(energy(name) - reference[name]) * 1000 for name in names]).pow(2).mean()

    losses = []
    start = torch.tensor(START, dtype=torch.float64, device=ctx.device)
    ctx.echo(f"fitting (kappa, mu) from {START} to PBE energies of {', '.join(names)} ({basis}), by L-BFGS")
    result = minimize(loss, torch.zeros_like(start), method="lbfgs", tol=1e-3, max_steps=8 if ctx.quick else 20,
                      callback=lambda step, x, fun, grad: losses.append(float(fun)) and False, progress=True)
    fitted = start * result.x.exp()
    kappa, mu = (float(v) for v in fitted)
    errors = {}
    with torch.no_grad():
        for label, params in (("start", start), ("fitted", fitted)):
            set_parameters(params)
            errors[label] = {name: (float(energy(name)) - reference[name]) * 1000 for name in names}
    rows = [[name, f"{reference[name]:.6f}", f"{errors['start'][name]:+.3f}", f"{errors['fitted'][name]:+.1e}"]
            for name in names]
    header = ["molecule", "PySCF PBE (Ha)", "error at start (mHa)", "error fitted (mHa)"]
    ctx.echo(text_table(header, rows))
    ctx.echo(f"fitted kappa = {kappa:.4f} (PBE 0.804), mu = {mu:.4f} (PBE 0.2195) in {result.n_steps} L-BFGS steps")
    ctx.echo("PySCF and libxc evaluate functionals; diffsci also differentiates the SCF energy w.r.t. them.")
    curve = plots.curves({"loss": (range(1, len(losses) + 1), losses)}, ctx.plot_path("fit_loss.png"),
                         "L-BFGS step", "mean squared error (mHa²)", "fitting PBE exchange's kappa and mu",
                         logy=True)
    learned = shipped_functional_errors(ctx)
    markdown = "\n\n".join([
        f"## {TITLE}",
        f"PBE exchange's κ and μ start at {START} and are fitted to PySCF's PBE energies of {', '.join(names)} "
        f"({basis}); each loss evaluation is one SCF per molecule, and its gradient comes from autograd through "
        f"the converged SCF. Fitted: κ = {kappa:.4f} (PBE: 0.804), μ = {mu:.4f} (PBE: 0.2195).",
        markdown_table(header, rows),
        f"![loss]({curve})",
        learned["markdown"],
    ])
    results = {"kappa": kappa, "mu": mu, "losses": losses, "reference": reference, "errors_mha": errors,
               "steps": result.n_steps, "nn_pbe": learned["errors"]}
    return Section(markdown, [curve], results)


def shipped_functional_errors(ctx):
    """Atomization energies of unseen molecules with PBE and the shipped ``nn-pbe``, in nn-pbe's basis:
    {"errors": {functional: {molecule: (D_e, experimental D_e)}}, "markdown": ...}."""
    from dft import learning, xc

    names = UNSEEN[:3] if ctx.quick else UNSEEN
    basis = xc.get_functional("nn-pbe").basis
    ctx.echo(f"nn-pbe vs PBE: atomization energies of {len(names)} G2-2 molecules it never saw ({basis})")
    errors = {f: learning.atomization_energies(f, names, basis, device=ctx.device) for f in ("pbe", "nn-pbe")}
    rows = [[name, f"{errors['pbe'][name][1]:.1f}"] + [f"{errors[f][name][0] - errors[f][name][1]:+.1f}"
                                                       for f in errors] for name in names]
    mae = {f: learning.mean_absolute_error(values) for f, values in errors.items()}
    rows.append(["MAE", ""] + [f"{mae[f]:.1f}" for f in errors])
    header = ["molecule", "experiment (kcal/mol)", "PBE error", "nn-pbe error"]
    ctx.echo(text_table(header, rows))
    ctx.echo("nn-pbe was fitted by gradients through self-consistent SCFs, which PySCF and libxc cannot take.")
    markdown = (f"The shipped learned functional `nn-pbe` (PBE plus a neural correction trained on G2-1 "
                f"atomization energies) on G2-2 molecules outside its training and validation sets, {basis}:\n\n"
                + markdown_table(header, rows))
    return {"errors": errors, "markdown": markdown}
