"""Benchmark the batched UFM simulator against a plain per-configuration autograd loop.

The paper's UFM sweep (THEORY.md §6): CDT and LDT x 13 gammas in [-1.5, 1.5], (R=10, rho=1/2)-STEP
with n_min = 5 (k = 10, n = 275), d = 20, full-batch SGD lr 0.1, momentum 0.9, weight decay 5e-4,
6000 epochs, lr x0.1 at 2000 and 4000. Run two ways in one process:

1. sequential: 26 runs one after another, each the way a straightforward script does it:
   ``W``, ``H`` as ``nn.Parameter``, the registry loss on ``(W @ H).T``, autograd,
   ``torch.optim.SGD(weight_decay=...)`` and ``MultiStepLR``;
2. batched: one :func:`cegeo.ufm.simulate` call for all 26 configurations.

Both start from the same initialisation (``cegeo.ufm.initial_parameters`` of each seed). The script
prints both wall times, their ratio, and the largest difference between the final geometries
(the eight panels of the paper's figure: norm ratios relative, cosines absolute).
Targets: batched >= 10x the sequential loop and <= 30 s on the 2-core CPU container; on a GPU
(``--device cuda``) >= 30x and <= 5 s.

    python bench/ufm.py [--device cpu|cuda] [--dtype float32|float64] [--epochs 6000] [--threads 1]

On the GPU machine run it as ``PYTHONPATH=src python bench/ufm.py --device cuda``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from cegeo.data.imbalance import step_groups
from cegeo.theory import group_summary
from cegeo.ufm import PANEL_KEYS, UFMConfig, initial_parameters, simulate

K, R, N_MIN, D = 10, 10, 5, 20
GAMMAS = np.linspace(-1.5, 1.5, 13)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sequential_run(
    cfg: UFMConfig, counts: np.ndarray, epochs: int, dtype: torch.dtype, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """One configuration, the straightforward way; returns final W (k, d) and H (d, n)."""
    k, n = counts.size, int(counts.sum())
    y = torch.as_tensor(np.repeat(np.arange(k), counts), device=device)
    W0, H0 = initial_parameters(cfg.seed, k, D, n, 0.1)
    W = torch.nn.Parameter(W0.to(device, dtype))
    H = torch.nn.Parameter(H0.to(device, dtype))
    loss_fn = cfg.build_loss(counts).to(device)
    # The labels are valid by construction; the loss's per-call label check would add a device
    # sync per step on a GPU, which would only make the baseline look slower.
    loss_fn.validate = False
    opt = torch.optim.SGD([W, H], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.lam)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.lr_decay)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn((W @ H).T, y)
        loss.backward()
        opt.step()
        sched.step()
    return W.detach().double().cpu().numpy(), H.detach().double().cpu().numpy()


def summary_of(W: np.ndarray, H: np.ndarray, counts: np.ndarray, groups) -> dict[str, float]:
    labels = np.repeat(np.arange(counts.size), counts)
    means = np.stack([H[:, labels == c].mean(1) for c in range(counts.size)], 1)  # (d, k)
    return group_summary(W @ W.T, means.T @ means, W @ means, groups)


def largest_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for i, (sa, sb) in enumerate(zip(a, b, strict=True)):
        for key in PANEL_KEYS:
            diff = abs(sa[key] / sb[key] - 1) if key.endswith("ratio") else abs(sa[key] - sb[key])
            if diff > worst:
                worst, where = diff, f"config {i}, {key}"
    return worst, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--epochs", type=int, default=6000)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU intra-op threads for both ways (default 1)"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    counts = np.array([R * N_MIN] * (K // 2) + [N_MIN] * (K // 2))
    groups = step_groups(K, 0.5)
    configs = [
        UFMConfig(loss, {"gamma": float(g)}, lam=5e-4, lr=0.1, momentum=0.9, milestones=(2000, 4000))
        for loss in ("cdt", "ldt")
        for g in GAMMAS
    ]
    cuda_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        + (f", {cuda_name}" if cuda_name else "")
        + f"; torch {torch.__version__}, {args.threads} intra-op thread(s); {args.dtype} on {device}"
    )
    print(
        f"sweep: {len(configs)} configs (cdt, ldt x 13 gammas), n = {counts.sum()}, d = {D}, {args.epochs} epochs"
    )

    # Warm up both paths (CUDA context, cuBLAS handles, allocator) outside the timings.
    sequential_run(configs[0], counts, 20, dtype, device)
    simulate(configs, counts, D, 20, dtype=dtype, device=device, threads=args.threads)
    sync(device)

    t0 = time.perf_counter()
    seq = [sequential_run(c, counts, args.epochs, dtype, device) for c in configs]
    sync(device)
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = simulate(configs, counts, D, args.epochs, dtype=dtype, device=device, threads=args.threads)
    sync(device)
    t_batch = time.perf_counter() - t0

    seq_summaries = [summary_of(W, H, counts, groups) for W, H in seq]
    batch_summaries = [summary_of(res.W[b], res.H[b], counts, groups) for b in range(len(configs))]
    worst, where = largest_difference(batch_summaries, seq_summaries)
    ratio = t_seq / t_batch
    print(f"sequential autograd loop: {t_seq:8.2f} s ({t_seq / len(configs):.2f} s per run)")
    print(f"batched simulate:         {t_batch:8.2f} s (optimisation loop {res.train_time_s:.2f} s)")
    print(f"speed-up: {ratio:.1f}x")
    print(
        f"largest difference of the final geometries (8 panels; ratios relative, cosines absolute): "
        f"{worst:.2e} ({where})"
    )
    gpu = device.type == "cuda"
    need_ratio, need_time = (30.0, 5.0) if gpu else (10.0, 30.0)
    ok = ratio >= need_ratio and t_batch <= need_time
    print(
        f"targets ({'GPU' if gpu else 'CPU'}): >= {need_ratio:g}x and <= {need_time:g} s -> "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
