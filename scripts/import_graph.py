"""The import graph of the rvmatte package: who imports whom, by layer.

    python scripts/import_graph.py            # package -> packages it imports, with layers
    python scripts/import_graph.py --modules  # module -> modules
    python scripts/import_graph.py --check    # exit 1 on an upward import or a cycle

Every ``import`` and ``from ... import`` in ``src/rvmatte`` counts, function-local ones too
(they are still dependencies), and so do ``importlib.import_module("rvmatte....")`` strings;
imports under ``if TYPE_CHECKING:`` do not (annotations only). The layers are those of
docs/ARCHITECTURE.md; ``tests/test_layers.py`` runs the same checks in the suite.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rvmatte"

# Low to high. A module may import its own layer's modules (within the same package) and any
# lower layer, never a higher one; the packages of one layer never import each other.
LAYERS = [
    # "__init__" is the package itself (rvmatte/__init__.py: __version__ and lazy names; it
    # imports nothing when loaded)
    ("base", ["errors", "hardware", "bundled", "downsample", "metrics", "__init__"]),
    ("models", ["models"]),
    ("spec", ["spec", "weights"]),
    ("io, export", ["io", "export"]),
    ("runtime", ["runtime", "post"]),
    ("inference", ["inference"]),
    ("users", ["evaluation", "training", "live", "server", "cluster"]),
    ("cli", ["cli", "__main__"]),
]
RANK = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
# Explicit rules the issue names, checked on top of the ranks (importer unit -> forbidden).
FORBIDDEN = {
    "models": {u for u in RANK if u != "models"},
    "io": {"runtime", "inference"},
    "export": {"runtime", "inference"},
    "server": {"live"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def unit_of(module: str) -> str:
    """``rvmatte.runtime.ort`` -> ``runtime``; ``rvmatte`` (the package itself) -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> list[tuple[str, int]]:
    """``(imported rvmatte module, line)`` for each import in the file."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names
                             if a.name.split(".")[0] == "rvmatte")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "rvmatte":
                    # each name may be a submodule (`from ..inference import session`);
                    # graph() trims names that are not modules back to their module
                    found.extend((f"{target}.{a.name}", child.lineno) for a in child.names)
            elif (isinstance(child, ast.Call) and getattr(child.func, "attr", None) == "import_module"
                  and child.args and isinstance(child.args[0], ast.Constant)
                  and str(child.args[0].value).startswith("rvmatte.")):
                found.append((child.args[0].value, child.lineno))
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)] for every module of the package."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    out = {}
    for mod, path in sorted(modules.items()):
        edges = []
        for target, line in imports_of(path):
            # `from rvmatte import kernels` may name a module or an attribute: keep modules
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != mod:
                edges.append((target, line))
        out[mod] = edges
    return out


def violations(g: dict) -> list[str]:
    """Upward imports, forbidden imports and imports between packages of one layer."""
    bad = []
    for mod, edges in g.items():
        src = unit_of(mod)
        for target, line in edges:
            dst = unit_of(target)
            if dst == src:
                continue
            why = None
            if dst in FORBIDDEN.get(src, ()):
                why = f"{src} must not import {dst}"
            elif RANK.get(dst, -1) > RANK.get(src, -1):
                why = f"upward: {src} (layer {RANK.get(src)}) imports {dst} (layer {RANK.get(dst)})"
            elif RANK.get(dst) == RANK.get(src) and RANK.get(src) not in (RANK["io"], RANK["spec"],
                                                                          RANK["errors"], RANK["cli"]):
                why = f"sideways: {src} imports {dst}, a sibling of its layer"
            if why:
                bad.append(f"{mod}:{line}: imports {target} ({why})")
    return bad


def cycles(g: dict) -> list[list[str]]:
    """Import cycles among modules (each reported once, as a path)."""
    found, state, stack = [], {}, []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t, _ in g.get(m, ()):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif t in g and not state.get(t):
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in g:
        if not state.get(m):
            dfs(m)
    return found


def package_graph(g: dict) -> dict[str, set[str]]:
    pg: dict[str, set[str]] = {}
    for mod, edges in g.items():
        src = unit_of(mod)
        pg.setdefault(src, set()).update(unit_of(t) for t, _ in edges if unit_of(t) != src)
    return pg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="module-level edges")
    ap.add_argument("--check", action="store_true", help="exit 1 on an upward import or cycle")
    a = ap.parse_args(argv)
    g = graph()
    if a.modules:
        for mod, edges in g.items():
            print(f"{mod} -> {', '.join(sorted({t for t, _ in edges})) or '-'}")
    else:
        pg = package_graph(g)
        for layer, units in reversed(LAYERS):
            for u in units:
                if u in pg:
                    deps = sorted(pg[u], key=lambda d: (-RANK.get(d, -1), d))
                    print(f"[{RANK[u]} {layer:10s}] {u:11s} -> {', '.join(deps) or '-'}")
    bad, loops = violations(g), cycles(g)
    for b in bad:
        print("VIOLATION", b)
    for c in loops:
        print("CYCLE", " -> ".join(c))
    if a.check and (bad or loops):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
