"""Tabular benchmark: cegeo's ImbalancedMLPClassifier against imbalanced-learn baselines.

On STEP-imbalanced subsets of scikit-learn's bundled datasets (nothing is downloaded):

==============  ====  =================================================================
dataset         k     profile (R = n_max/n_min >= 1; classes 0..k_maj-1 are majorities)
==============  ====  =================================================================
digits          10    (R=10, rho=0.5)-STEP: classes 0-4 majority, 5-9 minority
wine            3     (R=10, rho=1/3)-STEP: rho*k must be whole; 1/3 and 2/3 are equally
                      close to 0.5, 1/3 keeps more training data (classes 0-1 majority)
breast cancer   2     (R=10, rho=0.5)-STEP with the labels swapped so that benign is the
                      majority (class 0) and malignant the minority (class 1)
==============  ====  =================================================================

Per seed: a test split balanced across classes (``floor(0.3 * smallest class)`` samples of every
class, drawn with the seed), then the largest STEP subset the rest can supply, drawn with the same
seed (:meth:`cegeo.data.Profile.counts_for`). Every method is fitted on that subset and scored by
balanced accuracy on the test split; the table reports mean ± std over seeds (population std)
and the mean fit time. Methods: the estimator with ``ce``, ``wce``, ``la``, ``ldt`` (gamma = 1/2)
and post-hoc variants, against RandomOverSampler + LogisticRegression, SMOTE +
LogisticRegression, BalancedRandomForestClassifier (imbalanced-learn) and LogisticRegression
with ``class_weight="balanced"`` (scikit-learn). Features are standardised for the logistic
regressions (the estimator standardises internally).

    python bench/tabular.py [--seeds 5] [--datasets digits,wine,breast_cancer]
                            [--methods all|NAME,...] [--epochs N] [--device cpu|cuda]
                            [--out results.md] [--list]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cegeo.data.imbalance import parse_profile
from cegeo.estimator import ImbalancedMLPClassifier

TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Task:
    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    profile: str
    note: str


def load_tasks(names: list[str]) -> list[Task]:
    out = []
    for name in names:
        if name == "digits":
            d = load_digits()
            out.append(
                Task(
                    name,
                    d.data,
                    d.target,
                    tuple(map(str, range(10))),
                    "step:R=10,rho=0.5",
                    "classes 0-4 majority",
                )
            )
        elif name == "wine":
            d = load_wine()
            out.append(
                Task(
                    name,
                    d.data,
                    d.target,
                    tuple(d.target_names),
                    "step:R=10,rho=0.3333333333",
                    "rho*k must be whole: rho = 1/3 (class 2 minority) rather than 2/3",
                )
            )
        elif name == "breast_cancer":
            d = load_breast_cancer()
            # Swap the labels so that benign (357) is the majority class 0, malignant the minority.
            out.append(
                Task(
                    name,
                    d.data,
                    1 - d.target,
                    ("benign", "malignant"),
                    "step:R=10,rho=0.5",
                    "labels swapped: benign majority, malignant minority",
                )
            )
        else:
            raise SystemExit(f"error: unknown dataset {name!r} (digits, wine, breast_cancer)")
    return out


def draw_split(task: Task, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test, train counts) for one seed."""
    rng = np.random.default_rng(seed)
    k = len(task.class_names)
    counts = np.bincount(task.y, minlength=k)
    t = int(np.floor(TEST_FRACTION * counts.min()))
    test, pool = [], []
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(task.y == c))
        test.append(idx[:t])
        pool.append(idx[t:])
    available = np.array([p.size for p in pool])
    profile = parse_profile(task.profile)
    n_max = int(available.max())
    while n_max > 0:  # the largest STEP subset the pool can supply
        try:
            want = profile.counts_for(k, n_max)
            if np.all(want <= available):
                break
        except ValueError:  # n_max / R < 1
            pass
        n_max -= 1
    train = np.concatenate([pool[c][: want[c]] for c in range(k)])
    test_idx = np.concatenate(test)
    return task.X[train], task.y[train], task.X[test_idx], task.y[test_idx], want


def mlp(loss: str, **kw: Any) -> Callable[[int, argparse.Namespace, np.ndarray], BaseEstimator]:
    def make(seed: int, args: argparse.Namespace, counts: np.ndarray) -> BaseEstimator:
        extra = {} if args.epochs is None else {"epochs": args.epochs}
        return ImbalancedMLPClassifier(loss, random_state=seed, device=args.device, **kw, **extra)

    return make


def logreg(sampler: str | None) -> Callable[[int, argparse.Namespace, np.ndarray], BaseEstimator]:
    def make(seed: int, args: argparse.Namespace, counts: np.ndarray) -> BaseEstimator:
        lr = LogisticRegression(max_iter=5000, class_weight="balanced" if sampler is None else None)
        if sampler is None:
            return make_pipeline(StandardScaler(), lr)
        from imblearn.over_sampling import SMOTE, RandomOverSampler
        from imblearn.pipeline import make_pipeline as imb_pipeline

        if sampler == "ros":
            s = RandomOverSampler(random_state=seed)
        else:  # SMOTE needs k_neighbors < the smallest class
            s = SMOTE(k_neighbors=int(min(5, counts.min() - 1)), random_state=seed)
        return imb_pipeline(StandardScaler(), s, lr)

    return make


