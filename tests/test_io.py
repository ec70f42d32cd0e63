"""Atomic writes."""

from __future__ import annotations

import pytest


def test_atomic_writes_leave_no_temporary_file_and_use_normal_permissions(tmp_path):
    import os
    import stat

    from cegeo._io import atomic_open, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "a.json") as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "a.json").read_text().strip() == '{\n  "x": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
