"""The trainer: device-resident data, one readable loop, probes, checkpoints/resume and DDP.

``Trainer(config, out).run()`` (or :func:`train`) trains one :class:`~cegeo.config.RunConfig`
and writes the run folder described in ``docs/run-folder.md``.

How it works (airbench / nanoGPT style):

* **Data live on the device.** The splits are copied once, images as ``uint8`` and tabular data
  as ``float32``; a batch is an index gather. Normalisation (per-channel or per-feature mean and
  std of the training split) and augmentation (zero-pad + random crop, horizontal flip; off by
  default, as in the paper) run batched on the device.
* **Randomness is explicit.** Shuffles are ``torch.randperm(n, generator=g, device=...)``;
  class-balanced and square-root sampling draw ``n`` indices per epoch with
  ``torch.multinomial`` from per-sample probabilities ``q_{y_i} / n_{y_i}``; augmentation draws
  from its own generator. The generators' states are checkpointed, so a resumed run continues
  the exact same stream. The initialisation draws from torch's global generator seeded with
  ``seed`` (:func:`cegeo.models.seeded_init`); the caller's random streams are left as they were.
* **One loop**: learning rate as a pure function of the step (:func:`lr_at`),
  ``zero_grad(set_to_none=True)``, forward under bf16 autocast on CUDA (channels-last layout for
  conv nets), backward, SGD step. Deferred re-weighting (``train.drw_epoch``) swaps in
  ``loss.with_omega(class_balanced_weights(...))`` after that many epochs.
* **CUDA graphs** (``runtime.cuda_graph``, one CUDA process): that step, fused SGD reading the
  learning rate from a device tensor included, is captured once per (loss, batch size) and
  replayed, as is the probes' forward pass; the batch is gathered and augmented outside the
  graph and copied into its static buffers. The warm-up steps the capture needs are undone
  in place, so graphs do not change the trajectory (:class:`_GraphStep`).
* **Probes** every ``train.probe_every`` epochs and after the last one, under ``torch.no_grad()``
  and ``model.eval()``: a pass over the full training split, then validation and test, each
  counting predictions into a confusion matrix on the device (:func:`cegeo.metrics.summary_from_confusion`)
  and, for training, accumulating :class:`~cegeo.geometry.FeatureStats`; one line of
  ``metrics.jsonl``. Training time excludes probes and ``torch.compile`` (the compiled step is
  warmed up on every batch shape before the clock starts and the weights restored); on CUDA it
  is measured with CUDA events.
* **Checkpoints** after every epoch, atomically (temporary file + rename), holding tensors and
  plain values only (``torch.load(weights_only=True)``): model, optimizer, epoch, step,
  generator states. On CPU a run killed at any moment and resumed ends with weights bitwise
  identical to an uninterrupted run.
* **Data parallel**: under ``torchrun --nproc_per_node=N -m cegeo train ...`` every rank holds
  the data, draws the same global batch and trains on its shard (``batch[rank::world]``) in
  :class:`~torch.nn.parallel.DistributedDataParallel` (NCCL on CUDA, gloo on CPU). The loss of
  each shard is normalised by the global batch (``world * sum(shard) / sum(batch weights)``),
  and BatchNorm statistics are synchronised over the global batch (``runtime.sync_bn``), so N
  ranks compute what one process computes, up to floating-point summation order. Probes shard
  the evaluation passes and all-reduce class sums; rank 0 writes the run folder (on several
  nodes it must be on a shared file system for ``--resume``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._io import (
    REPORT_FILES,
    append_jsonl,
    atomic_open,
    cegeo_wrote_report,
    environment_info,
    read_json,
    read_jsonl,
    read_toml,
    remove_temporaries,
    writable_folder,
    write_json,
    write_npz,
)
from ._io import to_toml as _to_toml
from ._signals import check_interrupt
from ._validation import InputError, fail, renamed
from .config import OptimConfig, RunConfig, config_differences, from_dict, load_run_config, to_dict
from .data.imbalance import sampling_probabilities
from .geometry import FeatureStats, classifier_weight, measure
from .losses import class_balanced_weights, create_loss, get_loss_info
from .metrics import summary_from_confusion

__all__ = [
    "RUN_FILES",
    "Trainer",
    "augment_batch",
    "load_checkpoint",
    "lr_at",
    "prepare_run_folder",
    "resolve_device",
    "sampling_probabilities",
    "train",
]

#: Files a run folder may hold (``docs/run-folder.md``); ``--force`` removes exactly these.
RUN_FILES = (
    "config.toml",
    "metrics.jsonl",
    "checkpoint.pt",
    "final.json",
    "logits_val.npz",
    "logits_test.npz",
    "classifier.npz",
    "error.json",
    "posthoc.json",
)

CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Small pure pieces (documented and tested on their own)
# --------------------------------------------------------------------------------------------


def lr_at(step: int, steps_per_epoch: int, epochs: int, optim: OptimConfig) -> float:
    """Learning rate of optimisation step ``step`` (0-based): a pure function of the step.

    Linear warm-up over ``optim.warmup_epochs`` epochs (from ``lr / warmup_steps``), then

    * ``multistep``: ``lr * lr_decay ** (number of milestones <= epoch)``, where ``epoch`` is the
      0-based epoch of the step (``torch.optim.lr_scheduler.MultiStepLR`` stepped per epoch);
    * ``cosine``: ``lr * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of post-warm-up steps
      done, reaching 0 at the last step;
    * ``constant``: ``lr``.

    Examples
    --------
    >>> opt = OptimConfig(lr=0.1, milestones=(2, 4))
    >>> [round(lr_at(s, 10, 6, opt), 6) for s in (0, 19, 20, 39, 40, 59)]
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    >>> cos = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1)
    >>> [round(lr_at(s, 4, 3, cos), 4) for s in (0, 3, 4, 11)]
    [0.25, 1.0, 1.0, 0.0]
    """
    warmup = optim.warmup_epochs * steps_per_epoch
    lr = optim.lr
    if step < warmup:
        return lr * (step + 1) / warmup
    if optim.schedule == "multistep":
        epoch = step // steps_per_epoch
        return lr * optim.lr_decay ** sum(1 for m in optim.milestones if epoch >= m)
    if optim.schedule == "cosine":
        total = epochs * steps_per_epoch - warmup
        t = (step - warmup) / max(total - 1, 1)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return lr


def augment_batch(x: Tensor, shifts: Tensor | None, flips: Tensor | None, pad: int) -> Tensor:
    """Random-crop and flip a batch of images on its device.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
        Any dtype (the trainer passes ``uint8``).
    shifts : Tensor of shape (B, 2) or None
        Crop offsets ``(dy, dx)`` in ``0..2*pad`` into the zero-padded image (``pad`` pixels on
        every side); ``(pad, pad)`` is the identity.
    flips : Tensor of shape (B,), bool, or None
        Which images to mirror left-right.
    pad : int

    Examples
    --------
    >>> x = torch.arange(4).reshape(1, 1, 2, 2)
    >>> augment_batch(x, torch.tensor([[1, 0]]), None, 1)[0, 0].tolist()  # content moves right by 1
    [[0, 0], [0, 2]]
    >>> augment_batch(x, None, torch.tensor([True]), 0)[0, 0].tolist()
    [[1, 0], [3, 2]]
    """
    if shifts is not None and pad > 0:
        B, C, H, W = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = shifts[:, 0:1] + torch.arange(H, device=x.device)  # (B, H)
        cols = shifts[:, 1:2] + torch.arange(W, device=x.device)  # (B, W)
        b = torch.arange(B, device=x.device)[:, None, None, None]
        c = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:local_rank`` if CUDA is available, else ``cpu``; checks availability."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise fail("runtime.device", "'cpu' or 'auto' on a machine without CUDA", spec)
        index = int(spec[5:]) if spec.startswith("cuda:") else local_rank
        if index >= torch.cuda.device_count():
            raise fail("runtime.device", f"a CUDA device index < {torch.cuda.device_count()}", spec)
        return torch.device("cuda", index)
    if spec != "cpu":
        raise fail("runtime.device", "'auto', 'cpu', 'cuda' or 'cuda:N'", spec)
    return torch.device("cpu")


def _switch(value: str, device: torch.device) -> bool:
    return value == "on" or (value == "auto" and device.type == "cuda")


# --------------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------------


def prepare_run_folder(
    out: str | os.PathLike[str], config: RunConfig | None, *, resume: bool = False, force: bool = False
) -> tuple[str, RunConfig]:
    """Decide what to do with the run folder ``out``; returns ``(action, config)``.

    ``action`` is ``"new"`` (start; the folder is new, empty, or cleared with ``force``),
    ``"resume"`` (continue from ``checkpoint.pt``) or ``"finished"`` (``resume`` on a finished
    run: nothing to do). With ``resume`` and no ``config``, the folder's ``config.toml`` is used;
    with both, they must agree (the ``[runtime]`` section may change). ``resume`` on a folder
    with no run starts one, so a preempted job can be re-submitted unchanged.

    Raises
    ------
    ValueError
        ``out`` is a file or holds other files; it holds a run and neither ``resume`` nor
        ``force`` was given; the config differs from the run being resumed; no config at all.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"`out` must be a folder for the run (new, empty, or a cegeo run folder); got the file {path}."
        )
    cfg_file = path / "config.toml"
    if not cfg_file.exists():
        if path.exists():
            # Without config.toml the folder holds no cegeo run, so a file with a run file's name
            # (metrics.jsonl, final.json ...) is the user's and would be overwritten: only the
            # error.json a failed sweep run leaves is ours, and a report cegeo wrote on a run that
            # is gone (a --force run that failed before its first checkpoint).
            foreign = sorted(
                p.name
                for p in path.iterdir()
                if p.name != "error.json"
                and not p.name.startswith(".")
                and not (p.name in REPORT_FILES and cegeo_wrote_report(p))
            )
            if foreign:
                raise InputError(
                    f"`out` must be a new or empty folder, or a cegeo run folder; got {path}, which "
                    f"holds {foreign[0]!r}."
                )
        if config is None:
            raise InputError(f"`config` must be given: `{path}` holds no run to resume.")
        return "new", config
    finished = (path / "final.json").exists()
    state = "a finished run" if finished else "an unfinished run"
    if force:
        if config is None:
            raise InputError(f"`config` must be given with force (it replaces the run in `{path}`).")
        provenance = read_toml(cfg_file).get("provenance")
        if not (isinstance(provenance, dict) and "cegeo" in provenance):
            # Only a folder cegeo train made is cleared: a user's own config.toml is not a run.
            raise InputError(
                f"`out` must be a cegeo run folder to be replaced with --force; got {path}, whose "
                "config.toml has no [provenance] table written by cegeo train."
            )
        return "new", config
    old = load_run_config(cfg_file)
    if not resume:
        hint = "--resume to continue it, " if not finished else ""
        raise InputError(
            f"`out` must be a folder without a run; got {path}, which holds {state} (pass {hint}"
            "--force to overwrite it, or choose another --out)."
        )
    if config is not None:
        diffs = config_differences(old, config)
        if diffs:
            key, was, now = diffs[0]
            raise InputError(
                f"`{key}` must match the run being resumed in {path} (it has {was!r}); got {now!r}. "
                "Use --force to start over."
            )
        # Hardware settings may change on resume (e.g. a CPU run continued on a GPU).
        old = RunConfig(
            **{**{f: getattr(old, f) for f in old.__dataclass_fields__}, "runtime": config.runtime}
        )
    if finished:
        return "finished", old
    if not (path / "checkpoint.pt").exists():
        return "new", old
    return "resume", old


