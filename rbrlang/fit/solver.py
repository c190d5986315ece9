"""The exact minimiser of the L2-regularised pairwise hinge loss.

    J(w) = decay/2 · |w|²  +  R(w),
    R(w) = 1/m · Σ_p max(0, c_p − (x_b(p) − x_w(p)) · w),
    c_p  = margin − (rm_b(p) − rm_w(p))          (the RM score is a fixed offset)

Why a cutting-plane (bundle) method in the manner of OCAS (Franc & Sonnenburg,
JMLR 2009) — and not AdamW with fixed steps (the paper's fitter: it stops short
of the optimum and says nothing about how far), nor dual coordinate descent
(one sequential step per pair: 10^6 pairs are too many for Python):

- each iteration is ONE vectorised pass over the pairs, and never builds the
  m × F matrix of pair differences: a pair's score difference is a gather from
  the completions' scores `X @ w`, the subgradient is `Xᵀ·counts`; memory is
  O(N·F + m), not O(m·F);
- R is approximated from below by planes (R is piecewise linear, so finitely
  many planes make the model exact); the model problem is a tiny QP over the
  simplex of plane weights, solved exactly by an active-set method;
- the dual value of the model is a lower bound on the true optimum J*, so the
  method stops with a *certificate*: J(w) − J* ≤ `Solution.gap`. Strong
  convexity bounds the distance to the unique optimum: |w − w*|² ≤ 2·gap/decay;
- OCAS's exact line search between the best point and the model's minimiser
  makes it converge in tens of iterations where plain BMRM needs hundreds;
- the planes are lower bounds of R whatever the decay, so a decay grid reuses
  them (`Solution.planes`, `solve(..., planes=…)`).

`decay` must be positive: with 0 the optimum need not be unique nor finite.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class PairProblem:
    """Completions' features and RM offsets, and pairs as (better, worse) indices."""

    features: np.ndarray  # [N, F] float64
    offsets: np.ndarray  # [N] RM scores (zeros without an RM)
    better: np.ndarray  # [m] int64
    worse: np.ndarray  # [m] int64

    @property
    def pairs(self) -> int:
        return int(self.better.shape[0])

    def targets(self, margin: float) -> np.ndarray:
        """c_p: the margin the features must still provide after the RM."""
        return margin - (self.offsets[self.better] - self.offsets[self.worse])


@dataclass(frozen=True)
class Solution:
    weights: np.ndarray  # [F]
    objective: float  # J(w) = decay/2 |w|² + mean hinge
    loss: float  # the mean hinge alone: the training loss
    lower_bound: float  # certified: J* ≥ lower_bound
    iterations: int
    planes: tuple = field(default=(), repr=False, compare=False)  # (A [t, F], b [t]) for warm starts

    @property
    def gap(self) -> float:
        return max(0.0, self.objective - self.lower_bound)


def hinge(problem: PairProblem, w: np.ndarray, margin: float) -> float:
    """Mean hinge loss of `w` over the problem's pairs (no regulariser)."""
    if problem.pairs == 0:
        return 0.0
    s = problem.features @ np.asarray(w, dtype=np.float64)
    z = problem.targets(margin) - (s[problem.better] - s[problem.worse])
    return float(np.maximum(z, 0.0).sum() / problem.pairs)


class _Risk:
    """R(w), a subgradient, and per-pair slacks, in one pass over the pairs."""

    def __init__(self, problem: PairProblem, margin: float):
        self.X = np.ascontiguousarray(problem.features, dtype=np.float64)
        self.better = np.ascontiguousarray(problem.better, dtype=np.int64)
        self.worse = np.ascontiguousarray(problem.worse, dtype=np.int64)
        self.c = problem.targets(margin)
        self.n, self.m = self.X.shape[0], problem.pairs

    def slack(self, w: np.ndarray) -> np.ndarray:
        s = self.X @ w
        return self.c - (s[self.better] - s[self.worse])

    def plane(self, w: np.ndarray):
        """(R(w), subgradient a, slack z): R(v) ≥ a·v + (R(w) − a·w) for every v."""
        z = self.slack(w)
        viol = z > 0
        r = float(z[viol].sum()) / self.m
        counts = (np.bincount(self.better[viol], minlength=self.n)
                  - np.bincount(self.worse[viol], minlength=self.n)).astype(np.float64)
        return r, -(self.X.T @ counts) / self.m, z


