"""tools/import_graph.py on small made-up packages: cycles found (static and through
``importlib.import_module``), none reported where there is none."""

from __future__ import annotations

import importlib
import uuid

from tools.import_graph import report


def make_package(root, modules: dict[str, str]) -> str:
    name = f"graphpkg_{uuid.uuid4().hex[:8]}"
    for path, source in {"__init__.py": "", **modules}.items():
        file = root / name / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(source.replace("PKG", name))
    importlib.invalidate_caches()
    return name


def test_a_cycle_through_a_subpackage_is_reported(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(tmp_path, {
        "core/__init__.py": "", "core/base.py": "",
        "x/__init__.py": "", "x/a.py": "from PKG.x import b\n", "x/b.py": "from PKG.y import c\n",
        "y/__init__.py": "", "y/c.py": "import PKG.x.a\nfrom PKG.core import base\n",
    })
    lines, cycles = report([name], show_modules=False)
    assert cycles == [[f"{name}.x.a", f"{name}.x.b", f"{name}.y.c", f"{name}.x.a"],  # module level
                      [f"{name}.x", f"{name}.y", f"{name}.x"]]  # package level
    assert f"{name}.x -> {name}.y" in lines and f"{name}.y -> {name}.core, {name}.x" in lines
    assert "no cycles" not in lines


def test_a_cycle_behind_import_module_is_reported(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(tmp_path, {
        "iface.py": "import importlib\n\ndef load():\n    return importlib.import_module('PKG.impl')\n",
        "impl.py": "from PKG import iface\n",
    })
    lines, cycles = report([name], show_modules=True)
    assert cycles[0] == [f"{name}.iface", f"{name}.impl", f"{name}.iface"]
    assert f"{name}.iface -> {name}.impl (dynamic)" in lines


def test_an_acyclic_package_has_no_cycles(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(tmp_path, {"a.py": "from PKG import b\n", "b.py": "import json\n"})
    lines, cycles = report([name], show_modules=False)
    assert cycles == [] and lines[-1].startswith("no cycles")


def test_a_cycle_between_packages_only_is_reported(tmp_path, monkeypatch):
    """x.a imports y.c and y.d imports x.b: no module imports itself back, but the packages x and y
    import each other (the recognize <-> pipeline kind of cycle of issue 23)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(tmp_path, {
        "x/__init__.py": "", "x/a.py": "from PKG.y import c\n", "x/b.py": "",
        "y/__init__.py": "", "y/c.py": "", "y/d.py": "from PKG.x import b\n",
    })
    lines, cycles = report([name], show_modules=False)
    assert cycles == [[f"{name}.x", f"{name}.y", f"{name}.x"]]
    assert "1 package-level import cycle(s) (members that import each other, and the shortest cycle):" in lines
