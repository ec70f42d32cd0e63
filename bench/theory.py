"""Benchmark the closed-form theory (THEORY.md §4).

1. ``predict`` (class_logits + Grams + summaries) for k = 1000 random counts with LDT
   temperatures; target <= 2 s on the 2-core CPU container. The Grams come from the closed form
   with M's known null vectors split off exactly (``_closed_form_grams``). Baselines in the same
   run: one plain SVD of M N^1/2 (the previous implementation) and ``eigh`` square roots of the
   squared products (the one before), with each route's accuracy on a STEP profile where the
   exact answer is known (R = 1e6, one minority) and on a CDT profile at k = 2, R = 1e6,
   gamma = 1.5 (exact: antipodal classifiers, W norm-squared ratio 1e18).
2. k = 10: the closed form against the convex solver of the class-level program (cvxpy,
   Clarabel), with the speed ratio and the largest relative error of M over the draws.

The theory is numpy on the CPU; ``--device`` is accepted so the combined GPU session can run every
bench script the same way, and is reported but has no effect here. Part 2 is skipped (with a
message) where cvxpy is not installed.

    python bench/theory.py [--repeats 5] [--draws 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from cegeo.data.imbalance import step_groups
from cegeo.losses import ParametricCE
from cegeo.theory import class_logits, predict, psd_sqrt, seli_step
from cegeo.theory._closed_form import _closed_form_grams


def eigh_grams(M: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: eigh square roots of M N M^T and N^1/2 M^T M N^1/2."""
    sq = np.sqrt(n)
    G_W = psd_sqrt((M * n[None, :]) @ M.T)
    G_H = psd_sqrt((sq[:, None] * (M.T @ M)) * sq[None, :]) / sq[:, None] / sq[None, :]
    return G_W, G_H