def solve(problem: PairProblem, decay: float, margin: float = 1.0, tol: float = 1e-7,
          max_iterations: int = 1000, planes: tuple = (), w0: Optional[np.ndarray] = None) -> Solution:
    """Minimise J to a certified gap of `tol`·max(1, J)."""
    # The products here are thin (N × F, F in the tens) and memory-bound: BLAS
    # threads only add synchronisation, which costs 10× on a busy machine.
    with _one_blas_thread():
        return _solve(problem, decay, margin, tol, max_iterations, planes, w0)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it, BLAS keeps its threads
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _solve(problem: PairProblem, decay: float, margin: float, tol: float, max_iterations: int, planes: tuple,
           w0: Optional[np.ndarray]) -> Solution:
    if not decay > 0:
        raise ValueError("decay must be positive")
    if problem.pairs == 0:
        raise ValueError("no pairs to fit")
    risk = _Risk(problem, margin)
    f = risk.X.shape[1]
    w_best = np.zeros(f) if w0 is None else np.asarray(w0, dtype=np.float64).copy()
    r, g, z_best = risk.plane(w_best)
    j_best = 0.5 * decay * float(w_best @ w_best) + r
    model = _Planes(f)
    if planes:
        model.extend(*planes)
    model.add(g, r - float(g @ w_best))
    lower = 0.0  # the hinge loss is never negative
    it = 0
    for it in range(1, max_iterations + 1):
        w_model, dual = model.minimise(decay)
        lower = max(lower, dual)
        if j_best - lower <= tol * max(1.0, abs(j_best)):
            break
        # Exact line search from the best point towards the model's minimiser.
        delta = w_model - w_best
        step, d = _line_search(risk, z_best, w_best, delta, decay)
        if step > 0:
            w_best = w_best + step * delta
            z_best = z_best - step * d
            j_best = 0.5 * decay * float(w_best @ w_best) + float(np.maximum(z_best, 0.0).sum()) / risk.m
        if j_best - lower <= tol * max(1.0, abs(j_best)):
            break
        # The new cut goes a little past the best point (OCAS's μ = 0.1).
        w_cut = 0.9 * w_best + 0.1 * w_model
        r_cut, g_cut, z_cut = risk.plane(w_cut)
        j_cut = 0.5 * decay * float(w_cut @ w_cut) + r_cut
        if j_cut < j_best:
            w_best, j_best, z_best = w_cut, j_cut, z_cut
        model.add(g_cut, r_cut - float(g_cut @ w_cut))
    # Recompute from scratch: the incremental slacks carry rounding.
    loss = hinge(problem, w_best, margin)
    return Solution(weights=w_best, objective=0.5 * decay * float(w_best @ w_best) + loss, loss=loss,
                    lower_bound=lower, iterations=it, planes=model.export())


class _Planes:
    """The cutting-plane model max_i (a_i·w + b_i) and its exact minimisation
    with the regulariser; planes unused for a long time are dropped."""

    IDLE_LIMIT = 40

    def __init__(self, f: int):
        self.A = np.zeros((0, f))
        self.b = np.zeros(0)
        self.gram = np.zeros((0, 0))
        self.alpha = np.zeros(0)
        self.idle = np.zeros(0, dtype=np.int64)

    def extend(self, A: np.ndarray, b: np.ndarray) -> None:
        for a_i, b_i in zip(A, b):
            self.add(a_i, float(b_i))

    def add(self, a: np.ndarray, b: float) -> None:
        keep = self.idle < self.IDLE_LIMIT
        self.A, self.b = self.A[keep], self.b[keep]
        self.gram, self.alpha, self.idle = self.gram[np.ix_(keep, keep)], self.alpha[keep], self.idle[keep]
        col = self.A @ a
        t = self.b.size
        gram = np.empty((t + 1, t + 1))
        gram[:t, :t] = self.gram
        gram[:t, t] = gram[t, :t] = col
        gram[t, t] = float(a @ a)
        self.A, self.b, self.gram = np.vstack([self.A, a]), np.append(self.b, b), gram
        self.alpha, self.idle = np.append(self.alpha, 0.0), np.append(self.idle, 0)

    def minimise(self, decay: float) -> tuple[np.ndarray, float]:
        """(argmin_w decay/2 |w|² + model(w), the minimum): via the dual on the simplex."""
        self.alpha, value = simplex_qp(self.gram / decay, self.b, self.alpha)
        self.idle = np.where(self.alpha > 0, 0, self.idle + 1)
        return -(self.A.T @ self.alpha) / decay, value

    def export(self) -> tuple:
        return (self.A.copy(), self.b.copy())


