"""Post-hoc rebalancers vs raw argmax on digits, (R=10, rho=0.5)-STEP, MLP trained with CE.

Trains one run per seed with ``cegeo train`` (or reuses a finished run folder), fits every
rebalancer on the run's validation split with ``cegeo.rebalance.run_posthoc`` and prints test
balanced accuracy and minority recall as mean ± std over seeds, raw first (the baseline measured
in the same script), with each method's change against raw.

    python bench/posthoc_digits.py                       # CPU, 3 seeds, ~1 min per seed or less
    python bench/posthoc_digits.py --device cuda         # on a GPU machine (PYTHONPATH=src)
    python bench/posthoc_digits.py --val-fraction 0.25   # larger validation split

Every hyperparameter is chosen on validation only; test is never used for a choice.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cegeo._io import write_json
from cegeo.cli import main as cegeo_main
from cegeo.rebalance import run_posthoc


def train(out: Path, seed: int, args: argparse.Namespace) -> float:
    """Train one run (skipped if ``out`` already holds a finished one); wall seconds."""
    if (out / "final.json").exists():
        return 0.0
    argv = [
        "train",
        "--data", "digits",
        "--imbalance", "step:R=10,rho=0.5",
        "--model", "mlp",
        "--model-option", f"width={args.width}",
        "--model-option", f"depth={args.depth}",
        "--loss", "ce",
        "--epochs", str(args.epochs),
        "--val-fraction", str(args.val_fraction),
        "--seed", str(seed),
        "--device", args.device,
        "--no-progress",
        "--out", str(out),
        "--force",
    ]  # fmt: skip
    if args.threads:
        argv += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    code = cegeo_main(argv)
    if code != 0:
        raise SystemExit(f"cegeo train failed for seed {seed} (exit {code})")
    return time.perf_counter() - t0


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--val-fraction", type=float, default=0.1, help="the trainer's default is 0.1")
    p.add_argument("--metric", default="balanced_accuracy")
    p.add_argument("--normal-class", type=int, default=0, help="for operating_point; -1 = leave it out")
    p.add_argument("--max-false-alarm", type=float, default=0.05)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default="runs/bench_posthoc_digits", help="folder of the run folders")
    args = p.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.out) / f"vf{args.val_fraction:g}"
    normal = None if args.normal_class < 0 else args.normal_class
    results = []
    for seed in seeds:
        run = root / f"ce-seed{seed}"
        secs = train(run, seed, args)
        res = run_posthoc(
            run, "all", metric=args.metric, normal_class=normal, max_false_alarm=args.max_false_alarm
        )
        results.append(res)
        print(f"seed {seed}: trained in {secs:.1f} s -> {run}")

    device = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    )
    first = results[0]
    print(
        f"\ndigits, step:R=10,rho=0.5, MLP {args.depth} x {args.width}, CE, {args.epochs} epochs, "
        f"val fraction {args.val_fraction:g} (val n = {first['raw']['val']['n']}, "
        f"min. class in val = {min(first['raw']['val']['per_class']['support'])}), test n = "
        f"{first['raw']['test']['n']}, seeds {seeds}, device {device}; chosen on val for {args.metric}"
    )
    header = f"{'method':<16} {'test bal. acc':>17} {'Δ vs raw':>17} {'minority recall':>17} {'Δ vs raw':>17}  chosen per seed"
    print(header)
    print("-" * len(header))
    raw_bal = [r["raw"]["test"]["balanced_accuracy"] for r in results]
    raw_min = [r["raw"]["test"]["minority_recall"] for r in results]
    print(f"{'raw (argmax)':<16} {mean_std(raw_bal):>17} {'':>17} {mean_std(raw_min):>17} {'':>17}  -")
    table = {"raw": {"balanced_accuracy": raw_bal, "minority_recall": raw_min}}
    for name in first["methods"]:
        bal = [r["results"][name]["test"]["balanced_accuracy"] for r in results]
        mino = [r["results"][name]["test"]["minority_recall"] for r in results]
        chosen = [r["results"][name]["chosen"] for r in results]
        if name == "lws":
            shown = "; ".join(f"s {min(c['scales']):.2g}..{max(c['scales']):.2g}" for c in chosen)
        elif name == "operating_point":
            shown = "; ".join(
                f"FA val {r['results'][name]['val_false_alarm']:.3f}/test {r['results'][name]['test_false_alarm']:.3f}"
                for r in results
            )
        else:
            shown = "; ".join(", ".join(f"{k}={v:g}" for k, v in c.items()) for c in chosen)
        d_bal = list(np.subtract(bal, raw_bal))
        d_min = list(np.subtract(mino, raw_min))
        print(
            f"{name:<16} {mean_std(bal):>17} {mean_std(d_bal):>17} {mean_std(mino):>17} {mean_std(d_min):>17}  {shown}"
        )
        table[name] = {"balanced_accuracy": bal, "minority_recall": mino, "chosen": chosen}
    write_json(root / "summary.json", {"args": vars(args), "device": device, "table": table})
    print(f"\nwrote {root / 'summary.json'}")
    json.dumps(table)  # strict JSON check


if __name__ == "__main__":
    main()
