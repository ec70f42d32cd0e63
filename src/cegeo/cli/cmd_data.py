"""``cegeo data``: inspect a data source and the splits a run on it would get.

    cegeo data digits --imbalance step:R=10,rho=0.5
    cegeo data csv:measurements.csv --data-option label=status --imbalance none --json

It loads the source (:func:`cegeo.data.load_dataset`), draws the splits exactly as ``cegeo train``
does (:func:`cegeo.data.make_splits`, same seed and fractions), and prints the kind, sample
shape, classes, and the per-class counts of the imbalanced subset and of the train/val/test
splits with each class's group.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import typer
from rich import box
from rich.table import Table

from .._io import dumps_json
from .._validation import InputError, check_options, renamed
from ..data import get_dataset_info, imbalance_ratio, load_dataset, make_splits, parse_spec
from . import app
from ._common import console
from .cmd_train import parse_options

_R_HELP = "R = n_max/n_min >= 1"


def describe_data(
    spec: str,
    *,
    imbalance: str = "none",
    val_fraction: float = 0.1,
    test_fraction: float = 0.3,
    seed: int = 0,
    n_max: int | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dataset and its splits as a JSON-ready dict (what ``cegeo data --json`` prints).

    Examples
    --------
    >>> info = describe_data("digits", imbalance="step:R=10,rho=0.5")
    >>> info["kind"], info["in_shape"], info["num_classes"]
    ('image', [1, 8, 8], 10)
    >>> info["splits"]["train_counts"][:6], info["splits"]["groups"]["minority"]
    ([112, 112, 112, 112, 112, 11], [5, 6, 7, 8, 9])
    """
    options = options or {}
    # names first: an option named spec or seed would bind to load_dataset's own arguments
    name, _ = parse_spec(spec)
    check_options("options", options, get_dataset_info(name, "data").options, repr(name))
    ds = load_dataset(spec, seed=seed, **options)
    splits = make_splits(
        ds, imbalance, val_fraction=val_fraction, seed=seed, n_max=n_max, test_fraction=test_fraction
    )
    split_info = splits.describe()
    k = ds.num_classes
    group_of = [None] * k
    for name, members in split_info["groups"].items():
        for c in members:
            group_of[c] = name
    split_info["class_groups"] = group_of
    split_info["imbalance_ratio"] = float(imbalance_ratio(splits.class_counts))
    split_info["val_fraction"] = val_fraction
    split_info["test_fraction"] = None if ds.has_test else test_fraction
    return {
        "source": ds.name,
        "kind": ds.kind,
        "in_shape": list(ds.in_shape),
        "dtype": ds.x_train.dtype.name,
        "num_classes": k,
        "class_names": list(ds.class_names),
        "has_test": ds.has_test,
        "n_train": int(ds.y_train.size),
        "n_test": None if ds.y_test is None else int(ds.y_test.size),
        "source_train_counts": ds.train_counts().tolist(),
        "splits": split_info,
    }


def _print(info: dict[str, Any]) -> None:
    s = info["splits"]
    shape = "x".join(map(str, info["in_shape"]))
    test_note = (
        f"its own test set of {info['n_test']}"
        if info["has_test"]
        else f"no test set: a fixed stratified {s['test_fraction']:g} of each class is the test split"
    )
    console.print(
        f"{info['source']} · {info['kind']} · sample shape ({shape}) {info['dtype']} · "
        f"{info['num_classes']} classes · {info['n_train']} training samples ({test_note})"
    )
    console.print(
        f"imbalance {s['profile']} · n_max {s['n_max']} · train-split R = n_max/n_min = "
        f"{s['imbalance_ratio']:.3g} · val fraction {s['val_fraction']:g} · seed {s['seed']}"
    )
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col, justify in (
        ("class", "right"),
        ("name", "left"),
        ("group", "left"),
        ("source", "right"),
        ("subset", "right"),
        ("train", "right"),
        ("val", "right"),
        ("test", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    rows = [
        info["source_train_counts"],
        s["subset_counts"],
        s["train_counts"],
        s["val_counts"],
        s["test_counts"],
    ]
    for c in range(info["num_classes"]):
        table.add_row(str(c), info["class_names"][c], s["class_groups"][c] or "-", *(str(r[c]) for r in rows))
    table.add_section()
    table.add_row("", "total", "", *(str(int(np.sum(r))) for r in rows))
    console.print(table)
    console.print("source = the source's training set; subset = the imbalanced draw, before validation.")


@app.command("data")
def data_command(
    spec: str = typer.Argument(
        ...,
        help="Data source NAME[:PATH]: digits | idx:DIR | cifar10:DIR | cifar100:DIR | npz:FILE | "
        "csv:FILE | folder:DIR | gaussian.",
    ),
    imbalance: str = typer.Option(
        "none",
        "--imbalance",
        help=f"Imbalance profile of the training subset: step:R=10,rho=0.5 | longtail:R=100 | "
        f"counts:n1,n2,... | none ({_R_HELP}; STEP majorities are classes 0..k_maj-1; rho, the share of "
        "minority classes, defaults to 0.5).",
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="Share of each class of the subset held out for validation."
    ),
    test_fraction: float = typer.Option(
        0.3, "--test-fraction", help="Fixed test share of each class for sources without a test set."
    ),
    n_max: int | None = typer.Option(
        None, "--n-max", help="Size of the largest class (default: the most the source can supply)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the subset and validation draws."),
    data_option: list[str] | None = typer.Option(
        None,
        "--data-option",
        help="A source option name=value (repeatable), e.g. label=status for csv, k=4 for gaussian.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Show a dataset's kind, shape, classes and per-class train/val/test counts with their groups.

    The splits are the ones `cegeo train` draws with the same options.
    Imbalance ratio R = n_max/n_min >= 1.

    Example: cegeo data digits --imbalance step:R=10,rho=0.5
    """
    try:
        info = describe_data(
            spec,
            imbalance=imbalance,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            n_max=n_max,
            options=parse_options(data_option, "--data-option"),
        )
    except InputError as err:
        flags = {"options": "--data-option", "imbalance": "--imbalance", "n_max": "--n-max"}
        flags.update({"val_fraction": "--val-fraction", "test_fraction": "--test-fraction", "seed": "--seed"})
        raise renamed(err, flags) from None
    if as_json:
        typer.echo(dumps_json(info))
    else:
        _print(info)
