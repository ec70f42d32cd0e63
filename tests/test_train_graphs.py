"""The CUDA-graph training step (runtime.cuda_graph).

The capture itself needs a GPU (the ``cuda`` tests, run by ``bench/gpu_check.sh``). Everything
around it is device-independent and tested here on the CPU by running the trainer in the
"emulate" graph mode: every step goes through :class:`cegeo.train._GraphStep` (static input
buffers, the learning rate as a device tensor read by fused SGD, gradients set to None at the
start of the step, the warm-up steps and the snapshot they are undone with), only without
``torch.cuda.graph``. That run must follow the plain loop's trajectory. And what a graph captures,
for every model and loss, must never read a value back to the host (checked op by op with a
dispatch mode), since such an op cannot be captured.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cegeo._validation import InputError
from cegeo.config import RunConfig, override
from cegeo.train import Trainer, _fused_sgd_takes_tensor_lr, _GraphStep, load_checkpoint

DIGITS = {
    "data.imbalance": "step:R=10,rho=0.5",
    "model.options": {"width": 32, "depth": 2},
    "train.batch_size": 64,
    "train.epochs": 4,
    "train.pad_crop": 1,
    "train.flip": True,
    "train.drw_epoch": 2,
    "optim.milestones": (3,),
    "runtime.threads": 1,
}


def config(**dotted) -> RunConfig:
    return override(RunConfig(), {**DIGITS, **{k.replace("__", "."): v for k, v in dotted.items()}})


def _cpu_fused_sgd_with_tensor_lr() -> str | None:
    """Why this torch cannot run the graph step's optimizer on the CPU, or None when it can: fused
    SGD reading a tensor learning rate (torch 2.2 has no fused SGD; 2.3's is CUDA-only)."""
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    try:
        torch.optim.SGD([p], lr=torch.tensor(0.5), momentum=0.9, fused=True).step()  # type: ignore[arg-type]
    except (TypeError, RuntimeError, ValueError) as exc:
        return (
            f"torch {torch.__version__} has no fused SGD with a tensor lr on the CPU ({type(exc).__name__})"
        )
    return None


_NO_GRAPH_SGD = _cpu_fused_sgd_with_tensor_lr()
graph_sgd = pytest.mark.skipif(_NO_GRAPH_SGD is not None, reason=str(_NO_GRAPH_SGD))


@pytest.fixture
def emulate(monkeypatch):
    if _NO_GRAPH_SGD is not None:
        pytest.skip(_NO_GRAPH_SGD)
    monkeypatch.setattr(Trainer, "_graph_mode", lambda self: "emulate")


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def plain():
    t = Trainer(config(), progress=False)
    t.run()
    assert not t._graphs and t.graph_mode is None  # the eager loop, not an emulated graph
    return t


@pytest.mark.parametrize("eval_batch", [1024, 100])
def test_graph_steps_follow_the_plain_loop(emulate, plain, eval_batch):
    t = Trainer(config(train__eval_batch_size=eval_batch), progress=False)
    calls = []
    original = _GraphStep.run

    def spy(self, *values):
        calls.append((self, values[0].shape[0], len(values)))
        return original(self, *values)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_GraphStep, "run", spy)
        final = t.run()
    # one graph per (loss, batch size): CE and the DRW loss, full and last partial batches
    n = t.n_train
    assert n % 64 >= 2, "the workload must have a partial last batch"
    assert sorted(size for _, size in t._graphs) == sorted([64, n % 64] * 2)
    steps = [(g, size) for g, size, n_in in calls if n_in == 2]
    assert len({id(g) for g, _ in steps}) == 4 and len(steps) == 4 * t.steps_per_epoch
    # the probes' forward ran through the eval graph: every batch of every split, every epoch
    evals = [size for g, size, n_in in calls if n_in == 1]
    assert all(g is t._eval_graph for g, _, n_in in calls if n_in == 1)
    n_eval = sum(-(-len(t.y[s]) // eval_batch) for s in ("train", "val", "test"))
    assert len(evals) == 4 * n_eval
    assert final["cuda_graph"] is True and final["cuda_graph_fallback"] is None
    # The warm-up's 3 steps per graph were undone: BatchNorm counters and running statistics,
    # weights and momentum agree with the run that never warmed up. (Not bitwise: fused SGD with a
    # float32 learning-rate tensor against the plain loop's per-parameter SGD with a float.)
    got, want = _state(t), _state(plain)
    for key in want:
        if key.endswith("num_batches_tracked"):
            assert int(got[key]) == int(want[key]) == 4 * t.steps_per_epoch, key
        else:
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
    for p, q in zip(t.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(
            t.optimizer.state[p]["momentum_buffer"],
            plain.optimizer.state[q]["momentum_buffer"],
            rtol=1e-4,
            atol=1e-6,
        )
    for r, s in zip(t.records, plain.records, strict=True):
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-5)
        assert r["reweighted"] == s["reweighted"]
        assert r["val"]["balanced_accuracy"] == pytest.approx(s["val"]["balanced_accuracy"], abs=0.02)
        # the probes (eval graph, stale rows past a short batch sliced off) see the same network
        assert r["train_loss_eval"] == pytest.approx(s["train_loss_eval"], rel=1e-4)
        for key in ("dist_W", "dist_H", "nc1"):
            assert r["geometry"][key] == pytest.approx(s["geometry"][key], rel=1e-3), key
    # the schedule reached the fused optimizer through the tensor: last epoch at lr * 0.1
    assert float(t._lr) == pytest.approx(0.01, rel=1e-6)


def _addresses(t: Trainer) -> dict[str, int]:
    """Where every tensor a captured graph reads or writes lives."""
    out = {f"state.{k}": v.data_ptr() for k, v in t.model.state_dict().items()}
    for i, p in enumerate(t.model.parameters()):
        out[f"momentum.{i}"] = t.optimizer.state[p]["momentum_buffer"].data_ptr()
    out.update({f"acc.{k}": v.data_ptr() for k, v in t._acc.items()})
    out["lr"] = t._lr.data_ptr()
    for key, g in [*t._graphs.items(), ("eval", t._eval_graph)]:
        out.update({f"graph.{key}.{i}": b.data_ptr() for i, b in enumerate(g.buffers)})
    return out


def test_captured_tensors_stay_in_place_for_the_whole_run(emulate, tmp_path):
    """A replay updates the tensors it was captured with: nothing in the run (probes, checkpoints,
    the DRW switch, the restore after the warm-up) may swap one for a new tensor."""
    seen = {}
    prepare = Trainer._prepare_graphs

    def spy(self, start_epoch):
        prepare(self, start_epoch)
        seen["after_capture"] = _addresses(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_prepare_graphs", spy)
        t = Trainer(config(), tmp_path / "run", progress=False)
        t.run()
    assert _addresses(t) == seen["after_capture"]
    assert all(g["lr"] is t._lr for g in t.optimizer.param_groups)


def test_without_the_snapshot_the_warm_up_would_leak(emulate, monkeypatch, plain):
    """The equality above is not vacuous: skip the restore and the run drifts."""
    monkeypatch.setattr(Trainer, "_restore_snapshot", lambda self, snap: None)
    t = Trainer(config(), progress=False)
    t.run()
    bn = next(k for k in plain.model.state_dict() if k.endswith("num_batches_tracked"))
    assert int(t.model.state_dict()[bn]) > int(plain.model.state_dict()[bn])
    w = next(k for k in plain.model.state_dict() if k.endswith("running_mean"))
    assert not torch.allclose(t.model.state_dict()[w], plain.model.state_dict()[w], rtol=1e-4, atol=1e-6)


class _CrashAfterProbe(Trainer):
    def _save_checkpoint(self, state):
        if state["epoch"] == 3:
            raise KeyboardInterrupt("simulated crash")
        super()._save_checkpoint(state)


def test_resume_with_graphs_is_bitwise_identical(emulate, tmp_path):
    straight = Trainer(config(), tmp_path / "a", progress=False)
    straight.run()
    with pytest.raises(KeyboardInterrupt):
        _CrashAfterProbe(config(), tmp_path / "b", progress=False).run()
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ck["epoch"] == 2
    assert all(isinstance(g["lr"], float) for g in ck["optimizer"]["param_groups"])
    resumed = Trainer(None, tmp_path / "b", resume=True, progress=False)
    resumed.run()
    a, b = _state(straight), _state(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["test"] for r in straight.records] == [r["test"] for r in resumed.records]


@graph_sgd  # the warm-up steps before the (failing) capture run fused SGD
def test_capture_failure_falls_back_under_auto(monkeypatch, plain):
    monkeypatch.setattr(Trainer, "_graph_mode", lambda self: "capture")

    def refuse(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(_GraphStep, "_capture", refuse)
    t = Trainer(config(), progress=False)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed, training without graphs"):
        final = t.run()
    assert final["cuda_graph"] is False
    assert final["cuda_graph_fallback"] == "RuntimeError: operation not permitted when stream is capturing"
    assert all(isinstance(g["lr"], float) for g in t.optimizer.param_groups)
    got, want = _state(t), _state(plain)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)


@graph_sgd  # the warm-up steps before the (failing) capture run fused SGD
def test_capture_failure_is_an_error_under_on(monkeypatch):
    monkeypatch.setattr(Trainer, "_graph_mode", lambda self: "capture")
    monkeypatch.setattr(_GraphStep, "_capture", lambda self: (_ for _ in ()).throw(RuntimeError("no")))
    t = Trainer(config(runtime__cuda_graph="on"), progress=False)
    with pytest.raises(
        InputError,
        match=r"`runtime.cuda_graph` must be a training step CUDA graphs can capture; got 'RuntimeError: no'",
    ):
        t.run()


def test_a_torch_without_the_graph_steps_sgd_is_detected_not_crashed_on():
    """torch 2.2 has no ``_fused_sgd_`` op: ``auto`` must fall back on a GPU, not raise an
    AttributeError; where the CPU runs the graph step's SGD, the trainer's check agrees."""
    assert isinstance(_fused_sgd_takes_tensor_lr(), bool)
    if _NO_GRAPH_SGD is None:
        assert _fused_sgd_takes_tensor_lr()


def test_graph_mode_choice_on_cpu():
    assert RunConfig().runtime.cuda_graph == "auto"
    assert Trainer(config(), progress=False).setup().graph_mode is None  # the default, auto
    assert Trainer(config(runtime__cuda_graph="auto"), progress=False).setup().graph_mode is None
    assert Trainer(config(runtime__cuda_graph="off"), progress=False).setup().graph_mode is None
    with pytest.raises(ValueError, match=r"`runtime.cuda_graph` must be 'auto' or 'off' on a CPU"):
        Trainer(config(runtime__cuda_graph="on"), progress=False).setup()
    with pytest.raises(ValueError, match=r"`runtime.cuda_graph` must be one of 'auto', 'on', 'off'"):
        config(runtime__cuda_graph="yes")


# Ops that make the host wait for the device (a value or a data-dependent shape read back): illegal
# inside a CUDA graph capture. `float(t)`, `t.item()`, `if t:` all go through _local_scalar_dense.
_HOST_SYNC = {"_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "masked_select"}
_HOST_SYNC |= {
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "bincount",
    "repeat_interleave",
}


class _HostSyncs(TorchDispatchMode):
    """Records every op that synchronises with the host (forward, backward and optimizer)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        name = func.overloadpacket.__name__
        if name in _HOST_SYNC or (name in _INDEX and _has_mask(args)):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


# Boolean-mask indexing runs nonzero inside the kernel, out of the mode's sight: flag it by its mask.
_INDEX = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _has_mask(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


GAUSS = {
    "data.source": "gaussian",
    "data.imbalance": "step:R=5,rho=0.5",
    "data.options": {"k": 4, "d": 6, "n_per_class": 60, "n_test_per_class": 10},
    "model.options": {"width": 16, "depth": 2},
    "train.batch_size": 32,
    "train.drw_epoch": 1,
    "train.epochs": 2,
    "runtime.threads": 1,
}
GAUSS_RUN = {"train.epochs": 2, "train.drw_epoch": 1, "optim.milestones": (1,)}
MODELS = {
    "mlp": {},
    "cnn": {"model.name": "cnn", "model.options": {"width": 8}},
    "resnet32": {"model.name": "resnet32", "model.options": {"width": 4}},
    "resnet18": {"model.name": "resnet18", "model.options": {"width": 4}},
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("loss", ["ce", "wce", "la", "cdt", "ldt", "vs", "balanced_softmax", "ldam"])
def test_captured_code_never_waits_for_the_device(emulate, model, loss):
    """What a graph captures (every model x loss, both DRW losses, the probes' forward) never
    reads a value back to the host: such an op fails a capture, or silently bakes in its value."""
    base = GAUSS if model == "mlp" else {**DIGITS, **GAUSS_RUN, **MODELS[model]}
    options = dict(base.get("model.options", {}))
    if loss == "ldam":
        options["cosine_classifier"] = True
    cfg = override(RunConfig(), {**base, "model.options": options, "loss.name": loss})
    t = Trainer(cfg, progress=False).setup()
    size = t.batch_sizes[-1]
    x, y = t.x["train"][:size], t.y["train"][:size]
    t.model.train()
    for group in t.optimizer.param_groups:
        group["lr"] = t._lr
    t._lr.fill_(0.05)
    losses = t._graph_losses(0)
    assert len(losses) == 2 and getattr(losses[1], "omega", None) is not None
    for loss_fn in losses:
        t._train_step(loss_fn, x, y, y)  # creates the momentum buffers, as the warm-up does
        with _HostSyncs() as mode:
            t._train_step(loss_fn, x, y, y)
        assert mode.ops == [], (model, loss, mode.ops)
        assert mode.count > 20  # the mode saw the step (forward, backward, optimizer)
    t.model.eval()
    with _HostSyncs() as mode:
        t._eval_forward(t.x["train"][: t.config.train.eval_batch_size])
    assert mode.ops == [] and mode.count > 5


def test_the_host_sync_detector_detects():
    """The check above would fail on the classic offenders."""
    bn = torch.nn.BatchNorm1d(4, momentum=None)  # cumulative average: float(num_batches_tracked)
    with _HostSyncs() as mode:
        bn(torch.randn(8, 4))
    assert mode.ops
    with _HostSyncs() as mode:
        t = torch.tensor([0, 2, 0])
        _ = t[t > 0]
        t[t > 0] = 1
        _ = t[torch.tensor([0, 2])]  # integer indices are fine
        _ = bool(t.sum())
    assert [op.split(".")[1] for op in mode.ops] == ["index", "index_put_", "_local_scalar_dense"]


def _max_relative_differences(got: dict, want: dict) -> dict[str, float]:
    """Per tensor: max |got - want| over max |want| (counters compared exactly elsewhere)."""
    return {
        key: float((got[key].double() - w.double()).abs().max() / w.double().abs().max().clamp_min(1e-12))
        for key, w in want.items()
        if not key.endswith("num_batches_tracked")
    }


@pytest.mark.cuda
@pytest.mark.parametrize("compile_", ["off", "on"])
def test_cuda_graph_run_matches_eager_on_cuda(monkeypatch, compile_):
    """The captured step against the eager step on the GPU, with deterministic fp32 kernels.

    Both runs use fused SGD with the learning rate rounded to float32 (the eager step rounds
    its float as the graph's device tensor holds it), so what remains is the graph itself:
    schedule, DRW switch, partial batches, the undone warm-up. The two can still differ by
    float rounding (a captured GEMM may run another cuBLAS kernel than the eager one), so the
    model is the MLP: on the CPU a relative perturbation of 1e-6 of its initial weights stays
    below 5e-6 after these four epochs. (The small CNN is no use here: on digits its max-pooling
    windows hold ties, and a rounding difference reroutes gradients; a 1e-7 perturbation grows
    to a 60% difference in four epochs, and graph and eager differed by that much on an H100.)
    A broken replay (stale learning rate, accumulated gradients, stale inputs, the warm-up left
    in the BatchNorm statistics) is off by orders of magnitude more than the 1e-4 allowed: on an
    H100 (torch 2.11) a learning rate 2^-10 larger moved a weight tensor by 33% of its scale,
    while graph and eager runs were bitwise identical, compiled or not.
    """
    common = {
        "optim.lr": 0.125,
        "optim.lr_decay": 0.5,
        "runtime.device": "cuda",
        "runtime.amp": "off",
        "runtime.compile": compile_,
    }
    runs = {}
    for graph in ("on", "off"):
        t = Trainer(override(config(), {**common, "runtime.cuda_graph": graph}), progress=False).setup()
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # setup() switched them on
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        final = t.run()
        assert final["cuda_graph"] is (graph == "on") and final["cuda_graph_fallback"] is None
        runs[graph] = t
    assert runs["on"]._graphs and len(runs["on"].batch_sizes) == 2  # a partial last batch too
    got, want = _state(runs["on"]), _state(runs["off"])
    for key in want:
        if key.endswith("num_batches_tracked"):
            assert torch.equal(got[key], want[key]), key
    worst = max(_max_relative_differences(got, want).items(), key=lambda kv: kv[1])
    assert worst[1] < 1e-4, worst
    for r, s in zip(runs["on"].records, runs["off"].records, strict=True):
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
        assert r["train_loss_eval"] == pytest.approx(s["train_loss_eval"], rel=1e-4)  # eval graph
        assert r["test"]["n"] == s["test"]["n"]
        assert r["geometry"]["dist_W"] == pytest.approx(s["geometry"]["dist_W"], rel=1e-3)


@pytest.mark.cuda
def test_cuda_auto_captures_graphs_with_the_other_defaults(tmp_path):
    cfg = override(config(), {"runtime.device": "cuda", "runtime.cuda_graph": "auto"})
    t = Trainer(cfg, tmp_path / "g", progress=False)
    final = t.run()
    assert (final["amp"], final["compile"], final["cuda_graph"]) == (True, True, True)
    assert final["cuda_graph_fallback"] is None
    assert np.isfinite(final["train"]["balanced_accuracy"])
