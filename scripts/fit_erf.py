#!/usr/bin/env python3
"""Fits erf(z) ~ z P(z^2) / Q(z^2) on [0, 4] (P, Q of degree 5, Q(0) = 1), the form of
ErfRational in src/model/cpu_vector.h, and prints the coefficients and the absolute error
in exact (float64) arithmetic and evaluated in fp32 as the kernel does.

The fit is linear least squares on z P(t) - erf(z) Q(t) = 0, reweighted by 1/|Q| of the
previous pass (so that it minimises the error of the quotient) and, Lawson-style, by the
previous pass's error (so that it tends to the minimax fit). Needs numpy
(.venv/bin/python scripts/fit_erf.py).
"""
import math

import numpy as np

CLAMP = 4.0
DEGREE_P, DEGREE_Q = 5, 5


def fit(z, f, iters=60):
    t = z * z
    weights, q_prev, best = np.ones_like(z), np.ones_like(z), None
    for _ in range(iters):
        a = np.hstack([(z * t**i)[:, None] for i in range(DEGREE_P + 1)] +
                      [(-f * t**j)[:, None] for j in range(1, DEGREE_Q + 1)])
        w = weights / q_prev
        sol, *_ = np.linalg.lstsq(a * w[:, None], f * w, rcond=None)
        p, q = sol[:DEGREE_P + 1], np.concatenate([[1.0], sol[DEGREE_P + 1:]])
        big_q = np.polyval(q[::-1], t)
        err = z * np.polyval(p[::-1], t) / big_q - f
        worst = np.max(np.abs(err))
        if best is None or worst < best[0]:
            best = (worst, p, q)
        q_prev = np.abs(big_q)
        weights = weights * np.sqrt(np.abs(err) / worst + 1e-3)
        weights /= weights.mean()
    return best


def eval_fp32(p, q, z):
    z32 = z.astype(np.float32)
    t = z32 * z32
    num = np.float32(p[-1])
    for c in p[-2::-1]:
        num = num * t + np.float32(c)
    den = np.float32(q[-1])
    for c in q[-2::-1]:
        den = den * t + np.float32(c)
    return (z32 * num / den).astype(np.float64)


def main():
    z = np.linspace(0.0, CLAMP, 20001)
    f = np.array([math.erf(v) for v in z])
    worst, p, q = fit(z, f)
    print(f"P (t^0 first): {[float(np.float32(c)) for c in p]}")
    print(f"Q (t^0 first): {[float(np.float32(c)) for c in q]}")
    print(f"max |error| on [0, {CLAMP}]: {worst:.3g} exact, "
          f"{np.max(np.abs(eval_fp32(p, q, z) - f)):.3g} in fp32")


if __name__ == "__main__":
    main()
