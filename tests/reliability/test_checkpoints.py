"""Checkpoints of the long runs (MCMC, SVI, molecular dynamics): unreadable files raise errors that name the file
and the problem, a checkpoint never resumes another run (the error names what differs), a failing SVI step names
the step and leaves the parameters alone, and a run killed with SIGKILL resumes to the uninterrupted result, bit
for bit on the CPU. (The in-process interrupt-and-resume tests are in tests/inference/test_mcmc.py,
test_mcmc_model.py, test_svi.py and tests/bio/test_workflows.py.)"""

import argparse
import functools
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppl
import ppl.distributions as dist
from inference.autoguide import AutoNormal
from inference.checkpoint import CheckpointError
from inference.errors import NonFiniteError
from inference.mcmc import MCMC, NUTS
from inference.vi import SGD, SVI, Adam, Trace_ELBO
from ppl.errors import PPLError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DIPEPTIDE = str(ROOT / "tests" / "bio" / "data" / "alanine_dipeptide.pdb")
KILLED = -signal.SIGKILL  # the return code of a subprocess killed by SIGKILL


# ---- small runs ---------------------------------------------------------------------------------------------


def _data(n=8):
    return (torch.linspace(-1.0, 2.0, n, dtype=torch.float64),)


def _model(y):
    mu = ppl.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
    theta = ppl.sample("theta", dist.Normal(mu, 1.0).expand([y.shape[0]]).to_event(1))
    ppl.sample("y", dist.Normal(theta, 0.5).to_event(1), obs=y)


def _other_model(y):  # as many latent values as _model, other sites
    nu = ppl.sample("nu", dist.Normal(y.new_tensor(0.0), 5.0))
    eta = ppl.sample("eta", dist.Normal(nu, 1.0).expand([y.shape[0]]).to_event(1))
    ppl.sample("y", dist.Normal(eta, 0.5).to_event(1), obs=y)


def _normal(z):
    return 0.5 * (z**2).sum(-1)


def _wide_normal(z):
    return 0.125 * (z**2).sum(-1)


def _mcmc(path=None, resume=False, kill_at=None, model=_model, data=None, **settings):
    """A small NUTS run of ``model`` (2 chains, 20 + 10 iterations, checkpoints every 10); its draws.
    ``kill_at``: the iteration at which the process kills itself with SIGKILL."""
    kernel = NUTS(model)
    if kill_at is not None:
        _kill_on_call(kernel, "sample", kill_at + 1)
    config = {**dict(num_warmup=20, num_samples=10, num_chains=2, seed=5, progress_bar=False), **settings}
    mcmc = MCMC(kernel, checkpoint=path, checkpoint_every=10, **config)
    mcmc.run(*(data or _data()), resume_from=path if resume else None)
    return mcmc.get_samples()


def _mcmc_potential(path, resume=False, potential=_normal):
    mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=10, num_samples=10, num_chains=2, seed=5,
                progress_bar=False, checkpoint=path, checkpoint_every=5)
    mcmc.run(init_params=torch.zeros(3, dtype=torch.float64), resume_from=path if resume else None)


def _svi(path=None, resume=False, kill_at=None, model=_model, data=None, num_steps=40, optim=None):
    """A small SVI run (AutoNormal, Adam by default, checkpoints every 10 steps); ``(params, losses)``.
    ``kill_at``: the step during which the process kills itself with SIGKILL."""
    ppl.clear_param_store()
    torch.manual_seed(3)
    svi = SVI(model, AutoNormal(model), optim or Adam({"lr": 0.05}), Trace_ELBO())
    if kill_at is not None:
        _kill_on_call(svi, "step", kill_at)
    return svi.run(num_steps, *(data or _data()), progress_bar=False, checkpoint=path,
                   checkpoint_every=10 if path else None, resume_from=path if resume else None)


def _md_arguments(checkpoint, steps=60):
    return ["mm", "md", DIPEPTIDE, "--forcefield", "amber14-all.xml", "--steps", str(steps), "--report-interval",
            "10", "--checkpoint", str(checkpoint), "--seed", "1"]


