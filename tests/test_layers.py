"""The layers point one way, and no module imports itself in a circle.

Every module of the six packages is parsed; every import, also those inside functions, is
followed. Layers, lowest first (docs/architecture.md):

0. ``shared.core``      canonical, clock, crypto, errors, settings, storage
1. ``shared.rules``     pure domain rules: no sqlite3, no Flask
2. ``sync``             signed store-and-forward: no Flask, no CLI, no case semantics
3. ``shared.services``  case services on a database (may use sync to emit)
4. ``shared.web``       the Flask pieces every node uses
5. the tiers            ``city_hub``, ``township_node``, ``village_node`` (never each other)
6. ``provisioning``     the CLI, keys, demo and simulation

A module may import from its own layer or below. The failure lists every offending
``file:line`` so that it can be fixed where it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "sync", "city_hub", "township_node", "village_node", "provisioning")
LAYERS = (
    ("shared.core", 0), ("shared.rules", 1), ("sync", 2), ("shared.services", 3), ("shared.web", 4),
    ("city_hub", 5), ("township_node", 5), ("village_node", 5), ("provisioning", 6),
)
TIERS = ("city_hub", "township_node", "village_node")
# Third-party modules a layer must not use, whatever it imports from the project.
FORBIDDEN = {
    "shared.core": ("flask", "flask_wtf", "click", "apscheduler"),
    "shared.rules": ("flask", "flask_wtf", "click", "apscheduler", "sqlite3", "requests"),
    "sync": ("flask", "flask_wtf", "click"),
    "shared.services": ("flask", "flask_wtf", "click"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> tuple[str, int] | None:
    best = None
    for prefix, level in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, level)
    return best


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``; ``from pkg import mod`` names the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.append((candidate if candidate in MODULES else source, node.lineno))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_import_points_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        mine = _layer(module)
        if mine is None:
            continue
        for target, line in _imports(module, path):
            top = target.split(".")[0]
            for prefix, banned in FORBIDDEN.items():
                if (module == prefix or module.startswith(prefix + ".")) and top in banned:
                    wrong.append(f"{_where(path, line)}: {module} ({prefix}) uses {top}")
            theirs = _layer(target) if top in PACKAGES else None
            if theirs is None:
                continue
            if theirs[1] > mine[1]:
                wrong.append(f"{_where(path, line)}: {module} ({mine[0]}) imports {target} ({theirs[0]}), a higher layer")
            elif mine[0] in TIERS and theirs[0] in TIERS and mine[0] != theirs[0]:
                wrong.append(f"{_where(path, line)}: tier {mine[0]} imports tier {theirs[0]}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], str] = {}
    for module, path in MODULES.items():
        for target, line in _imports(module, path):
            if target in MODULES and target != module:
                graph.setdefault(module, set()).add(target)
                lines.setdefault((module, target), _where(path, line))
    report = []
    for component in _cycles(graph):
        members = set(component)
        edges = [f"  {lines[(a, b)]}: {a} -> {b}" for a in component for b in sorted(graph.get(a, ())) if b in members]
        report.append("cycle " + ", ".join(component) + "\n" + "\n".join(edges))
    assert not report, "import cycles:\n" + "\n".join(report)


def _nested_imports(path: Path) -> list[tuple[str, int]]:
    """Imports inside functions or classes: (first line of the import, line number)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append((ast.get_source_segment(path.read_text(encoding="utf-8"), node), node.lineno))
    return found


def test_imports_inside_functions_only_load_optional_dependencies():
    """A function-level import hides a dependency; it stays only for an optional third-party
    module (loaded when a feature is used), marked with a comment ``# optional``, or in the
    command line (``provisioning``, the top layer) for project code a command alone needs, marked
    ``# deferred`` (a village's ``node serve`` loads no hub, township, demo or simulator code;
    these imports are still followed by the layer and cycle checks above)."""
    wrong = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for text, line in _nested_imports(path):
            names = text.split()[1].split(".")[0]
            if names in PACKAGES:
                allowed = module.startswith("provisioning") and "# deferred" in lines[line - 1]
            else:
                allowed = "# optional" in lines[line - 1]
            if not allowed:
                wrong.append(f"{_where(path, line)}: {text.splitlines()[0]}")
    assert not wrong, "imports inside functions:\n" + "\n".join(wrong)


def test_the_checker_sees_a_violation(tmp_path):
    """The layer check is not vacuous: an upward import inside a function is found."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from city_hub import registry\n", encoding="utf-8")
    found = _imports("shared.rules.probe", path)
    assert ("city_hub.registry", 2) in found
    assert _layer("city_hub.registry")[1] > _layer("shared.rules.probe")[1]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
