"""What a report shows, computed from run folders: groups over seeds, selections, headline, tables.

Everything here is plain data (lists of rows, sentences); :mod:`cegeo.report._page` draws the
figures and writes HTML and Markdown from it.

Selection rule (the report never tunes on test): when a loss was run with several
hyperparameter values, the report's per-loss lines (learning curves, per-class recall,
headline) use the value with the best mean **validation** balanced accuracy; the numbers shown
for it are test-set means ± standard deviations over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_json
from .._validation import InputError, fail
from ..sweep import RunResult, aggregate, convergence_point, load_runs, load_ufm, summarize

__all__ = ["Group", "ReportData", "collect"]

#: Losses with a temperature family parameter whose geometry changes with it (figure vs gamma).
GAMMA_LOSSES = ("cdt", "ldt", "vs")


@dataclass
class Group:
    """Runs of one grid point over seeds (all statuses) and their summary row."""

    key: str
    setup: str  # setup display name ("" when there is one setup)
    loss: str
    label: str  # e.g. "ldt (gamma=0.5)"
    runs: list[RunResult]
    row: dict[str, Any]

    @property
    def finished(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "finished"]

    @property
    def hyper(self) -> dict[str, float]:
        ref = self.finished[0] if self.finished else self.runs[0]
        return dict(ref.hyper)

    def mean(self, metric: str) -> float | None:
        return self.row.get(f"{metric}_mean")

    def std(self, metric: str) -> float | None:
        return self.row.get(f"{metric}_std")

    def pm(self, metric: str, digits: int = 3) -> str:
        """``0.912 ± 0.013`` (mean ± std over seeds), ``–`` when missing."""
        mean, std = self.mean(metric), self.std(metric)
        if mean is None:
            return "–"
        return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


@dataclass
class ReportData:
    """Everything the report needs, read from one folder."""

    root: Path
    kind: str  # "run", "sweep" or "folder"
    title: str
    description: str
    runs: list[RunResult]
    groups: list[Group]
    ufm: dict[str, Any] | None
    setups: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------ selections

    def setup_groups(self, setup: str) -> list[Group]:
        return [g for g in self.groups if g.setup == setup]

    def best_per_loss(self, setup: str) -> list[Group]:
        """Per loss (label) in this setup, the finished group with the best mean validation balanced accuracy."""
        best: dict[str, Group] = {}
        for g in self.setup_groups(setup):
            if not g.finished:
                continue
            name = g.runs[0].loss_label
            score = g.mean("val_balanced_accuracy")
            cur = best.get(name)
            if cur is None or (
                score is not None and score > (cur.mean("val_balanced_accuracy") or -math.inf)
            ):
                best[name] = g
        return list(best.values())

    @property
    def seeds_per_group(self) -> int:
        return max((len(g.finished) for g in self.groups), default=0)

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def unfinished(self) -> list[RunResult]:
        return [r for r in self.runs if r.status in ("unfinished", "pending")]

    @property
    def finished(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "finished"]

    @property
    def normal_class_set(self) -> bool:
        return any(r.metric("test_false_alarm") is not None for r in self.finished)

    # -------------------------------------------------------------------------------- headline

    def headline(self) -> list[str]:
        """Plain-language sentences: the best loss for the minority classes, by how much, at what cost."""
        out: list[str] = []
        if not self.finished:
            if not self.runs:
                out.append("This folder holds a UFM simulation only; see the geometry section.")
            else:
                text = (
                    f"No training run has finished yet ({len(self.failures)} failed, {len(self.unfinished)} "
                    "not started or unfinished)"
                )
                out.append(text + ("; the UFM simulation is below." if self.ufm is not None else "."))
            return out
        for setup in self.setups:
            out.extend(self._setup_headline(setup))
        if any(
            len(self._values_of(setup, g.runs[0].loss_label)) > 1
            for setup in self.setups
            for g in self.best_per_loss(setup)
        ):
            out.append(
                "Where a loss ran with several hyperparameter values, the one named is the value with the "
                "best validation balanced accuracy; the numbers are its test results."
            )
        if self.failures:
            out.append(f"{len(self.failures)} run(s) failed; their errors are listed under Failures.")
        if self.unfinished:  # a half-done sweep: the headline compares what has finished so far
            parts = [
                f"{n} {what}"
                for n, what in (
                    (sum(r.status == "unfinished" for r in self.unfinished), "unfinished"),
                    (sum(r.status == "pending" for r in self.unfinished), "not started"),
                    (len(self.failures), "failed"),
                )
                if n
            ]
            out.append(
                f"Only {len(self.finished)} of {len(self.runs)} runs have finished ({', '.join(parts)}): "
                "the numbers above come from the finished runs alone."
            )
        return out

    def _setup_headline(self, setup: str) -> list[str]:
        best = self.best_per_loss(setup)
        if not best:
            return []
        where = f" on {setup}" if setup else ""
        if len(best) == 1:
            g = best[0]
            alarm = ""
            if g.mean("test_false_alarm") is not None:  # a normal class is set: what the recall costs
                alarm = f", false-alarm rate {g.pm('test_false_alarm')}"
            text = (
                f"{_cap(pretty(g.label))}{where}: test balanced accuracy {g.pm('test_balanced_accuracy')}, "
                f"minority recall {g.pm('test_minority_recall')}, worst-class recall "
                f"{g.pm('test_worst_class_recall')}{alarm} ({_seeds([g])}); training took "
                f"{_secs(g.mean('train_time_s'))} per run."
            )
            return [text, *self._posthoc_headline(setup, g)]
        ranked = sorted(best, key=lambda g: -(g.mean("test_minority_recall") or -1.0))
        winner = ranked[0]
        ce = [g for g in best if g.loss == "ce"]
        baseline = ce[0] if ce else ranked[-1]
        if baseline is winner:
            baseline = ranked[1]
        base_name = "plain CE" if baseline.loss == "ce" else pretty(baseline.label)
        tied = [g for g in ranked if g.mean("test_minority_recall") == winner.mean("test_minority_recall")]
        if len(tied) > 1:
            names = ", ".join(pretty(g.label) for g in tied[:-1]) + f" and {pretty(tied[-1].label)}"
            # each tied loss's own balanced accuracy (and false-alarm rate): they tie on one metric only
            balanced = "; balanced accuracy " + ", ".join(
                f"{pretty(g.label)} {_f(g.mean('test_balanced_accuracy'))}" for g in tied
            )
            alarms = ""
            if all(g.mean("test_false_alarm") is not None for g in tied):
                alarms = "; false-alarm rates " + ", ".join(
                    f"{pretty(g.label)} {_f(g.mean('test_false_alarm'))}" for g in tied
                )
            return [
                f"{names} tied for the minority classes{where}: minority recall "
                f"{winner.pm('test_minority_recall')}{balanced}{alarms} (test set, mean ± std over "
                f"{_seeds(tied)}).",
                *[line for g in best for line in self._posthoc_headline(setup, g)],
            ]
        d_min = _diff(winner.mean("test_minority_recall"), baseline.mean("test_minority_recall"))
        d_bal = _diff(winner.mean("test_balanced_accuracy"), baseline.mean("test_balanced_accuracy"))
        d_maj = _diff(_group_mean(winner, 0), _group_mean(baseline, 0))
        text = (
            f"{_cap(pretty(winner.label))} did best for the minority classes{where}: minority recall "
            f"{winner.pm('test_minority_recall')} against {baseline.pm('test_minority_recall')} with "
            f"{base_name} ({d_min}), balanced accuracy {_f(winner.mean('test_balanced_accuracy'))} "
            f"against {_f(baseline.mean('test_balanced_accuracy'))} ({d_bal})"
        )
        if d_maj is not None and d_maj.startswith("-"):
            text += f"; majority recall moved {d_maj}"
        fa1, fa0 = winner.mean("test_false_alarm"), baseline.mean("test_false_alarm")
        if fa1 is not None and fa0 is not None:  # a normal class is set: what the recall costs
            text += f"; false-alarm rate {winner.pm('test_false_alarm')} against {baseline.pm('test_false_alarm')}"
        text += f" (test set, mean ± std over {_seeds([winner, baseline])})."
        runner = ranked[1]
        gap = _diff(winner.mean("test_minority_recall"), runner.mean("test_minority_recall"))
        noise = max(winner.std("test_minority_recall") or 0.0, runner.std("test_minority_recall") or 0.0)
        if gap is not None and noise > 0 and abs(float(gap)) < noise:
            # a lead smaller than the spread over seeds: name the runner-up rather than overclaim
            text += (
                f" {_cap(pretty(runner.label))} is within noise of it (minority recall "
                f"{runner.pm('test_minority_recall')}: the lead of {gap[1:]} is smaller than a standard "
                "deviation over seeds)."
            )
        t1, t0 = winner.mean("train_time_s"), baseline.mean("train_time_s")
        cost = f"Cost: {_secs(t1)} of training per run against {_secs(t0)}"
        if t1 and t0:
            cost += f" ({t1 / t0:.2f}×)"
        e1, e0 = _epochs_to_95(winner), _epochs_to_95(baseline)
        if e1 is not None and e0 is not None:
            cost += (
                f"; it reached 95% of its best validation balanced accuracy at {e1} "
                f"({_secs(winner.mean('time_to_95pct_val_bal_acc_s'))}), {base_name} at {e0}"
            )
        cost += "."
        lines = [text, cost]
        others = [g for g in ranked[1:] if g is not baseline]
        if others:
            lines.append(
                "Others (minority recall): "
                + "; ".join(f"{pretty(g.label)} {_f(g.mean('test_minority_recall'))}" for g in others)
                + "."
            )
        for g in best:
            lines.extend(self._posthoc_headline(setup, g, winner if g is not winner else None))
        return lines

    def _values_of(self, setup: str, loss_label: str) -> list[Group]:
        return [g for g in self.setup_groups(setup) if g.runs[0].loss_label == loss_label and g.finished]

    def _posthoc_headline(self, setup: str, g: Group, winner: Group | None = None) -> list[str]:
        table = self.posthoc_summary(g)
        if table is None:
            return []
        best, budget = table["best"], table["false_alarm_budget"]
        runs = f"{pretty(g.label)} runs{f' on {setup}' if setup else ''}"  # each setup has its own line
        if best is None:
            if budget is None or len(table["rows"]) < 2:
                return []
            return [
                f"Post-hoc rebalancing of the {runs} (fitted on validation only): no prediction, "
                f"corrected or not, kept the validation false-alarm rate within the budget {budget:g}, "
                "so none is recommended."
            ]
        raw, after = table["rows"][0], next(r for r in table["rows"] if r["method"] == best)
        how = f"on validation{' (cross-fitted)' if table['cross_fitted'] else ''}"
        if budget is not None:
            how += f" within the false-alarm budget {budget:g}"
        if after is raw:
            return [
                f"Post-hoc rebalancing of the {runs} (fitted on validation only): no method "
                f"beat the uncorrected predictions {how}, so none is recommended (test minority recall "
                f"stays {_f(raw['minority_recall'][0])})."
            ]
        r0, r1 = raw["minority_recall"][0], after["minority_recall"][0]
        verb = (
            "changed"
            if r0 is None or r1 is None
            else ("raised" if r1 > r0 else "lowered" if r1 < r0 else "kept")
        )
        text = (
            f"Post-hoc rebalancing of the {runs} (fitted on validation only): {best}, the best "
            f"method {how}, {verb} test minority recall {_f(r0)} → {_f(r1)} and balanced accuracy "
            f"{_f(raw['balanced_accuracy'][0])} → {_f(after['balanced_accuracy'][0])}"
        )
        f0, f1 = raw["false_alarm"][0], after["false_alarm"][0]
        if f0 is not None and f1 is not None:
            text += f", false-alarm rate {_f(f0)} → {_f(f1)}"
            if budget is not None and f1 > budget:
                text += f" (on test: over the budget {budget:g}, which it kept on validation)"
        if winner is not None and winner.mean("test_minority_recall") is not None:
            text += f" (training with {pretty(winner.label)} gave {_f(winner.mean('test_minority_recall'))})"
        return [text + "."]

    # ---------------------------------------------------------------------------------- tables

    def posthoc_summary(self, g: Group) -> dict[str, Any] | None:
        """Raw and every post-hoc method over the group's runs with posthoc.json (test, mean ± std)."""
        results = [r.posthoc for r in g.finished if r.posthoc]
        if not results:
            return None
        methods: list[str] = []
        for p in results:
            for m in p.get("methods", []):
                if m not in methods:
                    methods.append(m)
        keys = ("balanced_accuracy", "minority_recall", "worst_class_recall", "false_alarm")
        rows = []

        def stats(values: list[Any]) -> tuple[float | None, float | None]:
            mean, std, _ = aggregate(values)
            return mean, std

        raw_val = [p["raw"]["val"].get(p.get("metric", "balanced_accuracy")) for p in results]
        rows.append(
            {
                "method": "raw (argmax)",
                "chosen": "–",
                "val_score": stats(raw_val),
                "val_score_cv": stats(raw_val),  # nothing is fitted: out-of-fold = in-sample
                "val_false_alarm": stats([p["raw"]["val"].get("false_alarm") for p in results]),
                **{k: stats([p["raw"]["test"].get(k) for p in results]) for k in keys},
                "n": len(results),
            }
        )
        for m in methods:
            entries = [p["results"][m] for p in results if m in p.get("results", {})]
            rows.append(
                {
                    "method": m,
                    "chosen": _chosen(entries),
                    "val_score": stats([e.get("val_score") for e in entries]),
                    # None in a file written before cross-fitting, or where a fold could not be fitted
                    "val_score_cv": stats([e.get("val_score_cv") for e in entries]),
                    "val_false_alarm": stats([(e.get("val") or {}).get("false_alarm") for e in entries]),
                    **{k: stats([e["test"].get(k) for e in entries]) for k in keys},
                    "n": len(entries),
                }
            )
        # The best method by its cross-fitted validation score (each sample predicted by a fit on
        # the others): the in-sample score favours methods with many parameters (lws fits one
        # scale per class on the few validation samples it is then scored on). Files written
        # before cross-fitting have only the in-sample score.
        # best_method's rule, on the means over runs
        from ..rebalance import choose_best, false_alarm_budget, within_budget

        cv = any(r["val_score_cv"][0] is not None for r in rows[1:])
        scores = {r["method"]: (r["val_score_cv"][0], r["val_score"][0]) for r in rows[1:]}
        # with a normal class, only predictions within the false-alarm budget on validation compete
        budget = false_alarm_budget(results[0])
        rates = {r["method"]: r["val_false_alarm"][0] for r in rows[1:]}
        rates["raw"] = rows[0]["val_false_alarm"][0]
        best = choose_best(rows[0]["val_score"][0], scores, budget=budget, false_alarm=rates)
        if (
            best is None
            and any(v is not None for s in scores.values() for v in s)
            and within_budget(rates["raw"], budget)
        ):
            best = rows[0]["method"]  # no correction beats the uncorrected predictions on validation
        skipped: dict[str, str] = {}
        for p in results:
            skipped.update(p.get("skipped") or {})
        warnings: list[str] = []
        for p in results:
            for w in p.get("warnings") or []:
                if w not in warnings:
                    warnings.append(w)
        metric = results[0].get("metric", "balanced_accuracy")
        return {
            "rows": rows,
            "best": best,
            "false_alarm_budget": budget,
            "cross_fitted": cv,
            "metric": metric,
            "skipped": skipped,
            "warnings": warnings,
            "runs": len(results),
        }

    def gamma_families(self) -> list[dict[str, Any]]:
        """Loss families run over a grid of gamma (>= 2 values): what the paper's figure needs.

        One entry per (loss, imbalance profile): the theory's class counts and groups (from a
        finished run, or the UFM), and markers ``{label: (gammas, mean summaries, std summaries)}``
        from the runs (one marker series per setup) and from the UFM.
        """
        out: list[dict[str, Any]] = []
        # A family is a loss and the shape of the class counts its theory curve is drawn for
        # (the same imbalance string on 4 and on 6 classes are two families, two curves).
        families: list[dict[str, Any]] = []

        def family(loss: str, final: dict[str, Any]) -> dict[str, Any] | None:
            for fam in families:
                ref = fam["ref"]
                if (
                    fam["loss"] == loss
                    and ref is not None
                    and _same_ratios(ref["class_counts"], final["class_counts"], 1e-6)
                ):
                    return fam
            return None

        for g in self.groups:
            fin = [r for r in g.finished if (r.final or {}).get("geometry")]
            if g.loss not in GAMMA_LOSSES or not fin or "gamma" not in g.hyper:
                continue
            ref = fin[0].final or {}
            fam = family(g.loss, ref)
            if fam is None:
                fam = {"loss": g.loss, "profile": str(ref.get("imbalance")), "ref": ref, "series": {}}
                families.append(fam)
            label = g.setup or _model_label(fin[0])
            fam["series"].setdefault(label, []).append((g.hyper["gamma"], [r.final for r in fin]))
        # CE is the gamma = 0 member of every temperature family: its runs mark gamma = 0.
        for g in self.groups:
            fin = [r for r in g.finished if (r.final or {}).get("geometry")]
            if g.loss != "ce" or not fin:
                continue
            label = g.setup or _model_label(fin[0])
            for fam in families:
                if _same_ratios(fam["ref"]["class_counts"], (fin[0].final or {}).get("class_counts"), 1e-6):
                    series = fam["series"].setdefault(label, [])
                    if all(gamma != 0.0 for gamma, _ in series):
                        series.append((0.0, [r.final for r in fin]))
        # Families of one loss whose profiles read alike (one string on different data) say their
        # k, or where k is the same too, their class counts.
        names = [(fam["loss"], fam["profile"]) for fam in families]
        for fam, name in zip(families, names, strict=True):
            if names.count(name) > 1:
                counts = fam["ref"]["class_counts"]
                alike = [o for o, n in zip(families, names, strict=True) if n == name]
                if len({len(o["ref"]["class_counts"]) for o in alike}) == len(alike):
                    fam["profile"] += f", k={len(counts)}"
                else:
                    shown = counts if len(counts) <= 6 else [*counts[:3], "…", *counts[-2:]]
                    fam["profile"] += ", counts " + ",".join(
                        f"{c:g}" if not isinstance(c, str) else c for c in shown
                    )
        ufm_series: dict[str, dict[float, list[dict[str, Any]]]] = {}
        if self.ufm is not None:
            for row in self.ufm["configs"]:
                if row["loss_name"] in GAMMA_LOSSES and "gamma" in row["hyper"]:
                    ufm_series.setdefault(row["loss_name"], {}).setdefault(row["hyper"]["gamma"], []).append(
                        row
                    )
        ufm_counts = None if self.ufm is None else self.ufm.get("class_counts")
        for loss, points in ufm_series.items():
            matching = [
                fam
                for fam in families
                if fam["loss"] == loss
                and fam["ref"] is not None
                and _same_ratios(fam["ref"]["class_counts"], ufm_counts)
            ]
            if not matching:
                fam = {"loss": loss, "profile": str(self.ufm.get("profile")), "ref": None, "series": {}}
                families.append(fam)
                matching = [fam]
            for fam in matching:
                fam["ufm"] = points
        for entry in families:
            markers: dict[str, tuple[list[float], list[dict[str, float]], list[dict[str, float]]]] = {}
            gammas_all: set[float] = set()
            for label, pts in entry["series"].items():
                pts = sorted(pts, key=lambda p: p[0])
                gs = [p[0] for p in pts]
                stats = [_summary_stats([f["geometry"]["summary"] for f in finals]) for _, finals in pts]
                markers[label] = (gs, [s[0] for s in stats], [s[1] for s in stats])
                gammas_all.update(gs)
            ufm_pts = entry.get("ufm")
            if ufm_pts:
                gs = sorted(ufm_pts)
                stats = [_summary_stats(ufm_pts[g]) for g in gs]
                markers = {"UFM": (gs, [s[0] for s in stats], [s[1] for s in stats]), **markers}
                gammas_all.update(gs)
            if len(gammas_all) < 2:
                continue
            if entry["ref"] is not None:
                counts = entry["ref"]["class_counts"]
                groups = entry["ref"].get("groups")
                hyper = dict((entry["ref"].get("loss") or {}).get("hyper") or {})
            else:
                counts = self.ufm["class_counts"]
                groups = self.ufm.get("groups")
                hyper = dict(next(iter(ufm_pts.values()))[0]["hyper"]) if ufm_pts else {}
            hyper.pop("gamma", None)
            out.append(
                {
                    "loss": entry["loss"],
                    "profile": entry["profile"],
                    "counts": counts,
                    "groups": groups,
                    "hyper": hyper,
                    "gammas": sorted(gammas_all),
                    "markers": markers,
                }
            )
        return out

    def ufm_rows(self) -> list[dict[str, Any]]:
        """UFM configurations averaged over seeds: measured vs theory (final epoch)."""
        if self.ufm is None:
            return []
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in self.ufm["configs"]:
            shown = {k: v for k, v in row["hyper"].items() if k != "normalize"}
            label = row["loss_name"] + (
                " (" + ", ".join(f"{k}={v:g}" for k, v in shown.items()) + ")" if shown else ""
            )
            groups.setdefault(label, []).append(row)
        out = []
        for label, rows in groups.items():
            entry: dict[str, Any] = {"label": label, "seeds": len(rows)}
            for key in ("W_ratio", "H_ratio", "W_cos_min_min", "dist_W", "dist_H", "dist_M", "train_acc"):
                entry[key] = aggregate(r.get(key) for r in rows)[:2]
            theory = rows[0].get("theory") or {}
            for key in ("W_ratio", "H_ratio", "W_cos_min_min"):
                entry[f"theory_{key}"] = theory.get(key)
            out.append(entry)
        return out

    def environments(self) -> list[dict[str, Any]]:
        """Distinct hardware/software environments of the finished runs, with run counts."""
        keys = (
            "device",
            "cuda",
            "cpu",
            "cpu_count",
            "platform",
            "python",
            "torch",
            "numpy",
            "cegeo",
            "git_commit",
        )
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in self.finished:
            final = r.final or {}
            env = dict(final.get("environment") or {})
            env["device"] = final.get("device", env.get("device"))
            sig = tuple(env.get(k) for k in keys)
            if sig not in seen:
                seen[sig] = {k: env.get(k) for k in keys} | {"runs": 0}
            seen[sig]["runs"] += 1
        if self.ufm is not None and self.ufm.get("environment"):
            env = dict(self.ufm["environment"])
            env["device"] = (self.ufm.get("experiment") or {}).get("device")
            seen[("ufm",)] = {k: env.get(k) for k in keys} | {"runs": "UFM"}
        return list(seen.values())


