"""The training loop: fit a functional to a dataset by gradient descent through self-consistent calculations.

Each epoch is one full-batch step: every SCF of the training data (warm-started from the previous epoch's
densities), the loss and its gradient (exact at the converged SCFs), one optimizer step; then the validation
data are evaluated with the updated functional. With validation data the functional kept at the end is the one
with the lowest validation atomization-energy MAE (early stopping); without, the last one.

Checkpoints (``checkpoint_dir/training.pt``, written every epoch through ``inference.checkpoint``) hold the
functional, the optimizer's state, the warm-start densities, the history and the best state: a killed run
resumed with the same arguments continues exactly where it stopped (``epochs`` may be raised to train longer).
"""

import json
import math
import os
import time
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from inference import checkpoint

from ..xc.functional import XCFunctional
from ..xc.io import restore_state, state_of
from .losses import Loss, atomization_energies, evaluate, mean_absolute_error
from .systems import Calculations, system_label

CHECKPOINT_KIND = "XC-TRAINING"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "training.pt"


@dataclass
class TrainingResult:
    """What :func:`train` returns: the trained ``functional`` (best epoch's parameters), ``history`` (one dict
    per epoch: epoch, loss, terms, train_mae, validation_mae [kcal/mol], skipped, seconds), ``best_epoch``
    (0: the start was best) and ``report`` (one dict per molecule: set, name, start, learned, reference
    [kcal/mol])."""

    functional: XCFunctional
    history: list
    best_epoch: int
    report: list = field(default_factory=list)


def _mae(evaluation):
    return mean_absolute_error(evaluation.predictions.get("atomization", {}))


def _dms_to_plain(dms):
    return {f"{name}|{charge}": dm for (name, charge), dm in dms.items()}


def _dms_from_plain(plain):
    return {(key.rsplit("|", 1)[0], int(key.rsplit("|", 1)[1])): dm for key, dm in plain.items()}


