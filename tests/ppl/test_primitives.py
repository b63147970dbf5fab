"""Primitives: sample, param (and the param store), plate, deterministic, factor, module; Pyro parity."""

import math

import pyro
import pyro.distributions as pdist
import pytest
import scipy.stats
import torch
import torch.distributions as td
from pyro import poutine

import ppl
from ppl import constraints, handlers
from ppl.primitives import _STACK
from ppl.transforms import biject_to



def test_sample_without_handlers(device, dtype):
    loc = torch.zeros(3, device=device, dtype=dtype, requires_grad=True)
    x = ppl.sample("x", td.Normal(loc, 1.0), sample_shape=(2,))
    assert x.shape == (2, 3) and x.dtype == dtype and x.device.type == device.type
    x.sum().backward()  # reparameterized draw: gradients reach the parameters
    assert torch.equal(loc.grad, torch.full_like(loc, 2.0))
    obs = torch.ones(3, device=device, dtype=dtype)
    assert ppl.sample("y", td.Normal(loc, 1.0), obs=obs) is obs


def test_sample_site_contents():
    with handlers.trace() as tr:
        x = ppl.sample("x", td.Normal(0.0, 1.0), sample_shape=(4,), infer={"hint": 1})
        ppl.sample("y", td.Normal(x, 1.0), obs=torch.zeros(4))
    site = tr["x"]
    assert site["type"] == "sample" and site["name"] == "x" and site["value"] is x and x.shape == (4,)
    assert not site["is_observed"] and tr["y"]["is_observed"]
    assert site["scale"] is None and site["mask"] is None and site["cond_indep_stack"] == []
    assert site["infer"] == {"hint": 1} and isinstance(site["fn"], td.Normal)


def test_sample_rejects_non_distributions():
    with pytest.raises(ppl.ModelError, match="'x'.*torch distribution"):
        ppl.sample("x", 3.0)
    with pytest.raises(ppl.ModelError, match="site names are strings"):
        with handlers.trace():
            ppl.sample(1, td.Normal(0.0, 1.0))


def test_param_store_constraints(device, dtype):
    init = torch.tensor([0.5, 2.0], device=device, dtype=dtype)
    value = ppl.param("s", init, constraint=constraints.positive)
    store = ppl.get_param_store()
    assert torch.allclose(value, init) and value.device.type == device.type and value.dtype == dtype
    unconstrained = store.unconstrained("s")
    assert unconstrained.is_leaf and unconstrained.requires_grad
    assert torch.allclose(unconstrained, init.log())
    # init_value is used only the first time; the value is differentiable w.r.t. the stored tensor
    again = ppl.param("s", torch.ones(2, device=device, dtype=dtype), constraint=constraints.positive)
    assert torch.allclose(again, init)
    again.sum().backward()
    assert torch.allclose(unconstrained.grad, init)
    assert ppl.param("lazy", lambda: torch.tensor(3.0)) == 3.0
    assert set(store.keys()) == {"s", "lazy"} and "s" in store and len(store) == 2


def test_param_errors():
    with pytest.raises(ppl.ModelError, match="'missing'.*init_value"):
        ppl.param("missing")
    with pytest.raises(ppl.ModelError, match="'p'.*outside its constraint"):
        ppl.param("p", torch.tensor(-1.0), constraint=constraints.positive)


def test_param_store_save_load_round_trip(tmp_path):
    ppl.param("real", torch.randn(3))
    ppl.param("positive", torch.rand(2) + 0.1, constraint=constraints.positive)
    ppl.param("interval", torch.tensor([0.3, 1.5]), constraint=constraints.interval(-1.0, 2.0))
    ppl.param("simplex", torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex)
    ppl.param("vector", torch.rand(2, 3) + 0.1, constraint=constraints.independent(constraints.positive, 1))
    ppl.param("chol", torch.tensor([[1.0, 0.0], [0.5, 2.0]]), constraint=constraints.lower_cholesky)
    store = ppl.get_param_store()
    before = {name: value.detach().clone() for name, value in store.items()}
    path = tmp_path / "params.pt"
    store.save(path)
    torch.load(path, weights_only=True)  # only tensors, numbers and strings in the file
    ppl.clear_param_store()
    assert len(store) == 0
    store.load(path)
    assert set(store.keys()) == set(before)
    for name, value in before.items():
        assert torch.allclose(store[name], value, atol=1e-6), name
        assert store.unconstrained(name).requires_grad
    assert store.constraint("interval").lower_bound == -1.0 and store.constraint("interval").upper_bound == 2.0
    assert store.constraint("simplex") is constraints.simplex
    assert store.constraint("vector").reinterpreted_batch_ndims == 1


