"""Maximum-likelihood fit of a two-component Weibull mixture, many problems at once.

RPC (methods.md §3) fits `w·Weib(x;k1,λ1) + (1-w)·Weib(x;k2,λ2)` by
`scipy.optimize.minimize(nll, [0.5,1,1,1.5,2], bounds=[(0.2,0.8)] + [(0.01,None)]*4)`, i.e.
L-BFGS-B with forward-difference gradients (absolute step 1e-8). A curve re-fits tens of thousands
of subsets, and that call costs ~50 ms each, nearly all of it Python overhead around a few
hundred tiny objective evaluations. `fit_mixture` runs the same L-BFGS-B code (scipy's own
`setulb` routine, driven in reverse-communication mode) for a whole batch in lock step and
evaluates the objective and its finite differences for the batch in one vectorised pass.

Every step mirrors what `minimize` does — the same objective, the same finite-difference steps
(flipped at the upper bound of w, as scipy's bound handling does), the same memoised re-visits,
the same stopping limits — so each row's result is bit-for-bit the one `minimize` returns for that
row alone (tests check this), and a row's result never depends on what else is in the batch. Where
the installed scipy's `setulb` has another signature, the fit falls back to calling `minimize` per
row.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

X0 = np.array([0.5, 1.0, 1.0, 1.5, 2.0])           # [w, k1, λ1, k2, λ2]
LOWER = np.array([0.2, 0.01, 0.01, 0.01, 0.01])
UPPER = np.array([0.8, np.inf, np.inf, np.inf, np.inf])
PDF_FLOOR = 1e-300  # a point with zero density under both components would make the NLL infinite

# scipy.optimize.minimize(method="L-BFGS-B") defaults
_MAXCOR, _FTOL, _GTOL, _MAXLS, _MAXITER, _MAXFUN, _EPS = 10, 2.2204460492503131e-09, 1e-5, 20, 15000, 15000, 1e-8
_FG, _NEW_X, _STOP = 3, 1, 5


def weibull_pdf(x, k, lam):
    return (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))


def weibull_mean(k, lam):
    from scipy.special import gamma

    return lam * gamma(1 + 1 / k)


def neg_log_likelihood(params, x) -> float:
    """The objective for one row (the form `minimize` is given; used by the fallback and tests)."""
    w, k1, lam1, k2, lam2 = params
    with np.errstate(all="ignore"):
        pdf = w * weibull_pdf(x, k1, lam1) + (1 - w) * weibull_pdf(x, k2, lam2)
        return -np.sum(np.log(np.clip(pdf, PDF_FLOOR, None)))


def _pdf(X, k, lam):
    """weibull_pdf evaluated in place, with x/λ computed once: the same operations in the same
    order, so the same bits."""
    r = X / lam
    tail = np.power(r, k)
    np.negative(tail, out=tail)
    np.exp(tail, out=tail)
    out = np.power(r, k - 1, out=r)
    np.multiply(k / lam, out, out=out)
    return np.multiply(out, tail, out=out)


def _mixture_nll(w, pdf1, pdf2):
    pdf = w * pdf1
    pdf += (1 - w) * pdf2
    np.maximum(pdf, PDF_FLOOR, out=pdf)
    return -np.sum(np.log(pdf, out=pdf), axis=-1)


def _objective_and_differences(P, H, X):
    """NLL at P (B,5) and at the 5 points P + H[j]·e_j, for rows of data X (B,n).

    Each forward step moves one parameter, so each component's density is needed at only three
    parameter settings (base, k moved, λ moved): six densities instead of twelve.
    """
    w, k1, lam1, k2, lam2 = (P[:, j:j + 1] for j in range(5))
    moved = P + H
    w_, k1_, lam1_, k2_, lam2_ = (moved[:, j:j + 1] for j in range(5))
    f = np.empty((P.shape[0], 6))
    with np.errstate(all="ignore"):
        base1, base2 = _pdf(X, k1, lam1), _pdf(X, k2, lam2)
        f[:, 0] = _mixture_nll(w, base1, base2)
        f[:, 1] = _mixture_nll(w_, base1, base2)
        f[:, 2] = _mixture_nll(w, _pdf(X, k1_, lam1), base2)
        f[:, 3] = _mixture_nll(w, _pdf(X, k1, lam1_), base2)
        f[:, 4] = _mixture_nll(w, base1, _pdf(X, k2_, lam2))
        f[:, 5] = _mixture_nll(w, base1, _pdf(X, k2, lam2_))
    return f


def _forward_steps(P):
    """scipy's 2-point steps for an absolute epsilon: +eps, or -eps where that would leave the
    bounds, or a relative step where eps vanishes against a huge parameter."""
    h = np.full(P.shape, _EPS)
    vanished = (P + h) - P == 0
    if vanished.any():
        sign = np.where(P >= 0, 1.0, -1.0)
        h = np.where(vanished, np.finfo(float).eps ** 0.5 * sign * np.maximum(1.0, np.abs(P)), h)
    outside = (P + h > UPPER) | (P + h < LOWER)
    return np.where(outside, -h, h)


def _evaluate(P, X):
    H = _forward_steps(P)
    f = _objective_and_differences(P, H, X)
    dx = (P + H) - P
    return f[:, 0], (f[:, 1:] - f[:, :1]) / dx


class _Batch:
    """The L-BFGS-B state of every row, with per-row argument tuples for setulb."""

    def __init__(self, X):
        from scipy.optimize import _lbfgsb

        self.setulb = _lbfgsb.setulb
        B, n, m = X.shape[0], 5, _MAXCOR
        self.X = X
        self.x = np.tile(X0, (B, 1))
        self.f = np.zeros(B)
        self.g = np.zeros((B, n))
        self.last = np.full((B, n), np.nan)
        self.nfev = np.zeros(B, dtype=np.int64)
        self.nit = [0] * B
        self.task = np.zeros((B, 2), dtype=np.int32)
        wa = np.zeros((B, 2 * m * n + 5 * n + 11 * m * m + 8 * m))
        iwa = np.zeros((B, 3 * n), dtype=np.int32)
        lsave, isave = np.zeros((B, 4), dtype=np.int32), np.zeros((B, 44), dtype=np.int32)
        dsave, ln_task = np.zeros((B, 29)), np.zeros((B, 2), dtype=np.int32)
        nbd = np.array([2, 1, 1, 1, 1], dtype=np.int32)  # w bounded both sides, the rest below
        low, up = LOWER.copy(), np.where(np.isinf(UPPER), 0.0, UPPER)
        factr = _FTOL / np.finfo(float).eps
        self.args = [
            (m, self.x[b], low, up, nbd, self.f[b:b + 1].reshape(()), self.g[b], factr, _GTOL,
             wa[b], iwa[b], self.task[b], lsave[b], isave[b], dsave[b], _MAXLS, ln_task[b])
            for b in range(B)
        ]

    def evaluate(self, rows):
        """f and g at the current x of `rows`, skipping rows whose x is the memoised one."""
        rows = rows[~np.all(self.x[rows] == self.last[rows], axis=1)]
        if rows.size:
            self.f[rows], self.g[rows] = _evaluate(self.x[rows], self.X[rows])
            self.last[rows] = self.x[rows]
            self.nfev[rows] += 6

    def advance(self, active) -> list:
        """Run each active row's optimiser until it asks for f and g; return those rows."""
        setulb, args, nit, nfev = self.setulb, self.args, self.nit, self.nfev
        code = memoryview(self.task).cast("B").cast("i")  # plain ints, cheaper than numpy scalars
        waiting = []
        for b in active:
            a, t = args[b], 2 * b
            while True:
                setulb(*a)
                if code[t] == _FG:
                    waiting.append(b)
                    break
                if code[t] != _NEW_X:
                    break
                nit[b] += 1  # minimize's own limits, checked after each iteration
                if nit[b] >= _MAXITER:
                    code[t], code[t + 1] = _STOP, 504
                elif nfev[b] > _MAXFUN:
                    code[t], code[t + 1] = _STOP, 502
        return waiting

    def run(self):
        active = np.arange(self.X.shape[0])
        self.evaluate(active)  # minimize evaluates x0 before its first setulb call
        while active.size:
            active = np.array(self.advance(active.tolist()), dtype=np.int64)
            if active.size:
                self.evaluate(active)
        return self.x


