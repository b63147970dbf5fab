"""inference.optim.minimize: known minima, honest flags, clear errors, and parity with ASE's FIRE and torch's Adam."""

import numpy as np
import pytest
import scipy.linalg
import torch

from inference import NonFiniteError
from inference.optim import minimize

METHODS = {"lbfgs": {}, "fire": {}, "adam": {"lr": 0.05}}


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def spd_quadratic(n, dtype, device, seed=0):
    """A well-conditioned f(x) = x.A.x/2 - b.x and its minimizer A^-1 b, computed by scipy."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.linspace(1.0, 4.0, n)) @ q.T
    b = rng.normal(size=n)
    x_min = scipy.linalg.solve(a, b, assume_a="pos")
    a_t, b_t = (torch.tensor(v, dtype=dtype, device=device) for v in (a, b))
    return (lambda x: 0.5 * x @ a_t @ x - b_t @ x), torch.tensor(x_min, dtype=dtype, device=device)


@pytest.mark.parametrize("method", METHODS)
def test_quadratic_reaches_known_minimum(method, device, dtype):
    fn, x_min = spd_quadratic(6, dtype, device)
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    x0 = torch.zeros(6, dtype=dtype, device=device)
    result = minimize(fn, x0, method=method, tol=tol, max_steps=5000, **METHODS[method])
    assert result.converged, result.message
    assert result.x.dtype == dtype and result.x.device == x0.device
    assert float(result.grad_norm) <= tol
    # |x - x*| <= |A^-1| |grad| <= 1 * sqrt(n) * tol for eigenvalues of A >= 1
    torch.testing.assert_close(result.x, x_min, rtol=0, atol=3 * tol)
    torch.testing.assert_close(result.fun, fn(result.x), rtol=0, atol=0)
    assert result.history["fun"].shape == (result.n_steps + 1,)
    assert float(result.history["grad_norm"][0]) == float(fn_grad(fn, x0).abs().max())


def fn_grad(fn, x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(fn(x), x)[0]


@pytest.mark.parametrize("n", [2, 10])
def test_lbfgs_rosenbrock(n, device, dtype):
    x0 = torch.tensor([-1.2] + [-1.0] * (n - 1), dtype=dtype, device=device)
    tol = 1e-7 if dtype == torch.float64 else 1e-3
    result = minimize(rosenbrock, x0, method="lbfgs", tol=tol, max_steps=500)
    assert result.converged, result.message
    # near the minimum the Hessian's smallest eigenvalue is ~0.4: |x - 1| <~ 2.5 sqrt(n) tol
    torch.testing.assert_close(result.x, torch.ones_like(x0), rtol=0, atol=10 * tol)
    assert result.n_steps < 150  # L-BFGS with a Wolfe line search, not a crawl (scipy's L-BFGS-B takes ~35 on 2-d)


@pytest.mark.parametrize("method, options", [("fire", {}), ("adam", {"lr": 0.01, "betas": (0.9, 0.99)})])
def test_fire_and_adam_rosenbrock(method, options):
    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    result = minimize(rosenbrock, x0, method=method, tol=1e-3, max_steps=5000, **options)
    assert result.converged, result.message
    torch.testing.assert_close(result.x, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-2)


@pytest.mark.parametrize("method", METHODS)
def test_max_steps_reached_is_not_converged(method):
    x0 = torch.tensor([-1.2, 1.0, 1.0], dtype=torch.float64)
    result = minimize(rosenbrock, x0, method=method, tol=1e-8, max_steps=3, **METHODS[method])
    assert not result.converged
    assert result.n_steps == 3 and "max_steps" in result.message
    assert result.history["fun"].shape == (4,) and float(result.grad_norm) > 1e-8


def test_lbfgs_stops_honestly_below_float32_precision():
    """fn = 1000 + small terms in float32: rounding hides any further decrease long before max|grad| <= 1e-9."""
    c = torch.tensor([1 / 3, -2 / 7, 0.1])
    k = torch.tensor([1.0, 30.0, 0.3])
    result = minimize(lambda x: 1e3 + (k * (x - c) ** 2).sum() + (x**4).sum(), torch.zeros(3), tol=1e-9)
    assert not result.converged
    assert "line search" in result.message and result.n_steps < 1000
    assert float(result.grad_norm) > 1e-9


def test_already_converged_takes_no_step():
    x0 = torch.ones(4, dtype=torch.float64)
    result = minimize(rosenbrock, x0, tol=1e-10)
    assert result.converged and result.n_steps == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_objective_names_the_step(method, bad):
    calls = []

    def fn(x):  # goes bad on the third evaluation: at step 2 for FIRE/Adam, during step 1's line search for L-BFGS
        calls.append(1)
        return (x**2).sum() * (bad if len(calls) == 3 else 1.0)

    with pytest.raises(NonFiniteError, match="objective is (NaN|inf) at step [12] of 100"):
        minimize(fn, torch.ones(3, dtype=torch.float64), method=method, max_steps=100, **METHODS[method])


def test_nonfinite_at_x0_and_in_gradient():
    with pytest.raises(NonFiniteError, match="objective is NaN at x0"):
        minimize(lambda x: (x**2).sum(), torch.tensor([1.0, float("nan")]))
    with pytest.raises(NonFiniteError, match="gradient is inf at x0"):
        minimize(lambda x: x.sqrt().sum(), torch.tensor([1.0, 0.0]))


def test_callback_can_stop_and_sees_each_step():
    seen = []

    def callback(step, x, fun, grad):
        seen.append((step, float(fun), float(grad.abs().max())))
        return step == 2

    result = minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64), callback=callback)
    assert [s for s, _, _ in seen] == [1, 2]
    assert not result.converged and result.n_steps == 2 and "callback" in result.message
    assert [f for _, f, _ in seen] == result.history["fun"][1:].tolist()
    assert [g for _, _, g in seen] == result.history["grad_norm"][1:].tolist()


def test_x0_untouched_and_result_detached():
    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    before = x0.detach().clone()
    result = minimize(rosenbrock, x0, max_steps=5)
    assert torch.equal(x0.detach(), before)
    assert not result.x.requires_grad and not result.fun.requires_grad


def test_progress_bar_shows_fun_and_grad(capsys):
    minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64), max_steps=3, progress=True)
    err = capsys.readouterr().err
    assert "minimize (lbfgs)" in err and "grad_norm=" in err and "fun=" in err


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method 'bfgs'"):
        minimize(rosenbrock, torch.zeros(2), method="bfgs")
    with pytest.raises(ValueError, match="method='fire'"):
        minimize(lambda x: (x**2).sum(1), torch.ones(3, 2), method="lbfgs")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['lr'\]"):
        minimize(rosenbrock, torch.zeros(2), method="fire", lr=0.1)
    with pytest.raises(TypeError, match="floating-point"):
        minimize(rosenbrock, torch.zeros(2, dtype=torch.long))


def test_batched_fire_elements_converge_on_their_own(device, dtype):
    """Each element of a batch follows exactly its own unbatched FIRE trajectory and stops when converged."""
    centers = torch.tensor([[0.0, 0.0], [1.0, -2.0], [3.0, 0.5]], dtype=dtype, device=device)
    stiffness = torch.tensor([[1.0, 2.0], [10.0, 0.5], [0.2, 0.3]], dtype=dtype, device=device)
    x0 = torch.zeros(3, 2, dtype=dtype, device=device)  # element 0 starts at its minimum

    def energy(x, center, k):
        return 0.5 * (k * (x - center) ** 2).sum(-1) + ((x - center) ** 4).sum(-1)

    def batched(x):
        return energy(x, centers, stiffness)

    tol = 1e-6 if dtype == torch.float64 else 1e-4
    result = minimize(batched, x0, method="fire", tol=tol, max_steps=3000)
    assert result.converged, result.message
    assert result.fun.shape == (3,) and result.grad_norm.shape == (3,) and result.history["fun"].shape[1] == 3
    assert bool((result.grad_norm <= tol).all())
    torch.testing.assert_close(result.x, centers, rtol=0, atol=50 * tol)
    for b in range(3):
        single = minimize(lambda x: energy(x, centers[b], stiffness[b]), x0[b], method="fire", tol=tol, max_steps=3000)
        torch.testing.assert_close(result.x[b], single.x)
        steps = int((result.history["grad_norm"][:, b] > tol).sum())
        assert steps == single.n_steps
    assert torch.equal(result.x[0], x0[0])  # converged at x0: never moved


def test_fire_matches_ase():
    """Same Lennard-Jones cluster, same parameters: our FIRE follows ASE's FIRE step for step."""
    from ase import Atoms
    from ase.calculators.lj import LennardJones
    from ase.optimize import FIRE

    rng = np.random.default_rng(1)
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], dtype=float)[:7]
    positions = 1.15 * grid + 0.1 * rng.normal(size=(7, 3))
    atoms = Atoms("Ar7", positions=positions)
    atoms.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=50.0)
    optimizer = FIRE(atoms, logfile=None)
    steps = 25
    for _ in range(steps):
        optimizer.step()

    def lj(x):
        i, j = torch.triu_indices(7, 7, 1)
        inv6 = ((x[i] - x[j]) ** 2).sum(-1).reciprocal() ** 3
        return (4 * (inv6**2 - inv6)).sum()

    x0 = torch.tensor(positions)
    ase_forces = LennardJones(sigma=1.0, epsilon=1.0, rc=50.0).get_forces(Atoms("Ar7", positions=positions))
    torch.testing.assert_close(-fn_grad(lj, x0), torch.tensor(ase_forces))
    result = minimize(lj, x0, method="fire", tol=0.0, max_steps=steps)
    torch.testing.assert_close(result.x, torch.tensor(atoms.positions), rtol=0, atol=1e-10)


def test_adam_matches_torch_optim():
    x0 = torch.tensor([-1.2, 1.0, 0.5], dtype=torch.float64)
    options = {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}
    result = minimize(rosenbrock, x0, method="adam", tol=0.0, max_steps=40, **options)
    x = x0.clone().requires_grad_(True)
    reference = torch.optim.Adam([x], **options)
    for _ in range(40):
        reference.zero_grad()
        rosenbrock(x).backward()
        reference.step()
    torch.testing.assert_close(result.x, x.detach(), rtol=0, atol=1e-12)
