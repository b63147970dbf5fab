"""A molecular-mechanics energy inside a Bayesian model, with no glue code.

The partial charges of alanine dipeptide (amber14, OBC2 implicit solvent) are scaled by an unknown factor
``s``. We observe noisy energies of a few perturbed conformations computed with the true ``s = 0.9`` and infer
``s`` and the noise scale with SVI: `bio`'s energy is an ordinary differentiable torch function of its
parameters, so it is simply called inside the `ppl` model.

Run:  .venv/bin/python tutorials/mm_energy_in_a_bayesian_model.py [--out DIR] [--quick]

--quick takes fewer SVI steps, without a progress bar (the tests run it so). The ELBO curve goes to DIR (default
./tutorial_output/mm_energy_in_a_bayesian_model): elbo.png.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import bio  # noqa: E402
import ppl  # noqa: E402
import ppl.distributions as dist  # noqa: E402
from inference.autoguide import AutoNormal  # noqa: E402
from inference.vi import SVI, Adam, Trace_ELBO  # noqa: E402

NAME = Path(__file__).stem
PDB = Path(__file__).resolve().parents[1] / "tests" / "bio" / "data" / "alanine_dipeptide.pdb"


def main(out=f"tutorial_output/{NAME}", quick=False, seed=0):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num_steps = 400 if quick else 1000
    torch.manual_seed(seed)
    system = bio.System.from_pdb(PDB, forcefield=("amber14-all.xml", "implicit/obc2.xml"))
    charges = system.parameters["NonbondedForce"]["charge"]
    conformations = system.positions + 0.005 * torch.randn(6, *system.positions.shape, dtype=torch.float64)

    def energies(scale):
        """Energies (kJ/mol) of every conformation with the Coulomb charges scaled by ``scale``."""
        parameters = {"NonbondedForce": {"charge": charges * scale}}
        return system.energy(conformations, parameters=parameters)

    true_scale, noise = 0.9, 2.0
    observed = energies(torch.tensor(true_scale, dtype=torch.float64)) + noise * torch.randn(6, dtype=torch.float64)

    def model(observed=None):
        scale = ppl.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 0.3))
        sigma = ppl.sample("sigma", dist.HalfNormal(torch.tensor(5.0, dtype=torch.float64)))
        with ppl.plate("conformations", len(conformations)):
            ppl.sample("energy", dist.Normal(energies(scale), sigma), obs=observed)

    ppl.clear_param_store()
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO(vectorize_particles=False))
    losses = svi.run(num_steps, observed, progress_bar=not quick).losses
    quantiles = guide.quantiles([0.05, 0.5, 0.95], observed)
    low, median, high = (float(q) for q in quantiles["scale"])
    print(f"charge scale: median {median:.3f}, 90% interval [{low:.3f}, {high:.3f}] (true {true_scale})")

    files = {"elbo": out / "elbo.png"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses.numpy())
    ax.set_yscale("symlog")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("-ELBO")
    fig.tight_layout()
    fig.savefig(files["elbo"], dpi=100)
    plt.close(fig)
    print(f"plot: {files['elbo']}")
    return {"low": low, "median": median, "high": high, "true_scale": true_scale, "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=f"tutorial_output/{NAME}", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="a reduced run (as the tests run it)")
    main(**vars(parser.parse_args()))