def brf(seed: int, args: argparse.Namespace, counts: np.ndarray) -> BaseEstimator:
    from imblearn.ensemble import BalancedRandomForestClassifier

    return BalancedRandomForestClassifier(
        n_estimators=200,
        sampling_strategy="all",
        replacement=True,
        bootstrap=False,
        random_state=seed,
        n_jobs=1,
    )


# Methods that need imbalanced-learn (skipped, with a note, where it is not installed).
NEEDS_IMBLEARN = ("ros_lr", "smote_lr", "brf")

METHODS: dict[str, tuple[str, Callable[[int, argparse.Namespace, np.ndarray], BaseEstimator]]] = {
    "ce": ("cegeo MLP, ce", mlp("ce")),
    "wce": ("cegeo MLP, wce (gamma=1)", mlp("wce")),
    "la": ("cegeo MLP, la (tau=1) [default]", mlp("la")),
    "ldt": ("cegeo MLP, ldt (gamma=0.5)", mlp("ldt", gamma=0.5)),
    "ce+posthoc_la": ("cegeo MLP, ce + posthoc_la", mlp("ce", posthoc="posthoc_la")),
    "ldt+posthoc_la": (
        "cegeo MLP, ldt (gamma=0.5) + posthoc_la",
        mlp("ldt", gamma=0.5, posthoc="posthoc_la"),
    ),
    "ce+geometry": ("cegeo MLP, ce + geometry (beta=1)", mlp("ce", posthoc="geometry")),
    "lr_balanced": ("LogisticRegression(class_weight=balanced)", logreg(None)),
    "ros_lr": ("RandomOverSampler + LogisticRegression", logreg("ros")),
    "smote_lr": ("SMOTE + LogisticRegression", logreg("smote")),
    "brf": ("BalancedRandomForestClassifier", brf),
}


def fmt(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    return f"{a.mean():.1f} ± {a.std():.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", default="digits,wine,breast_cancer")
    ap.add_argument("--methods", default="all", help="all, or a comma-separated list (see --list)")
    ap.add_argument("--epochs", type=int, default=None, help="override the estimator's epochs")
    ap.add_argument("--device", default="cpu", help="the estimator's device (cpu, cuda, auto)")
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--list", action="store_true", help="list the methods and exit")
    args = ap.parse_args(argv)
    if args.list:
        for key, (label, _) in METHODS.items():
            print(f"{key:16s} {label}")
        return 0
    methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        print(f"error: unknown method(s) {', '.join(bad)}; see --list", file=sys.stderr)
        return 2
    notes = []
    try:
        import imblearn  # noqa: F401
    except ImportError:
        skipped = [m for m in methods if m in NEEDS_IMBLEARN]
        methods = [m for m in methods if m not in NEEDS_IMBLEARN]
        if skipped:
            notes.append(f"imbalanced-learn is not installed here: skipped {', '.join(skipped)}.")
            print(f"warning: {notes[-1]}", file=sys.stderr)
    tasks = load_tasks([d.strip() for d in args.datasets.split(",") if d.strip()])
    seeds = list(range(args.seeds))
    scores = {(m, t.name): [] for m in methods for t in tasks}
    times = {m: [] for m in methods}
    shapes: dict[str, str] = {}
    t_all = time.perf_counter()
    for task in tasks:
        for seed in seeds:
            X_tr, y_tr, X_te, y_te, counts = draw_split(task, seed)
            shapes[task.name] = (
                f"train counts {counts.tolist()}, test {np.bincount(y_te).tolist()}, "
                f"{task.X.shape[1]} features"
            )
            for m in methods:
                est = METHODS[m][1](seed, args, counts)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(X_tr, y_tr)
                times[m].append(time.perf_counter() - t0)
                scores[(m, task.name)].append(balanced_accuracy_score(y_te, est.predict(X_te)))
            print(f"  {task.name} seed {seed} done ({time.perf_counter() - t_all:.0f} s)", file=sys.stderr)

    lines = [
        f"Balanced accuracy (%) on a class-balanced test split, mean ± std over {len(seeds)} seeds; "
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"estimator device {args.device}" + ("" if args.epochs is None else f", epochs={args.epochs}") + ".",
        "",
    ]
    for t in tasks:
        profile = t.profile.replace("0.3333333333", "1/3")
        lines.append(f"- {t.name}: `{profile}` ({t.note}); {shapes[t.name]}")
    lines.append("")
    header = ["method", *[t.name for t in tasks], "mean fit time (s)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    best = {t.name: max(np.mean(scores[(m, t.name)]) for m in methods) for t in tasks}
    for m in methods:
        cells = []
        for t in tasks:
            text = fmt(scores[(m, t.name)])
            cells.append(f"**{text}**" if np.mean(scores[(m, t.name)]) == best[t.name] else text)
        lines.append(f"| {METHODS[m][0]} | " + " | ".join(cells) + f" | {np.mean(times[m]):.2f} |")
    lines.append("")
    lines.append(f"Total wall time {time.perf_counter() - t_all:.0f} s. Bold: best mean per dataset.")
    lines.extend(notes)
    table = "\n".join(lines)
    print(table)
    if args.out:
        from cegeo._io import write_text

        write_text(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
