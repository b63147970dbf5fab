"""Effect handlers: each one, as context manager and decorator, nested, and with exceptions."""

import pyro
import pyro.distributions as pdist
import pytest
import scipy.stats
import torch
import torch.distributions as td
from pyro.infer.reparam import LocScaleReparam as PyroLocScaleReparam

import ppl
from ppl import handlers
from ppl.primitives import _STACK
from ppl.reparam import LocScaleReparam



def model(data=None):
    zero = torch.zeros(()) if data is None else data.new_zeros(())  # on the data's device and dtype
    x = ppl.sample("x", td.Normal(zero, 1.0))
    with ppl.plate("data", 3):
        y = ppl.sample("y", td.Normal(x, 1.0), obs=data)
    return x, y


def test_trace_as_context_wrapper_and_decorator(device, dtype):
    data = torch.tensor([0.1, -0.3, 0.5], device=device, dtype=dtype)
    with handlers.trace() as tr:
        model(data)
    assert list(tr) == ["x", "data", "y"] and tr["y"]["value"] is data
    assert list(handlers.trace(model).get_trace(data)) == ["x", "data", "y"]

    @handlers.trace
    def decorated():
        return ppl.sample("z", td.Normal(0.0, 1.0))

    assert "z" in decorated.get_trace() and decorated.__name__ == "decorated"
    x = tr["x"]["value"].item()
    expected = scipy.stats.norm.logpdf(x) + scipy.stats.norm(x, 1).logpdf(data.cpu().numpy()).sum()
    assert tr.log_prob_sum().item() == pytest.approx(expected, rel=1e-5)


def test_duplicate_site_names_raise_and_leave_the_stack_clean():
    def twice():
        ppl.sample("x", td.Normal(0.0, 1.0))
        ppl.deterministic("x", torch.zeros(()))

    with pytest.raises(ppl.ModelError, match="two sites are named 'x'"):
        handlers.trace(handlers.seed(twice, rng_seed=0)).get_trace()
    assert not _STACK


def test_exceptions_inside_nested_handlers_leave_the_stack_clean():
    def failing():
        ppl.sample("x", td.Normal(0.0, 1.0))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with handlers.trace():
            with handlers.scale(scale=2.0):
                handlers.block(handlers.seed(failing, rng_seed=0))()
    assert not _STACK
    with pytest.raises(RuntimeError, match="boom"):
        handlers.mask(handlers.trace(failing), mask=False)()
    assert not _STACK
    # a handler entered inside another and never exited is removed with it
    outer = handlers.trace()
    with pytest.raises(RuntimeError):
        with outer:
            handlers.block().__enter__()
            raise RuntimeError
    assert not _STACK


def test_decorator_with_arguments_wraps_each_model_separately():
    double = handlers.scale(scale=2.0)
    first = double(lambda: ppl.sample("a", td.Normal(0.0, 1.0)))
    second = double(lambda: ppl.sample("b", td.Normal(0.0, 1.0)))
    assert list(handlers.trace(first).get_trace()) == ["a"]
    assert handlers.trace(second).get_trace()["b"]["scale"] == 2.0
    with pytest.raises(TypeError, match="has no model to run"):
        handlers.trace()(1, 2)


def test_seed_reproducible_and_leaves_global_rng_alone():
    def sub():
        with ppl.plate("p", 50, subsample_size=5) as idx:
            return idx, ppl.sample("x", td.Normal(0.0, 1.0))

    state = torch.get_rng_state()
    first = handlers.seed(sub, rng_seed=3)()
    second = handlers.seed(sub, rng_seed=3)()
    other = handlers.seed(sub, rng_seed=4)()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])
    with handlers.seed(rng_seed=3):
        with handlers.seed(rng_seed=4):
            inner = sub()
        outer = sub()
    assert torch.equal(inner[1], other[1]) and torch.equal(outer[1], first[1])
    with pytest.raises(TypeError, match="integer rng_seed"):
        handlers.seed(sub, rng_seed=1.5)


def test_condition_and_substitute():
    data = torch.zeros(3)
    tr = handlers.trace(handlers.condition(model, data={"x": torch.tensor(1.5)})).get_trace(data)
    assert tr["x"]["value"] == 1.5 and tr["x"]["is_observed"]
    def two_at_x(site):
        return torch.tensor(2.0) if site["name"] == "x" else None

    tr = handlers.trace(handlers.condition(model, condition_fn=two_at_x)).get_trace()
    assert tr["x"]["value"] == 2.0 and tr["x"]["is_observed"] and not tr["y"]["is_observed"]
    tr = handlers.trace(handlers.substitute(model, data={"x": torch.tensor(1.5)})).get_trace(data)
    assert tr["x"]["value"] == 1.5 and not tr["x"]["is_observed"]

    def with_param():
        return ppl.param("p", torch.tensor(1.0)), ppl.deterministic("d", torch.tensor(0.0))

    p, d = handlers.substitute(with_param, substitute_fn=lambda site: torch.tensor(7.0))()
    assert p == 7.0 and d == 7.0 and "p" not in ppl.get_param_store()
    with pytest.raises(ValueError, match="exactly one"):
        handlers.condition(model)


