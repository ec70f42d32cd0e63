"""``cegeo data`` (dataset and split inspector), and ``csv:`` data through the CLI (data, train)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cegeo.data import load_dataset, make_splits

NAMES = ("cat", "dog", "eel")


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """12 rows per class, text labels in a column that is not the last one."""
    rng = np.random.default_rng(0)
    lines = ["f1,animal,f2,f3"]
    for c, name in enumerate(NAMES):
        for _ in range(12):
            lines.append(f"{rng.normal() + 2 * c:.4f},{name},{rng.normal() - c:.4f},{rng.normal():.4f}")
    path = tmp_path / "animals.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_digits_step_table(cli):
    r = cli("data", "digits", "--imbalance", "step:R=10,rho=0.5")
    assert r.code == 0, r.err
    assert "digits · image · sample shape (1x8x8) uint8 · 10 classes · 1797 training samples" in r.out
    assert "step:R=10,rho=0.5" in r.out
    rows = [line.split() for line in r.out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 10
    # class, name, group, source, subset, train, val, test
    assert rows[0][:2] == ["0", "0"] and rows[0][2] == "majority"
    assert rows[9][2] == "minority"
    s = make_splits(load_dataset("digits"), "step:R=10,rho=0.5", seed=0)
    assert [int(row[5]) for row in rows] == s.class_counts.tolist()
    assert [int(row[6]) for row in rows] == np.bincount(s.y_val, minlength=10).tolist()
    assert [int(row[7]) for row in rows] == np.bincount(s.y_test, minlength=10).tolist()
    assert [int(row[4]) for row in rows] == s.subset_counts.tolist()


def test_json_matches_make_splits(cli):
    r = cli(
        "data", "digits", "--imbalance", "longtail:R=20", "--val-fraction", "0.2", "--seed", "3", "--json"
    )
    assert r.code == 0, r.err
    info = json.loads(r.out)
    s = make_splits(load_dataset("digits"), "longtail:R=20", val_fraction=0.2, seed=3)
    assert info["kind"] == "image" and info["in_shape"] == [1, 8, 8] and info["num_classes"] == 10
    assert info["has_test"] is False and info["n_test"] is None
    sp = info["splits"]
    assert sp["train_counts"] == s.class_counts.tolist()
    assert sp["val_counts"] == np.bincount(s.y_val, minlength=10).tolist()
    assert sp["test_counts"] == np.bincount(s.y_test, minlength=10).tolist()
    assert sp["groups"] == s.groups.as_dict()
    assert sp["seed"] == 3 and sp["val_fraction"] == 0.2 and sp["test_fraction"] == 0.3
    assert sp["imbalance_ratio"] == pytest.approx(max(s.class_counts) / min(s.class_counts))
    assert all(g in s.groups.names for g in sp["class_groups"])


def test_source_with_its_own_test_set(cli):
    r = cli("data", "gaussian", "--data-option", "k=3", "--data-option", "n_test_per_class=7", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["kind"] == "tabular" and info["has_test"] is True
    assert info["splits"]["test_counts"] == [7, 7, 7]
    assert info["splits"]["test_fraction"] is None
    assert info["splits"]["profile"] == "none"


def test_csv_through_cegeo_data(cli, csv_file):
    r = cli(
        "data",
        f"csv:{csv_file}",
        "--data-option",
        "label=animal",
        "--imbalance",
        "counts:8,8,2",
        "--json",
    )
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["kind"] == "tabular" and info["in_shape"] == [3] and info["dtype"] == "float32"
    assert info["class_names"] == list(NAMES)
    assert info["source_train_counts"] == [12, 12, 12]
    sp = info["splits"]
    assert sp["subset_counts"] == [8, 8, 2]
    assert [t + v for t, v in zip(sp["train_counts"], sp["val_counts"], strict=True)] == [8, 8, 2]
    assert sp["test_counts"] == [4, 4, 4]  # the fixed 30% test split of each class of 12

    text = cli("data", f"csv:{csv_file}", "--data-option", "label=animal")
    assert text.code == 0, text.err
    assert "cat" in text.out and "eel" in text.out and "tabular" in text.out


@pytest.mark.slow
def test_csv_through_cegeo_train(cli, csv_file, tmp_path):
    out = tmp_path / "run"
    r = cli(
        "train",
        "--data",
        f"csv:{csv_file}",
        "--data-option",
        "label=animal",
        "--imbalance",
        "step:R=3,rho=0.3333333333",
        "--model",
        "mlp",
        "--model-option",
        "width=16",
        "--model-option",
        "depth=2",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert r.code == 0, r.err
    for name in ("config.toml", "metrics.jsonl", "final.json", "logits_val.npz", "logits_test.npz"):
        assert (out / name).is_file(), name
    final = json.loads((out / "final.json").read_text())
    assert final["data"] == f"csv:{csv_file}"
    with np.load(out / "logits_test.npz") as z:
        assert z["logits"].shape == (12, 3)


def test_help_states_the_ratio_convention(cli):
    r = cli("data", "--help")
    assert r.code == 0
    assert "R = n_max/n_min >= 1" in " ".join(r.out.split())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["digits", "--imbalance", "step:R=0.1,rho=0.5"], r"`R` must be a number >= 1"),
        (
            ["digits", "--imbalance", "step:R=10,rho=0.25"],
            r"`rho` must be a value with rho\*k a whole number",
        ),
        (["digits", "--imbalance", "zipf:a=2"], r"`--imbalance` must be 'step:R=..,rho=..'"),
        (["mnist"], r"`data` must be a dataset name, one of 'digits', .*; got 'mnist'"),
        (["csv:/no/such/file.csv"], r"`data` must be 'csv:FILE' with an existing file"),
        (["digits", "--val-fraction", "1.5"], r"`--val-fraction` must be a number in \(0, 1\); got 1.5"),
        (["digits", "--seed", "-1"], r"`--seed` must be an integer >= 0; got -1"),
        (["digits", "--data-option", "k"], r"`--data-option` must be name=value"),
        (["digits", "--data-option", "k=3"], r"`--data-option` must be options of 'digits'"),
        # names of load_dataset's own arguments are unknown options too (they were a TypeError)
        (
            ["digits", "--data-option", "seed=3"],
            r"`--data-option` must be options of 'digits' \(none\); got 'seed'",
        ),
        (
            ["gaussian", "--data-option", "spec=x"],
            r"`--data-option` must be options of 'gaussian' .*; got 'spec'",
        ),
        (
            ["digits", "--imbalance", "counts:500,5,5,5,5,5,5,5,5,5"],
            r"`--imbalance` must be counts the training",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, match):
    r = cli("data", *args)
    assert r.code == 2
    assert r.err.startswith("error: ")
    assert len(r.err.strip().splitlines()) == 1
    assert re.search(match, r.err), r.err


@pytest.mark.parametrize("spelling", ["\\t", "tab", '"\t"'])
def test_tab_separated_csv_in_data_and_train(cli, csv_file, tmp_path, spelling):
    """`delimiter=\\t` as typed in a shell (or `tab`, or the TOML string "\\t") reads a TSV, and
    `cegeo data` parses --data-option values as `cegeo train` does."""
    tsv = tmp_path / "animals.tsv"
    tsv.write_text(csv_file.read_text().replace(",", "\t"))
    opts = ("--data-option", "label=animal", "--data-option", f"delimiter={spelling}")
    r = cli("data", f"csv:{tsv}", *opts, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["class_names"] == list(NAMES) and json.loads(r.out)["in_shape"] == [3]
    r = cli(
        "train", "--data", f"csv:{tsv}", *opts, "--epochs", "1", "--out", tmp_path / "run", "--no-progress"
    )
    assert r.code == 0, r.err