def _md(checkpoint, kill_at=None):
    """``diffsci mm md`` of alanine dipeptide (60 steps, a checkpoint every 10); ``kill_at``: the integration
    step during which the process kills itself with SIGKILL."""
    import bio
    from diffsci.cli import main

    if kill_at is not None:
        _kill_on_call(bio.System, "energy", kill_at + 1)  # one energy for the initial state, one per step
    return main(_md_arguments(checkpoint))


@functools.cache
def _dipeptide(constraints):
    import bio

    return bio.System.from_pdb(DIPEPTIDE, forcefield=("amber14-all.xml",), constraints=constraints)


def _simulation(integrator=None, constraints="hbonds"):
    import bio

    integrator = integrator or bio.LangevinMiddleIntegrator(300, 1.0, 0.002)
    return bio.Simulation(_dipeptide(constraints), integrator, seed=1)


def _kill_on_call(owner, name, n):
    """Make the n-th call of ``owner.name`` kill this process with SIGKILL: an interrupt at an arbitrary point."""
    original = getattr(owner, name)
    calls = itertools.count(1)

    def dying(*args, **kwargs):
        if next(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, dying)


def _run_killed(call):
    """Run ``call`` (Python source calling a function of this module, bound as ``t``) in a fresh interpreter and
    check that it died of SIGKILL."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_checkpoints as t; {call}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == KILLED, result.stderr


# ---- kill and resume ----------------------------------------------------------------------------------------


def test_mcmc_killed_resumes_bit_for_bit(tmp_path):
    path = tmp_path / "mcmc.pt"
    _run_killed(f"t._mcmc({str(path)!r}, kill_at=25)")  # in the sampling phase; the checkpoint is at 20
    assert torch.load(path, weights_only=True)["state"]["iteration"] == 20
    resumed = _mcmc(path, resume=True)
    for site, value in _mcmc().items():
        assert torch.equal(resumed[site], value), site


def test_svi_killed_resumes_bit_for_bit(tmp_path):
    path = tmp_path / "svi.pt"
    _run_killed(f"t._svi({str(path)!r}, kill_at=25)")  # the checkpoint is at step 20
    assert torch.load(path, weights_only=True)["step"] == 20
    params, losses = _svi(path, resume=True)
    reference_params, reference_losses = _svi()
    assert torch.equal(losses, reference_losses)
    for name, value in reference_params.items():
        assert torch.equal(params[name], value), name


def test_md_killed_resumes_bit_for_bit(tmp_path, capsys):
    path, reference = tmp_path / "md.pt", tmp_path / "reference.pt"
    _run_killed(f"t._md({str(path)!r}, kill_at=35)")  # the checkpoint is at step 30
    assert torch.load(path, weights_only=True)["step"] == 30
    assert _md(path) == 0
    resumed_report = capsys.readouterr().out.splitlines()
    assert _md(reference) == 0
    reference_report = capsys.readouterr().out.splitlines()
    assert resumed_report[1:] == reference_report[-3:]  # steps 40, 50, 60
    resumed, uninterrupted = (torch.load(p, weights_only=True) for p in (path, reference))
    assert resumed["step"] == uninterrupted["step"] == 60
    for name in ("positions", "velocities", "rng_state"):
        assert torch.equal(resumed[name], uninterrupted[name]), name


# ---- unreadable files -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One good checkpoint file of each kind, by kind, and of an MCMC run of a model ("MCMC model")."""
    directory = tmp_path_factory.mktemp("checkpoints")
    paths = {kind: directory / f"{kind}.pt" for kind in ("MCMC", "SVI", "MD", "MCMC model")}
    _mcmc_potential(paths["MCMC"])
    _mcmc(paths["MCMC model"])
    _svi(paths["SVI"], num_steps=10)
    _simulation().save_checkpoint(paths["MD"])
    ppl.clear_param_store()
    return paths


def _resume(kind, path):
    """Resume a run of ``kind`` from ``path``."""
    if kind == "MCMC":
        _mcmc_potential(path, resume=True)
    elif kind == "SVI":
        _svi(path, resume=True, num_steps=20)
    else:
        _simulation().load_checkpoint(path)


