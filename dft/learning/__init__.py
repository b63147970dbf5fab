"""dft.learning: fit exchange-correlation functionals to data.

    from dft import learning, xc
    functional = xc.NeuralXC("pbe")
    data = learning.Dataset("6-31g*", atomization=["H2", "LiH", "N2", "O2", "NO", "CO", "F2", "HF"])
    result = learning.train(functional, data, learning.Loss(), epochs=30, checkpoint_dir="fit")
    xc.save(functional, "my-functional.pt")

``datasets`` (G2 molecules, experimental atomization and ionization energies, CCSD densities), ``losses``
(weighted terms), ``systems`` (warm-started, retried SCFs of many systems), ``train`` (the loop, checkpoints,
reports), ``config`` (the TOML file of ``diffsci fit-xc``).
"""

from .datasets import Dataset, atomization_energy, g2_names
from .losses import Evaluation, Loss, atomization_energies, evaluate, mean_absolute_error
from .systems import Calculations, SCFFailed
from .train import TrainingResult, format_report, plot_history, train

__all__ = ["Calculations", "Dataset", "Evaluation", "Loss", "SCFFailed", "TrainingResult", "atomization_energies",
           "atomization_energy", "evaluate", "format_report", "g2_names", "mean_absolute_error", "plot_history", "train"]
