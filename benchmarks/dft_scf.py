"""SCF wall time and peak memory, diffsci vs PySCF, side by side in one run.

Each (tool, case) runs in a fresh worker process (both tools imported there first, so import costs are
excluded and baselines equal); the clock covers building the molecule, integrals, grid, guess and the SCF to
convergence. Each case is measured ``--repeats`` times (default 3), the two tools' workers alternating so that
load on the machine falls on both alike; the table gives the median time and the largest peak memory. Same
molecule, basis, functional, grid level 3 and conv_tol 1e-9 on both sides; PySCF runs with
its defaults otherwise (including its density-based grid pruning, ``small_rho_cutoff=1e-7``, which diffsci
does not do, see dft/grids.py), so energies may differ by a few 1e-8 Ha.

    .venv/bin/python benchmarks/dft_scf.py [--quick] [--device cuda] [--threads N] [--repeats N]
"""

import argparse
import resource
import statistics
import time

import fresh_process

WATER = "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470"
BENZENE = ("C 0 1.396 0; C 1.209 0.698 0; C 1.209 -0.698 0; C 0 -1.396 0; C -1.209 -0.698 0; C -1.209 0.698 0; "
           "H 0 2.479 0; H 2.147 1.240 0; H 2.147 -1.240 0; H 0 -2.479 0; H -2.147 -1.240 0; H -2.147 1.240 0")
CASES = [  # (label, atom, basis, xc, density_fit, in --quick)
    ("water B3LYP/def2-SVP", WATER, "def2-svp", "b3lyp", False, True),
    ("water B3LYP/def2-TZVP", WATER, "def2-tzvp", "b3lyp", False, True),
    ("benzene PBE/def2-SVP", BENZENE, "def2-svp", "pbe", False, False),
    ("benzene PBE/def2-SVP DF", BENZENE, "def2-svp", "pbe", True, True),
    ("benzene B3LYP/def2-SVP", BENZENE, "def2-svp", "b3lyp", False, False),
]
CONV_TOL = 1e-9
GRID_LEVEL = 3


def _rss_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run_pyscf(atom, basis, xc, density_fit, device):
    from pyscf import dft, gto

    mol = gto.M(atom=atom, basis=basis, verbose=0)
    mf = dft.RKS(mol).set(xc=xc, conv_tol=CONV_TOL)
    if density_fit:
        mf = mf.density_fit()
    mf.grids.level = GRID_LEVEL
    energy = mf.kernel()
    return energy, mf.converged, mf.cycles


def _run_diffsci(atom, basis, xc, density_fit, device):
    import dft

    mol = dft.Molecule(atom, basis, device=device)
    mf = dft.RKS(mol, xc=xc, grid_level=GRID_LEVEL, density_fit=density_fit, conv_tol=CONV_TOL)
    energy = float(mf.kernel())  # float() waits for the device
    return energy, mf.converged, mf.cycles


def _worker(tool, case, device, threads, queue):
    import pyscf.dft  # imports outside the clock, both tools alike
    import torch

    import dft  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
        pyscf.lib.num_threads(threads)

    run = _run_pyscf if tool == "pyscf" else _run_diffsci
    _, atom, basis, xc, density_fit, _ = case
    baseline = _rss_mb("VmRSS")
    start = time.perf_counter()
    energy, converged, cycles = run(atom, basis, xc, density_fit, device)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((energy, converged, cycles, seconds, peak - baseline))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the quick subset")
    parser.add_argument("--device", default="cpu", help="torch device for diffsci (PySCF runs on CPU)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both tools (default: their own)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool and case (median time reported)")
    args = parser.parse_args()
    import os
    import platform

    import pyscf
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__} "
          f"({args.threads or torch.get_num_threads()} threads), pyscf {pyscf.__version__}; diffsci on {args.device}")
    header = (f"{'case':<26} {'PySCF s':>8} {'diffsci s':>9} {'ratio':>6} {'PySCF MB':>9} {'diffsci MB':>10} "
              f"{'cycles':>7} {'|dE| Ha':>9}")
    print(header)
    print("-" * len(header))
    for case in CASES:
        if args.quick and not case[5]:
            continue
        runs = {"pyscf": [], "diffsci": []}
        for _ in range(args.repeats):
            runs["pyscf"].append(fresh_process.run(_worker, "pyscf", case, "cpu", args.threads))
            runs["diffsci"].append(fresh_process.run(_worker, "diffsci", case, args.device, args.threads))
        (e_ref, ok_ref, cyc_ref, t_ref, mem_ref), (e, ok, cyc, t, mem) = (
            (*runs[tool][-1][:3], statistics.median(r[3] for r in runs[tool]), max(r[4] for r in runs[tool]))
            for tool in ("pyscf", "diffsci")
        )
        flag = "" if ok and ok_ref else " (not converged)"
        print(f"{case[0]:<26} {t_ref:8.2f} {t:9.2f} {t / t_ref:6.2f} {mem_ref:9.0f} {mem:10.0f} "
              f"{cyc_ref:>3}/{cyc:<3} {abs(e - e_ref):9.1e}{flag}", flush=True)
    print(f"ratio = diffsci / PySCF median wall time over {args.repeats} runs each; MB = peak resident memory above "
          "the worker's baseline; cycles = PySCF/diffsci.")


if __name__ == "__main__":
    main()
