"""Stochastic variational inference: fit a guide to a model by stochastic gradient steps on an ELBO.

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    for step in range(1000):
        loss = svi.step(x, y)                                      # Pyro's loop, or:
    params, losses = svi.run(1000, x, y, checkpoint="svi.pt", checkpoint_every=100)

The parameters are those of the param store (:func:`ppl.get_param_store`) that the model and guide read in a
step; the optimizer updates their unconstrained tensors. A checkpoint holds the param store, the optimizer's
and the loss's state, the random number generators' state, the step count and the loss history (tensors,
numbers and strings only: loaded with ``torch.load(weights_only=True)``), so ``run(..., resume_from=path)``
continues exactly as the uninterrupted run would have.
"""

import math
import os
from collections import namedtuple

import torch
from tqdm.auto import tqdm

from inference.errors import NonFiniteError
from inference.vi.elbo import ELBO, _ParamNames
from inference.vi.optim import LRScheduler, PyroOptim
from ppl.handlers import block
from ppl.params import get_param_store

__all__ = ["SVI", "SVIRunResult"]

SVIRunResult = namedtuple("SVIRunResult", ["params", "losses"])
SVIRunResult.__doc__ = """What :meth:`SVI.run` returns: ``params`` (constrained values of the param store, detached,
by name) and ``losses`` (the loss of every step, a float64 tensor of shape ``(num_steps,)``)."""


class SVI:
    """Stochastic variational inference (Pyro's ``SVI``).

    Args:
        model: a model function.
        guide: a guide function (or an autoguide from :mod:`inference.autoguide`) with the model's signature.
        optim: an optimizer from :mod:`inference.vi.optim`, e.g. ``Adam({"lr": 0.01})``.
        loss: an ELBO from :mod:`inference.vi.elbo`, e.g. ``Trace_ELBO()``.
    """

    def __init__(self, model, guide, optim, loss):
        if not isinstance(optim, PyroOptim):
            raise TypeError(
                f"SVI: optim must be an optimizer from inference.vi.optim (e.g. Adam({{'lr': 0.01}})), got "
                f"{type(optim).__name__}; wrap a torch optimizer class with PyroOptim(torch.optim.X, {{...}})."
            )
        if not isinstance(loss, ELBO):
            raise TypeError(f"SVI: loss must be an ELBO (e.g. Trace_ELBO()), got {type(loss).__name__}.")
        self.model = model
        self.guide = guide
        self.optim = optim
        self.loss = loss
        self.num_steps = 0

    def step(self, *args, **kwargs):
        """One gradient step on the loss with the model's arguments; returns the loss estimate (a float).

        Raises:
            NonFiniteError: the loss is NaN or infinite (the parameters are left as they were).
        """
        with _ParamNames() as capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        store = get_param_store()
        params = [(name, store.unconstrained(name)) for name in capture.names]
        if not math.isfinite(loss):
            for _, tensor in params:
                tensor.grad = None
            raise NonFiniteError(
                f"SVI step {self.num_steps + 1}: the loss is {loss}. Check the model's log-densities at the guide's "
                "draws (initial values, init_scale), or lower the learning rate; ClippedAdam limits step sizes."
            )
        self.optim(params)
        self.num_steps += 1
        return loss

    def evaluate_loss(self, *args, **kwargs):
        """An estimate of the loss (a float), without gradients or parameter updates."""
        return self.loss.loss(self.model, self.guide, *args, **kwargs)

    def run(self, num_steps, *args, progress_bar=True, checkpoint=None, checkpoint_every=None, resume_from=None,
            **kwargs):
        """Take steps until ``num_steps`` in total, and return :class:`SVIRunResult` ``(params, losses)``.

        A scheduler optimizer (e.g. ``ExponentialLR``) advances once per step.

        Args:
            num_steps: the total number of steps (a resumed run continues from the checkpoint's step).
            *args, **kwargs: the model's arguments.
            progress_bar: show a tqdm bar with the loss.
            checkpoint: a path written every ``checkpoint_every`` steps (if given) and at the end.
            checkpoint_every: steps between checkpoints.
            resume_from: a checkpoint path to continue from (the param store's entries, optimizer, loss state,
                random number generators, step count and loss history are restored from it).
        """
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"SVI.run: checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
        if checkpoint_every is not None and checkpoint is None:
            raise ValueError("SVI.run: checkpoint_every needs a checkpoint path.")
        losses = []
        if resume_from is not None:
            losses = self._resume(resume_from, args, kwargs)
        start = len(losses)
        if start > num_steps:
            raise ValueError(f"SVI.run: the checkpoint is at step {start}, beyond num_steps={num_steps}.")
        refresh = max(1, (num_steps - start) // 100)
        with tqdm(total=num_steps, initial=start, desc="SVI", disable=not progress_bar) as bar:
            for step in range(start, num_steps):
                losses.append(self.step(*args, **kwargs))
                if isinstance(self.optim, LRScheduler):
                    self.optim.step()
                if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
                    self._save(checkpoint, losses)
                if progress_bar and ((step + 1) % refresh == 0 or step + 1 == num_steps):
                    bar.update(step + 1 - bar.n)
                    bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if checkpoint is not None:
            self._save(checkpoint, losses)
        params = {name: value.detach() for name, value in get_param_store().items()}
        return SVIRunResult(params, torch.tensor(losses, dtype=torch.float64))

    def _save(self, path, losses):
        state = {
            "step": len(losses),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "params": get_param_store().get_state(),
            "optim": self.optim.state_dict(),
            "loss": self.loss.state_dict(),
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            },
        }
        temporary = f"{path}.tmp"
        torch.save(state, temporary)
        os.replace(temporary, path)

    def _resume(self, path, args, kwargs):
        state = torch.load(path, weights_only=True)
        get_param_store().set_state(state["params"])
        self.optim.load_state_dict(state["optim"])
        self.loss.load_state_dict(state["loss"])
        # One silent evaluation builds what the first step builds lazily (autoguide prototypes, plate nesting);
        # it draws random numbers, so the generators are restored after it.
        with block():
            self.loss.loss(self.model, self.guide, *args, **kwargs)
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.num_steps = int(state["step"])
        return state["losses"].tolist()
