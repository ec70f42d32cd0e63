"""The typed TOML configuration: unknown keys and wrong types are one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cegeo.config import RunConfig, from_dict, load_run_config, override, to_toml_text


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1  # learning rate
    milestones: tuple[int, ...] = ()


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    either: int | str = 0


def test_round_trip_of_the_run_config(tmp_path):
    cfg = override(RunConfig(), {"loss.name": "ldt", "loss.hyper": {"gamma": 0.5}, "train.epochs": 3})
    path = tmp_path / "c.toml"
    path.write_text(to_toml_text(cfg))
    assert load_run_config(path) == cfg


def test_coercions():
    out = from_dict(Outer, {"inner": {"lr": 1, "milestones": [2, 4]}, "extra": {"lr": 0.5}, "either": "a"})
    assert out.inner == Inner(1.0, (2, 4)) and out.extra == Inner(0.5) and out.either == "a"


@pytest.mark.parametrize(
    "data, match",
    [
        ({"nmae": "y"}, r"unknown key `nmae` in the config; valid keys: name, inner, extra, either"),
        ({"inner": {"lr": "fast"}}, r"`inner.lr` must be a number; got 'fast'"),
        ({"inner": {"epochs": 3}}, r"unknown key `inner.epochs` in the config \[inner\]"),
        # an optional table reports its own precise error, not a generic "must be Inner or None"
        ({"extra": {"epochs": 3}}, r"unknown key `extra.epochs` in the config \[extra\]"),
        ({"extra": {"lr": True}}, r"`extra.lr` must be a number; got True"),
        ({"inner": {"milestones": [1, "x"]}}, r"`inner.milestones\[1\]` must be an integer; got 'x'"),
        ({"either": 1.5}, r"`either` must be int or str; got 1.5"),
    ],
)
def test_config_errors(data, match):
    with pytest.raises(ValueError, match=match):
        from_dict(Outer, data)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_hyperparameters_are_refused(value, tmp_path):
    with pytest.raises(
        ValueError, match=r"^`loss\.hyper\.gamma` must be a finite number; got (nan|inf|-inf)\.$"
    ):
        from_dict(RunConfig, {"loss": {"name": "ldt", "hyper": {"gamma": value}}})
    # TOML spells them nan and inf: a config file is refused when it is read, not when training starts.
    path = tmp_path / "c.toml"
    path.write_text(f'[loss]\nname = "ldt"\nhyper = {{gamma = {value}}}\n')
    with pytest.raises(ValueError, match=r"`loss\.hyper\.gamma` must be a finite number"):
        load_run_config(path)


def test_numpy_scalars_and_whole_floats_are_plain_values():
    """A loop over np.arange or a TOML `epochs = 5.0` gives a valid config (of Python values)."""
    import numpy as np

    from cegeo.config import RunConfig, override

    cfg = override(
        RunConfig(),
        {"seed": np.int64(1), "train.epochs": 5.0, "loss.name": "ldt", "loss.hyper.gamma": np.float32(0.5)},
    )
    assert (cfg.seed, cfg.train.epochs, cfg.loss.hyper["gamma"]) == (1, 5, 0.5)
    assert type(cfg.seed) is int and type(cfg.train.epochs) is int and type(cfg.loss.hyper["gamma"]) is float
    for bad, match in (
        ({"train.epochs": 5.5}, r"`train.epochs` must be an integer; got 5.5"),
        ({"train.epochs": True}, r"`train.epochs` must be an integer; got True"),
        ({"train.epochs": float("nan")}, r"`train.epochs` must be an integer; got nan"),
    ):
        with pytest.raises(ValueError, match=match):
            override(RunConfig(), bad)


@pytest.mark.parametrize(
    "optim, match",
    [
        ({"lr": 1e39}, r"^`optim.lr` must be a number <= 3.40282e\+38 \(float32 weights\); got 1e\+39\.$"),
        (
            {"weight_decay": 1e300},
            r"^`optim.weight_decay` must be a number <= 3.40282e\+38 \(float32 weights\); got 1e\+300\.$",
        ),
        (
            {"lr": 1e-30, "lr_decay": 1e300, "milestones": [1, 2]},  # lr_decay ** 2 overflows a float
            r"^`optim.lr_decay` must be a factor that keeps lr x lr_decay \*\* 2 \(milestones\) <= ",
        ),
    ],
)
def test_optimiser_numbers_beyond_float32_are_refused(optim, match):
    """SGD applies lr and weight decay to float32 weights: a larger number was a torch
    RuntimeError traceback ("value cannot be converted to type float without overflow") in the
    first step, or at the milestone that pushed the learning rate past float32."""
    with pytest.raises(ValueError, match=match):
        override(RunConfig(), {f"optim.{k}": v for k, v in optim.items()} | {"train.epochs": 3})
    # the largest float32 is still a (diverging) learning rate, and a decay > 1 within range is fine
    override(RunConfig(), {"optim.lr": 3.4e38, "optim.lr_decay": 1.0})
    override(
        RunConfig(), {"optim.lr": 1.0, "optim.lr_decay": 1e30, "optim.milestones": [1], "train.epochs": 3}
    )
