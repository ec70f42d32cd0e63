"""The HTML report in a real browser: headless Chromium loads every figure and takes a screenshot.

Needs Debian's chromium (``apt-get install -y chromium``, which CI installs); skipped with a reason
when it is absent. The report is rendered from ``file://`` with networking off: a figure that
loaded proves it is embedded, not fetched.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cegeo.report import build_report
from cegeo.sweep import load_sweep, run_sweep

CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and os.path.exists(p)
    ),
    None,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs headless chromium (apt-get install -y chromium); not found"
    ),
]

SWEEP = """
name = "browser test"
seeds = [0, 1]
[base.data]
source = "gaussian"
imbalance = "step:R=4,rho=0.5"
options = { k = 4, d = 6, n_per_class = 40, n_test_per_class = 12, separation = 2.0 }
val_fraction = 0.25
[base.model]
name = "mlp"
options = { width = 16, depth = 2 }
[base.train]
epochs = 3
batch_size = 32
[base.runtime]
threads = 1
[[losses]]
name = "ce"
[[losses]]
name = "ldt"
grid = { gamma = [0.0, 0.5] }
[ufm]
step = "k=4,R=4,rho=0.5"
n_min = 2
d = 6
losses = ["ldt"]
gamma_grid = [0.0, 0.5, 1.0]
epochs = 30
seeds = [0]
[posthoc]
losses = ["ce"]
"""

# Marks every image with what the browser made of it, once the page (and its images) loaded.
PROBE = """<script>
window.addEventListener('load', function () {
  for (const img of document.images) {
    img.setAttribute('data-natural-width', String(img.naturalWidth));
    img.setAttribute('data-complete', String(img.complete));
  }
  document.body.setAttribute('data-probed', String(document.images.length));
});
</script>"""


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
    ]
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    cfg = root / "sweep.toml"
    cfg.write_text(SWEEP)
    run_sweep(load_sweep(cfg), root / "sweep")
    return build_report(root / "sweep")


def test_every_figure_loads_in_chromium(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.html_path.read_text().replace("</body>", PROBE + "</body>"))
    res = chromium("--dump-dom", probed.as_uri(), user_dir=tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    n = len(report.figures)
    assert n >= 5
    assert f'data-probed="{n}"' in dom, "the load handler did not run over every image"
    tags = re.findall(r"<img\b[^>]*>", dom)
    assert len(tags) == n
    widths = [int(re.search(r'data-natural-width="(\d+)"', t).group(1)) for t in tags]
    assert all(w > 0 for w in widths), f"figures that did not load: {widths}"
    assert all('data-complete="true"' in t for t in tags)
    for sec in report.sections:
        assert f'id="{sec}"' in dom


def test_screenshot_is_a_non_blank_png(report, tmp_path):
    shot = tmp_path / "report.png"
    res = chromium(
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        report.html_path.as_uri(),
        user_dir=tmp_path / "profile",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    im = Image.open(io.BytesIO(shot.read_bytes()))
    assert im.format == "PNG" and im.size == (1280, 2400)
    pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10.0  # not one flat colour
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50  # text, tables and plots drew


def test_page_is_no_wider_than_a_1280_pixel_window(report, tmp_path):
    """A long error message (one line in a nowrap cell) made the page 2231 px wide; tables now
    scroll inside the page and prose cells wrap."""
    sweep = tmp_path / "sweep"
    shutil.copytree(
        report.html_path.parent, sweep, ignore=shutil.ignore_patterns("report.html", "summary.md")
    )
    run = sweep / "runs" / "ce__seed1"
    (run / "final.json").unlink()
    (run / "error.json").write_text(
        '{"error": "' + "a long error message, " * 30 + '", "type": "InputError", "traceback": ""}'
    )
    rep = build_report(sweep)
    probe = """<script>window.addEventListener('load', function () {
      document.body.setAttribute('data-sw', String(document.documentElement.scrollWidth));
    });</script>"""
    probed = tmp_path / "probed.html"
    probed.write_text(rep.html_path.read_text().replace("</body>", probe + "</body>"))
    res = chromium("--window-size=1280,2000", "--dump-dom", probed.as_uri(), user_dir=tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    width = int(re.search(r'data-sw="(\d+)"', res.stdout).group(1))
    assert width <= 1280, width
