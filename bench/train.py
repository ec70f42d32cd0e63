"""Benchmark the trainer against a reference-style training loop, measured in the same run.

Workload: ResNet-32 (the CIFAR-LT standard) on 12,406 CIFAR-shaped random uint8 images with the
CIFAR-10-LT R = 100 counts (5000, 2997, ..., 50), pad-4 random crops and horizontal flips, batch
128, SGD (lr 0.1, momentum 0.9, weight decay 5e-4), plain CE. Validation 50 and test 1000 images
per class, as a CIFAR-10-LT run has (10,000 test images).

* **reference**: what the long-tail repositories do (LDAM-DRW and descendants): a
  ``torch.utils.data.Dataset`` that crops and flips one image at a time on the CPU, a
  ``DataLoader`` with worker processes (``pin_memory`` on CUDA), fp32, ``model(x)``, backward,
  step.
* **trainer**: :class:`cegeo.train.Trainer` with the same model, data, augmentation and optimiser:
  data resident on the device as uint8, batched augmentation on the device, bf16 autocast,
  channels_last and ``torch.compile`` on CUDA (the trainer's defaults; ``--compile off`` switches
  it off), and CUDA-graph replay of every step (``runtime.cuda_graph = "auto"``, the trainer's
  default; ``--cuda-graph off`` measures without).

Both are timed over whole epochs after a first, untimed epoch (worker start-up, cuDNN autotuning;
the trainer also leaves its compile warm-up out). Reported: images/s of each, their ratio, and the
probe overhead: the wall time of one probe (a pass over the full training set with the geometry
statistics, validation and test passes, every metric) as a percentage of one training epoch,
with the default ``probe_every = 1`` (with ``probe_every = p`` it is p times smaller).

Targets: on an H100 the trainer >= 4x the reference and >= 25,000 images/s, probes <= 10% of an
epoch; on CPU the trainer not slower than the reference.

    python bench/train.py --device cuda              # the full workload (GPU)
    python bench/train.py --device cpu --quick       # 1,276 training images, 2-core CPU friendly
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

try:
    import cegeo  # noqa: F401
except ImportError:  # running from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cegeo.config import RunConfig, override
from cegeo.data import Splits, groups, longtail_counts
from cegeo.models import create_model
from cegeo.train import Trainer

PAD = 4


def make_splits(n_max: int, val_per_class: int, test_per_class: int, seed: int = 0) -> Splits:
    """Random CIFAR-shaped images with CIFAR-10-LT (R = 100) training counts."""
    rng = np.random.default_rng(seed)
    counts = longtail_counts(10, 100, n_max)

    def draw(per_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class).astype(np.int64)
        x = rng.integers(0, 256, size=(y.size, 3, 32, 32), dtype=np.uint8)
        return x, y

    x_tr, y_tr = draw(counts)
    x_va, y_va = draw(np.full(10, val_per_class))
    x_te, y_te = draw(np.full(10, test_per_class))
    return Splits(
        x_tr, y_tr, x_va, y_va, x_te, y_te, counts, groups(counts), 10, "image", "longtail:R=100", "random"
    )


# --------------------------------------------------------------------------------- reference


class CropFlipDataset(torch.utils.data.Dataset):
    """Per-sample pad-4 random crop + flip + normalisation on the CPU (the repositories' way)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (n, H, W, C) like the CIFAR loaders
        self.y = y
        self.mean = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
        self.std = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.pad(self.x[i], ((PAD, PAD), (PAD, PAD), (0, 0)))
        dy, dx = np.random.randint(0, 2 * PAD + 1, size=2)  # noqa: NPY002 - as the repositories do
        img = img[dy : dy + 32, dx : dx + 32]
        if np.random.rand() < 0.5:  # noqa: NPY002
            img = img[:, ::-1]
        img = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.y[i])


