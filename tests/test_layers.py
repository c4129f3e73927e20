"""The package's layers, enforced: no upward import, no import cycle (docs/ARCHITECTURE.md).

Counted: every import in src/rvmatte, function-local ones included, and
``importlib.import_module("rvmatte...")`` strings; not those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ig():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_no_upward_or_forbidden_import(ig):
    assert ig.violations(ig.graph()) == []


def test_no_import_cycle(ig):
    assert ig.cycles(ig.graph()) == []


def test_every_package_has_a_layer(ig):
    units = {ig.unit_of(m) for m in ig.graph()}
    assert units <= set(ig.RANK), f"packages without a layer: {units - set(ig.RANK)}"


def test_the_checker_sees_what_it_must(ig, tmp_path, monkeypatch):
    """The checks fail on the imports they forbid: an upward import (io -> inference), a
    function-local one, an import_module string, and a cycle; TYPE_CHECKING imports pass."""
    pkg = tmp_path / "rvmatte"
    for sub in ("io", "inference", "models", "server", "live"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "a.py").write_text("def f():\n    from ..inference import b\n")
    (pkg / "inference" / "b.py").write_text("from ..io import a\n")
    (pkg / "models" / "m.py").write_text(
        "import importlib\nimportlib.import_module('rvmatte.io.a')\n")
    (pkg / "server" / "s.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..live import x\n"
        "from ..io import a\n")
    (pkg / "live" / "x.py").write_text("")
    monkeypatch.setattr(ig, "SRC", pkg)
    g = ig.graph()
    bad = "\n".join(ig.violations(g))
    assert "rvmatte.io.a:2: imports rvmatte.inference.b" in bad
    assert "rvmatte.models.m:2: imports rvmatte.io.a" in bad
    assert "rvmatte.server.s" not in bad
    assert ["rvmatte.io.a", "rvmatte.inference.b", "rvmatte.io.a"] in ig.cycles(g) or \
        ["rvmatte.inference.b", "rvmatte.io.a", "rvmatte.inference.b"] in ig.cycles(g)