def _line_search(risk: _Risk, z: np.ndarray, w: np.ndarray, delta: np.ndarray, decay: float):
    """argmin_{k ≥ 0} φ(k) = decay/2 |w + k·delta|² + 1/m Σ max(0, z_p − k·d_p), exactly.

    φ is convex piecewise quadratic; φ' jumps up by |d_p|/m at each breakpoint
    k_p = z_p/d_p. Candidate steps (quantiles of the breakpoints) bracket the
    root of φ' with one binned pass; only the breakpoints in that bracket are
    sorted. Returns (k, d)."""
    sd = risk.X @ delta
    d = sd[risk.better] - sd[risk.worse]
    m = risk.m
    quad = decay * float(delta @ delta)
    if quad <= 0:
        return 0.0, d
    # φ'(0+): pair p is in the loss just after 0 if z_p > 0, or z_p = 0 and it grows (d_p < 0).
    active = (z > 0) | ((z == 0) & (d < 0))
    d0 = decay * float(w @ delta) - float(d[active].sum()) / m
    if d0 >= 0:
        return 0.0, d
    nz = d != 0
    k = z[nz] / d[nz]
    ahead = k > 0
    k, jump = k[ahead], np.abs(d[nz][ahead]) / m
    if k.size == 0:
        return -d0 / quad, d

    def slope(at: np.ndarray, mass_below: float, ks: np.ndarray, js: np.ndarray):
        """φ' just after each point of `at` (sorted), from breakpoints in `ks`."""
        idx = np.searchsorted(at, ks, side="left")  # counted from the first at[i] ≥ k_p on
        add = np.cumsum(np.bincount(idx, weights=js, minlength=at.size + 1))[: at.size]
        return d0 + quad * at + mass_below + add

    lo, mass = 0.0, 0.0  # φ'(lo+) < 0; `mass`: the jumps at breakpoints ≤ lo
    while k.size > 4096:  # bracket the root among sampled breakpoints, keep that bin
        cands = np.unique(k[:: max(1, k.size // 256)])
        s = slope(cands, mass, k, jump)
        i = int(np.searchsorted(s >= 0, True))  # first candidate with φ'(c+) ≥ 0
        hi = cands[i] if i < cands.size else np.inf
        if i > 0:
            lo = cands[i - 1]
            mass = s[i - 1] - d0 - quad * lo  # the jumps at breakpoints ≤ lo
        inside = (k > lo) & (k <= hi)
        if inside.sum() == k.size:  # no progress (ties): fall through to sorting
            break
        k, jump = k[inside], jump[inside]
    if k.size == 0:  # past every breakpoint
        return -(d0 + mass) / quad, d
    order = np.argsort(k, kind="stable")
    k, jump = k[order], jump[order]
    before = mass + np.concatenate(([0.0], np.cumsum(jump)[:-1]))
    left = d0 + quad * k + before  # φ' just before breakpoint j
    hit = np.flatnonzero(left + jump >= 0)
    if hit.size == 0:
        return -(d0 + before[-1] + jump[-1]) / quad, d
    j = int(hit[0])
    return (float(k[j]) if left[j] < 0 else -(d0 + before[j]) / quad), d


def simplex_qp(Q: np.ndarray, b: np.ndarray, alpha0: Optional[np.ndarray] = None,
               max_steps: int = 0) -> tuple[np.ndarray, float]:
    """max_{α ∈ simplex} bᵀα − ½ αᵀQα for a PSD Q, and its value.

    An active-set method in the manner of Wolfe's minimum-norm-point algorithm:
    on the support S, the minimiser over S's affine hull solves one small
    bordered linear system; a coordinate that would go negative leaves S, the
    coordinate that most violates optimality joins it. Finite, exact up to
    rounding. Where the objective is linear along a direction in the hull
    (Q singular there), it follows that direction downhill to a face. The value
    of any α on the simplex is a valid lower bound on the primal optimum, so an
    early stop only loosens the certificate."""
    t = b.shape[0]
    x = np.zeros(t) if alpha0 is None else np.maximum(np.asarray(alpha0, dtype=np.float64), 0.0)
    if x.sum() <= 0:
        x = np.zeros(t)
        x[int(np.argmin(0.5 * np.diag(Q) - b))] = 1.0
    x /= x.sum()
    support = [i for i in range(t) if x[i] > 0]
    tol = 1e-13 * max(1.0, float(np.abs(Q).max()), float(np.abs(b).max()))
    for _ in range(max_steps or 20 * t + 100):
        g = Q @ x - b
        j = int(np.argmin(g))
        if float(g @ x) - g[j] <= tol:  # Frank–Wolfe gap: f(x) − f* ≤ it
            break
        if j not in support:
            support.append(j)
        for _ in range(t + 2):  # minimise over the support's affine hull, dropping coordinates
            S = np.asarray(support)
            k = S.size
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = Q[np.ix_(S, S)]
            K[:k, k] = K[k, :k] = 1.0
            u, sv, vt = np.linalg.svd(K)
            if sv[-1] > 1e-12 * sv[0]:
                direction = (vt.T @ ((u.T @ np.append(b[S], 1.0)) / sv))[:k] - x[S]
                theta, full = 1.0, True
            else:  # f is linear along a direction inside the hull: follow it downhill
                direction = vt[-1, :k] - vt[-1, :k].mean()  # stays on Σα = 1
                if float(b[S] @ direction) < 0:
                    direction = -direction
                theta, full = np.inf, False
            neg = direction < 0
            if neg.any():
                theta = min(theta, float((x[S][neg] / -direction[neg]).min()))
            if not np.isfinite(theta):
                break
            x[S] = np.maximum(x[S] + theta * direction, 0.0)
            x[S[x[S] <= 1e-15]] = 0.0
            x /= x.sum()
            support = [i for i in support if x[i] > 0]
            if full and theta >= 1.0:
                break
    return x, float(b @ x) - 0.5 * float(x @ (Q @ x))
