"""Vina scoring throughput: bio.vina_score (batched, explicit atom pairs) vs the vina package, in one run.

Complex: PDB 1s3v from the posebusters package data (receptor prepared by bio.Receptor.from_pdb, crystal
ligand); poses are the crystal pose with random rigid moves (0.5 Å, 0.2 rad) rounded to 0.001 Å. The vina
package scores one pose per call: the ligand PDBQT is set from a string (vina has no call that only moves the
ligand) and score() evaluates it on explicit receptor atoms; the maps it requires are computed once. bio
scores B = 1, 64, 1024 poses per call (score only, and score + gradient w.r.t. the coordinates).

Prints poses per second and the ratio bio / vina.

    python benchmarks/scoring.py [--quick] [--device cpu|cuda] [--dtype float64|float32] [--threads N]
"""

import argparse
import importlib.util
import os
import platform
import time
import warnings

import torch

import bio


def posebusters(pdb_id, name):
    package, = importlib.util.find_spec("posebusters").submodule_search_locations
    return os.path.join(package, "datasets", "pdb", pdb_id, f"{pdb_id}_{name}")


def random_poses(x, count, generator):
    center = x.mean(0)
    axis = torch.randn(count, 3, generator=generator, dtype=x.dtype)
    axis = axis / axis.norm(dim=1, keepdim=True)
    angle = 0.2 * torch.rand(count, 1, 1, generator=generator, dtype=x.dtype)
    k = torch.zeros(count, 3, 3, dtype=x.dtype)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    rotation = torch.eye(3, dtype=x.dtype) + torch.sin(angle) * k + (1 - torch.cos(angle)) * k @ k
    shift = 0.5 * (2 * torch.rand(count, 1, 3, generator=generator, dtype=x.dtype) - 1)
    poses = (x - center) @ rotation.transpose(1, 2) + center + shift
    return torch.round(poses * 1000) / 1000


def rate(function, count, seconds=2.0):
    """Poses per second: calls repeated for about `seconds` after a warm-up call."""
    function()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        function()
        calls += 1
    return count * calls / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B = 1, 64 only and shorter timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vina import Vina

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        receptor = bio.Receptor.from_pdb(posebusters("1s3v", "protein_one_lig_removed.pdb"))
    ligand, = bio.Ligand.from_sdf(posebusters("1s3v", "ligand.sdf"))
    x = ligand.conformers_angstrom[0]
    center, size = x.mean(0).tolist(), [24.0, 24.0, 24.0]
    dtype = getattr(torch, args.dtype)
    score = bio.vina_score(ligand, receptor, center=center, size=size, device=args.device, dtype=dtype)
    sizes = (1, 64) if args.quick else (1, 64, 1024)
    seconds = 1.0 if args.quick else 2.0
    poses = random_poses(x, max(sizes), torch.Generator().manual_seed(0))

    path = "/tmp/diffsci_benchmark_receptor.pdbqt"
    receptor.write_pdbqt(path)
    vina = Vina(sf_name="vina", cpu=1, seed=1, verbosity=0)
    vina.set_receptor(path)
    setup = ligand.autodock()
    texts = [setup.pdbqt(p) for p in poses[:64]]
    vina.set_ligand_from_string(texts[0])
    vina.compute_vina_maps(center=center, box_size=size, spacing=0.375)
    state = {"k": 0}

    def vina_one():
        vina.set_ligand_from_string(texts[state["k"] % len(texts)])
        state["k"] += 1
        return vina.score()

    vina_rate = rate(vina_one, 1, seconds)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"device {args.device}, {args.dtype}; ligand {len(ligand)} atoms, "
          f"{len(score.receptor_index)} pocket receptor atoms")
    print(f"vina package, one pose per call (set_ligand_from_string + score): {vina_rate:10.1f} poses/s")
    print(f"{'B':>6} {'bio score':>14} {'ratio':>8} {'bio score+grad':>16} {'ratio':>8}")
    for b in sizes:
        batch = poses[:b].to(device=args.device, dtype=dtype)

        def forward():
            with torch.no_grad():
                value = score(batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return value

        def backward():
            y = batch.clone().requires_grad_()
            grad, = torch.autograd.grad(score(y).sum(), y)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return grad

        f, g = rate(forward, b, seconds), rate(backward, b, seconds)
        print(f"{b:>6} {f:>10.1f} /s {f / vina_rate:>7.2f}x {g:>12.1f} /s {g / vina_rate:>7.2f}x")


if __name__ == "__main__":
    main()
