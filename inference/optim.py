"""Minimizers for any differentiable function of a tensor: L-BFGS, FIRE and Adam.

    result = minimize(fn, x0, method="lbfgs", tol=1e-5)

``fn`` maps a tensor shaped like ``x0`` to a scalar (0-d) tensor; gradients come from ``torch.autograd``.
For FIRE ``fn`` may instead return a vector of B independent objectives, one per entry of x0's leading
dimension (``fn(x)[b]`` depends on ``x[b]`` only); each is then minimized and declared converged on its own.

Convergence: the largest absolute gradient component, max_i |dfn/dx_i|, is at most ``tol`` (the "max force"
criterion of geometry optimizers). ``grad_norm`` everywhere in this module means this infinity norm, in the
units of fn per unit of x.
"""

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from inference.errors import NonFiniteError

__all__ = ["OptimizeResult", "check_number", "minimize"]


def check_number(where, name, value, *, above=None, at_least=None, below=None, at_most=None, integer=False,
                 unit="", error=ValueError, make_error=None):
    """Check an argument: a finite real number (an integer with ``integer``; a float with an integral value is
    accepted, unless ``integer="strict"``) within the given bounds (``above``/``below`` strict,
    ``at_least``/``at_most`` inclusive).

    Returns the value as a Python float (int with ``integer``). Otherwise raises ``error`` with a one-line
    message naming ``where`` (the function or class), ``name``, the value and the allowed range, e.g.
    ``"Adam: lr must be a finite number > 0, got -0.1."``, with ``unit`` (e.g. ``"K"``) after the range; the
    exception's ``argument`` attribute is ``name`` (a command line names its option from it). ``make_error``,
    if given, builds the exception instead, from ``(name, value, rule)`` (the rule being the text after "must
    be"). Booleans are not numbers here; a one-element tensor is.
    """
    low = (">", above) if above is not None else (">=", at_least) if at_least is not None else None
    high = ("<", below) if below is not None else ("<=", at_most) if at_most is not None else None
    number = None
    if torch.is_tensor(value) and value.numel() == 1 and not (value.is_complex() or value.dtype == torch.bool):
        number = value.detach().reshape(()).item()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = value
    ok = number is not None and (isinstance(number, numbers.Integral) or math.isfinite(number))
    if ok:
        if integer:
            ok = isinstance(number, numbers.Integral) or (integer != "strict" and float(number).is_integer())
            number = int(number)
        else:
            number = float(number)
    if ok and low is not None:
        ok = number > low[1] if low[0] == ">" else number >= low[1]
    if ok and high is not None:
        ok = number < high[1] if high[0] == "<" else number <= high[1]
    if not ok:
        rule = "an integer" if integer else "a finite number"
        rule += " and".join(f" {op} {bound if isinstance(bound, numbers.Integral) else format(bound, 'g')}"
                            for op, bound in filter(None, (low, high)))
        rule += f" {unit}" if unit else ""
        if make_error is not None:
            exc = make_error(name, value, rule)
        else:
            shown = repr(value).replace("\n", " ")
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            exc = error(f"{where}: {name} must be {rule}, got {shown}.")
        exc.argument = name
        raise exc
    return number


@dataclass
class OptimizeResult:
    """What ``minimize`` found.

    Attributes:
        x: the last iterate, detached, shaped like x0.
        fun: fn(x): shape () or (B,) in FIRE's batched mode.
        grad_norm: max-abs gradient component at x: shape () or (B,) (per batch element).
        n_steps: optimizer steps taken.
        converged: True when every grad_norm <= tol. In batched mode ``grad_norm <= tol`` gives the
            per-element flags.
        message: why it stopped, in words.
        history: ``{"fun": (n_steps + 1, *batch), "grad_norm": (n_steps + 1, *batch)}``, row 0 at x0.
    """

    x: torch.Tensor
    fun: torch.Tensor
    grad_norm: torch.Tensor
    n_steps: int
    converged: bool
    message: str
    history: dict[str, torch.Tensor]


