"""``ocrstream submit`` and non-regular files: a FIFO given by name is refused at once (opening
it would block until something writes to it), one inside a folder is skipped and said."""

from __future__ import annotations

import os

import pytest

from ocrstream.errors import NotARegularFileError
from ocrstream.streaming.paths import iter_paths

pytestmark = pytest.mark.unit


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG....")
    os.mkfifo(tmp_path / "pipe")
    return tmp_path


def test_a_fifo_named_is_refused_and_one_in_a_folder_is_skipped(folder):
    with pytest.raises(NotARegularFileError, match="is a FIFO"):
        iter_paths([folder / "a.png", folder / "pipe"])
    skipped = []
    assert iter_paths([folder], on_skip=lambda path, kind: skipped.append((path.name, kind))) == [folder / "a.png"]
    assert skipped == [("pipe", "FIFO")]
    with pytest.raises(NotARegularFileError, match="is a device"):
        iter_paths([__import__("pathlib").Path("/dev/null")])


def test_submit_refuses_a_fifo_at_once(folder):
    # Before: open() of the FIFO blocked for ever (--timeout does not cover reading the file);
    # a process with a bounded wait, so that a hang fails the test.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ocrstream.cli", "submit", str(folder / "pipe"), "--timeout", "10"],
                         capture_output=True, text=True, timeout=60, cwd=folder,
                         env={**os.environ, "OCRSTREAM_ENV_FILE": str(folder / "none.env")})
    assert run.returncode == 1 and "is a FIFO, not a file" in run.stderr