def _malformed(name, path, checkpoints, kind):
    """Write a malformed checkpoint ``name`` to ``path``; returns what the error must say."""
    good = checkpoints[kind].read_bytes()
    if name == "missing":
        return "does not exist"
    if name == "empty":
        path.write_bytes(b"")
        return "is empty"
    if name == "truncated":
        path.write_bytes(good[: len(good) // 2])
        return "is truncated or not a torch checkpoint file"
    if name == "random bytes":
        path.write_bytes(random.Random(0).randbytes(2000))
        return "is truncated or not a torch checkpoint file"
    if name == "pickled object":
        torch.save(argparse.Namespace(kind=kind), path)
        return "holds objects other than tensors, numbers and strings"
    if name == "old format":
        torch.save({"version": 1, "config": {}, "params": {}}, path)
        return "is not a diffsci checkpoint"
    other = "SVI" if kind == "MCMC" else "MCMC"
    path.write_bytes(checkpoints[other].read_bytes())
    return f"is an {other} checkpoint, not an {kind} one"


MALFORMED = ["missing", "empty", "truncated", "random bytes", "pickled object", "old format", "another kind"]


@pytest.mark.parametrize("name", MALFORMED)
@pytest.mark.parametrize("kind", ["MCMC", "SVI", "MD"])
def test_unreadable_checkpoint_names_the_file_and_the_problem(kind, name, checkpoints, tmp_path):
    import bio

    path = tmp_path / "run.pt"
    problem = _malformed(name, path, checkpoints, kind)
    with pytest.raises(bio.BioError if kind == "MD" else CheckpointError) as error:
        _resume(kind, path)
    message = str(error.value)
    assert str(path) in message and problem in message, message
    assert "weights_only" not in message  # never the advice to unpickle the file


@pytest.mark.parametrize("name", ["missing", "empty", "random bytes", "pickled object", "another kind"])
def test_unreadable_param_store_file_names_the_file(name, checkpoints, tmp_path):
    path = tmp_path / "params.pt"
    _malformed(name, path, checkpoints, "SVI")  # "another kind": an MCMC checkpoint
    problem = "not a param store file" if name == "another kind" else "not a readable param store file"
    with pytest.raises(PPLError, match=problem) as error:
        ppl.get_param_store().load(path)
    assert str(path) in str(error.value) and "weights_only" not in str(error.value)


def test_param_store_file_names_only_ppl_constraints(tmp_path):
    """A saved state names its constraints as data: a name outside ppl.constraints is refused, not looked up."""
    store = ppl.get_param_store()
    store.clear()
    ppl.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    state = store.get_state()
    state["constraints"]["scale"] = {"name": "__class__"}
    path = tmp_path / "params.pt"
    torch.save(state, path)
    with pytest.raises(PPLError, match="unknown constraint '__class__'"):
        store.load(path)


# ---- another run ------------------------------------------------------------------------------------------


MCMC_CHANGES = {
    "data": (dict(data=(_data()[0] + 1,)), "data hash of argument 0 (y) is"),
    "data size": (dict(data=_data(9)), "the shape of site 'theta' is (8,) in the checkpoint, (9,) here"),
    "model": (dict(model=_other_model), "the shape of site 'mu' is () in the checkpoint, absent here"),
    "settings": (dict(seed=6), "seed is 5 in the checkpoint, 6 here"),
}


@pytest.mark.parametrize("change", list(MCMC_CHANGES))
def test_mcmc_resumes_only_its_own_run(change, checkpoints):
    path = checkpoints["MCMC model"]
    changed, difference = MCMC_CHANGES[change]
    with pytest.raises(CheckpointError, match="was written for another run") as error:
        _mcmc(path, resume=True, **changed)
    assert str(path) in str(error.value) and difference in str(error.value), str(error.value)


def test_mcmc_resumes_only_its_own_potential(tmp_path):
    path = tmp_path / "mcmc.pt"
    _mcmc_potential(path)
    with pytest.raises(CheckpointError, match="was written for another potential"):
        _mcmc_potential(path, resume=True, potential=_wide_normal)


SVI_CHANGES = {
    "data": (dict(data=(_data()[0] + 1,)), "data hash of argument 0 (y) is"),
    "data size": (dict(data=_data(9)), "the shape of param 'AutoNormal.locs.theta' is (8,) in the checkpoint, (9,)"),
    "model": (dict(model=_other_model), "the shape of param 'AutoNormal.locs.mu' is () in the checkpoint, absent"),
    "optimizer": (dict(optim=SGD({"lr": 0.05})), "the optimizer is Adam in the checkpoint, SGD here"),
}


@pytest.mark.parametrize("change", list(SVI_CHANGES))
def test_svi_resumes_only_its_own_run(change, tmp_path):
    path = tmp_path / "svi.pt"
    _svi(path, num_steps=10)
    changed, difference = SVI_CHANGES[change]
    with pytest.raises(CheckpointError, match="was written for another run") as error:
        _svi(path, resume=True, num_steps=20, **changed)
    assert str(path) in str(error.value) and difference in str(error.value), str(error.value)
    if change == "model":  # the checkpoint's parameters stay out of the store
        assert "AutoNormal.locs.mu" not in ppl.get_param_store()


def test_md_resumes_only_its_own_run(tmp_path):
    import bio

    path = tmp_path / "md.pt"
    _simulation().save_checkpoint(path)
    changes = [
        (_simulation(bio.LangevinMiddleIntegrator(310, 1.0, 0.002)),
         "the integrator's temperature is 300.0 in the checkpoint, 310.0 here"),
        (_simulation(bio.VerletIntegrator(0.002)), "the integrator is LangevinMiddleIntegrator in the checkpoint"),
        (_simulation(constraints=None), "the number of constraints is 12 in the checkpoint, 0 here"),
    ]
    for simulation, difference in changes:
        with pytest.raises(bio.BioError, match="was written for another run") as error:
            simulation.load_checkpoint(path)
        assert str(path) in str(error.value) and difference in str(error.value), str(error.value)
    bond = _dipeptide("hbonds").terms["HarmonicBondForce"].parameters["k"]
    original = bond.clone()
    bond.mul_(1.01)
    try:
        with pytest.raises(bio.BioError, match="the hash of the force parameters is"):
            _simulation().load_checkpoint(path)
    finally:
        bond.copy_(original)


# ---- SVI steps that fail --------------------------------------------------------------------------------------


def _correlation_model():
    """A Cholesky factorization of [[1, v], [v, 1]], which fails once the step pushes v past 1."""
    v = ppl.param("v", torch.tensor(0.5, dtype=torch.float64))
    one = torch.ones((), dtype=torch.float64)
    torch.linalg.cholesky(torch.stack([torch.stack([one, v]), torch.stack([v, one])]))
    ppl.factor("pull", 10 * v)


def _scale_model():
    """A normal scale parameter without a constraint, pushed below 0 by the first step: the loss turns NaN."""
    scale = ppl.param("scale", torch.tensor(0.5, dtype=torch.float64))
    ppl.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), scale), obs=torch.tensor(0.0))
    ppl.factor("pull", -10 * scale)


