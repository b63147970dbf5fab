"""Stochastic variational inference: fit a guide to a model by stochastic gradient steps on an ELBO.

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    for step in range(1000):
        loss = svi.step(x, y)                                      # Pyro's loop, or:
    params, losses = svi.run(1000, x, y, checkpoint="svi.pt", checkpoint_every=100)

The parameters are those of the param store (:func:`ppl.get_param_store`) that the model and guide read in a
step; the optimizer updates their unconstrained tensors. A checkpoint holds the param store, the optimizer's
and the loss's state, the random number generators' state, the step count and the loss history (tensors,
numbers and strings only: loaded with ``torch.load(weights_only=True)``), so ``run(..., resume_from=path)``
continues exactly as the uninterrupted run would have. It also records what it continues (see
``inference.checkpoint``): the names and shapes of the parameters a step reads (an autoguide's are named after
the model's latent sites), hashes of the model's arguments, the optimizer's and the loss's types and the number
of particles; resuming another run raises ``CheckpointError`` naming what differs.

A step that fails stops the run with an error naming the step, and leaves the parameters as the previous step
left them (no update with NaN): a NaN or infinite loss raises ``NonFiniteError`` before the optimizer steps; a
``ValueError`` or ``RuntimeError`` (e.g. ``torch.linalg.LinAlgError``) raised in the model or guide is raised
again as the same type with the step and a remedy added to its message (Pyro lets such errors through
unchanged), the original as its ``__cause__``.
"""

import math
from collections import namedtuple

import torch
from tqdm.auto import tqdm

from inference import checkpoint as checkpoints
from inference.errors import InferenceError, NonFiniteError
from inference.vi.elbo import ELBO, _ParamNames
from inference.vi.optim import LRScheduler, PyroOptim
from ppl.handlers import block
from ppl.params import get_param_store

__all__ = ["SVI", "SVIRunResult"]

CHECKPOINT_VERSION = 2

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
        self._param_names = []  # the parameters the last step (or resume) read, for the checkpoint's fingerprint

    def step(self, *args, **kwargs):
        """One gradient step on the loss with the model's arguments; returns the loss estimate (a float).

        A step that fails leaves the parameters as they were (see the module docstring).

        Raises:
            NonFiniteError: the loss is NaN or infinite.
            ValueError, RuntimeError: raised by the model or guide (e.g. a distribution's argument outside its
                support, ``torch.linalg.LinAlgError`` from the Cholesky factorization of a matrix that is not
                positive definite): the same type, its message prefixed with the step number and what to do.
        """
        step = self.num_steps + 1
        with _ParamNames() as capture:
            try:
                loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
            except (ValueError, RuntimeError) as error:
                _drop_grads(capture.names)
                raise _step_error(error, step) from error
        if not math.isfinite(loss):
            _drop_grads(capture.names)
            raise NonFiniteError(
                f"SVI step {step}: the loss is {loss}. Check the model's log-densities at the guide's draws "
                "(initial values, init_scale), or lower the learning rate; ClippedAdam limits step sizes."
            )
        store = get_param_store()
        self.optim([(name, store.unconstrained(name)) for name in capture.names])
        self._param_names = list(capture.names)
        self.num_steps = step
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
                random number generators, step count and loss history are restored from it); it must have been
                written by a run of the same model, guide, arguments and settings.

        Raises:
            CheckpointError: ``resume_from`` is unreadable, or was written for another run (the message names
                what differs; the param store is then left without the checkpoint's parameters).
            NonFiniteError, ValueError, RuntimeError: a step failed (see :meth:`step`).
        """
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(
                f"SVI.run: num_steps must be a positive integer, got {num_steps!r}. (NumPyro's svi.run(rng_key, "
                "num_steps, ...) takes a random key first; here give num_steps first and seed with "
                "ppl.handlers.seed or torch.manual_seed.)"
            )
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"SVI.run: checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
        if checkpoint_every is not None and checkpoint is None:
            raise ValueError("SVI.run: checkpoint_every needs a checkpoint path.")
        losses = []
        data = None  # the arguments' hashes, for checkpoints
        if checkpoint is not None or resume_from is not None:
            data = checkpoints.argument_digests(self.model, args, kwargs)
        if resume_from is not None:
            losses = self._resume(resume_from, args, kwargs, data)
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
                    self._save(checkpoint, losses, data)
                if progress_bar and ((step + 1) % refresh == 0 or step + 1 == num_steps):
                    bar.update(step + 1 - bar.n)
                    bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if checkpoint is not None:
            self._save(checkpoint, losses, data)
        params = {name: value.detach() for name, value in get_param_store().items()}
        return SVIRunResult(params, torch.tensor(losses, dtype=torch.float64))

    def _fingerprint(self, data):
        """What a checkpoint continues: the types of the optimizer (and scheduler) and the loss, the number of
        particles, the shapes of the parameters a step reads and ``data`` (the arguments' hashes)."""
        store = get_param_store()
        optimizer = self.optim.optim_constructor.__name__.lstrip("_")
        if isinstance(self.optim, LRScheduler):
            optimizer += f" with {self.optim.scheduler_constructor.__name__}"
        fingerprint = {"the optimizer": optimizer, "the loss": type(self.loss).__name__,
                       "num_particles": self.loss.num_particles}
        for name in self._param_names:
            fingerprint[f"the shape of param '{name}'"] = tuple(store[name].shape)
        return {**fingerprint, **data}

    def _save(self, path, losses, data):
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
        checkpoints.save(path, "SVI", CHECKPOINT_VERSION, self._fingerprint(data), state)

    def _resume(self, path, args, kwargs, data):
        state = checkpoints.load(path, "SVI", CHECKPOINT_VERSION)
        # One silent evaluation builds what the first step builds lazily (autoguide prototypes, plate nesting) and
        # finds the parameters this run reads, before the checkpoint's enter the store (they replace the ones it
        # created); it draws random numbers, so the generators are restored after it.
        with block(), _ParamNames() as capture:
            self.loss.loss(self.model, self.guide, *args, **kwargs)
        self._param_names = list(capture.names)
        checkpoints.check(path, state, self._fingerprint(data), "Resume with the model, guide, arguments and "
                          "settings it was written for, or start afresh without resume_from.")
        get_param_store().set_state(state["params"])
        self.optim.load_state_dict(state["optim"])
        self.loss.load_state_dict(state["loss"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.num_steps = int(state["step"])
        return state["losses"].tolist()


def _drop_grads(names):
    """Forget the gradients a failed step accumulated into the parameters ``names``."""
    store = get_param_store()
    for name in names:
        store.unconstrained(name).grad = None


def _step_error(error, step):
    """``error``, raised by the model or guide in step ``step``, as the same type with a message that names the
    step and what to do (an :class:`InferenceError` for a type that is not built from a message alone)."""
    message = (
        f"SVI step {step} failed in the model or guide: {error}\n"
        "The parameters are left as the previous step left them. If the values of earlier steps were fine, the "
        "optimizer moved a parameter out of the model's domain (a scale or covariance no longer valid, a matrix "
        "no longer positive definite): lower the learning rate, use ClippedAdam, or constrain the parameter "
        "(ppl.param(..., constraint=...)); otherwise check the model and guide with these arguments."
    )
    try:
        return type(error)(message)
    except TypeError:
        return InferenceError(message)
