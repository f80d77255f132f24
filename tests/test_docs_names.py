"""Every ``stripeline…`` name the docs teach resolves to a public name.

The README and ``docs/*.md`` are read as a user reads them: each dotted name
``stripeline.x.y`` in the text, and each ``from stripeline.x import a, b`` /
``import stripeline.x`` in a code block, must import, and every part of it
must be public: no component starting with an underscore, a module named
must be a public one (it declares ``__all__``), and a name taken from a
module must be in that module's ``__all__``. A doc that teaches an
internal, or a module that was moved without the docs following, fails here.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

DOTTED = re.compile(r"(?<![\w./-])(stripeline(?:_sandbox)?(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
FROM_IMPORT = re.compile(
    r"^\s*from\s+(stripeline(?:_sandbox)?(?:\.\w+)*)\s+import\s+\(?([\w\s,]+?)\)?\s*(?:#.*)?$",
    re.MULTILINE,
)
PLAIN_IMPORT = re.compile(r"^\s*import\s+(stripeline(?:_sandbox)?(?:\.\w+)*)", re.MULTILINE)


def _public_in(module: types.ModuleType, name: str) -> bool:
    return name in getattr(module, "__all__", ())


def _groups_packages(module: types.ModuleType) -> bool:
    """A package whose ``__init__`` is a docstring alone (``stripeline.contrib``)
    only groups public packages: a name may go through it."""
    path = getattr(module, "__file__", None)
    if not path or not hasattr(module, "__path__"):
        return False
    body = ast.parse(Path(path).read_text(encoding="utf-8")).body
    return len(body) == 1 and isinstance(body[0], ast.Expr)


def resolve(dotted: str) -> str | None:
    """None when ``dotted`` names a public module or a public member; else why not.

    Read as Python reads ``a.b.c``: an attribute first (``stripeline.sync.catch_up``
    is the function the package exports), else a submodule.
    """
    parts = dotted.split(".")
    if any(part.startswith("_") for part in parts):
        return "has a private component"
    try:
        value: object = importlib.import_module(parts[0])
    except ModuleNotFoundError:
        return "does not import"
    for index, part in enumerate(parts[1:], start=1):
        if not isinstance(value, types.ModuleType):
            # An attribute of a class (a method, a field): public by the rule above.
            if not hasattr(value, part):
                return f"has no attribute {part!r}"
            value = getattr(value, part)
            continue
        if not hasattr(value, "__all__") and not _groups_packages(value):
            return f"{value.__name__} is not a public module (no __all__)"
        if hasattr(value, part) and not isinstance(getattr(value, part), types.ModuleType):
            if not _public_in(value, part):
                return f"{part!r} is not in {value.__name__}.__all__"
            value = getattr(value, part)
            continue
        try:
            value = importlib.import_module(".".join(parts[: index + 1]))
        except ModuleNotFoundError:
            return f"{value.__name__} has no attribute {part!r}"
    if isinstance(value, types.ModuleType) and not hasattr(value, "__all__"):
        return f"{value.__name__} is not a public module (no __all__)"
    return None


def names_in(text: str) -> set[str]:
    names = {m.group(1) for m in DOTTED.finditer(text)}
    for m in FROM_IMPORT.finditer(text):
        module = m.group(1)
        names.add(module)
        for item in m.group(2).replace("\n", " ").split(","):
            item = item.strip().split(" as ")[0].strip()
            if item:
                names.add(f"{module}.{item}")
    names.update(m.group(1) for m in PLAIN_IMPORT.finditer(text))
    # A bare "stripeline" is the package itself; the command ("stripeline serve") is not a name.
    names.discard("stripeline")
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stripeline_name_in_the_docs_is_public(doc: Path) -> None:
    problems = {}
    for name in sorted(names_in(doc.read_text(encoding="utf-8"))):
        why = resolve(name)
        if why is not None:
            problems[name] = why
    assert problems == {}, f"{doc.name} teaches names that are not public: {problems}"


def test_the_checker_catches_what_it_should() -> None:
    assert resolve("stripeline.Stripeline") is None
    assert resolve("stripeline.db.make_engine") is None
    assert resolve("stripeline.no_such_thing") is not None
    assert resolve("stripeline.mirror._store") == "has a private component"
    assert resolve("stripeline.mirror.mapping") is not None  # an internal module
    assert resolve("stripeline.settings.load_settings") is not None  # not a public module
    assert resolve("stripeline.contrib.django.get_app") is None  # through a grouping package
    assert resolve("stripeline.contrib.django.apps") is not None  # an internal module
    assert resolve("stripeline.contrib.flask.StripelineFlask") is None
    assert resolve("stripeline.contrib.fastapi.mirror_dependency") is None  # through a folder
    assert names_in("from stripeline.db import (make_engine, migrate)\n") >= {
        "stripeline.db.make_engine",
        "stripeline.db.migrate",
    }
    # A file name or URL is not a Python name.
    assert names_in("see docs/stripeline.db.md and https://x/stripeline.io") == set()