def minimize(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    method: str = "lbfgs",
    tol: float = 1e-5,
    max_steps: int = 1000,
    callback: Callable | None = None,
    progress: bool = False,
    **method_options,
) -> OptimizeResult:
    """Minimize ``fn`` from ``x0`` (never modified) until max|grad| <= tol or ``max_steps`` steps.

    Args:
        fn: x -> scalar tensor (FIRE also accepts x of shape (B, ...) -> (B,), see the module docstring).
        x0: floating-point tensor of any shape, on any device; the result keeps its dtype and device.
        method: ``"lbfgs"`` (strong-Wolfe line search; options ``history_size=10``, ``max_linesearch=25``),
            ``"fire"`` (Bitzek et al., PRL 97, 170201 (2006), with ASE's defaults; options ``dt=0.1``,
            ``dt_max=1.0``, ``max_step=0.2`` (largest step length |dx|_2 per batch element, in x's units),
            ``n_min=5``, ``f_inc=1.1``, ``f_dec=0.5``, ``alpha_start=0.1``, ``f_alpha=0.99``) or ``"adam"``
            (torch.optim.Adam's update; options ``lr=1e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-8``).
        tol: convergence threshold on the max-abs gradient component, in units of fn per unit of x (>= 0).
        max_steps: most optimizer steps (an integer >= 0; 0 evaluates fn at x0 only); reaching it leaves
            ``converged=False``.
        callback: ``callback(step, x, fun, grad)`` after each step; returning True stops the run.
        progress: show a tqdm bar with fun and grad_norm.

    Raises:
        NonFiniteError: fn or its gradient is NaN/inf; the message names the step.
        ValueError: an argument or method option out of its range (tol < 0, max_steps < 0, lr <= 0, ...); the
            message names it.
    """
    if method not in _METHODS:
        raise ValueError(f"minimize: unknown method {method!r}; choose one of {sorted(_METHODS)}.")
    if not (torch.is_tensor(x0) and x0.is_floating_point()):
        raise TypeError(f"minimize: x0 must be a floating-point tensor, got {type(x0).__name__} "
                        f"{getattr(x0, 'dtype', '')}.")
    tol = check_number("minimize", "tol", tol, at_least=0)
    max_steps = check_number("minimize", "max_steps", max_steps, integer=True, at_least=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"minimize: callback must be callable(step, x, fun, grad) or None, got {callback!r}.")
    options = set(inspect.signature(_METHODS[method]).parameters) - {"x", "batched"}
    if not set(method_options) <= options:
        raise TypeError(f"minimize(method={method!r}): unknown option(s) {sorted(set(method_options) - options)}; "
                        f"the options are {sorted(options)}.")
    objective = _Objective(fn, method, max_steps)
    x = x0.detach().clone()
    f, g = objective(x, step=0)
    batched = f.dim() == 1
    if batched and (method != "fire" or x.dim() == 0 or f.shape[0] != x.shape[0]):
        raise ValueError(f"minimize(method={method!r}): fn returned shape {tuple(f.shape)} for x of shape "
                         f"{tuple(x.shape)}; return a scalar, or use method='fire' with one objective per entry "
                         "of x's leading dimension.")
    if f.dim() > 1:
        raise ValueError(f"minimize: fn must return a scalar (or a (B,) vector for FIRE), got {tuple(f.shape)}.")
    stepper = _METHODS[method](x, batched, **method_options)

    gnorm = _grad_norm(g, batched)
    funs, gnorms = [f], [gnorm]
    stop_reason = None
    step = 0
    with tqdm(total=max_steps, desc=f"minimize ({method})", disable=not progress) as bar:
        while step < max_steps and not bool((gnorm <= tol).all()):
            step += 1
            try:
                x, f, g = stepper.step(objective, x, f, g, active=gnorm > tol, step=step)
            except _LineSearchFailed as failure:
                step -= 1
                stop_reason = str(failure)
                break
            gnorm = _grad_norm(g, batched)
            funs.append(f)
            gnorms.append(gnorm)
            if progress:
                bar.update(1)
                bar.set_postfix(fun=f"{float(f.max()):.8g}", grad_norm=f"{float(gnorm.max()):.3g}")
            if callback is not None and callback(step, x, f, g):
                stop_reason = f"stopped by callback at step {step}"
                break

    converged = bool((gnorm <= tol).all())
    worst = float(gnorm.max())
    if converged:
        message = f"converged: max|grad| = {worst:.3g} <= tol = {tol:g} after {step} steps"
    elif stop_reason is not None:
        message = f"{stop_reason}; max|grad| = {worst:.3g} > tol = {tol:g}"
    else:
        message = f"not converged: max_steps = {max_steps} reached with max|grad| = {worst:.3g} > tol = {tol:g}"
    return OptimizeResult(x=x.detach(), fun=f, grad_norm=gnorm, n_steps=step, converged=converged,
                          message=message, history={"fun": torch.stack(funs), "grad_norm": torch.stack(gnorms)})