def _support_model():
    """An observation outside its distribution's support: validation fails in the first step."""
    rate = ppl.param("rate", torch.tensor(1.0, dtype=torch.float64))
    ppl.sample("x", dist.Exponential(rate), obs=torch.tensor(-1.0, dtype=torch.float64))


def _no_guide():
    pass


SVI_FAILURES = {
    "Cholesky": (_correlation_model, torch.linalg.LinAlgError, 2, "lower the learning rate"),
    "NaN loss": (_scale_model, NonFiniteError, 2, "the loss is nan"),
    "support": (_support_model, ValueError, 1, "check the model and guide"),
}


@pytest.mark.parametrize("failure", list(SVI_FAILURES))
def test_failing_svi_step_names_the_step_and_keeps_the_parameters(failure, tmp_path):
    model, error_type, step, advice = SVI_FAILURES[failure]
    path = tmp_path / "svi.pt"
    svi = SVI(model, _no_guide, SGD({"lr": 0.1}), Trace_ELBO())
    with pytest.raises(error_type, match=rf"^SVI step {step}\b") as error:
        svi.run(5, progress_bar=False, checkpoint=path, checkpoint_every=1)
    assert advice in str(error.value), str(error.value)
    store = ppl.get_param_store()
    for name, value in store.items():
        assert torch.isfinite(value).all() and store.unconstrained(name).grad is None, name
    if step > 1:  # the parameters are those of the last good step, which the checkpoint holds
        saved = torch.load(path, weights_only=True)
        assert saved["step"] == step - 1
        for name, value in saved["params"]["params"].items():
            assert torch.equal(store.unconstrained(name).detach(), value), name