@contextmanager
def _single_threaded_blas():
    """Run L-BFGS-B's tiny BLAS calls on one thread.

    OpenBLAS hands even 5-element operations to its worker threads; when the cores are busy (a
    generator running beside us, or our own worker processes) each call then waits for a
    descheduled thread, which made a fit up to 100x slower in measurements. threadpoolctl does this
    properly when installed; otherwise the bundled OpenBLAS is asked directly.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1, user_api="blas"):
            yield
        return
    restore = []
    for setter, getter in _openblas_thread_controls():
        restore.append((setter, getter()))
        setter(1)
    try:
        yield
    finally:
        for setter, n in restore:
            setter(n)


def _openblas_thread_controls():
    import ctypes
    import glob
    import os

    import scipy

    site = os.path.dirname(os.path.dirname(scipy.__file__))
    for path in glob.glob(os.path.join(site, "scipy.libs", "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("", "64_"):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    yield setter, getter


def _fit_with_minimize(X):
    from scipy.optimize import minimize

    bounds = list(zip(LOWER, [None if np.isinf(u) else u for u in UPPER]))
    return np.array([minimize(neg_log_likelihood, X0, args=(x,), bounds=bounds).x for x in X])


def fit_mixture(X) -> np.ndarray:
    """Fitted [w, k1, λ1, k2, λ2] for every row of X (B, n): B samples of n path probabilities."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.shape[0] == 0:
        return np.zeros((0, 5))
    with _single_threaded_blas():
        try:
            return _Batch(X).run()
        except (ImportError, AttributeError, TypeError, ValueError):
            return _fit_with_minimize(X)  # a scipy whose private setulb differs


def low_component_posterior_wins(X, params) -> np.ndarray:
    """Per point, whether its posterior membership of the low-mean component exceeds the high
    one (X (B,n), params (B,5)); the component with the larger mean λ·Γ(1+1/k) is "high"."""
    w, k1, lam1, k2, lam2 = (params[:, j:j + 1] for j in range(5))
    swap = weibull_mean(k1, lam1) < weibull_mean(k2, lam2)
    w_hi = np.where(swap, 1 - w, w)
    k_hi, lam_hi = np.where(swap, k2, k1), np.where(swap, lam2, lam1)
    k_lo, lam_lo = np.where(swap, k1, k2), np.where(swap, lam1, lam2)
    with np.errstate(all="ignore"):
        p_hi = w_hi * weibull_pdf(X, k_hi, lam_hi)
        p_lo = (1 - w_hi) * weibull_pdf(X, k_lo, lam_lo)
        post_hi = p_hi / (p_hi + p_lo)
    return post_hi < 1 - post_hi