class _Objective:
    """fn with its gradient; refuses non-finite values, naming the step."""

    _HINTS = {
        "lbfgs": "if fn blows up away from x0, rescale x or use method='fire' with a small max_step",
        "fire": "lower dt or max_step",
        "adam": "lower lr",
    }

    def __init__(self, fn, method, max_steps):
        self.fn, self.method, self.max_steps = fn, method, max_steps

    def __call__(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.fn(x)
            if not (torch.is_tensor(f) and f.requires_grad):
                raise TypeError("minimize: fn(x) must return a tensor computed from x with torch operations; "
                                f"got a {type(f).__name__} that does not depend on x through autograd.")
            (g,) = torch.autograd.grad(f.sum(), x, allow_unused=True)
        f = f.detach()
        g = torch.zeros_like(x) if g is None else g
        if not bool(torch.isfinite(f).all() & torch.isfinite(g).all()):
            name, value = ("objective", f) if not bool(torch.isfinite(f).all()) else ("gradient", g)
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            where = "at x0" if step == 0 else f"at step {step} of {self.max_steps}"
            raise NonFiniteError(
                f"minimize(method={self.method!r}): the {name} is {kind} {where}. Check that fn is finite and "
                f"differentiable at x0 and along the path; {self._HINTS[self.method]}.")
        return f, g


def _grad_norm(g: torch.Tensor, batched: bool) -> torch.Tensor:
    return g.flatten(1).abs().amax(1) if batched else g.abs().max()


class _LineSearchFailed(Exception):
    pass


class _Point(NamedTuple):
    """A trial point of the line search along x + t d: f and dphi = grad . d as floats for the logic."""

    t: float
    f: float
    dphi: float
    x: torch.Tensor
    fun: torch.Tensor
    grad: torch.Tensor


class _LBFGS:
    """Limited-memory BFGS (two-loop recursion, Nocedal & Wright Alg. 7.4) with a strong-Wolfe line search.

    Written out rather than wrapping torch.optim.LBFGS: that one reports the loss from before its last step
    and stops silently when the loss or step stalls (``tolerance_change``), which cannot be told from convergence.
    """

    def __init__(self, x, batched, history_size: int = 10, max_linesearch: int = 25):
        if batched:
            raise ValueError("minimize(method='lbfgs') minimizes one scalar objective; use method='fire' for a batch.")
        where = "minimize(method='lbfgs')"
        self.history_size = check_number(where, "history_size", history_size, integer=True, at_least=1)
        self.max_linesearch = check_number(where, "max_linesearch", max_linesearch, integer=True, at_least=1)
        self.s: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def step(self, objective, x, f, g, active, step):
        try:
            x_new, f_new, g_new = self._search(objective, x, f, g, step)
        except _LineSearchFailed:
            if not self.s:
                raise
            # a stale curvature memory can give a poor direction: forget it and retry downhill
            self.s.clear()
            self.y.clear()
            x_new, f_new, g_new = self._search(objective, x, f, g, step)
        s, y = (x_new - x).flatten(), (g_new - g).flatten()
        if float(s @ y) > torch.finfo(x.dtype).eps * float(y @ y):
            self.s.append(s)
            self.y.append(y)
            if len(self.s) > self.history_size:
                del self.s[0], self.y[0]
        return x_new, f_new, g_new

    def _search(self, objective, x, f, g, step):
        d = self._direction(g.flatten()).view_as(x)
        gtd = float((g * d).sum())
        if not gtd < 0:
            self.s.clear()
            self.y.clear()
            d, gtd = -g, -float((g * g).sum())
        t0 = 1.0 if self.s else min(1.0, 1.0 / math.sqrt(-gtd))  # first step: length 1 along -g

        def evaluate(t):
            x_t = x + t * d
            f_t, g_t = objective(x_t, step)
            return _Point(t, float(f_t), float((g_t * d).sum()), x_t, f_t, g_t)

        point = _strong_wolfe(evaluate, _Point(0.0, float(f), gtd, x, f, g), t0, self.max_linesearch,
                              eps=torch.finfo(x.dtype).eps)
        return point.x, point.fun, point.grad

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        q = -g
        alphas = []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            a = (s @ q) / (y @ s)
            q = q - a * y
            alphas.append(a)
        if self.s:
            q = q * ((self.s[-1] @ self.y[-1]) / (self.y[-1] @ self.y[-1]))
        for s, y, a in zip(self.s, self.y, reversed(alphas)):
            q = q + (a - (y @ q) / (y @ s)) * s
        return q


def _strong_wolfe(evaluate, start: _Point, t: float, max_evals: int, eps: float,
                  c1: float = 1e-4, c2: float = 0.9) -> _Point:
    """A step t satisfying the strong Wolfe conditions (Nocedal & Wright Alg. 3.5 and 3.6, cubic interpolation).

    Falls back to the best point with sufficient decrease when ``max_evals`` runs out; raises
    ``_LineSearchFailed`` when no point lowers fn (the gradient is then too small for the precision or wrong).
    """
    prev, evals = start, 0

    def armijo(p):
        return p.f <= start.f + c1 * p.t * start.dphi

    def curvature(p):
        return abs(p.dphi) <= -c2 * start.dphi

    lo = hi = None
    while evals < max_evals:
        point = evaluate(t)
        evals += 1
        if not armijo(point) or (prev is not start and point.f >= prev.f):
            lo, hi = prev, point
            break
        if curvature(point):
            return point
        if point.dphi >= 0:
            lo, hi = point, prev
            break
        t = _cubic_minimizer(prev, point, (point.t + 0.01 * (point.t - prev.t), 10 * point.t))
        prev = point
    else:
        return prev if prev is not start else _fail("no step within the evaluation budget lowered fn")

    while evals < max_evals and abs(hi.t - lo.t) > eps * max(abs(lo.t), abs(hi.t)):
        left, right = sorted((lo.t, hi.t))
        margin = 0.1 * (right - left)
        point = evaluate(_cubic_minimizer(lo, hi, (left + margin, right - margin)))
        evals += 1
        if not armijo(point) or point.f >= lo.f:
            hi = point
        else:
            if curvature(point):
                return point
            if point.dphi * (hi.t - lo.t) >= 0:
                hi = lo
            lo = point
    return lo if lo is not start else _fail("the line search found no lower value of fn along the search direction")


def _fail(reason: str):
    raise _LineSearchFailed(f"stopped: {reason} (tol may be below what the floating-point precision allows)")


def _cubic_minimizer(a: _Point, b: _Point, bounds: tuple[float, float]) -> float:
    """Minimizer of the cubic through (t, f, dphi) at a and b (Nocedal & Wright eq. 3.59), clamped to bounds."""
    low, high = min(bounds), max(bounds)
    d1 = a.dphi + b.dphi - 3 * (a.f - b.f) / (a.t - b.t)
    disc = d1 * d1 - a.dphi * b.dphi
    if disc >= 0:
        d2 = math.copysign(math.sqrt(disc), b.t - a.t)
        denom = b.dphi - a.dphi + 2 * d2
        if denom != 0:
            t = b.t - (b.t - a.t) * (b.dphi + d2 - d1) / denom
            if math.isfinite(t):
                return min(max(t, low), high)
    return 0.5 * (low + high)


class _FIRE:
    """FIRE (Bitzek, Koskinen, Gähler, Moseler, Gumbsch, PRL 97, 170201 (2006)) as in ASE's ``FIRE``.

    Each batch element has its own velocity, dt, alpha and step counter; elements that have converged
    stay where they are while the others continue.
    """

    def __init__(self, x, batched, dt=0.1, dt_max=1.0, max_step=0.2, n_min=5, f_inc=1.1, f_dec=0.5,
                 alpha_start=0.1, f_alpha=0.99):
        where = "minimize(method='fire')"
        dt = check_number(where, "dt", dt, above=0)
        dt_max = check_number(where, "dt_max", dt_max, above=0)
        max_step = check_number(where, "max_step", max_step, above=0)
        n_min = check_number(where, "n_min", n_min, integer=True, at_least=0)
        f_inc = check_number(where, "f_inc", f_inc, at_least=1)
        f_dec = check_number(where, "f_dec", f_dec, above=0, below=1)
        alpha_start = check_number(where, "alpha_start", alpha_start, at_least=0, at_most=1)
        f_alpha = check_number(where, "f_alpha", f_alpha, above=0, at_most=1)
        batch = x.shape[0] if batched else 1
        self.batched = batched
        self.dt_max, self.max_step, self.n_min = dt_max, max_step, n_min
        self.f_inc, self.f_dec, self.alpha_start, self.f_alpha = f_inc, f_dec, alpha_start, f_alpha
        self.v = x.new_zeros(batch, x[0].numel() if batched else x.numel())
        self.dt = x.new_full((batch, 1), dt)
        self.alpha = x.new_full((batch, 1), alpha_start)
        self.n_positive = torch.zeros(batch, 1, dtype=torch.long, device=x.device)
        self.started = False

    def step(self, objective, x, f, g, active, step):
        force = -g.reshape(self.v.shape)
        if self.started:  # the FIRE velocity mixing and dt/alpha control, after the first MD step
            downhill = (force * self.v).sum(1, keepdim=True) > 0
            mixed = (1 - self.alpha) * self.v + self.alpha * self.v.norm(dim=1, keepdim=True) * force / (
                force.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny))
            speed_up = downhill & (self.n_positive > self.n_min)
            self.v = torch.where(downhill, mixed, 0.0)
            self.dt = torch.where(speed_up, (self.dt * self.f_inc).clamp_max(self.dt_max),
                                  torch.where(downhill, self.dt, self.dt * self.f_dec))
            self.alpha = torch.where(speed_up, self.alpha * self.f_alpha,
                                     torch.where(downhill, self.alpha, self.alpha_start))
            self.n_positive = torch.where(downhill, self.n_positive + 1, 0)
        self.started = True
        self.v = self.v + self.dt * force
        dx = self.dt * self.v
        dx = dx * (self.max_step / dx.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)).clamp_max(1.0)
        dx = torch.where(active.reshape(-1, 1), dx, 0.0)
        x = x + dx.reshape(x.shape)
        f, g = objective(x, step)
        return x, f, g


class _Adam:
    """Adam (Kingma & Ba 2015) with torch.optim.Adam's update and defaults, written functionally."""

    def __init__(self, x, batched, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        where = "minimize(method='adam')"
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}.")
        self.lr = check_number(where, "lr", lr, above=0)
        self.betas = tuple(check_number(where, f"betas[{i}]", b, at_least=0, below=1) for i, b in enumerate(betas))
        self.eps = check_number(where, "eps", eps, above=0)
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)

    def step(self, objective, x, f, g, active, step):
        b1, b2 = self.betas
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        denom = (self.v / (1 - b2**step)).sqrt() + self.eps
        x = x - (self.lr / (1 - b1**step)) * self.m / denom
        f, g = objective(x, step)
        return x, f, g


_METHODS = {"lbfgs": _LBFGS, "fire": _FIRE, "adam": _Adam}
