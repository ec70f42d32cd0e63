"""``cegeo demo``: the whole workflow (plan, simulate, train, correct, report) on bundled data.

On scikit-learn's digits (k = 10) made (R = 10, rho = 0.5)-STEP imbalanced (R = n_max/n_min;
classes 0..4 are the majorities), on a laptop CPU:

1. **Plan** — the limiting geometry of CE, LA, CDT and LDT from the closed form
   (:func:`cegeo.theory.predict`), and the LDT temperature that makes it symmetric
   (:func:`cegeo.theory.tune`: gamma = 1/2).
2. **Simulate** — the paper's UFM recipe for CDT and LDT over gamma in [-1.5, 1.5], batched
   (:class:`cegeo.ufm.UFMExperiment`).
3. **Train** — an MLP with ce, wce, la, cdt and ldt (gamma = 1/2), two seeds each
   (:func:`cegeo.sweep.run_sweep`).
4. **Correct** — post-hoc rebalancers on the CE runs, fitted on validation
   (:func:`cegeo.rebalance.run_posthoc`).
5. **Report** — ``report.html`` and ``summary.md`` (:func:`cegeo.report.build_report`).

The demo is a sweep (:data:`DEMO_SWEEP`, also ``experiments/demo.toml``), so a second run into
the same folder skips what is finished. ``fast=True`` shrinks epochs and sizes for CI but runs
every step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import fail
from .config import from_dict
from .report import Report, build_report
from .sweep import SweepConfig, SweepOutcome, check_run_folders, check_sweep_out, expand, run_sweep

__all__ = ["DEMO_SWEEP", "DemoResult", "demo_sweep", "run_demo", "theory_rows"]

#: The demo as a sweep (the same as experiments/demo.toml).
DEMO_SWEEP: dict[str, Any] = {
    "name": "cegeo demo: five losses on digits, (R=10, rho=0.5)-STEP",
    "description": (
        "An MLP trained on scikit-learn's digits with 5 majority classes (0-4) and 5 minority classes "
        "(5-9) ten times rarer, with five losses and two seeds each; a batched UFM simulation of the "
        "paper's recipe; post-hoc rebalancing of the CE runs."
    ),
    "seeds": [0, 1],
    "base": {
        # test_fraction 0.3 (fixed); a 25% validation share keeps about 3 samples per minority class
        "data": {"source": "digits", "imbalance": "step:R=10,rho=0.5", "val_fraction": 0.25},
        "model": {"name": "mlp", "options": {"width": 512, "depth": 3}},
        "optim": {"lr": 0.05, "milestones": [20]},
        "train": {"epochs": 30, "batch_size": 64},
        # one thread: these matrices are small, and extra threads only contend on shared cores
        "runtime": {"threads": 1},
    },
    "losses": [
        {"name": "ce"},
        {"name": "wce"},
        {"name": "la"},
        {"name": "cdt", "grid": {"gamma": [0.5]}},
        {"name": "ldt", "grid": {"gamma": [0.5]}},
    ],
    "ufm": {
        "step": "k=10,R=10,rho=0.5",
        "n_min": 5,
        "d": 20,
        "losses": ["cdt", "ldt"],
        "gamma_grid": "-1.5:1.5:13",
        "epochs": 6000,
        "milestones": [2000, 4000],
        "seeds": [0, 1],
    },
    "posthoc": {"losses": ["ce"]},
}

#: What ``--fast`` changes (every step still runs).
FAST_CHANGES: dict[str, Any] = {
    "base": {
        "model": {"options": {"width": 64, "depth": 2}},
        "optim": {"milestones": [3]},
        "train": {"epochs": 4},
    },
    "ufm": {"epochs": 300, "milestones": [100, 200], "gamma_grid": [0.0, 0.5]},
}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def demo_sweep(fast: bool = False) -> SweepConfig:
    """The demo's sweep configuration (``fast``: fewer epochs, a smaller MLP, a short UFM).

    Examples
    --------
    >>> cfg = demo_sweep(fast=True)
    >>> [spec.name for spec in cfg.losses], cfg.seeds, cfg.base["train"]["epochs"]
    (['ce', 'wce', 'la', 'cdt', 'ldt'], (0, 1), 4)
    """
    data = _merge(DEMO_SWEEP, FAST_CHANGES) if fast else copy.deepcopy(DEMO_SWEEP)
    if fast:
        data["name"] += " (fast)"
    return from_dict(SweepConfig, data)


def theory_rows(
    k: int = 10, R: float = 10.0, rho: float = 0.5
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The plan: predicted geometry of CE, LA, CDT and LDT at (R, rho)-STEP, and the symmetric LDT.

    Returns
    -------
    rows : list of dict
        ``loss``, ``setting`` and the group summary (``W_ratio``, ``W_cos_*``, ``H_ratio`` ...)
        plus ``etf_residual`` (0 = the symmetric geometry), for CE, LA (tau = 1), CDT (gamma = 1/2)
        and LDT at the tuned gamma.
    tuned : dict
        ``ldt`` and ``cdt``: :meth:`cegeo.theory.TuneResult.to_dict` of the gamma closest to the
        symmetric (ETF) geometry.

    Examples
    --------
    >>> rows, tuned = theory_rows()
    >>> [r["loss"] for r in rows], round(tuned["ldt"]["value"], 6)
    (['CE', 'LA', 'CDT', 'LDT'], 0.5)
    >>> round(rows[0]["W_ratio"], 4), round(rows[3]["W_ratio"], 4)  # THEORY.md §4.4
    (2.6721, 1.0)
    """
    from .data.imbalance import step_groups
    from .theory import etf_residual, predict, theory_loss, tune

    k_min = round(rho * k)
    counts = np.array([R] * (k - k_min) + [1.0] * k_min)  # scale-free: n_min = 1
    grp = step_groups(k, rho)
    ldt = tune("ldt", counts, groups=grp)
    cdt = tune("cdt", counts, groups=grp)
    settings = [
        ("CE", "ce", {}, "-"),
        ("LA", "la", {"tau": 1.0}, "tau = 1"),
        ("CDT", "cdt", {"gamma": 0.5}, "gamma = 0.5"),
        ("LDT", "ldt", {"gamma": ldt.value}, f"gamma = {ldt.value:.4g} (tuned)"),
    ]
    rows = []
    for label, name, hyper, text in settings:
        geo = predict(theory_loss(name, counts, **hyper), counts, grp)
        rows.append({"loss": label, "setting": text, **geo.summary, "etf_residual": etf_residual(geo).total})
    return rows, {"ldt": ldt.to_dict(), "cdt": cdt.to_dict()}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out: Path
    theory: list[dict[str, Any]]
    tuned: dict[str, Any]
    sweep: SweepOutcome
    report: Report
    wall_time_s: float


