"""Tour stage 2: Kohn-Sham DFT on water — B3LYP energy, forces checked against PySCF in the run, dipole,
harmonic frequencies, and the derivative of the dipole w.r.t. a parameter of PBE through the SCF response."""

from diffsci.tour import plots
from diffsci.tour.report import Section, markdown_table, text_table

TITLE = "Kohn-Sham DFT: water with B3LYP, and a derivative no other DFT code gives"
WATER = "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470"  # Ångström
DEBYE_PER_AU = 2.541746  # debye in one atomic unit of dipole


def pyscf_reference(basis):
    """PySCF's B3LYP energy (Hartree) and analytic gradient (Hartree/Bohr, (3, 3)) for the same water."""
    from pyscf import dft as pyscf_dft
    from pyscf import gto

    mol = gto.M(atom=WATER, basis=basis, verbose=0)
    mf = pyscf_dft.RKS(mol, xc="b3lyp")
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    return energy, mf.nuc_grad_method().kernel()


def run(ctx):
    import torch

    import dft
    from dft.xc import get_functional

    basis = "6-31g" if ctx.quick else "def2-svp"
    mol = dft.Molecule(WATER, basis=basis, device=ctx.device)
    mol.coords.requires_grad_()
    mf = dft.RKS(mol, xc="b3lyp", conv_tol=1e-10, verbose=True)
    energy = mf.kernel(strict=True)
    forces = -torch.autograd.grad(energy, mol.coords)[0]
    ref_energy, ref_gradient = pyscf_reference(basis)
    energy = energy.detach()
    energy_error = abs(float(energy) - ref_energy)
    force_error = float((forces.detach().cpu() + torch.as_tensor(ref_gradient)).abs().max())
    ctx.echo(f"B3LYP/{basis}: E = {float(energy):.8f} Ha in {mf.cycles} SCF cycles "
             f"(PySCF {ref_energy:.8f}, |ΔE| = {energy_error:.1e} Ha)")
    ctx.echo(f"forces by autograd through the SCF; largest difference from PySCF's analytic gradient: "
             f"{force_error:.1e} Ha/Bohr")
    history = [abs(delta) for _, delta, _ in mf.history[1:]]
    gradients = [norm for _, _, norm in mf.history]
    convergence = plots.curves({"|ΔE| (Ha)": (range(2, len(history) + 2), history),
                                "|orbital gradient|": (range(1, len(gradients) + 1), gradients)},
                               ctx.plot_path("dft_scf_convergence.png"), "SCF cycle", "", "SCF convergence "
                               f"(B3LYP/{basis}, DIIS)", logy=True)

    mol.coords.requires_grad_(False)  # the same converged SCF serves the dipole and the Hessian
    dipole = dft.dipole(mf).detach().cpu()
    ctx.echo(f"dipole: {float(dipole.norm()) * DEBYE_PER_AU:.3f} D")
    freqs = dft.frequencies(mf).detach().cpu()
    freqs = [float(f) for f in freqs if abs(float(f)) > 100.0]  # the vibrations, not translations/rotations
    ctx.echo("harmonic frequencies: " + ", ".join(f"{f:.0f}" for f in freqs) + " cm^-1 (Hessian by autograd)")

    # d(dipole)/d(kappa) of PBE exchange, through the self-consistent response of the density
    pbe = get_functional("pbe").to(ctx.device)
    kappa = pbe.components[0].kappa.requires_grad_()
    mf_pbe = dft.RKS(dft.Molecule(WATER, basis=basis, device=ctx.device), xc=pbe, conv_tol=1e-10)
    mf_pbe.kernel(strict=True)
    mu_z = dft.dipole(mf_pbe)[2]
    (d_mu_d_kappa,) = torch.autograd.grad(mu_z, kappa)
    # check it by a central finite difference of two more SCFs
    step = 1e-3
    finite = []
    for sign in (1, -1):
        shifted = get_functional("pbe").to(ctx.device)
        shifted.components[0].kappa.fill_(float(kappa) + sign * step)
        mf_shift = dft.RKS(dft.Molecule(WATER, basis=basis, device=ctx.device), xc=shifted, conv_tol=1e-11)
        with torch.no_grad():
            mf_shift.kernel(strict=True)
            finite.append(float(dft.dipole(mf_shift)[2]))
    finite_difference = (finite[0] - finite[1]) / (2 * step)
    ctx.echo(f"d mu_z / d kappa (PBE exchange) through the SCF response: {float(d_mu_d_kappa):.6f} a.u. "
             f"(finite difference of two SCFs: {finite_difference:.6f})")
    ctx.echo("PySCF gives energies and forces; diffsci also differentiates any output w.r.t. the functional.")

    rows = [["energy (Ha)", f"{float(energy):.8f}", f"{ref_energy:.8f}"],
            ["max |force difference| (Ha/Bohr)", f"{force_error:.1e}", ""],
            ["dipole (D)", f"{float(dipole.norm()) * DEBYE_PER_AU:.3f}", ""],
            ["frequencies (cm^-1)", ", ".join(f"{f:.0f}" for f in freqs), ""],
            ["d mu_z / d kappa (a.u.)", f"{float(d_mu_d_kappa):.6f}", f"{finite_difference:.6f} (finite diff.)"]]
    markdown = "\n\n".join([
        f"## {TITLE}",
        f"Water, B3LYP/{basis} (PySCF's integrals and grids; SCF, functional and every derivative in torch). "
        "The reference column is computed by PySCF in the same run.",
        markdown_table(["", "diffsci", "reference"], rows),
        f"![SCF convergence]({convergence})",
    ])
    results = {"energy": float(energy), "pyscf_energy": ref_energy, "force_error": force_error,
               "forces": forces.detach().cpu().tolist(), "dipole_au": dipole.tolist(), "frequencies": freqs,
               "d_dipole_d_kappa": float(d_mu_d_kappa), "finite_difference": finite_difference, "basis": basis}
    ctx.echo(text_table(["", "diffsci", "reference"], rows))
    return Section(markdown, [convergence], results)
