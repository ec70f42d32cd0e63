"""Where does a training step's time go? ResNet-32, batch 128, CIFAR-shaped data, on one device.

Times the bare step (``model(x)``, CE, backward, fused SGD; static data already on the device) in
eager fp32, eager bf16 + channels_last, and ``torch.compile`` with the given modes, then profiles
one epoch of :class:`cegeo.train.Trainer` steps per ``--trainer`` variant (compile and CUDA graphs
off, both on by default): CPU time per step against GPU kernel time per step, the number of
kernels per step, the top kernels. Use it to tell launch-bound from compute-bound.

    PYTHONPATH=src python bench/train_profile.py --device cuda [--modes default,reduce-overhead]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cegeo.config import RunConfig, override
from cegeo.models import create_model
from cegeo.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import make_splits


def bare_step_ms(
    device: torch.device, batch: int, bf16: bool, cl: bool, mode: str | None, steps: int
) -> float:
    torch.manual_seed(0)
    model = create_model("resnet32", in_shape=(3, 32, 32), num_classes=10).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=device.type == "cuda"
    )
    fwd = torch.compile(model, mode=mode, dynamic=False) if mode else model
    x = torch.randn(batch, 3, 32, 32, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = fwd(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(15):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / steps


def profile_trainer(device: torch.device, compile_: str, graph: str) -> None:
    """Profile one epoch of the trainer's steps (compare with the bare steps above)."""
    from torch.profiler import ProfilerActivity, profile

    splits = make_splits(1000, 10, 10)
    config = override(
        RunConfig(),
        {
            "model.name": "resnet32",
            "train.epochs": 1,
            "train.batch_size": 128,
            "train.pad_crop": 4,
            "train.flip": True,
            "runtime.device": str(device),
            "runtime.compile": compile_,
            "runtime.cuda_graph": graph,
        },
    )
    t = Trainer(config, None, progress=False, splits=splits)
    t.setup()
    if t.compile:
        t._warm_up_compiled()
    t._prepare_graphs(0)  # a no-op without graphs
    t._train_epoch(0, 0)  # warm
    if device.type == "cuda":
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    w0 = time.perf_counter()
    with profile(activities=acts) as prof:
        t._train_epoch(1, t.steps_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - w0
    steps = t.steps_per_epoch
    ev = prof.key_averages()
    cuda_us = sum(e.self_device_time_total for e in ev) if device.type == "cuda" else 0.0
    kernels = sum(e.count for e in ev if e.self_device_time_total > 0) if device.type == "cuda" else 0
    print(
        f"trainer [compile={t.compile}, cuda_graph={bool(t._graphs)}, amp={t.amp}, channels_last={t.channels_last}]: {steps} steps, wall {1000 * wall / steps:.2f} ms/step (profiled), "
        f"GPU kernel time {cuda_us / 1000 / steps:.2f} ms/step, {kernels / steps:.0f} kernels/step"
    )
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default="default,reduce-overhead")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--trainer", default="off:off,on:on", help="trainer variants to profile, compile:cuda_graph pairs"
    )
    a = ap.parse_args()
    dev = torch.device(a.device)
    np.set_printoptions(precision=3)
    print(f"bare step, batch 128: eager fp32 {bare_step_ms(dev, 128, False, False, None, a.steps):.2f} ms")
    print(f"bare step, batch 128: eager bf16+CL {bare_step_ms(dev, 128, True, True, None, a.steps):.2f} ms")
    for i, mode in enumerate(a.modes.split(",")):
        for b in (128, 512) if i == 0 else (128,):
            ms = bare_step_ms(dev, b, True, True, mode, a.steps)
            print(
                f"bare step, batch {b}: compiled [{mode}] bf16+CL {ms:.2f} ms ({1000 * b / ms:,.0f} images/s)"
            )
    if not a.no_profile:
        for pair in a.trainer.split(","):
            compile_, graph = pair.split(":")
            profile_trainer(dev, compile_, graph)


if __name__ == "__main__":
    main()