def run_demo(
    out: str | Path,
    *,
    fast: bool = False,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    on_theory: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the five steps into ``out`` (finished work is skipped when ``out`` holds it).

    Parameters
    ----------
    out : path
        The demo folder (a sweep folder).
    fast : bool
        Shrink epochs and sizes (CI); every step still runs.
    jobs : int
        Training runs at a time (``cegeo sweep --jobs``).
    log : callable, optional
        Receives progress lines.
    on_theory : callable, optional
        Called with :func:`theory_rows`'s result before the simulation starts.

    Raises
    ------
    ValueError
        ``out`` holds a demo made with other settings (e.g. ``--fast`` vs full): use another folder.
    """
    t0 = time.perf_counter()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise fail("--jobs", "an integer >= 1", jobs)
    say = log or (lambda line: None)
    config = demo_sweep(fast)
    check_sweep_out(Path(out))  # before step 1 prints anything
    # Refuse a folder of another demo (--fast vs full) before any step writes into it: the
    # UFM step alone does not look at the run folders.
    check_run_folders(expand(config), Path(out) / "runs")
    say("1/5 plan: the geometry each loss converges to (closed form, THEORY.md §4)")
    rows, tuned = theory_rows()
    if on_theory is not None:
        on_theory(rows, tuned)
    say("2/5 simulate: the unconstrained features model, CDT and LDT over gamma, one batch")
    run_sweep(config, out, only="ufm", log=say)
    say(f"3/5 train: an MLP with {', '.join(s.display for s in config.losses)} x {len(config.seeds)} seeds")
    outcome = run_sweep(config, out, jobs=jobs, only="runs", log=say)
    say("4/5 correct: post-hoc rebalancers on the CE runs (fitted on validation)")
    post = run_sweep(config, out, only="posthoc", log=say)
    outcome.posthoc, outcome.summary = post.posthoc, post.summary
    say("5/5 report")
    report = build_report(out)
    return DemoResult(Path(out), rows, tuned, outcome, report, time.perf_counter() - t0)