class RunBusyError(InputError):
    """Another process is training in this run folder right now (it holds ``.lock``)."""


def _lock_run_folder(path: Path) -> IO[str] | None:
    """Hold ``path/.lock`` (an exclusive, non-blocking ``flock``) while this process trains in
    the folder: two trainers in one folder (two sweeps on one --out, a re-run while old workers
    still run) would interleave metrics.jsonl and remove each other's temporary files. The OS
    releases it when the process dies. Only rank 0 writes, so only rank 0 locks; where there is
    no ``fcntl`` (Windows) nothing is locked."""
    if _env_world()[1] != 0:
        return None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    lock = path / ".lock"
    fh = open(lock, "a")  # held until the run ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            # a file system without locks (some network mounts): train unlocked, as before
            warnings.warn(
                f"{path}: the run folder cannot be locked ({exc}); training without a lock",
                RuntimeWarning,
                stacklevel=3,
            )
            with contextlib.suppress(OSError):
                lock.unlink()
            return None
        busy = True
    else:
        # the holder before us removes the file as it lets go: ours must still be the file there
        try:
            busy = os.fstat(fh.fileno()).st_ino != os.stat(lock).st_ino
        except FileNotFoundError:
            busy = True
        if busy:
            fh.close()
    if busy:
        raise RunBusyError(
            f"`out` must be a run folder no other process is training; got {path}, which another "
            "cegeo process is training right now (wait for it, or stop it first)."
        ) from None
    return fh


def _folder_state(path: Path) -> tuple[Any, ...]:
    """Which run files ``path`` holds and when they last changed (a run's progress)."""
    state = []
    for name in ("config.toml", "checkpoint.pt", "final.json"):
        try:
            state.append((name, (path / name).stat().st_mtime_ns))
        except OSError:
            state.append((name, None))
    return tuple(state)


def _clear(path: Path) -> None:
    if _env_world()[1] != 0:
        return  # under torchrun only rank 0 touches the folder (it may be writing already)
    # config.toml last: a clear that is interrupted leaves a folder that is still a cegeo run
    # folder (--force can clear it again), never run files without their config.toml
    for name in [n for n in RUN_FILES if n != "config.toml"] + ["config.toml"]:
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    for name in REPORT_FILES:  # `cegeo report RUN`'s default files describe the run cleared here
        if cegeo_wrote_report(path / name):
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink()
    _remove_temporaries(path)


def _remove_temporaries(path: Path) -> None:
    """The temporary files of writes a killed run left behind (``.checkpoint.pt.XXXX.tmp``: as
    large as a checkpoint); only names :func:`cegeo._io.atomic_open` gives run files."""
    if _env_world()[1] != 0 or not path.is_dir():
        return
    remove_temporaries(path, RUN_FILES)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a ``checkpoint.pt`` safely (``weights_only=True``: tensors and plain values only)."""
    p = Path(path)
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt or not a checkpoint
        raise InputError(
            f"`{p}` must be a cegeo checkpoint; got an unreadable file ({type(exc).__name__})."
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"`{p}` must be a cegeo checkpoint (format {CHECKPOINT_FORMAT}); got something else."
        )
    return ck


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owner: bool = False  # this trainer initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _env_world() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _check_env_world() -> None:
    """The launcher's variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, and for several
    processes ``MASTER_ADDR``/``MASTER_PORT``) are whole numbers that fit together, checked before
    the run folder is touched: a stray ``RANK=1`` made a lone process train and write nothing
    (only rank 0 writes), and torch's own checks end in a traceback."""
    values: dict[str, int] = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        raw = os.environ.get(name)
        if raw is None:
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise InputError(
                f"`{name}` (environment variable) must be a whole number; got {raw!r}."
            ) from None
    world, rank = values.get("WORLD_SIZE", 1), values.get("RANK", 0)
    if world < 1:
        raise InputError(f"`WORLD_SIZE` (environment variable) must be at least 1; got {world}.")
    if not 0 <= rank < world:
        raise InputError(
            f"`RANK` (environment variable) must be in 0..{world - 1} (WORLD_SIZE is {world}; "
            f"unset both to train in one process); got {rank}."
        )
    if values.get("LOCAL_RANK", 0) < 0:
        raise InputError(
            f"`LOCAL_RANK` (environment variable) must be at least 0; got {values['LOCAL_RANK']}."
        )
    import torch.distributed as dist

    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise InputError(
                    f"`{name}` (environment variable) must be set when WORLD_SIZE is {world} "
                    "(launch with torchrun, which sets it); got nothing."
                )


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    return n * rank // world, n * (rank + 1) // world


def _gather_rows(t: Tensor, n: int, dist_: _Dist) -> Tensor:
    """Concatenate every rank's contiguous shard (``_shard``) of an ``(n_r, ...)`` tensor."""
    if not dist_.enabled:
        return t
    import torch.distributed as dist

    sizes = [_shard(n, r, dist_.world) for r in range(dist_.world)]
    rows = max(b - a for a, b in sizes)
    padded = t.new_zeros((rows, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(dist_.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, sizes, strict=True)])


def _all_sum(t: Tensor, dist_: _Dist) -> Tensor:
    if dist_.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


class PeerStoppedError(InputError):
    """Another rank of this torchrun job stopped with an error (which that rank printed)."""


_NOTE_BYTES = 1024  # one rank's note in _agree: a kind byte and a UTF-8 message


def _agree(dist_: _Dist, device: torch.device, err: BaseException | None) -> None:
    """Every rank says whether it got through a step only some ranks do (rank 0 locks, checks and
    writes the run folder) in one small all-gather, before any collective of training: an error
    only rank 0 saw (the run folder locked by another process) left rank 1 training on alone into
    a gloo "Connection closed by peer" traceback. A rank that failed returns (its caller
    re-raises its own error); the others raise it too, as ``rank R stopped: MESSAGE``."""
    if not dist_.enabled:
        return
    import torch.distributed as dist

    buf = torch.zeros(_NOTE_BYTES, dtype=torch.uint8)
    if err is not None:
        note = " ".join(str(err).split()) if isinstance(err, InputError) else _one_line(err)
        data = note.encode("utf-8")[: _NOTE_BYTES - 1]
        buf[0] = 2 if isinstance(err, RunBusyError) else 1
        buf[1 : 1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    buf = buf.to(device)
    parts = [torch.empty_like(buf) for _ in range(dist_.world)]
    if err is not None:
        with contextlib.suppress(Exception):  # a rank already gone: this rank's error is the one
            dist.all_gather(parts, buf)
        return
    dist.all_gather(parts, buf)
    for rank, part in enumerate(parts):
        kind = int(part[0])
        if kind:
            text = bytes(part[1:].cpu().numpy()).rstrip(b"\0").decode("utf-8", errors="ignore")
            raise (RunBusyError if kind == 2 else PeerStoppedError)(f"rank {rank} stopped: {text}")


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def _peer_gone(exc: BaseException, dist_: _Dist | None) -> bool:
    """Whether ``exc`` is a collective that failed because another rank's process ended (gloo's
    message; that rank printed its own error, and torchrun names it)."""
    return (
        dist_ is not None
        and dist_.enabled
        and isinstance(exc, RuntimeError)
        and any(s in str(exc) for s in _PEER_GONE)
    )


def _ddp_params() -> Mapping[str, Any]:
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    return inspect.signature(DDP.__init__).parameters


def _sgd_has_fused() -> bool:
    """Whether this torch's SGD takes ``fused`` (torch >= 2.3; 2.2 has only the foreach kernel)."""
    import inspect

    return "fused" in inspect.signature(torch.optim.SGD.__init__).parameters


def _compile_unsupported() -> str | None:
    """Why ``torch.compile`` cannot run with this torch and Python (torch < 2.4 on Python 3.12,
    < 2.6 on 3.13: its ``torch.compile`` raises), or None where it can."""
    try:
        from torch._dynamo import is_dynamo_supported
    except ImportError:  # pragma: no cover - every torch this package allows has it
        return None
    if is_dynamo_supported():
        return None
    py = ".".join(map(str, sys.version_info[:2]))
    return f"torch {torch.__version__} on Python {py} (its torch.compile does not run there)"


def _fused_sgd_takes_tensor_lr() -> bool:
    """Whether this torch's fused SGD kernel reads the learning rate from a tensor, as a CUDA
    graph's step needs (no ``_fused_sgd_`` op at all before torch 2.3)."""
    op = getattr(torch.ops.aten, "_fused_sgd_", None)
    return op is not None and "tensor_lr" in op.overloads()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of each rank's input is the sum of the
    gradients of the output over ranks (what ``torch.distributed.nn.functional.all_reduce``
    computes; that API is deprecated from torch 2.13 and warned on every process)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out)
        return out