def _same_ratios(a: Any, b: Any, rtol: float = 0.15) -> bool:
    """Two class-count vectors with the same shape of imbalance (the theory is scale-free)."""
    if a is None or b is None:
        return False
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return x.shape == y.shape and bool(np.allclose(x / x.max(), y / y.max(), rtol=rtol))


def _model_label(r: RunResult) -> str:
    model = str((r.final or {}).get("model", "model"))
    return {"mlp": "MLP", "resnet18": "ResNet-18", "resnet32": "ResNet-32", "cnn": "CNN"}.get(model, model)


def _summary_stats(summaries: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = [k for k in summaries[0] if isinstance(summaries[0][k], (int, float))] if summaries else []
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    for k in keys:
        m, s, _ = aggregate(x.get(k) for x in summaries)
        mean[k] = math.nan if m is None else m
        std[k] = 0.0 if s is None else s
    return mean, std


def _seeds(groups: Sequence[Group]) -> str:
    """How many seeds the numbers of a sentence average: ``2 seeds``, or each group's count where
    they differ (a failed or unfinished seed leaves one group with fewer)."""
    counts = [len(g.finished) for g in groups]
    if len(set(counts)) == 1:
        return f"{counts[0]} seed{'s' if counts[0] != 1 else ''}"
    return "seeds: " + ", ".join(f"{pretty(g.label)} {n}" for g, n in zip(groups, counts, strict=True))


def _group_mean(g: Group, index: int) -> float | None:
    """Mean test recall of group number ``index`` (0 = majority) over the finished runs."""
    values = []
    for r in g.finished:
        rec = ((r.final or {}).get("test") or {}).get("group_recall") or {}
        names = list(((r.final or {}).get("groups") or {}).keys())
        if names:
            values.append(rec.get(names[index]))
    return aggregate(values)[0]


def _chosen(entries: Sequence[Mapping[str, Any]]) -> str:
    if not entries:
        return "–"
    chosen = [e.get("chosen") or {} for e in entries]
    first = chosen[0]
    if "scales" in first:
        return "per-class scales"
    if "threshold" in first:
        return "p ≥ " + ", ".join(f"{c.get('threshold', math.nan):.3g}" for c in chosen)
    parts = []
    for key in first:
        values = sorted({round(float(c.get(key, math.nan)), 4) for c in chosen})
        parts.append(f"{key} = " + ", ".join(f"{v:g}" for v in values))
    return "; ".join(parts) or "–"


def _epochs_to_95(g: Group) -> str | None:
    """``epoch 4``, or ``epochs 3–4`` when the seeds reached 95% of their best validation
    balanced accuracy at different epochs (a mean such as 3.5 is no epoch)."""
    epochs = [e for e in (r.metric("epoch_to_95pct_val_bal_acc") for r in g.finished) if e is not None]
    if not epochs:
        return None
    lo, hi = int(min(epochs)), int(max(epochs))
    return f"epoch {lo}" if lo == hi else f"epochs {lo}–{hi}"


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _diff(a: float | None, b: float | None) -> str | None:
    if a is None or b is None:
        return None
    return f"{a - b:+.3f}"


def _secs(v: float | None) -> str:
    if v is None:
        return "–"
    # three significant digits below 10 s, so that two short times and their ratio agree
    return f"{v:.3g} s" if v < 10 else f"{v:.0f} s" if v < 600 else f"{v / 60:.1f} min"


_PRETTY = {
    "ce": "CE",
    "wce": "wCE",
    "la": "LA",
    "cdt": "CDT",
    "ldt": "LDT",
    "vs": "VS",
    "balanced_softmax": "Balanced Softmax",
    "ldam": "LDAM",
}


def pretty(label: str) -> str:
    """A group label for sentences: ``ldt (gamma=0.5)`` -> ``LDT (gamma=0.5)``.

    Examples
    --------
    >>> pretty("ldt (gamma=0.5)"), pretty("balanced_softmax"), pretty("mine"), pretty("ce#2")
    ('LDT (gamma=0.5)', 'Balanced Softmax', 'mine', 'CE#2')
    """
    head, sep, rest = label.partition(" ")
    name, hash_, number = head.partition("#")  # ce#2: a second CE configuration in one folder
    return _PRETTY.get(name, name) + hash_ + number + sep + rest


def _cap(text: str) -> str:
    """Capitalise a sentence's first letter, leaving a loss's own spelling (wCE) alone."""
    if any(text.startswith(name) for name in _PRETTY.values()):
        return text
    return text[:1].upper() + text[1:] if text else text


def collect(folder: str | Path) -> ReportData:
    """Read a run folder, a sweep folder or a folder of run folders into :class:`ReportData`.

    Raises
    ------
    ValueError
        The folder does not exist, or holds neither run folders nor a UFM result.
    """
    root = Path(folder)
    if not root.is_dir():
        raise fail("FOLDER", "an existing run folder or sweep folder", str(folder))
    runs = load_runs(root)
    ufm = load_ufm(root / "ufm") or load_ufm(root)
    if not runs and ufm is None:
        raise InputError(
            f"`FOLDER` must be a run folder, a sweep folder or a folder of run folders; got {str(root)!r}, "
            "which holds no run (no final.json, config.toml, metrics.jsonl or error.json found)."
        )
    kind = (
        "sweep"
        if (root / "sweep.json").is_file()
        else ("run" if len(runs) == 1 and runs[0].path == root else "folder")
    )
    title, description = "", ""
    if kind == "sweep":
        meta = read_json(root / "sweep.json").get("config", {})
        title, description = meta.get("name") or "", meta.get("description") or ""
    if not title:
        title = f"cegeo report: {root.resolve().name}"
    rows = summarize(runs)
    by_group: dict[str, list[RunResult]] = {}
    for r in runs:
        by_group.setdefault(r.group, []).append(r)
    groups = []
    for row in rows:
        members = by_group[row["group"]]
        groups.append(
            Group(
                key=row["group"],
                setup=members[0].setup_label or members[0].setup,
                loss=members[0].loss,
                label=row["label"],
                runs=members,
                row=row,
            )
        )
    setups: list[str] = []
    for g in groups:
        if g.setup not in setups:
            setups.append(g.setup)
    return ReportData(
        root=root,
        kind=kind,
        title=title,
        description=description,
        runs=runs,
        groups=groups,
        ufm=ufm,
        setups=setups,
    )


def curves(group: Group, path: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Mean and std over seeds of one per-epoch quantity (``path`` into a metrics.jsonl line).

    Only epochs every finished seed logged are used. None when no run logged the quantity.
    """
    per_run: list[dict[int, float]] = []
    for r in group.finished:
        series: dict[int, float] = {}
        for rec in r.records:
            v: Any = rec
            for part in path:
                v = v.get(part) if isinstance(v, Mapping) else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                series[int(rec["epoch"])] = float(v)
        if series:
            per_run.append(series)
    if not per_run:
        return None
    epochs = sorted(set.intersection(*(set(s) for s in per_run)))
    if not epochs:
        return None
    values = np.array([[s[e] for e in epochs] for s in per_run])  # (seeds, epochs)
    std = values.std(axis=0, ddof=1) if len(per_run) > 1 else None
    return np.array(epochs, dtype=float), values.mean(axis=0), std


def minority_curve(
    group: Group, split: str = "test"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Per-epoch minority recall (the last group's recall) of a split, mean/std over seeds."""
    ref = group.finished[0] if group.finished else None
    if ref is None or ref.minority_group is None:
        return None
    return curves(group, (split, "group_recall", ref.minority_group))


def convergence(group: Group) -> list[tuple[int, float]]:
    """The 95%-of-best validation balanced accuracy point of each finished run."""
    return [p for p in (convergence_point(r.records) for r in group.finished) if p is not None]
