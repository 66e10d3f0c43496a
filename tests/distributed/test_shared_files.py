"""Files that several ranks write into one folder: waiting for a network filesystem's late
listing, and what a missing file reports (the rank-level checks run in two real processes in
tests/eval/test_tasks.py and tests/curate/test_curate.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sslframe.distributed.shared_files import missing_files, raise_on_every_rank, require_visible
from sslframe.errors import UserError


def test_a_file_that_appears_while_waiting_is_not_missing(tmp_path: Path) -> None:
    late = threading.Timer(0.3, (tmp_path / "b").touch)
    (tmp_path / "a").touch()
    late.start()
    try:
        assert missing_files(tmp_path, ["a", "b"], wait_s=10.0) == []
    finally:
        late.cancel()
    assert missing_files(tmp_path, ["a", "b", "c"], wait_s=0.2) == ["c"]
    assert missing_files(tmp_path / "absent", ["a"], wait_s=0.0) == ["a"]


def test_one_process_reports_what_it_cannot_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sslframe.distributed.shared_files.VISIBLE_WITHIN_S", 0.1)
    (tmp_path / "x.bin").touch()
    require_visible(tmp_path, ["x.bin"], "pieces", "eval.out_dir")
    with pytest.raises(UserError, match=r"rank 0 cannot see 1 of the 2 pieces .* \(such as y.bin\): eval.out_dir"):
        require_visible(tmp_path, ["x.bin", "y.bin"], "pieces", "eval.out_dir")
    raise_on_every_rank(None)
    with pytest.raises(UserError, match=r"^refused$"):
        raise_on_every_rank("refused")