def svd_grams(M: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous route (still :func:`cegeo.theory.geometry`'s for an arbitrary M): both
    Grams from one SVD of M N^1/2."""
    sq = np.sqrt(n)
    U, s, Vt = np.linalg.svd(M * sq[None, :])
    return (U * s) @ U.T, ((Vt.T * s) @ Vt) / sq[:, None] / sq[None, :]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def part_predict(repeats: int) -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 5000, 1000).astype(np.float64)
    loss = ParametricCE(delta_label=(n / n.max()) ** 0.5)
    M = class_logits(loss, n)
    dl = loss.delta_label.numpy()
    total = timed(lambda: predict(loss, n), repeats)
    used = timed(lambda: _closed_form_grams(np.ones(n.size), dl, n), repeats)
    svd = timed(lambda: svd_grams(M, n), repeats)
    base = timed(lambda: eigh_grams(M, n), repeats)
    med_used, med_svd, med_base = statistics.median(used), statistics.median(svd), statistics.median(base)
    print(f"[1] predict, k = 1000 random counts (LDT gamma = 1/2), {repeats} repeats")
    print(
        f"    predict end to end: median {statistics.median(total):.3f} s, min {min(total):.3f} s "
        "(target <= 2 s)"
    )
    print(f"    Grams, null space split off (used): median {med_used:.3f} s, min {min(used):.3f} s")
    print(f"    Grams by one plain SVD (previous):  median {med_svd:.3f} s, min {min(svd):.3f} s")
    print(f"    Grams by two eigh (before that):    median {med_base:.3f} s, min {min(base):.3f} s")
    print(
        f"    ratio used / plain SVD (median): {med_used / med_svd:.2f}; used / eigh: {med_used / med_base:.2f}"
    )
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - ships with scikit-learn
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1):
            one = timed(lambda: predict(loss, n), repeats)
        print(
            f"    predict with one BLAS thread: median {statistics.median(one):.3f} s "
            f"(ratio default threads / one thread: {statistics.median(total) / statistics.median(one):.2f}; "
            "on a loaded 2-core machine OpenBLAS threads contend, see OPENBLAS_NUM_THREADS)"
        )
    # Accuracy where the exact answer is known (STEP, §4.3 table): R = 1e6, k = 10, one minority.
    step = seli_step(10, 1e6, 0.1)
    cn = step.class_counts
    g = predict(None, cn, step_groups(10, 0.1))
    sw, sh = svd_grams(class_logits(None, cn), cn)
    bw, bh = eigh_grams(class_logits(None, cn), cn)

    def err(A, B):
        return np.abs(A - B).max() / np.abs(B).max()

    print(
        f"    accuracy at R = 1e6, k = 10, k_min = 1 (max error / max entry): "
        f"used G_W {err(g.G_W, step.G_W):.1e}, G_H {err(g.G_H, step.G_H):.1e}; "
        f"plain SVD G_W {err(sw, step.G_W):.1e}, G_H {err(sh, step.G_H):.1e}; "
        f"eigh G_W {err(bw, step.G_W):.1e}, G_H {err(bh, step.G_H):.1e}"
    )
    # Far-apart temperatures: CDT at k = 2, R = 1e6, gamma = 1.5 (exact: cos = -1, ratio 1e18).
    c2 = np.array([1e6, 1.0])
    cdt = ParametricCE(delta_logit=(c2 / c2.max()) ** 1.5)
    g2 = predict(cdt, c2)
    pw, _ = svd_grams(class_logits(cdt, c2), c2)

    def cos_ratio(G):
        return G[0, 1] / np.sqrt(G[0, 0] * G[1, 1]), G[0, 0] / G[1, 1]

    (cu, ru), (cp, rp) = cos_ratio(g2.G_W), cos_ratio(pw)
    print(
        f"    CDT k = 2, R = 1e6, gamma = 1.5 (exact cos -1, ratio 1e18): used cos {cu:.6f}, ratio "
        f"{ru:.4g}; plain SVD cos {cp:.6f}, ratio {rp:.4g}"
    )


def part_convex(draws: int) -> None:
    try:
        from cegeo.theory.convex import solve_class_level
    except ImportError:  # pragma: no cover - the module itself imports without cvxpy
        raise
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        print("[2] skipped: cvxpy is not installed (pip install 'cegeo[theory]')")
        return
    rng = np.random.default_rng(1)
    t_closed, t_convex, errors, gaps = [], [], [], []
    for _ in range(draws):
        n = np.round(np.exp(rng.uniform(0, np.log(1e4), 10))) + 1
        params = {
            "delta_logit": np.exp(rng.uniform(-2, 2, 10)),
            "delta_label": np.exp(rng.uniform(-2, 2, 10)),
        }
        t0 = time.perf_counter()
        g = predict(params, n)
        t_closed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sol = solve_class_level(n, params)
        t_convex.append(time.perf_counter() - t0)
        errors.append(np.linalg.norm(sol.M - g.M) / np.linalg.norm(g.M))
        gaps.append(sol.gap)
    mc, mv = statistics.median(t_closed), statistics.median(t_convex)
    print(f"[2] k = 10, {draws} random counts and temperatures: closed form vs convex solver ({sol.solver})")
    print(
        f"    closed form predict: median {mc * 1e3:.2f} ms; convex solve (compile + solve): median {mv * 1e3:.1f} ms"
    )
    print(f"    speed ratio convex / closed form: {mv / mc:.0f}x")
    print(f"    max relative error of M: {max(errors):.1e}; max certified duality gap: {max(gaps):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument(
        "--device", default="cpu", help="accepted for uniformity; the theory runs in numpy on the CPU"
    )
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cegeo bench/theory.py: {platform.processor() or platform.machine()}, {cpus} CPUs usable, "
        f"numpy {np.__version__}; --device {args.device} (no effect: numpy on the CPU)"
    )
    part_predict(args.repeats)
    part_convex(args.draws)


if __name__ == "__main__":
    main()
