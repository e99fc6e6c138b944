"""The locks (tools/lock.sh): every declared dependency is pinned with hashes, and the image's lock
names the same versions as the one demo.sh, test.sh and CI install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")


def _name(requirement: str) -> str:
    """PEP 503 normalised name of a requirement string (``"ocrmypdf>=17,<18"`` → ``"ocrmypdf"``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of a uv/pip-compile lock; asserts every pin carries a hash."""
    pins: dict[str, str] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{path.name}: {match[1]} has no hash"
            pins[_name(match[1])] = match[2]
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(requirements: list[str]) -> set[str]:
    return {_name(r) for r in requirements if not r.startswith("ocrstream")}


def test_every_dependency_and_extra_but_gpu_is_locked():
    project = _project()
    locked = read_lock(ROOT / "requirements.lock")
    wanted = _declared(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "gpu":  # onnxruntime-gpu replaces onnxruntime: it cannot sit in the same environment
            wanted |= _declared(requirements)
    assert wanted - set(locked) == set(), "run tools/lock.sh"


def test_image_lock_is_the_runtime_at_the_same_versions():
    """The image: the runtime with the pdf (query API exports) and trocr extras, nothing for tests."""
    full = read_lock(ROOT / "requirements.lock")
    image = read_lock(ROOT / "deploy" / "requirements.lock")
    extras = _project()["optional-dependencies"]
    assert _declared(_project()["dependencies"] + extras["pdf"] + extras["trocr"]) <= set(image), "run tools/lock.sh"
    assert {name: (version, full.get(name)) for name, version in image.items() if full.get(name) != version} == {}
    assert "torch" not in image and "pytest" not in image  # the runtime only


def test_read_lock_refuses_a_pin_without_hash(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.0.0\nrich==13.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    try:
        read_lock(lock)
    except AssertionError as e:
        assert "numpy has no hash" in str(e)
    else:
        raise AssertionError("a pin without a hash was accepted")
