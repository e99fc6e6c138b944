"""The README runs (issue 27): every shell and Python block of README.md and docs/*.md, in order, as a
reader runs them from a fresh checkout, with the output the README shows checked
(tests/readme_runner.py: extraction and the ``<!-- readme-runner: ... -->`` directives).

The reader's checkout is a temporary folder of symlinks to this one's files (its own ``.ocrstream/``:
``ocrstream dev up`` in the walk starts the reader's own stack there, never touching a developer's),
with ``.venv/bin`` first on PATH (what ``source .venv/bin/activate`` does) and its own
``XDG_STATE_HOME``. Blocks run one after another in ``bash``; like a reader's terminal, variables a
block exports and the folder it ends in carry over to the next, and processes it starts with ``&`` keep
running. A command that exits non-zero fails its block unless the block allows that status
(``allow-exit``). At the end, ``ocrstream dev down --purge`` stops the reader's stages and stack.
The README's stages listen on their documented fixed ports (8080, 8081, 9101-9105): when another
process holds one, the module is skipped, saying which.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.readme_runner import REPO, Block, all_blocks, same_output

pytestmark = pytest.mark.slow

BLOCKS = all_blocks()
#: Ports the README's commands use as documented: the ingest door, the query API, the stages' metrics.
FIXED_PORTS = (8080, 8081, 9101, 9102, 9103, 9104, 9105)
#: Top-level entries of the checkout the reader's copy does not share.
NOT_SHARED = {".ocrstream", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", "__pycache__"}


@dataclass
class Reader:
    """The reader's checkout, environment and shell state (exports, current folder) across blocks."""

    checkout: Path
    env: dict[str, str]
    state: Path
    groups: list[int] = field(default_factory=list)  # process groups of the block shells (and their `&` jobs)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    taken = [p for p in FIXED_PORTS if port_in_use(p)]
    if taken:
        pytest.skip(f"the README's fixed ports {taken} are in use by another process on this host")
    root = tmp_path_factory.mktemp("reader")
    checkout = root / "ocrstream"
    checkout.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in NOT_SHARED:
            (checkout / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRSTREAM_") and k != "VIRTUAL_ENV"}
    env.update(PATH=f"{checkout / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               VIRTUAL_ENV=str(checkout / ".venv"), XDG_STATE_HOME=str(root / "xdg-state"),
               # as the whole suite (tests/conftest.py): stage processes on the fp32 ONNX Runtime backend
               OCRSTREAM_INFERENCE=os.environ.get("OCRSTREAM_INFERENCE", "onnxruntime"))
    state = root / "shell"
    state.mkdir()
    (state / "cwd").write_text(str(checkout))
    (state / "exports.sh").write_text("")
    r = Reader(checkout, env, state)
    yield r
    subprocess.run(["ocrstream", "dev", "down", "--purge"], cwd=checkout, env=env, capture_output=True, timeout=120)
    for pgid in r.groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def shell_script(block: Block, reader: Reader, index: int) -> str:
    """The block as bash runs it: the previous blocks' exports and folder, the block (Python through
    ``python FILE``), failed commands recorded by an ERR trap, then this block's exports and folder."""
    s = reader.state
    code = block.code
    if block.lang == "python":
        source = s / f"block{index}.py"
        source.write_text(code)
        code = f"python {source}\n"
    return (f"source {s / 'exports.sh'}\ncd \"$(cat {s / 'cwd'})\"\n"
            f"trap 'echo \"$?\t$BASH_COMMAND\" >> {s / f'failed{index}'}' ERR\n"
            f"{code}\n"
            f"trap - ERR\nexport -p > {s / 'exports.sh'}\npwd > {s / 'cwd'}\n")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, reader: Reader):
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    needs = block.directives.get("needs")
    if needs and shutil.which(needs, path=reader.env["PATH"]) is None:
        pytest.skip(f"needs `{needs}`, not installed (./test.sh installs it with apt-get as root)")
    index = BLOCKS.index(block)
    out_path, err_path = reader.state / f"out{index}", reader.state / f"err{index}"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        shell = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", shell_script(block, reader, index)],
                                 cwd=reader.checkout, env=reader.env, stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        reader.groups.append(shell.pid)
        try:
            shell.wait(timeout=block.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
            timed_out = True
    printed, errors = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    failed_file = reader.state / f"failed{index}"
    failures = failed_file.read_text().splitlines() if failed_file.exists() else []
    where = f"{block.id}\n--- block ---\n{block.code}--- stdout (tail) ---\n{printed[-3000:]}" \
            f"\n--- stderr (tail) ---\n{errors[-3000:]}"
    assert not timed_out, f"still running after {block.timeout_s:.0f} s: {where}"
    bad = [f for f in failures if not block.allows(int(f.split("\t", 1)[0]), f.split("\t", 1)[-1])]
    assert not bad, f"commands failed (exit status, command): {bad}\n{where}"
    if block.output is not None:
        assert same_output(block.output, printed), f"the README shows:\n{block.output}\nit printed:\n{printed}\n{where}"
    for text in block.directives.get("expect", []):
        assert text in printed + errors, f"expected {text!r} in the output: {where}"
