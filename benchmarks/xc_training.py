"""Fitting functionals: the cost of one training step, and atomization-energy errors of nn-pbe, side by side
with PySCF in one run.

1. Per molecule (6-31G*, grid level 3, conv_tol 1e-8, from PySCF's minao guess): PySCF's PBE SCF, diffsci's
   PBE SCF, diffsci's SCF with the nn-pbe architecture, and that SCF plus the backward pass of the loss
   gradient (energy terms: Hellmann-Feynman, no response) and of the density term (through the implicit SCF
   response). Ratios: step cost / one SCF of the same functional (target <= 2x) and diffsci / PySCF.
2. Whole workload: wall time per epoch of the nn-pbe recipe (dft/xc/data/nn-pbe.toml: 20 molecules and
   their atoms, warm-started), over ``--epochs`` epochs (default 3; the first builds integrals and grids).
3. Errors: atomization-energy MAE [kcal/mol] of PBE, B3LYP (PySCF's, computed here) and nn-pbe (diffsci) on
   the validation molecules and on the test set (first-row G2-2 molecules, never used in training).

    .venv/bin/python benchmarks/xc_training.py [--quick] [--epochs N] [--threads N]

--quick: two molecules in part 1, one epoch, and 6 test molecules in part 3.
"""

import argparse
import statistics
import tempfile
import time

import torch
from pyscf import dft as pyscf_dft

import dft
from dft import learning, xc
from dft.learning import config, datasets
from dft.learning.losses import density_error
from dft.learning.systems import Calculations

BASIS = "6-31g*"
MOLECULES = ["N2", "H2O", "C2H4", "CH3OH", "O2"]


def clock(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def pyscf_scf(name):
    mol = datasets.molecule(name, BASIS).pyscf
    mf = (pyscf_dft.RKS if mol.spin == 0 else pyscf_dft.UKS)(mol, xc="pbe")
    mf.grids.level, mf.conv_tol, mf.verbose = 3, 1e-8, 0
    return mf.kernel()


def step_costs(names):
    print(f"1. cost of one training step per molecule ({BASIS}), median of 3, seconds")
    print(f"{'molecule':10s} {'PySCF PBE':>10s} {'ours PBE':>9s} {'ours NN':>8s} {'NN+grad':>8s} {'NN+dens':>8s} "
          f"{'grad/SCF':>9s} {'dens/SCF':>9s} {'ours/PySCF':>11s}")
    functional = xc.get_functional("nn-pbe")
    for name in names:
        mol = datasets.molecule(name, BASIS)
        method = dft.RKS if mol.spin == 0 else dft.UKS
        t_pyscf, _ = clock(lambda: pyscf_scf(name))

        def ours(xc_, grad=False, density=False):
            mf = method(mol, xc=xc_, conv_tol=1e-8)
            with torch.set_grad_enabled(grad or density):
                energy = mf.kernel()
                if density:
                    calculations = Calculations(functional, BASIS)
                    calculations._objects[(name, 0)] = mf  # the SCF just run
                    energy = energy + density_error(calculations, name, BASIS)
                if grad or density:
                    energy.backward()
            return mf

        t_pbe, _ = clock(lambda: ours("pbe"))
        t_nn, _ = clock(lambda: ours(functional))
        t_grad, _ = clock(lambda: ours(functional, grad=True))
        datasets.reference_density(name, BASIS)  # cached outside the clock
        t_dens, _ = clock(lambda: ours(functional, density=True))
        print(f"{name:10s} {t_pyscf:10.3f} {t_pbe:9.3f} {t_nn:8.3f} {t_grad:8.3f} {t_dens:8.3f} "
              f"{t_grad / t_nn:9.2f} {t_dens / t_nn:9.2f} {t_pbe / t_pyscf:11.2f}")


def epoch_time(epochs):
    recipe = config.load(xc.io.DATA_DIR / "nn-pbe.toml")
    functional = xc.NeuralXC(**recipe["functional"])
    with tempfile.TemporaryDirectory() as directory:
        result = learning.train(functional, recipe["dataset"], recipe["loss"], epochs=epochs, progress=False,
                                checkpoint_dir=directory, lr=recipe["training"]["lr"])
    seconds = [h["seconds"] for h in result.history if "seconds" in h]
    n = len(recipe["dataset"].systems())
    print(f"\n2. nn-pbe recipe: {len(recipe['dataset'].atomization)} molecules + atoms = {n} SCFs per epoch; "
          f"seconds per epoch: {', '.join(f'{s:.1f}' for s in seconds)} (the first builds integrals and grids)")


def pyscf_atomization(names, xc_name):
    energies = {}

    def energy(system):
        if system not in energies:
            mol = datasets.molecule(system, BASIS).pyscf
            mf = (pyscf_dft.RKS if mol.spin == 0 else pyscf_dft.UKS)(mol, xc=xc_name)
            mf.grids.level, mf.conv_tol, mf.verbose, mf.max_cycle = 3, 1e-8, 0, 100
            energies[system] = mf.kernel()
        return energies[system]

    return {name: ((sum(energy(s) for s in datasets.symbols(name)) - energy(name)) * datasets.KCAL_PER_HARTREE,
                   datasets.atomization_energy(name)) for name in names}


def errors(quick):
    recipe = config.load(xc.io.DATA_DIR / "nn-pbe.toml")
    test = [n for n in datasets.g2_names("g2-2") if datasets.is_first_row(n) and n != "H2"]
    sets = {"test (G2-2 first row)": test[::11] if quick else test}
    if not quick:
        sets = {"validation (G2-1)": list(recipe["validation"].atomization), **sets}
    print(f"\n3. atomization-energy MAE, kcal/mol, {BASIS}")
    print(f"{'set':28s} {'PySCF PBE':>10s} {'PySCF B3LYP':>12s} {'nn-pbe':>8s} {'cut vs PBE':>11s}")
    for label, names in sets.items():
        pbe = pyscf_atomization(names, "pbe")
        b3lyp = pyscf_atomization(names, "b3lyp")
        ours = learning.atomization_energies("nn-pbe", names, BASIS)
        mae = [learning.mean_absolute_error(values) for values in (pbe, b3lyp, ours)]
        print(f"{label + f' ({len(names)})':28s} {mae[0]:10.2f} {mae[1]:12.2f} {mae[2]:8.2f} "
              f"{100 * (1 - mae[2] / mae[0]):10.0f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        from pyscf import lib

        lib.num_threads(args.threads)
    step_costs(MOLECULES[:2] if args.quick else MOLECULES)
    epoch_time(args.epochs or (1 if args.quick else 3))
    errors(args.quick)
