"""Where a probe's time goes, on bench/train.py's workload (ResNet-32, CIFAR-10-LT counts).

A probe (``Trainer._probe``) is one eval-mode pass over the full training set (metrics and the
geometry statistics), one over validation and one over test, then the metrics and the geometry on
the host. This script times, against one training epoch measured in the same run:

* the whole probe, and each split's pass, and the host-side part (``measure``);
* the bare eval forward of those passes (replays of the captured eval graph, or the compiled or
  eager forward), i.e. what the passes cost without the statistics;
* the eager forward at several batch sizes (how the eval batch size matters);
* with CUDA graphs, the eval forward replayed on a second stream while an epoch trains: whether
  the probe's forward could hide behind training (the combined time against the sum).

    python bench/probe.py --device cuda
    python bench/probe.py --device cpu --quick

Measured on an H100 (torch 2.11, CUDA graphs, compile, bf16; 2026-11-27): one epoch 244 ms
(51,000 images/s); one probe 64 ms = 26%, of which the passes over train 33 ms, val 3 ms, test
25 ms, the host side 1.5 ms; the bare eval forward of the 24 batches of 1,024 takes 58 ms (2.4 us
an image, against 19.6 us an image for a training step). Replayed on a second stream beside an
epoch's training, only 15% of that forward hid behind it: the training step keeps the GPU busy.
A probe's forward covers 22,906 images, 1.85 epochs' worth, so at this speed it costs about a
quarter of an epoch; ``train.probe_every = 3`` keeps probes under 10% of the training time.
The eager forward's cost an image fell from 42 us at 128 rows to 4.1 us at 1,024 and 3.6 us at
4,096: the default ``eval_batch_size = 1024`` is near the flat part.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    import cegeo  # noqa: F401
except ImportError:  # running from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train import PAD, make_splits

import cegeo.train as train_module
from cegeo.config import RunConfig, override
from cegeo.geometry import FeatureStats
from cegeo.train import Trainer


def _timer(device: torch.device):
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, repeats: int = 3) -> float:
        """Median wall seconds of ``fn()`` (synchronised before and after)."""
        out = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t0)
        return float(np.median(out))

    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="1,276 training images (CPU-friendly)")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"], dest="compile_")
    ap.add_argument("--cuda-graph", default="auto", choices=["auto", "on", "off"], dest="graph")
    ap.add_argument("--eval-batch-size", type=int, default=1024)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    timed = _timer(device)

    splits = make_splits(516 if args.quick else 5000, 5 if args.quick else 50, 100 if args.quick else 1000)
    config = override(
        RunConfig(),
        {
            "model.name": "resnet32",
            "train.epochs": 1,
            "train.batch_size": 128,
            "train.pad_crop": PAD,
            "train.flip": True,
            "train.eval_batch_size": args.eval_batch_size,
            "runtime.device": str(device),
            "runtime.compile": args.compile_,
            "runtime.cuda_graph": args.graph,
            "runtime.threads": torch.get_num_threads(),
        },
    )
    t = Trainer(config, None, progress=False, splits=splits)
    t.run()  # compiles, captures, one epoch and one probe (warm)
    flags = {"amp": t.amp, "compile": t.compile, "cuda_graph": bool(t._graphs)}
    res: dict = {"device": str(device), "flags": flags, "eval_batch_size": args.eval_batch_size}
    n = {s: int(t.y[s].shape[0]) for s in ("train", "val", "test")}
    res["n"] = n

    # The trainer restored the process settings when run() ended; the timings below want its.
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step = [0]

    def epoch() -> None:
        step[0], *_ = t._train_epoch(0, step[0])

    t.model.train()
    res["epoch_s"] = timed(epoch)
    t.model.eval()
    res["probe_s"] = timed(lambda: t._probe(1, step[0], 1.0, 1.0, False))
    k, d = t.k, int(t.model.feature_dim)
    res["pass_s"] = {
        "train": timed(lambda: t._forward_split("train", FeatureStats.zeros(k, d, device), keep=False)),
        "val": timed(lambda: t._forward_split("val", None, keep=False)),
        "test": timed(lambda: t._forward_split("test", None, keep=False)),
    }
    stats = FeatureStats.zeros(k, d, device)
    t._forward_split("train", stats, keep=False)
    W = train_module.classifier_weight(t.model)
    res["measure_s"] = timed(
        lambda: train_module.measure(
            stats, W, loss=t.loss_base, class_counts=t.counts, groups=t.splits.groups
        )
    )

    eb = t._eval_rows()
    batches = sum(math.ceil(v / eb) for v in n.values())
    x = t.x["train"][:eb]

    def forward_only() -> None:
        with torch.no_grad():
            for _ in range(batches):
                t._eval_batch(x)

    res["forward_only_s"] = timed(forward_only)
    res["forward_batches"] = batches

    # Eager forward (no compile, no graph) per image at several batch sizes.
    per_image = {}
    with torch.no_grad():
        for b in (128, 256, 512, 1024, 2048, 4096):
            if b > n["train"]:
                break
            xb = t.x["train"][:b]
            reps = max(1, 8192 // b)

            def run(xb=xb, reps=reps) -> None:
                for _ in range(reps):
                    t._features_logits(t.inputs(xb))

            run()
            per_image[b] = timed(run) / (reps * b) * 1e6
    res["eager_forward_us_per_image"] = per_image

    # Overlap: the eval graph's replays on a side stream while an epoch trains on the main one.
    if t._eval_graph is not None and t._eval_graph.graph is not None:
        side = torch.cuda.Stream(device)
        main_stream = torch.cuda.current_stream(device)

        def both() -> None:
            side.wait_stream(main_stream)
            with torch.cuda.stream(side):
                for _ in range(batches):
                    t._eval_graph.graph.replay()
            t.model.train()
            epoch()
            main_stream.wait_stream(side)

        res["overlap_s"] = timed(both)
        res["overlap_hidden_pct"] = 100.0 * (
            1 - (res["overlap_s"] - res["epoch_s"]) / max(res["forward_only_s"], 1e-9)
        )

    res["probe_pct_of_epoch"] = 100.0 * res["probe_s"] / res["epoch_s"]
    for key, val in res.items():
        print(f"{key}: {val}")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