def reference(splits: Splits, device: torch.device, epochs: int, workers: int, batch: int) -> float:
    """Images/s of the reference loop over ``epochs`` timed epochs (after one untimed)."""
    torch.manual_seed(0)
    model = create_model("resnet32", in_shape=(3, 32, 32), num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        CropFlipDataset(splits.x_train, splits.y_train),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    model.train()
    timed = 0.0
    for epoch in range(epochs + 1):
        _sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(device)
        if epoch > 0:
            timed += time.perf_counter() - t0
    return epochs * len(splits.y_train) / timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------- trainer


def trainer(
    splits: Splits, device: torch.device, epochs: int, batch: int, compile_: str, mode: str, graph: str
) -> tuple[float, float, dict]:
    """Images/s of the trainer over ``epochs`` timed epochs, and the probe overhead (%)."""
    config = override(
        RunConfig(),
        {
            "model.name": "resnet32",
            "train.epochs": epochs + 1,
            "train.batch_size": batch,
            "train.pad_crop": PAD,
            "train.flip": True,
            "train.probe_every": 1,
            "runtime.device": str(device),
            "runtime.compile": compile_,
            "runtime.compile_mode": mode,
            "runtime.cuda_graph": graph,
            "runtime.threads": torch.get_num_threads(),
        },
    )
    t = Trainer(config, None, progress=False, splits=splits)
    t.run()
    times = [r["time_s"] for r in t.records]
    epoch_s = np.diff(times)  # timed epochs: 2..epochs+1
    img_s = epochs * len(splits.y_train) / (times[-1] - times[0])
    probe_s = float(np.median([r["probe_time_s"] for r in t.records[1:]]))
    flags = {
        "amp": t.amp,
        "compile": t.compile,
        "compile_mode": t.compile_mode,
        "channels_last": t.channels_last,
        "cuda_graph": bool(t._graphs),
    }
    if t.graph_fallback:
        flags["cuda_graph_fallback"] = t.graph_fallback
    return img_s, 100.0 * probe_s / float(np.median(epoch_s)), flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="1,276 training images (CPU-friendly)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs (default 3, quick 1)")
    ap.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"], dest="compile_")
    ap.add_argument("--compile-mode", default="default", choices=["default", "max-autotune-no-cudagraphs"])
    ap.add_argument("--cuda-graph", default="auto", choices=["auto", "on", "off"], dest="graph")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate reference/trainer this often; medians")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    epochs = args.epochs or (1 if args.quick else 3)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    splits = make_splits(516 if args.quick else 5000, 5 if args.quick else 50, 100 if args.quick else 1000)
    n = len(splits.y_train)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"workload: ResNet-32, {n} CIFAR-shaped images (CIFAR-10-LT R=100 counts), batch {args.batch_size}, pad-crop {PAD} + flip, {epochs} timed epoch(s) after 1 untimed"
    )

    refs, ourss, probes = [], [], []
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both alike
        refs.append(reference(splits, device, epochs, workers, args.batch_size))
        o, p, flags = trainer(
            splits, device, epochs, args.batch_size, args.compile_, args.compile_mode, args.graph
        )
        ourss.append(o)
        probes.append(p)
    ref, ours, probe_pct = (float(np.median(v)) for v in (refs, ourss, probes))
    print(f"reference (per-sample CPU crop/flip, DataLoader {workers} workers, fp32): {ref:,.0f} images/s")
    print(f"trainer (device-resident uint8, batched device augmentation, {flags}): {ours:,.0f} images/s")
    ratio = ours / ref
    print(f"ratio trainer / reference: {ratio:.2f}x")
    print(f"probe overhead (one probe / one epoch): {probe_pct:.1f}%")
    if device.type == "cuda":
        ok = ratio >= 4 and ours >= 25_000
        print(f"speed targets (>= 4x, >= 25,000 images/s): {'met' if ok else 'NOT met'}")
    else:
        print(f"target on CPU (trainer not slower than the reference): {'met' if ratio >= 1 else 'NOT met'}")
    every = max(1, math.ceil(probe_pct / 10))  # probes cost probe_pct / probe_every of the training time
    print(
        f"probe target (<= 10% of the training time): {'met' if probe_pct <= 10 else 'NOT met'} with"
        f" probe_every = 1; met from probe_every = {every}"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "device": name,
                    "n_train": n,
                    "epochs": epochs,
                    "batch_size": args.batch_size,
                    "workers": workers,
                    "repeats": args.repeats,
                    "threads": torch.get_num_threads(),
                    "reference_images_per_s": ref,
                    "trainer_images_per_s": ours,
                    "ratio": ratio,
                    "probe_overhead_pct": probe_pct,
                    "probe_every_for_10pct": every,
                    "trainer_flags": flags,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