def test_replay_uses_guide_values():
    def guide():
        ppl.sample("x", td.Normal(3.0, 0.1), infer={"from": "guide"})
        with ppl.plate("data", 10, subsample_size=3):
            pass

    def subsampled():
        x = ppl.sample("x", td.Normal(0.0, 1.0))
        with ppl.plate("data", 10, subsample_size=3) as idx:
            ppl.sample("y", td.Normal(x, 1.0), obs=torch.zeros(3))
        return idx

    guide_trace = handlers.trace(guide).get_trace()
    tr = handlers.trace(handlers.replay(subsampled, trace=guide_trace)).get_trace()
    assert tr["x"]["value"] is guide_trace["x"]["value"] and tr["x"]["infer"] == {"from": "guide"}
    assert torch.equal(tr["data"]["value"], guide_trace["data"]["value"])
    bad = handlers.trace(handlers.condition(guide, data={"x": torch.tensor(0.0)})).get_trace()
    with pytest.raises(ppl.ModelError, match="'x'"):
        handlers.replay(subsampled, trace=bad)()


def test_block_hide_expose_hide_fn():
    def sites(**kwargs):
        return list(handlers.trace(handlers.block(model, **kwargs)).get_trace())

    assert sites() == []
    assert sites(hide=["x"]) == ["data", "y"]
    assert sites(expose=["x"]) == ["x"]
    assert sites(hide_fn=lambda site: site["type"] == "plate") == ["x", "y"]
    with pytest.raises(ValueError, match="at most one"):
        handlers.block(model, hide=["x"], expose=["y"])