def test_param_store_get_state_set_state_copies():
    """get_state/set_state (Pyro's names) round-trip in memory, and the restored store does not alias the state."""
    ppl.param("scale", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    store = ppl.get_param_store()
    state = store.get_state()
    assert not state["params"]["scale"].requires_grad
    ppl.clear_param_store()
    store.set_state(state)
    assert torch.allclose(store["scale"], torch.tensor([0.5, 2.0]))
    with torch.no_grad():
        store.unconstrained("scale").add_(1.0)
    assert torch.allclose(state["params"]["scale"], torch.tensor([0.5, 2.0]).log())


def test_param_store_refuses_unknown_constraint(tmp_path):
    class Odd(constraints.Constraint):
        def check(self, value):
            return value == value

    biject_to.register(Odd, lambda constraint: biject_to(constraints.real))
    try:
        ppl.param("odd", torch.zeros(()), constraint=Odd())
        with pytest.raises(ppl.PPLError, match="'odd'"):
            ppl.get_param_store().save(tmp_path / "p.pt")
    finally:
        del biject_to._registry[Odd]


def test_module_shares_parameters_with_the_store(tmp_path):
    net = torch.nn.Linear(2, 3)
    assert ppl.module("net", net) is net
    store = ppl.get_param_store()
    assert store.unconstrained("net$weight") is net.weight and store.unconstrained("net$bias") is net.bias
    store.save(tmp_path / "net.pt")
    ppl.clear_param_store()
    store.load(tmp_path / "net.pt")
    fresh = torch.nn.Linear(2, 3)
    ppl.module("net", fresh)
    assert torch.equal(fresh.weight, net.weight) and store.unconstrained("net$weight") is fresh.weight


def test_plate_broadcasting_and_dim_allocation():
    with handlers.trace() as tr:
        with ppl.plate("outer", 3) as outer_indices:
            a = ppl.sample("a", td.Normal(0.0, 1.0))
            with ppl.plate("inner", 4):
                b = ppl.sample("b", td.Normal(a, 1.0))
                c = ppl.sample("c", td.Independent(td.Normal(torch.zeros(2), 1.0), 1))
                d = ppl.sample("d", td.Normal(0.0, 1.0), sample_shape=(4, 1))
    assert torch.equal(outer_indices, torch.arange(3))
    assert a.shape == (3,) and b.shape == (4, 3) and c.shape == (4, 3, 2) and d.shape == (4, 3)
    assert tr["outer"]["type"] == "plate" and tr["inner"]["cond_indep_stack"][0].name == "outer"
    frames = {frame.name: (frame.dim, frame.size) for frame in tr["b"]["cond_indep_stack"]}
    assert frames == {"outer": (-1, 3), "inner": (-2, 4)}
    assert tr["b"]["fn"].batch_shape == (4, 3) and tr["c"]["fn"].event_shape == (2,)


def test_plate_explicit_dims_and_errors():
    with ppl.plate("x", 2, dim=-2):
        with ppl.plate("y", 5):
            assert ppl.sample("v", td.Normal(0.0, 1.0)).shape == (2, 5)
    with pytest.raises(ppl.ModelError, match="dim -1 is already used by the enclosing plate 'a'"):
        with ppl.plate("a", 2):
            ppl.plate("b", 3, dim=-1)
    with pytest.raises(ppl.ModelError, match="'w' has batch shape \\(3,\\).*'data' \\(size 4"):
        with ppl.plate("data", 4):
            ppl.sample("w", td.Normal(torch.zeros(3), 1.0))
    for bad in [dict(size=0), dict(size=3, subsample_size=4), dict(size=3, dim=0)]:
        with pytest.raises(ppl.ModelError):
            ppl.plate("bad", **bad)
    assert not _STACK


def test_subsampled_plate_scales_the_log_density(dtype):
    data = torch.randn(100, dtype=dtype)

    def model():
        loc = ppl.sample("loc", td.Normal(torch.tensor(0.0, dtype=dtype), 1.0))
        with ppl.plate("data", 100, subsample_size=10) as idx:
            ppl.sample("obs", td.Normal(loc, 2.0), obs=data[idx])

    tr = handlers.trace(model).get_trace()
    idx = tr["data"]["value"]
    assert idx.shape == (10,) and len(set(idx.tolist())) == 10 and 0 <= idx.min() and idx.max() < 100
    assert tr["obs"]["scale"] == 10.0
    loc = tr["loc"]["value"].item()
    expected = scipy.stats.norm(0, 1).logpdf(loc) + 10.0 * scipy.stats.norm(loc, 2).logpdf(data[idx].numpy()).sum()
    assert tr.log_prob_sum().item() == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_subsampled_param_with_event_dim_is_indexed():
    with ppl.plate("data", 6, subsample_size=3) as idx:
        weights = ppl.param("w", torch.arange(12.0).reshape(6, 2), event_dim=1)
    assert torch.equal(weights, torch.arange(12.0).reshape(6, 2)[idx])
    with pytest.raises(ppl.ModelError, match="'v'.*expected the plate's size 6"):
        with ppl.plate("data", 6, subsample_size=3):
            ppl.param("v", torch.zeros(5), event_dim=0)


def test_deterministic_and_factor(dtype):
    with handlers.trace() as tr:
        x = ppl.sample("x", td.Normal(torch.tensor(0.0, dtype=dtype), 1.0))
        y = ppl.deterministic("y", 2 * x)
        ppl.factor("f", -x**2)
        with ppl.plate("p", 3):
            ppl.factor("g", torch.tensor([1.0, 2.0, 3.0], dtype=dtype))
    assert torch.equal(y, 2 * x) and tr["y"]["type"] == "deterministic" and tr["y"]["value"] is y
    assert tr["f"]["is_observed"] and tr["f"]["infer"]["is_auxiliary"]
    expected = scipy.stats.norm.logpdf(x.item()) - x.item() ** 2 + 6.0
    assert tr.log_prob_sum().item() == pytest.approx(expected, rel=1e-6)
    assert ppl.deterministic("z", 5) == 5  # works without handlers


def _pyro_parity_model(lib, data, mask_obs):
    sample, plate, factor = lib.sample, lib.plate, lib.factor
    handlers_ = poutine if lib is pyro else handlers
    dist = pdist if lib is pyro else td
    scale = sample("scale", dist.HalfCauchy(2.0))
    with plate("groups", 3):
        group = sample("group", dist.Normal(0.0, scale))
        with plate("items", 4):
            with handlers_.mask(mask=mask_obs):
                sample("obs", dist.Normal(group, 1.0), obs=data)
    with handlers_.scale(scale=0.5):
        sample("vec", dist.Dirichlet(torch.ones(3)))
    factor("penalty", -(group**2).sum())


def test_trace_log_prob_sum_matches_pyro():
    data = torch.randn(4, 3)
    mask_obs = torch.rand(4, 3) > 0.3
    ours = handlers.trace(handlers.seed(_pyro_parity_model, rng_seed=1)).get_trace(ppl, data, mask_obs)
    values = {name: ours[name]["value"] for name in ("scale", "group", "vec")}
    theirs = poutine.trace(poutine.condition(_pyro_parity_model, data=values)).get_trace(pyro, data, mask_obs)
    assert ours.log_prob_sum().item() == pytest.approx(theirs.log_prob_sum().item(), rel=1e-6)
    ours.compute_log_prob()
    theirs.compute_log_prob()
    for name in ("group", "obs", "vec", "penalty"):
        assert torch.allclose(ours[name]["log_prob"], theirs.nodes[name]["log_prob"]), name
    assert math.isfinite(ours.log_prob_sum().item())