class _SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch for any process-group backend (gloo included).

    :class:`torch.nn.SyncBatchNorm` only runs on GPUs; this replacement uses an autograd-aware
    all-reduce (:class:`_AllReduceSum`) to sum the per-channel count, sum and squared
    deviations over all ranks (two small all-reduces per layer), so data-parallel training on
    CPU computes what a single process computes on the whole batch.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()  # statistics in float32 even under autocast
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float32, device=x.device)
        stats = all_reduce(torch.cat([count, xf.sum(dims)]))
        n, mean = stats[0], stats[1:] / stats[0]
        var = all_reduce(((xf - mean.view(shape)) ** 2).sum(dims)) / n  # biased, used to normalise
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)  # the trainer keeps n >= 2
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer synchronised across ranks (torch's SyncBatchNorm on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _SyncBatchNorm):
        out = _SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        with torch.no_grad():
            if module.affine:
                out.weight = module.weight
                out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
    for name, child in module.named_children():
        out.add_module(name, _convert_sync_bn(child, device))
    return out


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar over epochs (rank 0, interactive terminals) or one line per probe."""

    def __init__(self, enabled: bool, epochs: int, start: int, title: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, markup=False)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.bar: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task(title, total=epochs, completed=start, info="")
            self.bar.start()

    def update(self, epoch: int, info: str, line: str | None) -> None:
        if not self.enabled:
            return
        if self.live:
            self.bar.update(self.task, completed=epoch, info=info)
        elif line is not None:
            self.console.print(line, soft_wrap=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def _minority_recall(correct: np.ndarray, seen: np.ndarray, minority: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = correct[minority] / seen[minority]
    r = r[np.isfinite(r)]
    return float(r.mean()) if r.size else float("nan")


class _GraphStep:
    """A function of static input buffers, replayed from a CUDA graph.

    ``fn(*buffers)`` is a whole training step (zero the gradients, forward, loss, backward,
    optimizer step, the epoch accumulators; returns nothing) or an eval-mode forward (returns
    features and logits). :meth:`warm_up` runs it a few times (on a side stream on CUDA: cuDNN
    autotuning, ``torch.compile``, the momentum buffers), :meth:`capture` records it; :meth:`run`
    copies values into the leading rows of the buffers, replays the graph (one launch instead
    of hundreds) and returns the outputs, which the next replay overwrites.

    Training graphs must not depend on each other's memory: each reads only tensors allocated
    outside the graphs (weights, BatchNorm statistics, momentum buffers, the learning-rate tensor,
    the accumulators, its own input buffers) and writes its gradients afresh (the step starts
    with ``zero_grad(set_to_none=True)``, so the captured backward assigns rather than
    accumulates). That is what lets them share one memory pool.

    With ``capture=False`` (used by the CPU tests) :meth:`run` calls ``fn`` on the buffers
    directly, so the static-buffer logic is the same code with and without a GPU.
    """

    def __init__(self, fn: Any, examples: Sequence[Tensor], capture: bool, pool: Any = None) -> None:
        self.fn = fn
        self.buffers = [t.clone() for t in examples]
        self.record = capture
        self.pool = pool
        self.graph: Any = None
        self.outputs: Any = None

    def warm_up(self, steps: int = 3) -> None:
        device = self.buffers[0].device
        if device.type == "cuda":
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(steps):
                    self.fn(*self.buffers)
            torch.cuda.current_stream(device).wait_stream(side)
        else:
            for _ in range(steps):
                self.fn(*self.buffers)

    def capture(self) -> None:
        """Record ``fn`` into a graph (nothing runs); a no-op with ``capture=False``."""
        if self.record:
            self._capture()

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs = self.fn(*self.buffers)
        self.graph = graph

    def run(self, *values: Tensor) -> Any:
        for buf, value in zip(self.buffers, values, strict=True):
            buf[: value.shape[0]].copy_(value)
        if self.graph is None:
            return self.fn(*self.buffers)
        self.graph.replay()
        return self.outputs


class Trainer:
    """Train one run: data on the device, SGD, probes, checkpoints, resume and DDP.

    Parameters
    ----------
    config : RunConfig or None
        The run. ``None`` with ``resume=True`` continues the run saved in ``out``.
    out : path, optional
        The run folder (``docs/run-folder.md``). ``None`` trains in memory and writes nothing
        (no checkpoints, so no resume).
    resume : bool
        Continue the run in ``out`` from its checkpoint (start it if there is none; return at
        once if it finished).
    force : bool
        Overwrite a run in ``out``.
    progress : bool
        Show a progress bar (rank 0; on a non-interactive stderr, one line per probe).
    splits : cegeo.data.Splits, optional
        Use these splits instead of building them from ``config.data`` (for arrays already in
        memory; ``config.toml`` then cannot rebuild the data by itself).

    Attributes
    ----------
    model : torch.nn.Module
        The trained network (the raw module, not the DDP/compiled wrapper).
    records : list of dict
        The ``metrics.jsonl`` lines of the run.
    final : dict
        ``final.json`` after :meth:`run`.

    Raises
    ------
    ValueError
        Bad settings or data (from the config, the data sources, models and losses), a run
        folder that cannot be used as asked (see :func:`prepare_run_folder`).

    Examples
    --------
    >>> from cegeo.config import override, RunConfig
    >>> cfg = override(RunConfig(), {"data.source": "gaussian", "data.imbalance": "step:R=4,rho=0.5",
    ...     "data.options": {"k": 4, "d": 8, "n_per_class": 40, "n_test_per_class": 10},
    ...     "model.options": {"width": 16, "depth": 2}, "train.epochs": 2, "train.batch_size": 32})
    >>> final = Trainer(cfg, progress=False).run()
    >>> final["epochs"], sorted(final["test"]["group_recall"])
    (2, ['majority', 'minority'])
    """

    def __init__(
        self,
        config: RunConfig | None,
        out: str | os.PathLike[str] | None = None,
        *,
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        splits: Any = None,
    ) -> None:
        if config is not None and not isinstance(config, RunConfig):
            raise fail("config", "a cegeo.config.RunConfig", type(config).__name__)
        from .data import Splits

        if splits is not None and not isinstance(splits, Splits):
            raise fail("splits", "a cegeo.data.Splits (e.g. from make_splits)", type(splits).__name__)
        _check_env_world()
        self.out = None if out is None else Path(out)
        self.action = "new"
        self._lock: IO[str] | None = None
        self._seen: tuple[Any, ...] = ()  # --out's run files when this trainer looked at it
        if self.out is not None:
            writable_folder("out", self.out)
            self._seen = _folder_state(self.out)
            self.action, config = prepare_run_folder(self.out, config, resume=resume, force=force)
        elif config is None:
            raise InputError("`config` must be given when there is no run folder (`out`) to resume.")
        assert config is not None
        self.config = config
        self.progress = progress
        self._splits_in = splits
        self.records: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self._ready = False
        self._process_settings: dict[str, Any] = {}  # set by setup, given back by run
        self._final: dict[str, Any] | None = None  # the last probe's record and arrays (rank 0)
        self._final_probed = False
        self._cpu_eval_rows: int | None = None  # rows per eager probe forward on the CPU (lazy)
        self._fingerprint: str | None = None  # of the splits, for checkpoints (lazy)
        self._checkpointed = False  # by this process, in this run
        self._started_folder = False  # this new run has cleared --out and begun writing it
        self._replaced = False  # ... and the folder held a run (--force) that it removed

    # ------------------------------------------------------------------------------- setup

    def _setup_distributed(self) -> None:
        world, rank, local = _env_world()
        self.dist = _Dist(rank, world, local)
        self.device = resolve_device(self.config.runtime.device, local)
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                if self.device.type == "cuda":
                    torch.cuda.set_device(self.device)
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.dist.owner = True
            self.dist.rank, self.dist.world = dist.get_rank(), dist.get_world_size()

    def _setup_data(self) -> None:
        from .data import class_index, load_dataset, make_splits

        cfg = self.config
        if self._splits_in is not None:
            splits = self._splits_in
        else:
            try:
                ds = load_dataset(cfg.data.source, seed=cfg.split_seed, **cfg.data.options)
            except InputError as err:
                # the source spec, named as a run config holds it (and as the CLI sets it)
                named = renamed(err, {"data": "data.source"})
                if named is err:
                    raise
                raise InputError(f"{str(named).rstrip('.')} (set it with --data NAME:PATH).") from None
            try:
                splits = make_splits(
                    ds,
                    cfg.data.imbalance,
                    val_fraction=cfg.data.val_fraction,
                    seed=cfg.split_seed,
                    n_max=cfg.data.n_max,
                    test_fraction=cfg.data.test_fraction,
                )
            except InputError as err:
                # make_splits names its own arguments: name the run config's keys (the CLI its flags)
                keys = ("imbalance", "n_max", "val_fraction", "test_fraction")
                raise renamed(err, {key: f"data.{key}" for key in keys}) from None
        self.splits = splits
        k = int(splits.num_classes)
        self.class_names = tuple(splits.class_names) or tuple(str(i) for i in range(k))
        self.normal_class = (
            None
            if cfg.data.normal_class is None
            else class_index("data.normal_class", cfg.data.normal_class, self.class_names)
        )
        self.k = k
        self.kind = splits.kind
        self.counts = np.asarray(splits.class_counts, dtype=np.int64)
        dev = self.device
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
        self.x = {"train": as_t(splits.x_train), "val": as_t(splits.x_val), "test": as_t(splits.x_test)}
        self.y = {
            "train": as_t(splits.y_train.astype(np.int64)),
            "val": as_t(splits.y_val.astype(np.int64)),
            "test": as_t(splits.y_test.astype(np.int64)),
        }
        mean, std = _normalisation(splits.x_train, splits.kind)
        self.norm_stats = {"mean": mean.tolist(), "std": std.tolist()}
        shape = (1, -1, 1, 1) if self.kind == "image" else (1, -1)
        scale = 255.0 if self.kind == "image" else 1.0
        self._shift = torch.tensor(mean * scale, dtype=torch.float32, device=dev).view(shape)
        self._scale = torch.tensor(1.0 / (std * scale), dtype=torch.float32, device=dev).view(shape)
        if (cfg.train.pad_crop or cfg.train.flip) and self.kind != "image":
            raise fail("train.pad_crop/flip", "off for tabular data (augmentation is for images)", self.kind)

    def _setup_model(self) -> None:
        from .models import create_model, seeded_init

        cfg = self.config
        info = get_loss_info(cfg.loss.name)
        if info.needs_cosine_classifier and not _truthy(cfg.model.options.get("cosine_classifier", False)):
            raise fail(
                "model.options.cosine_classifier",
                f"true for loss {cfg.loss.name!r} (it expects cosine logits)",
                cfg.model.options.get("cosine_classifier", False),
            )
        with seeded_init(cfg.seed):  # the caller's torch RNG is left as it was
            model = create_model(
                cfg.model.name,
                in_shape=tuple(self.splits.x_train.shape[1:]),
                num_classes=self.k,
                **cfg.model.options,
            )
        rt = cfg.runtime
        self.amp = _switch(rt.amp, self.device)
        # channels_last is a layout, not a numerics, choice: on by default for conv nets on every
        # device (ResNet-32 steps ~20% faster on a 2-core AVX-512 CPU, more on GPUs).
        self.channels_last = (
            rt.channels_last != "off"
            and self.kind == "image"
            and any(isinstance(m, nn.Conv2d) for m in model.modules())
        )
        self.compile = _switch(rt.compile, self.device)
        if self.compile and (why := _compile_unsupported()) is not None:
            if rt.compile == "on":
                raise fail("runtime.compile", f"'auto' or 'off' with {why}", rt.compile)
            self.compile = False  # auto: eager
        self.compile_mode = mode = rt.compile_mode
        if self.dist.enabled and rt.sync_bn:
            model = _convert_sync_bn(model, self.device)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        base = create_loss(cfg.loss.name, self.counts, **cfg.loss.hyper)
        self.loss_base = _per_sample(base).to(self.device)
        self.loss_drw = None
        if cfg.train.drw_epoch is not None:
            w = class_balanced_weights(self.counts, cfg.train.drw_beta)
            self.loss_drw = _per_sample(self.loss_base.with_omega(w)).to(self.device)
        self.graph_mode = self._graph_mode()
        self.graph_fallback: str | None = None  # why CUDA graphs were not used under "auto"
        # One kernel for the update on CUDA; under CUDA graphs it reads the learning rate from
        # a device tensor (the tensor_lr overload), so the schedule needs no re-capture. A torch
        # whose SGD has no fused kernel (2.2) takes its default, foreach, and never captures.
        fusable = _sgd_has_fused()
        self._fused = True if fusable and (self.device.type == "cuda" or self.graph_mode) else None
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
            nesterov=cfg.optim.nesterov,
            **({"fused": self._fused} if fusable else {}),
        )
        self._graphs: dict[tuple[int, int], _GraphStep] = {}
        self._eval_graph: _GraphStep | None = None
        self._lr = torch.zeros((), dtype=torch.float32, device=self.device)
        self._acc = {
            "loss": torch.zeros((), device=self.device),
            "correct": torch.zeros(self.k, device=self.device),
            "seen": torch.zeros(self.k, device=self.device),
        }
        train_model: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # BatchNorm buffers need no broadcast before each forward when they are synchronised
            # (torch 2.13 renamed the switch and warns on the old name; both sync at init)
            sync = not rt.sync_bn
            name = "forward_sync_buffers" if "forward_sync_buffers" in _ddp_params() else "broadcast_buffers"
            train_model = DDP(model, device_ids=ids, **{name: sync})
        if self.compile:
            # Static shapes: one graph per training batch size (at most two), warmed up before timing.
            train_model = torch.compile(train_model, mode=mode, dynamic=False)  # type: ignore[assignment]
            self._eval_compiled = torch.compile(self._features_logits, mode=mode, dynamic=False)
        self.train_model = train_model

    def _setup_sampler(self) -> None:
        cfg = self.config.train
        n = int(self.y["train"].shape[0])
        B = cfg.batch_size
        self.n_train = n
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        world = self.dist.world
        # The epoch's batches do not depend on the number of processes, so N ranks train what
        # one process trains (and a run may resume on another number): the last, short batch
        # is kept when BatchNorm can use it (2 samples; 1 without BatchNorm) ...
        smallest = 2 if has_bn else 1
        rest = n % B
        self.steps_per_epoch = n // B + (1 if rest >= smallest else 0)
        if self.steps_per_epoch == 0:
            raise fail("train.batch_size", f"at most the training split's size (n = {n})", B)
        # ... and every process needs its share of each batch: one sample each (2 each when
        # BatchNorm statistics are not synchronised over the processes).
        per_rank = 2 if has_bn and not self.config.runtime.sync_bn else 1
        need = max(smallest, per_rank * world)
        if B < need:
            why = [f"{per_rank} per process of {world}"] if world > 1 else []
            why += ["the model's BatchNorm needs 2 samples per batch"] if has_bn else []
            raise fail("train.batch_size", f"at least {need} ({'; '.join(why)})", B)
        if world > 1 and smallest <= rest < need:
            raise fail(
                "train.batch_size",
                f"a size that divides the training split (n = {n}) or leaves a last batch of at least "
                f"{need} samples for {world} processes (it leaves {rest}; one process would train on it)",
                B,
            )
        self.batch_sizes = sorted({min(B, n - s * B) for s in range(self.steps_per_epoch)})
        self.sample_p = None
        if cfg.sampler != "none":
            q = sampling_probabilities(self.counts, cfg.sampler)
            per_sample = q / self.counts  # (k,)
            self.sample_p = torch.as_tensor(per_sample, dtype=torch.float32, device=self.device)[
                self.y["train"]
            ]
        seed = self.config.seed
        self.g_order = torch.Generator(device=self.device)
        self.g_order.manual_seed(seed * 1_000_003 + 1)
        self.g_aug = torch.Generator(device=self.device)
        self.g_aug.manual_seed(seed * 1_000_003 + 2)

    # ------------------------------------------------------------------------------- pieces

    def inputs(self, xb: Tensor) -> Tensor:
        """Normalise a raw batch (uint8 images or float32 rows, on the device) for the model.

        Images: ``(x / 255 - mean_c) / std_c`` per channel; tabular: ``(x - mean_j) / std_j`` per
        feature; means and stds of the training split (``checkpoint.pt``'s ``normalization``).
        """
        x = (xb.float() - self._shift) * self._scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def epoch_order(self) -> Tensor:
        """Training-sample indices of the next epoch (advances the order generator).

        A permutation of ``0..n-1`` without a sampler; ``n`` draws with replacement from
        ``q_{y_i} / n_{y_i}`` with one (:func:`sampling_probabilities`).
        """
        if self.sample_p is None:
            return torch.randperm(self.n_train, generator=self.g_order, device=self.device)
        return torch.multinomial(self.sample_p, self.n_train, replacement=True, generator=self.g_order)

    def _draw_augmentation(self, size: int) -> tuple[Tensor | None, Tensor | None]:
        cfg = self.config.train
        shifts = flips = None
        if cfg.pad_crop:
            shifts = torch.randint(
                0, 2 * cfg.pad_crop + 1, (size, 2), generator=self.g_aug, device=self.device
            )
        if cfg.flip:
            flips = torch.rand(size, generator=self.g_aug, device=self.device) < 0.5
        return shifts, flips

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            # No cast cache under CUDA graphs: cached bf16 weights would be captured stale.
            return torch.autocast(
                device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=self.graph_mode is None
            )
        return contextlib.nullcontext()

    def _loss_for(self, epoch: int) -> nn.Module:
        """The loss for 0-based ``epoch``: class-balanced weights after ``drw_epoch`` epochs."""
        drw = self.config.train.drw_epoch
        if self.loss_drw is not None and drw is not None and epoch >= drw:
            return self.loss_drw
        return self.loss_base

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------------------- loop

    def _train_epoch(self, epoch: int, step: int) -> tuple[int, Tensor, Tensor, Tensor]:
        """One pass; returns the next step and (loss sum, per-class correct, per-class seen)."""
        cfg = self.config
        B, world, rank = cfg.train.batch_size, self.dist.world, self.dist.rank
        loss_fn = self._loss_for(epoch)
        order = self.epoch_order()
        augment = bool(cfg.train.pad_crop or cfg.train.flip)
        for t in self._acc.values():
            t.zero_()
        self.model.train()
        for s in range(self.steps_per_epoch):
            check_interrupt()  # a SIGTERM whose KeyboardInterrupt was swallowed (cegeo._signals)
            lr = lr_at(step, self.steps_per_epoch, cfg.train.epochs, cfg.optim)
            if self._graphs:
                self._lr.fill_(lr)
            else:
                if self._fused:
                    # The graphs' fused SGD reads the rate as float32 from a device tensor; the
                    # eager fused kernel would use the float as a double. Rounded alike, a run
                    # with and one without graphs follow the same trajectory.
                    lr = float(np.float32(lr))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            batch = order[s * B : (s + 1) * B]  # the global batch, identical on every rank
            y_all = self.y["train"][batch]
            idx, y = batch[rank::world], y_all[rank::world]  # this rank's shard
            xb = self.x["train"][idx]
            if augment:
                shifts, flips = self._draw_augmentation(batch.numel())
                xb = augment_batch(
                    xb,
                    None if shifts is None else shifts[rank::world],
                    None if flips is None else flips[rank::world],
                    cfg.train.pad_crop,
                )
            if self._graphs:
                self._graphs[(id(loss_fn), int(batch.numel()))].run(xb, y)
            else:
                self._train_step(loss_fn, xb, y, y_all)
            step += 1
        acc = self._acc
        return step, acc["loss"], acc["correct"], acc["seen"]

    def _train_step(self, loss_fn: nn.Module, xb: Tensor, y: Tensor, y_all: Tensor) -> None:
        """One SGD step on this rank's shard ``(xb, y)`` of the global batch's labels ``y_all``.

        The loss is the weighted sum over the shard divided by the global batch's total weight
        (times the world size, which DDP's gradient averaging divides out). Adds the loss and the
        per-class hits to ``self._acc`` on the device (no synchronisation). The same code is
        captured in a CUDA graph (:class:`_GraphStep`), so it must not synchronise with the host.
        """
        omega = getattr(loss_fn, "omega", None)
        norm = omega.to(torch.float32)[y_all].sum() if omega is not None else y_all.numel()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.train_model(self.inputs(xb))  # (b, k)
        loss = loss_fn(logits, y).sum() * (self.dist.world / norm)
        loss.backward()
        self.optimizer.step()
        acc = self._acc
        acc["loss"] += loss.detach().float()
        hit = (logits.detach().argmax(1) == y).float()
        acc["correct"].index_add_(0, y, hit)
        acc["seen"].index_add_(0, y, torch.ones_like(hit))

    def _features_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self._autocast():
            h = self.model.features(x)
            z = self.model.classifier(h)
        return h.float(), z.float()

    @torch.no_grad()
    def _eval_forward(self, xb: Tensor) -> tuple[Tensor, Tensor]:
        """Eval-mode features and logits of a full ``eval_batch_size`` batch (compiled or not)."""
        fn = self._eval_compiled if self.compile else self._features_logits
        return fn(self.inputs(xb))

    def _eval_batch(self, xb: Tensor) -> tuple[Tensor, Tensor]:
        """Features and logits (float32) of a raw batch in eval mode.

        With ``torch.compile`` every batch is zero-padded to ``eval_batch_size`` rows (eval-mode
        layers treat samples independently), so one static-shape graph serves every split; under
        CUDA graphs the batch is copied into a static buffer of that size and the captured
        forward replayed.
        """
        b, eb = xb.shape[0], self.config.train.eval_batch_size
        if self._eval_graph is not None:  # rows past b hold stale inputs: sliced off
            h, z = self._eval_graph.run(xb)
            return h[:b], z[:b]
        if not self.compile:
            return self._features_logits(self.inputs(xb))
        h, z = self._eval_compiled(self.inputs(_pad_rows(xb, eb)))
        return h[:b], z[:b]

    def _eval_rows(self) -> int:
        """Rows per forward of the probes: ``train.eval_batch_size``, fewer for the CPU's cache.

        On the CPU (eager, no CUDA graph) a batch runs at about the speed of memory once its
        activations outgrow the caches: ResNet-32's 16 x 32 x 32 float32 maps are 64 KiB a row, so
        1024 rows make 64 MiB layers, and the forward costs about 3x per image what it costs at
        64-128 rows (a 2-core AVX-512 CPU). The rows are capped so that the largest activation of
        one forward (measured once on one eval-mode row) stays within ``_CPU_EVAL_BYTES``.
        Eval-mode layers treat rows independently: the probes change by float rounding only.
        """
        eb = self.config.train.eval_batch_size
        if self.device.type != "cpu" or self.compile or self._eval_graph is not None:
            return eb  # compiled/captured passes are static-shape at eval_batch_size rows
        if self._cpu_eval_rows is None:
            per_row = _largest_activation_bytes(
                self.model, lambda: self._features_logits(self.inputs(self.x["train"][:1]))
            )
            self._cpu_eval_rows = max(1, min(eb, _CPU_EVAL_BYTES // max(per_row, 1)))
        return self._cpu_eval_rows

    @torch.no_grad()
    def _forward_split(
        self, split: str, stats: FeatureStats | None, keep: bool
    ) -> tuple[np.ndarray, float, Tensor | None, Tensor | None]:
        """One eval-mode pass over a split, sharded over ranks.

        Returns the confusion matrix (k, k) and the mean loss (``loss_base``, weighted like its
        ``mean``) over the whole split (all-reduced), and with ``keep`` the gathered logits and
        features. Nothing but k*k + 2 numbers leaves the device unless ``keep``.
        """
        k = self.k
        x, y = self.x[split], self.y[split]
        n = int(y.shape[0])
        lo, hi = _shard(n, self.dist.rank, self.dist.world)
        eb = self._eval_rows()
        omega = getattr(self.loss_base, "omega", None)
        cm = torch.zeros(k * k, dtype=torch.float64, device=self.device)
        loss = torch.zeros(2, dtype=torch.float64, device=self.device)  # (sum, weight)
        logits, feats = [], []
        for i in range(lo, hi, eb):
            j = min(i + eb, hi)
            yb = y[i:j]
            h, z = self._eval_batch(x[i:j])
            if stats is not None:
                stats.update(h, yb)
            cm.index_add_(0, yb * k + z.argmax(1), torch.ones_like(yb, dtype=torch.float64))  # no sync
            loss[0] += self.loss_base(z, yb).sum()
            loss[1] += omega.double()[yb].sum() if omega is not None else float(j - i)
            if keep:
                logits.append(z.clone())  # compiled outputs may live in reused buffers
                feats.append(h.clone())
        packed = _all_sum(torch.cat([cm, loss]), self.dist).cpu().numpy()
        confusion = packed[: k * k].reshape(k, k).astype(np.int64)
        mean_loss = float(packed[-2] / packed[-1])
        if not keep:
            return confusion, mean_loss, None, None
        d = int(self.model.feature_dim)
        z_local = torch.cat(logits) if logits else torch.zeros(0, k, device=self.device)
        f_local = torch.cat(feats) if feats else torch.zeros(0, d, device=self.device)
        return confusion, mean_loss, _gather_rows(z_local, n, self.dist), _gather_rows(f_local, n, self.dist)

    def _probe(self, epoch: int, step: int, time_s: float, train_loss: float, final: bool) -> dict[str, Any]:
        """Metrics on train/val/test and the geometry probes (one ``metrics.jsonl`` line)."""
        cfg = self.config
        self.model.eval()
        if self.dist.enabled:
            import torch.distributed as dist

            # Without synchronised BatchNorm (runtime.sync_bn = false) each rank's running
            # statistics are its own shard's (DDP broadcasts rank 0's only before the next training
            # forward): every rank probes with rank 0's, the model checkpoint.pt saves.
            for buf in self.model.buffers():
                dist.broadcast(buf, 0)
        stats = FeatureStats.zeros(self.k, int(self.model.feature_dim), self.device)
        cm_train, loss_train, _, _ = self._forward_split("train", stats, keep=False)
        stats = stats.all_reduce()
        cm_val, _, z_val, f_val = self._forward_split("val", None, keep=final)
        cm_test, _, z_test, f_test = self._forward_split("test", None, keep=final)
        W = classifier_weight(self.model)
        if final:
            self._final_probed = True  # on every rank: all of them took part in this probe
        if self.dist.rank != 0:
            return {}
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "time_s": time_s,
            "lr": lr_at(max(step - 1, 0), self.steps_per_epoch, cfg.train.epochs, cfg.optim),
            "train_loss": train_loss,
            "train_loss_eval": loss_train,
            "reweighted": self._loss_for(epoch - 1) is not self.loss_base,
        }
        for name, cm in (("train", cm_train), ("val", cm_val), ("test", cm_test)):
            record[name] = summary_from_confusion(cm, self.splits.groups, self.normal_class)
        # The prediction is for the dataset's counts whatever the sampler: a sampler weighs each
        # sample's loss by how often it is drawn, and loss weights drop out of the max-margin
        # limit (THEORY.md §4), as wCE's and deferred re-weighting's do.
        probe = measure(stats, W, loss=self.loss_base, class_counts=self.counts, groups=self.splits.groups)
        record["geometry"] = probe.to_dict(matrices=final)
        if final:
            self._final = {
                "record": record,
                "val": (z_val, f_val),
                "test": (z_test, f_test),
                "W": W,
                "theory": None if probe.theory is None else probe.theory.to_dict(),
            }
        return record

    # ------------------------------------------------------------------------------- checkpoints

    def _checkpoint_state(self, epoch: int, step: int, train_time: float, wall_time: float) -> dict[str, Any]:
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "order": self.g_order.get_state(),
            "aug": self.g_aug.get_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "step": step,
            "train_time_s": train_time,
            "wall_time_s": wall_time,
            "config_toml": self.config.to_toml(),
            "model": self.model.state_dict(),
            "optimizer": _plain_lr(self.optimizer.state_dict()),
            "rng": rng,
            "normalization": dict(self.norm_stats),
            "num_classes": self.k,
            "data_fingerprint": self._data_fingerprint(),
            "world_size": self.dist.world,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def _data_fingerprint(self) -> str:
        """:meth:`cegeo.data.Splits.fingerprint` of this run's splits (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = self.splits.fingerprint()
        return self._fingerprint

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        assert self.out is not None
        # Serialised in memory first: a write that fails (a full disk) is then the OSError that
        # names the file (one line), not the RuntimeError torch's zip writer raises over it.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_open(self.out / "checkpoint.pt", "wb") as fh:
            fh.write(buffer.getbuffer())
        self._checkpointed = True

    def _restore(self, ck: dict[str, Any]) -> tuple[int, int, float, float]:
        saved = _checkpoint_config(ck)
        diffs = [] if saved is None else config_differences(saved, self.config)
        # Where the data lie may change (data moved, config.toml's paths edited to follow it).
        source = self.config.data.source
        diffs = [d for d in diffs if not _only_data_paths_differ(*d, source)]
        if diffs:
            # config.toml (the base of a resume) edited after the run started: resuming would
            # train the rest of the run with other settings than its first epochs, and the folder's
            # config.toml would no longer reproduce it.
            key, was, now = diffs[0]
            raise InputError(
                f"`{key}` must match the run being resumed in {self.out} (its checkpoint was trained "
                f"with {was!r}); got {now!r}: was config.toml edited? Use --force to start over."
            )
        if not _same_data(ck, self.k, self.norm_stats, self._data_fingerprint()):
            # The paths may differ (data moved): the data themselves must be the run's, or its
            # first epochs were trained on other data than the rest and final.json would say so.
            raise InputError(
                f"`data.source` must hold the data the run being resumed in {self.out} was trained "
                f"on; got {source!r}, whose splits differ from its checkpoint's (other samples, "
                "labels or classes): was a file changed, or config.toml pointed at other data? "
                "Use --force to start over."
            )
        epoch, step = int(ck["epoch"]), int(ck["step"])
        if step != epoch * self.steps_per_epoch:
            # The schedule is a function of the step: a checkpoint counted with other batches per
            # epoch (an earlier cegeo's rule for the last batch) would shift it.
            assert self.out is not None
            made = ck.get("steps_per_epoch")
            raise InputError(
                f"`{self.out / 'checkpoint.pt'}` must come from a run of {self.steps_per_epoch} steps per "
                f"epoch, as this one has; got {step} steps after {epoch} epochs ("
                + (f"{made} per epoch: other data" if made else "a checkpoint of an earlier cegeo")
                + "): pass --force to start the run over."
            )
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        for group in self.optimizer.param_groups:  # this run's kernel choice, not the saved run's
            group["fused"], group["foreach"] = self._fused, None  # (torch 2.2 ignores "fused")
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        self.g_order.set_state(rng["order"])
        self.g_aug.set_state(rng["aug"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return epoch, step, float(ck["train_time_s"]), float(ck["wall_time_s"])

    # ------------------------------------------------------------------------------- CUDA graphs

    def _graph_mode(self) -> str | None:
        """``"capture"`` when training steps are replayed from CUDA graphs, else ``None``.

        ``runtime.cuda_graph = "auto"`` captures on one CUDA process when torch's fused SGD takes
        a tensor learning rate; ``"on"`` insists (an error where it cannot); ``"off"`` never.
        (The CPU tests patch it to return ``"emulate"``: the graph code path without capture.)
        """
        want = self.config.runtime.cuda_graph
        if want == "off":
            return None
        why = None
        if self.dist.enabled:
            why = "'auto' or 'off' under DDP (a graph holds one process's step)"
        elif self.device.type != "cuda":
            why = "'auto' or 'off' on a CPU (CUDA graphs need a CUDA device)"
        elif not _fused_sgd_takes_tensor_lr():
            why = f"'auto' or 'off' with torch {torch.__version__} (its fused SGD takes no tensor lr)"
        if why is None:
            return "capture"
        if want == "on":
            raise fail("runtime.cuda_graph", why, want)
        return None

    def _graph_losses(self, start_epoch: int) -> list[nn.Module]:
        """The losses the epochs from ``start_epoch`` on train with (two with deferred re-weighting)."""
        epochs = range(start_epoch, self.config.train.epochs)
        losses: list[nn.Module] = []
        for e in epochs:
            fn = self._loss_for(e)
            if all(fn is not other for other in losses):
                losses.append(fn)
        return losses

    def _snapshot(self) -> tuple[list[Tensor], list[Tensor | None]]:
        """Copies of the weights, buffers and momentum, for a warm-up (compile, graphs) to undo."""
        weights = [t.detach().clone() for t in self.model.state_dict().values()]
        momenta = [
            None if (b := self.optimizer.state.get(p, {}).get("momentum_buffer")) is None else b.clone()
            for p in self.model.parameters()
        ]
        return weights, momenta

    @torch.no_grad()
    def _restore_snapshot(self, snap: tuple[list[Tensor], list[Tensor | None]]) -> None:
        """Copy the snapshot back *into* the same tensors (graphs hold their addresses)."""
        weights, momenta = snap
        for t, saved in zip(self.model.state_dict().values(), weights, strict=True):
            t.copy_(saved)
        for p, saved in zip(self.model.parameters(), momenta, strict=True):
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is None:
                continue
            if saved is None:
                buf.zero_()  # created by the warm-up: m * 0 + g = g is SGD's first step
            else:
                buf.copy_(saved)

    def _prepare_graphs(self, start_epoch: int) -> None:
        """Warm up and capture one graph per (loss, batch size) before the clock starts.

        The warm-up steps really train (at learning rate 0), so the weights, BatchNorm statistics
        and momentum buffers are snapshotted before and copied back after; the run then follows
        the same trajectory as without graphs. Under ``"auto"`` a failure falls back to the
        eager step (``final.json``'s ``cuda_graph_fallback`` says why).
        """
        if self.graph_mode is None or start_epoch >= self.config.train.epochs:
            return
        self.model.train()
        snap = self._snapshot()
        groups = self.optimizer.param_groups
        capture = self.graph_mode == "capture"
        try:
            for group in groups:
                group["lr"] = self._lr  # the schedule fills it before each replay
            self._lr.zero_()
            pool = None
            for loss_fn in self._graph_losses(start_epoch):
                # largest first, in the order an epoch replays them (full batches, then the
                # last partial one), as graphs sharing a memory pool should be
                for size in sorted(self.batch_sizes, reverse=True):
                    step = lambda x, y, fn=loss_fn: self._train_step(fn, x, y, y)  # noqa: E731
                    g = _GraphStep(step, (self.x["train"][:size], self.y["train"][:size]), capture, pool)
                    g.warm_up()
                    # as in PyTorch's whole-network recipe: backward then allocates the gradients
                    # from the graph's pool
                    self.optimizer.zero_grad(set_to_none=True)
                    g.capture()
                    if g.graph is not None and pool is None:
                        pool = g.graph.pool()
                    self._graphs[(id(loss_fn), size)] = g
            # The probes' forward pass, in its own pool: its outputs are read after each replay.
            self.model.eval()
            eb = self.config.train.eval_batch_size
            g = _GraphStep(self._eval_forward, (_pad_rows(self.x["train"][:eb], eb),), capture)
            g.warm_up(2)
            g.capture()
            self._eval_graph = g
        except Exception as err:
            self._graphs = {}
            self._eval_graph = None
            if self.config.runtime.cuda_graph == "on":
                raise fail(
                    "runtime.cuda_graph", "a training step CUDA graphs can capture", _one_line(err)
                ) from err
            self.graph_fallback = _one_line(err)
            self.graph_mode = None
            for group in groups:
                group["lr"] = float(self.config.optim.lr)
            warnings.warn(
                f"CUDA graph capture failed, training without graphs: {self.graph_fallback}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            self._restore_snapshot(snap)
            if not self._graphs:
                self.optimizer.zero_grad(set_to_none=True)
            self._sync()

    # ------------------------------------------------------------------------------- compile warm-up

    def _warm_up_compiled(self) -> None:
        """Compile the training step for every batch shape and the eval pass, restore the weights."""
        saved = self._snapshot()
        world, rank = self.dist.world, self.dist.rank
        for size in self.batch_sizes:
            idx = torch.arange(size, device=self.device)[rank::world]
            with self._autocast():
                out = self.train_model(self.inputs(self.x["train"][idx]))
            (out.float().sum() * 0.0).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self._restore_snapshot(saved)
        self.model.eval()
        with torch.no_grad():  # a full and a padded batch (their layouts differ when C = 1)
            self._eval_batch(self.x["train"][: self.config.train.eval_batch_size])
            self._eval_batch(self.x["train"][:1])
        self._sync()

    # ------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Train (or resume) to the end; write the run folder; return ``final.json``'s content."""
        wall0 = time.perf_counter()
        if self.action == "finished":
            assert self.out is not None
            self.final = read_json(self.out / "final.json")
            self.records = (
                read_jsonl(self.out / "metrics.jsonl", ints=("epoch",))
                if (self.out / "metrics.jsonl").exists()
                else []
            )
            return self.final
        try:
            self.setup()
            # A resumed run restores the checkpoint's generator states: into a fork, so the
            # caller's random streams are left as they were.
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                return self._run(wall0)
        except BaseException as exc:
            # A new run that dies before its first checkpoint leaves the folder as it found it
            # minus the run it replaced, never a config.toml that blocks the next attempt.
            if self._started_folder and not self._checkpointed:
                assert self.out is not None
                _clear(self.out)
            if _peer_gone(exc, getattr(self, "dist", None)):
                # another rank failed where _agree does not look (its data, a checkpoint that
                # could not be written): its error is the one that counts, this is one line
                why = next(s for s in _PEER_GONE if s in str(exc))
                raise PeerStoppedError(
                    f"rank {self.dist.rank} stopped: another rank of this torchrun job stopped, or "
                    f"the connection to it was lost (see any error above; {why})."
                ) from None
            raise
        finally:
            if self._lock is not None:
                assert self.out is not None
                with contextlib.suppress(OSError):
                    (self.out / ".lock").unlink()  # while still held (see _lock_run_folder)
                self._lock.close()  # releases the flock
                self._lock = None
            if getattr(self, "dist", None) is not None and self.dist.owner:
                import gc

                import torch.distributed as dist

                # DistributedDataParallel's reducer holds the process group: dropped first, the
                # group is freed now. Freed at interpreter exit instead, gloo's worker threads
                # aborted the process now and then ("terminate called without an active
                # exception", SIGABRT) after a run that had finished and written everything, so
                # that torchrun failed the job.
                if getattr(self, "train_model", None) is not None:
                    self.train_model = self.model
                gc.collect()
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
            self._restore_process_settings()

    def _restore_process_settings(self) -> None:
        """Give back the thread count and CUDA numerics flags :meth:`setup` changed."""
        saved, self._process_settings = self._process_settings, {}
        if "threads" in saved and torch.get_num_threads() != saved["threads"]:
            torch.set_num_threads(saved["threads"])
        if "cudnn.benchmark" in saved:
            torch.backends.cudnn.benchmark = saved["cudnn.benchmark"]
            torch.backends.cuda.matmul.allow_tf32 = saved["matmul.allow_tf32"]
            torch.backends.cudnn.allow_tf32 = saved["cudnn.allow_tf32"]

    def setup(self) -> Trainer:
        """Join the process group (under torchrun), build the data, model, loss, optimizer and
        sampler on the device; called by :meth:`run` (idempotent). Returns ``self``.

        It sets process-wide switches: ``runtime.threads`` (``torch.set_num_threads``) and, on
        CUDA, cuDNN benchmarking and TF32 matmuls; :meth:`run` gives them back when it ends."""
        if self._ready:
            return self
        # Process-wide settings, given back when run() ends (cegeo used as a library).
        self._process_settings = {
            "threads": torch.get_num_threads(),
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        }
        if self.config.runtime.threads is not None:
            torch.set_num_threads(self.config.runtime.threads)
        self._setup_distributed()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._setup_data()
        self._setup_model()
        self._setup_sampler()
        self._ready = True
        return self

    def _prepare_folder(self, writer: bool) -> tuple[int, int, float, float]:
        """Lock the run folder and start or resume the run in it (the writer, rank 0), or load the
        checkpoint (every rank); returns (start epoch, step, train time, wall time before)."""
        cfg = self.config
        start_epoch, step, train_time, wall_before = 0, 0, 0.0, 0.0
        if writer:
            assert self.out is not None
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_run_folder(self.out)
            # What to do (start, resume) was decided from the folder before the lock: another
            # process may have started, advanced or finished the run since.
            if _folder_state(self.out) != self._seen:
                raise RunBusyError(
                    f"`out` must hold the run this command looked at; got {self.out}, where another "
                    "process has trained since: run the command again."
                )
        if self.action == "resume":
            assert self.out is not None
            # Loaded on the CPU (generator states must be CPU byte tensors); load_state_dict copies
            # the weights and optimizer state to the model's device.
            ck = load_checkpoint(self.out / "checkpoint.pt")
            start_epoch, step, train_time, wall_before = self._restore(ck)
            _remove_temporaries(self.out)
            if self.out is not None and (self.out / "metrics.jsonl").exists():
                # Lines written after the checkpoint (a kill between probe and save) are redone.
                self.records = [
                    r
                    for r in read_jsonl(self.out / "metrics.jsonl", ints=("epoch",))
                    if r["epoch"] <= start_epoch
                ]
                if writer:
                    _rewrite_jsonl(self.out / "metrics.jsonl", self.records)
        elif writer:
            assert self.out is not None
            env = environment_info()
            # The CPU thread count, which float sums depend on, even when runtime.threads is unset
            env.update(
                {
                    "device": str(self.device),
                    "world_size": self.dist.world,
                    "torch_threads": torch.get_num_threads(),
                }
            )
            text = _to_toml({**to_dict(cfg), "provenance": env})
            # The run this one replaces (--force, or one that died before its first checkpoint)
            # is removed only now, once data, model, loss and config.toml's text have been
            # built without error.
            self._replaced = any((self.out / n).exists() for n in ("checkpoint.pt", "final.json"))
            _clear(self.out)
            self._started_folder = True
            with atomic_open(self.out / "config.toml", "w") as fh:
                fh.write(text)
        return start_epoch, step, train_time, wall_before

    def _run(self, wall0: float) -> dict[str, Any]:
        cfg = self.config
        writer = self.out is not None and self.dist.rank == 0

        try:
            start_epoch, step, train_time, wall_before = self._prepare_folder(writer)
        except Exception as exc:
            _agree(self.dist, self.device, exc)
            raise
        _agree(self.dist, self.device, None)

        if self.compile:
            self._warm_up_compiled()
        self._prepare_graphs(start_epoch)

        epochs = cfg.train.epochs
        minority = self.splits.groups.minority
        title = f"{cfg.loss.name} {cfg.model.name} {self.out.name if self.out else ''}".strip()
        bar = _Progress(self.progress and self.dist.rank == 0, epochs, start_epoch, title)
        use_events = self.device.type == "cuda"
        val_min = float("nan")
        try:
            for epoch in range(start_epoch, epochs):
                if use_events:
                    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    t0.record()
                else:
                    c0 = time.perf_counter()
                step, loss_sum, correct, seen = self._train_epoch(epoch, step)
                if use_events:
                    t1.record()
                    t1.synchronize()
                    train_time += t0.elapsed_time(t1) / 1000.0
                else:
                    train_time += time.perf_counter() - c0
                packed = _all_sum(torch.cat([loss_sum.view(1), correct, seen]), self.dist).cpu().numpy()
                train_loss = float(packed[0]) / (self.dist.world * self.steps_per_epoch)
                train_min = _minority_recall(packed[1 : 1 + self.k], packed[1 + self.k :], minority)
                done = epoch + 1
                if not (math.isfinite(train_loss) and self._state_finite()):
                    # Diverged: no probe of NaN weights, no checkpoint over the last good one.
                    what = (
                        f"the train loss became {train_loss}"
                        if not math.isfinite(train_loss)
                        else ("the weights became non-finite")
                    )
                    # A weight decay of order 1/lr diverges as surely as a large rate does.
                    big_wd = cfg.optim.weight_decay >= 1 and cfg.optim.weight_decay * cfg.optim.lr >= 1
                    raise fail(
                        "optim.weight_decay" if big_wd else "optim.lr",
                        (
                            "a weight decay with lr * weight_decay < 1"
                            if big_wd
                            else "a learning rate at which training stays finite"
                        )
                        + f" ({what} in epoch {done}; "
                        + (
                            "the last checkpoint is from before it)"
                            if self._checkpointed or start_epoch > 0
                            else "nothing of the run was kept"
                            + (
                                "; the run it replaced was removed before training)"
                                if self._replaced
                                else ")"
                            )
                        ),
                        cfg.optim.weight_decay if big_wd else cfg.optim.lr,
                    )
                final = done == epochs
                line = None
                if done % cfg.train.probe_every == 0 or final:
                    t_probe = time.perf_counter()
                    record = self._probe(done, step, train_time, train_loss, final)
                    if self.dist.rank == 0:
                        record["probe_time_s"] = time.perf_counter() - t_probe
                        self.records.append(record)
                        if writer:
                            assert self.out is not None
                            append_jsonl(self.out / "metrics.jsonl", record)
                        val_min = record["val"]["group_recall"][self.splits.groups.names[-1]]
                        line = (
                            f"epoch {done}/{epochs}  loss {train_loss:.4f}  val bal-acc "
                            f"{record['val']['balanced_accuracy']:.4f}"
                        )
                        if val_min == val_min:  # NaN: no minority class (equal counts)
                            line += f"  val minority recall {val_min:.4f}"
                if self.out is not None:
                    state = self._checkpoint_state(
                        done, step, train_time, wall_before + time.perf_counter() - wall0
                    )
                    if writer:
                        self._save_checkpoint(state)
                info = f"loss {train_loss:.4f}"
                if train_min == train_min or val_min == val_min:  # both NaN: no minority class
                    info += f"  minority recall: train {train_min:.3f} val {val_min:.3f}"
                bar.update(done, info, line)
        finally:
            bar.close()
        if not self._final_probed:
            # Killed after the last checkpoint but before final.json: probe the final weights again
            # (the metrics line of the last epoch is already in metrics.jsonl).
            last_loss = self.records[-1]["train_loss"] if self.records else float("nan")
            self._probe(epochs, step, train_time, last_loss, final=True)
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()
        self.final = (
            self._finish(train_time, wall_before + time.perf_counter() - wall0) if self.dist.rank == 0 else {}
        )
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()
        return self.final

    def _state_finite(self) -> bool:
        """Whether every weight and buffer is finite (one device sync, once an epoch)."""
        tensors = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _finish(self, train_time: float, wall_time: float) -> dict[str, Any]:
        cfg = self.config
        arrays = self._final
        assert arrays is not None
        last = arrays["record"]
        final: dict[str, Any] = {
            "finished": True,
            "epochs": cfg.train.epochs,
            "wall_time_s": wall_time,
            "train_time_s": train_time,
            "samples_per_s": self._samples_trained / train_time if train_time > 0 else None,
            "num_classes": self.k,
            "class_names": list(self.class_names),
            "normal_class": self.normal_class,
            "class_counts": self.counts.tolist(),
            "groups": self.splits.groups.as_dict(),
            "loss": {"name": cfg.loss.name, "hyper": dict(getattr(self.loss_base, "spec", None).hyper)},
            "model": cfg.model.name,
            # arrays given in memory name their own source and profile, not the config's
            "data": cfg.data.source if self._splits_in is None else self.splits.dataset,
            "imbalance": cfg.data.imbalance if self._splits_in is None else self.splits.profile,
            "seed": cfg.seed,
            "device": str(self.device),
            "world_size": self.dist.world,
            "amp": self.amp,
            "compile": self.compile,
            "compile_mode": self.compile_mode if self.compile else None,
            "cuda_graph": bool(self._graphs),
            "cuda_graph_fallback": self.graph_fallback,
            "channels_last": self.channels_last,
            "train": last["train"],
            "val": last["val"],
            "test": last["test"],
            "geometry": last["geometry"],
            "theory": arrays["theory"],
            "history": _history(self.records),
            "environment": environment_info(),
        }
        if self.out is not None:
            for split in ("val", "test"):
                z, f = arrays[split]
                write_npz(
                    self.out / f"logits_{split}.npz",
                    logits=z.cpu().numpy().astype(np.float32),
                    labels=self.y[split].cpu().numpy().astype(np.int64),
                    features=f.cpu().numpy().astype(np.float32),
                )
            write_npz(self.out / "classifier.npz", W=arrays["W"].float().cpu().numpy())
            write_json(self.out / "final.json", final)
        return final

    @property
    def _samples_trained(self) -> int:
        """Samples processed over all epochs (the last short batch dropped if it was)."""
        B = self.config.train.batch_size
        return self.config.train.epochs * min(self.n_train, self.steps_per_epoch * B)


def _only_data_paths_differ(key: str, was: Any, now: Any, source: str) -> bool:
    """Whether a config difference is only where the data lie: the path of ``data.source`` (the
    same source), or the value of an option naming a file (csv's ``test``) of ``source``. A run
    whose data moved resumes once config.toml points at them; all else must match its checkpoint.

    Examples
    --------
    >>> _only_data_paths_differ("data.source", "csv:/old/x.csv", "csv:/new/x.csv", "csv:/new/x.csv")
    True
    >>> _only_data_paths_differ("data.source", "csv:/old/x.csv", "npz:/old/x.npz", "npz:/old/x.npz")
    False
    >>> _only_data_paths_differ("data.options", {"test": "/old/t.csv"}, {"test": "/new/t.csv"}, "csv:/x.csv")
    True
    """
    from .data import get_dataset_info, parse_spec

    try:
        if key == "data.source" and isinstance(was, str) and isinstance(now, str):
            return parse_spec(was)[0] == parse_spec(now)[0]
        if key == "data.options" and isinstance(was, Mapping) and isinstance(now, Mapping):
            paths = get_dataset_info(parse_spec(source)[0]).path_options
            return set(was) == set(now) and all(k in paths or was[k] == now[k] for k in was)
    except InputError:
        return False
    return False


def _same_data(ck: Mapping[str, Any], k: int, norm_stats: Mapping[str, Any], fingerprint: str) -> bool:
    """Whether this run's data are those the checkpoint was trained on, as far as it recorded
    them: the number of classes, the splits' :meth:`~cegeo.data.Splits.fingerprint` and the
    training split's means and stds (``normalization``), which other data (another file at a
    moved path) all but surely change. What a checkpoint lacks (an earlier cegeo's) passes."""
    if isinstance(ck.get("num_classes"), int) and ck["num_classes"] != k:
        return False
    if isinstance(ck.get("data_fingerprint"), str) and ck["data_fingerprint"] != fingerprint:
        return False
    saved = ck.get("normalization")
    if not isinstance(saved, Mapping):
        return True
    for key in ("mean", "std"):
        a, b = np.asarray(saved.get(key), dtype=np.float64), np.asarray(norm_stats[key], dtype=np.float64)
        # float64 sums of the same values: equal up to summation order (another NumPy)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-12):
            return False
    return True


def _checkpoint_config(ck: Mapping[str, Any]) -> RunConfig | None:
    """The RunConfig a checkpoint was trained with (None if this cegeo cannot read it)."""
    from ._io import tomllib

    text = ck.get("config_toml")
    if not isinstance(text, str):
        return None
    try:
        return from_dict(RunConfig, tomllib.loads(text))
    except (tomllib.TOMLDecodeError, InputError):  # a checkpoint of another cegeo's settings
        return None


def _history(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best val balanced accuracy, its epoch, and the first probed epoch (and its training
    time) reaching 95% of it (:func:`convergence_point`)."""
    scores = [(r["epoch"], r["val"]["balanced_accuracy"]) for r in records]
    from .metrics import convergence_point

    point = convergence_point(records)
    if point is None:
        return {}
    best_epoch, best = max(scores, key=lambda s: s[1])
    return {
        "best_val_bal_acc": best,
        "best_epoch": best_epoch,
        "epoch_to_95pct_bal_acc": point[0],
        "time_to_95pct_bal_acc_s": point[1],
    }


def _rewrite_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    from ._io import dumps_json

    with atomic_open(path, "w") as fh:
        for r in records:
            fh.write(dumps_json(r, indent=None) + "\n")


#: Largest activation (bytes) of one eager probe forward on the CPU (:meth:`Trainer._eval_rows`):
#: within the caches of a small CPU (ResNet-32 on 32 x 32 images: 64 rows, ResNet-18: 16).
_CPU_EVAL_BYTES = 4 << 20


def _largest_activation_bytes(model: nn.Module, forward: Any) -> int:
    """The largest output (bytes) of any submodule of ``model`` during ``forward()`` (one row)."""
    largest = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                largest = max(largest, t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return largest


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    """``x`` with zero rows appended up to ``rows`` (the static shape of the eval graphs)."""
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def _plain_lr(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with the learning-rate tensor (CUDA graphs) as a float."""
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
    return state


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _per_sample(loss: nn.Module) -> nn.Module:
    """The registry loss set to per-sample output without per-call validation (checked once)."""
    loss.reduction = "none"
    loss.validate = False
    return loss


def _normalisation(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images, in [0, 1] units) or per-feature mean and std of the training split."""
    if kind == "image":
        C = x.shape[1]
        s1 = np.zeros(C)
        s2 = np.zeros(C)
        for i in range(0, x.shape[0], 4096):
            chunk = x[i : i + 4096].astype(np.float64) / 255.0
            s1 += chunk.sum(axis=(0, 2, 3))
            s2 += (chunk**2).sum(axis=(0, 2, 3))
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = s1 / m
        std = np.sqrt(np.maximum(s2 / m - mean**2, 0.0))
    else:
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # constant channels/features are centred, not scaled
    return mean, std


def train(
    config: RunConfig | None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    splits: Any = None,
) -> dict[str, Any]:
    """Train one run and return ``final.json``'s content (see :class:`Trainer`; ``splits`` are
    arrays already in memory, a :class:`cegeo.data.Splits`)."""
    return Trainer(config, out, resume=resume, force=force, progress=progress, splits=splits).run()