def train(functional, dataset, loss=None, optimizer=None, epochs=50, checkpoint_dir=None, validation=None, lr=1e-3,
          progress=True, device=None, grid_level=3, conv_tol=1e-8, max_cycle=60):
    """Fit ``functional`` (trained in place) to ``dataset``.

    Args:
        functional: an ``XCFunctional`` with trainable parameters: a :class:`dft.xc.NeuralXC`, or a named
            functional whose constants were made trainable (``get_functional("pbe")`` then
            ``.components[0].make_trainable("kappa", "mu")``).
        dataset: :class:`dft.learning.Dataset` (the training data and the basis).
        loss: :class:`dft.learning.Loss` (term weights; default: all energy and density terms with weight 1).
        optimizer: a ``torch.optim.Optimizer`` over the functional's parameters (default Adam with ``lr``).
        epochs: total number of epochs (full-batch steps); a resumed run continues up to this number.
        checkpoint_dir: folder for the checkpoint (resumed from when it holds one of this run); None: none.
        validation: :class:`dft.learning.Dataset` whose atomization-energy MAE selects the best epoch.
        progress: show a progress bar (loss terms, MAEs, skipped systems).
        device, grid_level, conv_tol, max_cycle: settings of every SCF.

    Returns:
        :class:`TrainingResult`; ``functional.basis`` is set to the dataset's basis and ``functional.metadata``
        records the data, settings and errors, so that ``dft.xc.save`` stores them.

    Raises:
        ValueError: no trainable parameter, nothing to evaluate (every SCF failed), or a non-finite loss or
            gradient (naming the epoch).
        inference.checkpoint.CheckpointError: a checkpoint in ``checkpoint_dir`` written for another run.
    """
    loss = Loss() if loss is None else loss
    parameters = [p for p in functional.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the functional has no trainable parameters: use dft.xc.NeuralXC, or make constants "
                         "trainable (functional.components[i].make_trainable('kappa'), functional.make_trainable("
                         "'hyb'))")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if validation is not None and validation.basis != dataset.basis:
        raise ValueError(f"validation basis {validation.basis!r} differs from the training basis {dataset.basis!r}")
    optimizer = torch.optim.Adam(parameters, lr=lr) if optimizer is None else optimizer
    base = getattr(functional, "config", {}).get("base", "pbe")
    options = {"grid_level": grid_level, "conv_tol": conv_tol, "max_cycle": max_cycle, "device": device, "base": base}
    calculations = Calculations(functional, dataset.basis, **options)
    checks = Calculations(functional, dataset.basis, **options) if validation is not None else None
    validation_loss = Loss(atomization=1.0, ionization=0.0, total_energy=0.0, density=0.0)

    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
    fingerprint = {
        "functional": json.dumps(getattr(functional, "config", {"name": functional.name}), sort_keys=True),
        "parameters": ", ".join(name for name, p in functional.named_parameters() if p.requires_grad),
        "dataset": checkpoint.digest(astuple(dataset)),
        "validation": checkpoint.digest(None if validation is None else astuple(validation)),
        "loss": checkpoint.digest(astuple(loss)),
        "optimizer": type(optimizer).__name__,
        "SCF settings": checkpoint.digest([grid_level, conv_tol, max_cycle]),
    }
    history, start, best = [], 0, None
    if path is not None and path.exists():
        payload = checkpoint.load(path, CHECKPOINT_KIND, CHECKPOINT_VERSION, map_location=device)
        checkpoint.check(path, payload, fingerprint, "Use another checkpoint_dir, or delete the file to start afresh.")
        restore_state(functional, payload["state"])
        optimizer.load_state_dict(payload["optimizer"])
        calculations.dms = _dms_from_plain(payload["dms"])
        if checks is not None:
            checks.dms = _dms_from_plain(payload["validation_dms"])
        history = json.loads(payload["history"])
        best = (payload["best_epoch"], payload["best_value"], payload["best_state"])
        start = history[-1]["epoch"]
    if best is None:  # epoch 0: the starting functional on the validation data
        value = math.inf
        if validation is not None:
            with torch.no_grad():
                value = _mae(evaluate(validation_loss, validation, checks))
        best = (0, value, state_of(functional))
        history = [{"epoch": 0, "validation_mae": value if validation is not None else None}]

    bar = tqdm(range(start, epochs), desc="fit-xc", unit="epoch", disable=not progress, initial=start, total=epochs)
    for epoch in bar:
        started = time.perf_counter()
        optimizer.zero_grad()
        evaluation = evaluate(loss, dataset, calculations)
        total = evaluation.total
        loss_value = float(total.detach())
        if not math.isfinite(loss_value):
            raise ValueError(f"epoch {epoch + 1}: the loss is {loss_value} (terms {evaluation.terms})")
        total.backward()
        bad = [name for name, p in functional.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise ValueError(f"epoch {epoch + 1}: non-finite gradient of {', '.join(bad)}")
        optimizer.step()
        record = {"epoch": epoch + 1, "loss": loss_value, "terms": evaluation.terms, "train_mae": _mae(evaluation),
                  "skipped": sorted(system_label(s) for s in evaluation.skipped)}
        if validation is not None:
            with torch.no_grad():
                validated = evaluate(validation_loss, validation, checks)
            record["validation_mae"] = _mae(validated)
            record["skipped"] += sorted(system_label(s) for s in validated.skipped)
            value = record["validation_mae"]
        else:
            value = -epoch  # no validation: the last epoch is kept
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if value < best[1]:
            best = (epoch + 1, value, state_of(functional))
        bar.set_postfix(loss=f"{record['loss']:.3g}", train=f"{record['train_mae']:.2f}",
                        **({"val": f"{record['validation_mae']:.2f}"} if validation is not None else {}),
                        **({"skipped": len(record["skipped"])} if record["skipped"] else {}))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save(path, CHECKPOINT_KIND, CHECKPOINT_VERSION, fingerprint, {
                "state": state_of(functional), "optimizer": optimizer.state_dict(),
                "dms": _dms_to_plain(calculations.dms),
                "validation_dms": _dms_to_plain(checks.dms) if checks is not None else {},
                "history": json.dumps(history), "best_epoch": best[0], "best_value": best[1], "best_state": best[2]})
    bar.close()

    restore_state(functional, best[2])
    report = _report(functional, dataset, validation, options)
    functional.basis = dataset.basis
    functional.metadata = {
        "basis": dataset.basis, "training": list(dataset.atomization), "validation":
        list(validation.atomization) if validation is not None else [], "epochs": len(history) - 1,
        "best_epoch": best[0], "loss": asdict(loss),
        "train_mae": _report_mae(report, "train", "learned"), "validation_mae": _report_mae(report, "validation", "learned")}
    return TrainingResult(functional, history, best[0], report)


def _report_mae(report, which, column):
    """MAE [kcal/mol] of the ``column`` ("start" or "learned") of the report's rows of set ``which``; None if none."""
    table = {row["name"]: (row[column], row["reference"]) for row in report if row["set"] == which}
    return mean_absolute_error(table) if table else None


def _report(functional, dataset, validation, options):
    """Per-molecule atomization energies [kcal/mol]: the starting functional, the learned one, the reference."""
    start = getattr(functional, "config", {}).get("base", functional.name)
    rows = []
    for which, data in (("train", dataset), ("validation", validation)):
        if data is None or not data.atomization:
            continue
        values = {label: atomization_energies(f, data.atomization, data.basis, **options)
                  for label, f in (("start", start), ("learned", functional))}
        for name in data.atomization:
            if name in values["start"] and name in values["learned"]:
                rows.append({"set": which, "name": name, "start": values["start"][name][0],
                             "learned": values["learned"][name][0], "reference": values["learned"][name][1]})
    return rows


def format_report(report):
    """The per-molecule report of :func:`train` as a text table (kcal/mol), with the MAE of each set."""
    lines = [f"{'set':10s} {'molecule':12s} {'start':>9s} {'learned':>9s} {'reference':>9s} {'err start':>9s} "
             f"{'err learned':>11s}"]
    for row in report:
        lines.append(f"{row['set']:10s} {row['name']:12s} {row['start']:9.2f} {row['learned']:9.2f} "
                     f"{row['reference']:9.2f} {row['start'] - row['reference']:9.2f} "
                     f"{row['learned'] - row['reference']:11.2f}")
    for which in ("train", "validation"):
        count = sum(row["set"] == which for row in report)
        if count:
            lines.append(f"{which} MAE over {count} molecules: start {_report_mae(report, which, 'start'):.2f}, "
                         f"learned {_report_mae(report, which, 'learned'):.2f} kcal/mol")
    return "\n".join(lines)


def plot_history(history, path):
    """Training curve PNG at ``path``: the loss and the atomization-energy MAEs per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history if "loss" in h]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.semilogy(epochs, [h["loss"] for h in history if "loss" in h])
    left.set(xlabel="epoch", ylabel="loss", title="training loss")
    right.plot(epochs, [h["train_mae"] for h in history if "loss" in h], label="train (before the step)")
    if any(h.get("validation_mae") is not None for h in history):
        right.plot([h["epoch"] for h in history], [h["validation_mae"] for h in history], label="validation")
    right.set(xlabel="epoch", ylabel="atomization-energy MAE (kcal/mol)", title="errors")
    right.legend()
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=100)
    plt.close(figure)
    return Path(path)

