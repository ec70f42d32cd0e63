"""``cegeo losses``: list the registered losses with their formulas and defaults."""

from __future__ import annotations

from rich.table import Table

from ..losses import get_loss_info, list_losses
from . import app
from ._common import console


@app.command("losses")
def losses_command() -> None:
    """List the registered losses: formula, hyperparameters and defaults."""
    table = Table(title="cegeo losses (R = n_max/n_min >= 1)")
    for col in ("name", "formula", "hyperparameters (defaults)", "theory"):
        table.add_column(col)
    for name in list_losses():
        info = get_loss_info(name)
        hyper = ", ".join(f"{k}={v:g}" for k, v in info.defaults.items()) or "-"
        table.add_row(name, info.formula, hyper, "yes" if info.theory else "no")
    console.print(table)