def test_mask_and_scale():
    data = torch.tensor([0.5, 1.0, -1.0])
    keep = torch.tensor([True, False, True])
    conditioned = handlers.condition(model, data={"x": torch.tensor(0.2)})
    tr = handlers.trace(handlers.mask(conditioned, mask=keep)).get_trace(data)
    tr.compute_log_prob()
    unmasked = td.Normal(0.2, 1.0).log_prob(data)
    assert torch.allclose(tr["y"]["log_prob"], torch.where(keep, unmasked, torch.zeros(())))
    with handlers.trace() as tr:
        with handlers.mask(mask=keep), handlers.mask(mask=torch.tensor([True, True, False])):
            with ppl.plate("data", 3):
                ppl.sample("y", td.Normal(0.0, 1.0), obs=data)
    assert torch.equal(tr["y"]["mask"], torch.tensor([True, False, False]))
    with handlers.trace() as tr:
        with handlers.scale(scale=2.0), handlers.scale(scale=torch.tensor(3.0)):
            ppl.sample("s", td.Normal(0.0, 1.0), obs=torch.tensor(1.0))
    assert tr["s"]["scale"] == 6.0
    assert tr.log_prob_sum().item() == pytest.approx(6 * scipy.stats.norm.logpdf(1.0))
    with pytest.raises(TypeError, match="bool"):
        handlers.mask(model, mask=torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        handlers.scale(model, scale=-1.0)


def test_do_intervenes_but_records_the_sample():
    def chain():
        x = ppl.sample("x", td.Normal(0.0, 1.0))
        return x, ppl.sample("y", td.Normal(x, 0.01))

    tr = handlers.trace(handlers.seed(handlers.do(chain, data={"x": torch.tensor(10.0)}), rng_seed=0))
    x, y = tr()
    assert x == 10.0 and abs(y.item() - 10.0) < 0.1
    assert "x__CF" not in tr.trace and tr.trace["x"]["value"] != 10.0 and not tr.trace["x"]["is_observed"]
    with pytest.raises(ValueError, match="data"):
        handlers.do(chain)


def test_uncondition_makes_observed_sites_latent():
    data = torch.tensor([5.0, 5.0, 5.0])
    tr = handlers.trace(handlers.seed(handlers.uncondition(model), rng_seed=0)).get_trace(data)
    assert not tr["y"]["is_observed"] and tr["y"]["infer"]["was_observed"]
    assert tr["y"]["infer"]["obs"] is data and not torch.equal(tr["y"]["value"], data)


def test_lift_turns_params_into_samples():
    def with_params():
        return ppl.param("a", torch.zeros(4)), ppl.param("b", torch.tensor(1.0))

    tr = handlers.trace(handlers.lift(with_params, prior=td.Normal(0.0, 1.0))).get_trace()
    assert tr["a"]["type"] == "sample" and tr["a"]["value"].shape == (4,) and tr["b"]["type"] == "sample"
    assert len(ppl.get_param_store()) == 0
    tr = handlers.trace(handlers.lift(with_params, prior={"b": td.Gamma(2.0, 1.0)})).get_trace()
    assert tr["a"]["type"] == "param" and tr["b"]["type"] == "sample" and tr["b"]["value"] > 0


def _eight_schools_like(lib, dist):
    mu = lib.sample("mu", dist.Normal(0.0, 5.0))
    tau = lib.sample("tau", dist.HalfCauchy(5.0))
    with lib.plate("J", 4):
        return lib.sample("theta", dist.Normal(mu, tau))


@pytest.mark.parametrize("centered", [0.0, 0.3, None])
def test_loc_scale_reparam_matches_pyro(centered):
    if centered is None:
        ppl.param("theta_centered", torch.tensor(0.7), constraint=ppl.constraints.unit_interval)
        pyro.param("theta_centered", torch.tensor(0.7), constraint=pyro.distributions.constraints.unit_interval)
    ours = handlers.trace(
        handlers.seed(handlers.reparam(_eight_schools_like, config={"theta": LocScaleReparam(centered)}), rng_seed=0)
    ).get_trace(ppl, td)
    assert ours["theta"]["type"] == "deterministic" and ours["theta_decentered"]["type"] == "sample"
    values = {name: ours[name]["value"] for name in ("mu", "tau", "theta_decentered")}
    pyro_model = pyro.poutine.reparam(_eight_schools_like, config={"theta": PyroLocScaleReparam(centered)})
    theirs = pyro.poutine.trace(pyro.poutine.condition(pyro_model, data=values)).get_trace(pyro, pdist)
    assert torch.allclose(ours["theta"]["value"], theirs.nodes["theta"]["value"])
    assert ours.log_prob_sum().item() == pytest.approx(theirs.log_prob_sum().item(), rel=1e-6)


def _observed_normal():
    ppl.sample("x", td.Normal(0.0, 1.0), obs=torch.tensor(0.0))


def test_loc_scale_reparam_errors():
    with pytest.raises(ppl.ModelError, match="'x'.*location-scale"):
        handlers.reparam(lambda: ppl.sample("x", td.Gamma(1.0, 1.0)), config={"x": LocScaleReparam(0.0)})()
    with pytest.raises(ppl.ModelError, match="'x'.*latent"):
        handlers.reparam(_observed_normal, config={"x": LocScaleReparam(0.0)})()
    with pytest.raises(ValueError, match="centered"):
        LocScaleReparam(2.0)


def test_reparam_config_function_and_event_dims():
    def vector():
        return ppl.sample("v", td.Independent(td.Normal(torch.ones(3), 2.0), 1))

    def config(site):
        return LocScaleReparam(0.0) if site["name"] == "v" else None

    tr = handlers.trace(handlers.seed(handlers.reparam(vector, config=config), rng_seed=0)).get_trace()
    decentered = tr["v_decentered"]
    assert decentered["fn"].event_shape == (3,) and torch.allclose(decentered["fn"].base_dist.scale, torch.ones(3))
    assert torch.allclose(tr["v"]["value"], 1.0 + 2.0 * decentered["value"])


def test_reparam_protocol_replacing_the_distribution():
    def swap_fn(name, fn, obs):
        return td.Normal(fn.loc, 2 * fn.scale), None

    def fix_value(name, fn, obs):
        return fn, torch.tensor(0.25)

    tr = handlers.trace(handlers.reparam(model, config={"x": swap_fn})).get_trace()
    assert tr["x"]["fn"].scale == 2.0 and not tr["x"]["is_observed"]
    tr = handlers.trace(handlers.reparam(model, config={"x": fix_value})).get_trace()
    assert tr["x"]["value"] == 0.25 and tr["x"]["is_observed"] and tr["y"]["fn"].loc[0] == 0.25


def test_handlers_compose_in_any_order():
    data = torch.zeros(3)
    fixed = {"x": torch.tensor(0.5)}
    a = handlers.trace(handlers.scale(handlers.condition(model, data=fixed), scale=2.0)).get_trace(data)
    b = handlers.trace(handlers.condition(handlers.scale(model, scale=2.0), data=fixed)).get_trace(data)
    assert a.log_prob_sum().item() == pytest.approx(b.log_prob_sum().item())
    # a trace records sites once every handler has processed them, wherever it sits (as in Pyro)
    inner = handlers.trace(model)
    handlers.condition(handlers.scale(inner, scale=2.0), data=fixed)(data)
    assert inner.trace["x"]["scale"] == 2.0 and inner.trace["x"]["is_observed"]
    # a blocked site never reaches the handlers outside the block
    outer = handlers.trace(handlers.block(handlers.condition(model, data=fixed), hide=["x"]))
    assert "x" not in outer.get_trace(data)
