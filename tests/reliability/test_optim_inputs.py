"""Bad hyperparameters of the optimizers are refused when the optimizer is made, with a one-line message naming
the argument, its value and the allowed range: SVI's optimizers (``inference.vi.optim``) and
``inference.optim.minimize``. A table of hand-written cases, and property-based checks over random values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl
import ppl.distributions as dist
from inference.autoguide import AutoNormal
from inference.optim import check_number, minimize
from inference.vi import (SGD, SVI, Adam, AdamW, ClippedAdam, CosineAnnealingLR, ExponentialLR, MultiStepLR,
                          RMSprop, StepLR, Trace_ELBO)

NAN, INF = float("nan"), float("inf")
# Modest and self-contained: no example database written into the working tree; fresh random examples each run.
FUZZ = settings(max_examples=100, deadline=None, database=None)


def _scheduler(factory, **args):
    return lambda: factory({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, **args})


# (make the optimizer, exception, what the message must name)
OPTIMIZERS = [
    (lambda: ClippedAdam({"lr": -0.1}), ValueError, "lr"),  # used to climb the loss silently
    (lambda: ClippedAdam({"lr": NAN}), ValueError, "lr"),  # used to turn the parameters into NaN
    (lambda: ClippedAdam({"lr": 0.1, "lrd": 0.0}), ValueError, "lrd"),
    (lambda: ClippedAdam({"lr": 0.1, "lrd": 1.5}), ValueError, "lrd"),
    (lambda: ClippedAdam({"lr": 0.1, "clip_norm": 0.0}), ValueError, "clip_norm"),
    (lambda: ClippedAdam({"lr": 0.1, "clip_norm": -INF}), ValueError, "clip_norm"),
    (lambda: Adam({"lr": -1e-3}), ValueError, "lr"),
    (lambda: Adam({"lr": NAN}), ValueError, "lr"),
    (lambda: Adam({"lr": INF}), ValueError, "lr"),
    (lambda: Adam({"lr": "0.01"}), ValueError, "lr"),
    (lambda: Adam({"lr": True}), ValueError, "lr"),
    (lambda: Adam({"lr": torch.tensor(NAN)}), ValueError, "lr"),
    (lambda: Adam({"lr": 0.1, "betas": (0.9, 1.0)}), ValueError, "betas[1]"),
    (lambda: Adam({"lr": 0.1, "betas": (-0.1, 0.999)}), ValueError, "betas[0]"),
    (lambda: Adam({"lr": 0.1, "betas": 0.9}), ValueError, "betas"),
    (lambda: Adam({"lr": 0.1, "eps": 0.0}), ValueError, "eps"),
    (lambda: Adam({"lr": 0.1, "weight_decay": -1.0}), ValueError, "weight_decay"),
    (lambda: Adam({"learning_rate": 0.1}), TypeError, "learning_rate"),  # used to train with lr=1e-3 silently
    (lambda: Adam({"lr": 0.1}, {"clip_norm": 0.0}), ValueError, "clip_norm"),
    (lambda: Adam({"lr": 0.1}, {"clip_value": NAN}), ValueError, "clip_value"),
    (lambda: AdamW({"lr": -0.1}), ValueError, "lr"),
    (lambda: SGD({"lr": NAN}), ValueError, "lr"),
    (lambda: SGD({"lr": 0.1, "momentum": -0.5}), ValueError, "momentum"),
    (lambda: SGD({"lr": 0.1, "momentum": 1.0}), ValueError, "momentum"),
    (lambda: SGD({"lr": 0.1, "dampening": 2.0}), ValueError, "dampening"),
    (lambda: RMSprop({"lr": 0.1, "alpha": 1.0}), ValueError, "alpha"),
    (_scheduler(ExponentialLR, gamma=0.0), ValueError, "gamma"),
    (_scheduler(ExponentialLR, gamma=NAN), ValueError, "gamma"),
    (_scheduler(ExponentialLR, gama=0.9), TypeError, "gama"),
    (_scheduler(StepLR, step_size=0), ValueError, "step_size"),
    (_scheduler(StepLR, step_size=2.5), ValueError, "step_size"),
    (_scheduler(MultiStepLR, milestones=[2], gamma=-1.0), ValueError, "gamma"),
    (_scheduler(CosineAnnealingLR, T_max=0), ValueError, "T_max"),
    (_scheduler(CosineAnnealingLR, T_max=10, eta_min=-1.0), ValueError, "eta_min"),
    (lambda: ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": -1.0}, "gamma": 0.9}),
     ValueError, "lr"),
]


@pytest.mark.parametrize("make, error, name", OPTIMIZERS)
def test_svi_optimizer_refuses_bad_hyperparameters(make, error, name):
    with pytest.raises(error) as raised:
        make()
    message = str(raised.value)
    assert name in message and "\n" not in message


@pytest.mark.parametrize("make", [
    lambda: Adam({"lr": 0.0}),  # lr = 0 freezes (per-parameter optim_args use it)
    lambda: Adam({"lr": torch.tensor(0.01), "betas": (0.0, 0.0)}),
    lambda: ClippedAdam({"lr": 0.01, "lrd": 1.0, "clip_norm": 1e-3}),
    lambda: SGD({"lr": 1, "momentum": 0.9, "nesterov": True}),
    _scheduler(StepLR, step_size=3.0, gamma=2.0),
])
def test_svi_optimizer_accepts_edge_values(make):
    make()


def _one_step(optim):
    x = torch.ones(2, requires_grad=True)
    (x * x).sum().backward()
    optim([("x", x)])
    return x.detach()


def test_per_parameter_hyperparameters_are_checked_before_the_first_step():
    optim = ClippedAdam(lambda name: {"lr": NAN if name == "x" else 0.1})
    x = torch.ones(2, requires_grad=True)
    (x * x).sum().backward()
    with pytest.raises(ValueError, match=r"ClippedAdam \(parameter 'x'\): lr must be a finite number >= 0, got nan"):
        optim([("x", x)])
    assert torch.equal(x.detach(), torch.ones(2))


def test_svi_step_with_a_nan_learning_rate_leaves_the_parameters_finite():
    def model():
        ppl.sample("z", dist.Normal(torch.tensor(0.0), torch.tensor(1.0)))

    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam(lambda name: {"lr": NAN}), Trace_ELBO())
    with pytest.raises(ValueError, match="lr"):
        svi.step()
    store = ppl.get_param_store()
    assert all(bool(torch.isfinite(store.unconstrained(name)).all()) for name in store.keys())


# minimize(fn, x0, **kwargs): (kwargs, exception, what the message must name)
MINIMIZE = [
    (dict(tol=-1e-6), ValueError, "tol"),
    (dict(tol=NAN), ValueError, "tol"),
    (dict(max_steps=-1), ValueError, "max_steps"),
    (dict(max_steps=2.5), ValueError, "max_steps"),
    (dict(max_steps="10"), ValueError, "max_steps"),
    (dict(callback=5), TypeError, "callback"),
    (dict(method="adam", lr=-0.1), ValueError, "lr"),
    (dict(method="adam", lr=NAN), ValueError, "lr"),
    (dict(method="adam", betas=(1.0, 0.999)), ValueError, "betas[0]"),
    (dict(method="adam", betas=(0.9,)), ValueError, "betas"),
    (dict(method="adam", eps=0.0), ValueError, "eps"),
    (dict(method="fire", dt=0.0), ValueError, "dt"),
    (dict(method="fire", dt_max=-1.0), ValueError, "dt_max"),
    (dict(method="fire", max_step=INF), ValueError, "max_step"),
    (dict(method="fire", n_min=-1), ValueError, "n_min"),
    (dict(method="fire", f_inc=0.9), ValueError, "f_inc"),
    (dict(method="fire", f_dec=1.0), ValueError, "f_dec"),
    (dict(method="fire", alpha_start=1.5), ValueError, "alpha_start"),
    (dict(method="fire", f_alpha=0.0), ValueError, "f_alpha"),
    (dict(method="lbfgs", history_size=0), ValueError, "history_size"),
    (dict(method="lbfgs", max_linesearch=0.5), ValueError, "max_linesearch"),
]


def _quadratic(x):
    return (x * x).sum()


@pytest.mark.parametrize("kwargs, error, name", MINIMIZE)
def test_minimize_refuses_bad_arguments(kwargs, error, name):
    with pytest.raises(error) as raised:
        minimize(_quadratic, torch.ones(3, dtype=torch.float64), **kwargs)
    message = str(raised.value)
    assert name in message and "\n" not in message


def test_minimize_zero_steps_evaluates_x0_only():
    result = minimize(_quadratic, torch.ones(3, dtype=torch.float64), max_steps=0, tol=0.0)
    assert result.n_steps == 0 and not result.converged


# Property-based: random values (NaN, infinities, negatives, huge and tiny numbers, non-numbers) either raise a
# ValueError naming the argument that was given, or make an optimizer whose step runs.

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.booleans(),
                    st.sampled_from(["0.1", None]))


@FUZZ
@given(lr=NUMBERS, beta1=NUMBERS, beta2=NUMBERS, eps=NUMBERS, weight_decay=NUMBERS, lrd=NUMBERS,
       clip_norm=NUMBERS, clipped=st.booleans())
def test_adam_hyperparameters_raise_or_step(lr, beta1, beta2, eps, weight_decay, lrd, clip_norm, clipped):
    args = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    if clipped:
        args.update(lrd=lrd, clip_norm=clip_norm)
    try:
        optim = (ClippedAdam if clipped else Adam)(args)
    except ValueError as error:
        assert error.argument in {"lr", "betas[0]", "betas[1]", "eps", "weight_decay", "lrd", "clip_norm"}
        assert str(error).startswith(("Adam: " + error.argument, "ClippedAdam: " + error.argument))
        return
    for value in (lr, beta1, beta2, eps, weight_decay) + ((lrd, clip_norm) if clipped else ()):
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    assert 0 <= beta1 < 1 and 0 <= beta2 < 1 and lr >= 0 and eps > 0 and weight_decay >= 0
    _one_step(optim)


@settings(FUZZ, max_examples=60)
@given(tol=NUMBERS, max_steps=NUMBERS, lr=NUMBERS, method=st.sampled_from(["lbfgs", "fire", "adam"]))
def test_minimize_arguments_raise_or_run(tol, max_steps, lr, method):
    options = {"lr": lr} if method == "adam" else {"dt": lr} if method == "fire" else {}
    # Valid step counts above 5 become 5 (a tiny lr could take them all); invalid ones stay as drawn.
    whole = (isinstance(max_steps, (int, float)) and not isinstance(max_steps, bool) and math.isfinite(max_steps)
             and float(max_steps).is_integer())
    capped = min(max_steps, 5) if whole else max_steps
    try:
        result = minimize(_quadratic, torch.ones(2, dtype=torch.float64), method=method, tol=tol, max_steps=capped,
                          **options)
    except ValueError as error:
        assert error.argument in {"tol", "max_steps", "lr", "dt"} and error.argument in str(error)
        return
    assert result.n_steps <= capped


@FUZZ
@given(value=NUMBERS, low=st.floats(-10, 10), width=st.floats(0, 10), integer=st.booleans(),
       strict=st.booleans())
def test_check_number_agrees_with_its_message(value, low, width, integer, strict):
    bounds = dict(above=low, below=low + width) if strict else dict(at_least=low, at_most=low + width)
    try:
        number = check_number("f", "x", value, integer=integer, **bounds)
    except ValueError as error:
        assert str(error).startswith("f: x must be ") and error.argument == "x"
        return
    assert not isinstance(value, (bool, str)) and value is not None and math.isfinite(value)
    assert (low < number < low + width) if strict else (low <= number <= low + width)
    assert number == value and (not integer or float(value).is_integer())
