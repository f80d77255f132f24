"""docs/architecture.md matches the tree: every module is in its table, and
every import between stripeline's modules is one the table allows."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "stripeline"
DOC = ROOT / "docs" / "architecture.md"

ROW = re.compile(r"^\|\s*`([\w.]+)`\s*\|[^|]*\|\s*([^|]*?)\s*\|\s*$", re.MULTILINE)


def documented() -> dict[str, set[str]]:
    """The table's rows: module -> the modules it may import."""
    rules: dict[str, set[str]] = {}
    for name, allowed in ROW.findall(DOC.read_text(encoding="utf-8")):
        rules[name] = {a.strip() for a in allowed.split(",") if a.strip() not in {"", "—"}}
    return rules


def unit_of(module: str) -> str:
    """The table's name for ``stripeline.x.y`` (``x``), or ``__init__`` for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def source_units() -> dict[str, list[Path]]:
    units: dict[str, list[Path]] = defaultdict(list)
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        name = (
            "__init__" if relative == Path("__init__.py") else relative.parts[0].removesuffix(".py")
        )
        units[name].append(path)
    return units


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "stripeline":
                found.update(f"stripeline.{alias.name}" for alias in node.names)
    return found


def test_every_module_of_the_tree_has_a_row() -> None:
    assert set(source_units()) == set(documented())


def test_every_import_between_modules_is_allowed() -> None:
    rules = documented()
    wrong: dict[str, set[str]] = defaultdict(set)
    for unit, paths in source_units().items():
        for path in paths:
            for module in imports_of(path):
                if module.split(".")[0] != "stripeline" or module == "stripeline":
                    continue
                target = unit_of(module)
                if target != unit and target not in rules[unit]:
                    wrong[f"{path.relative_to(SRC)}"].add(module)
    assert dict(wrong) == {}


def test_third_parties_that_only_one_place_may_import() -> None:
    places: dict[str, set[str]] = defaultdict(set)
    for unit, paths in source_units().items():
        for path in paths:
            for module in imports_of(path):
                top = module.split(".")[0]
                if top in {"stripe", "pytest", "stripeline_sandbox"}:
                    places[top].add(str(path.relative_to(SRC)) if top == "pytest" else unit)
    assert places["stripe"] == {"gateway"}
    assert places["pytest"] == {"testing/plugin.py"}
    assert places["stripeline_sandbox"] <= {"commands", "testing"}


def test_the_checker_reads_the_table_and_the_imports() -> None:
    rules = documented()
    assert rules["core"] == {"errors"}
    assert rules["errors"] == set()
    assert "stripeline.db.engine" in imports_of(SRC / "app.py")
    assert unit_of("stripeline.mirror.reader") == "mirror"
