"""Fail unless the code that must be fully tested is: every line run by the suite.

Reads the coverage data ``make test`` left (``.coverage``) and checks, at 100% of
statements:

- every module of ``src/stripeline/core/`` (signature, envelope, ordering,
  rate limit, backoff);
- the webhook route: in ``src/stripeline/web/asgi.py`` the functions a
  ``POST /webhooks/stripe`` (or ``/webhooks/stripe/connect``) request runs
  through (``_read_body``, ``_Webhooks.__call__``, ``_route_path``, ``receive``,
  ``answer``, ``_stored_body``), the decisions they take in ``src/stripeline/web/intake.py``
  (shared with the synchronous servers, whose ``store`` and ``receive`` are
  there too), the WSGI route's body reading and webhook in
  ``src/stripeline/web/wsgi.py``, and all of ``src/stripeline/web/writer.py``, the group commit
  that stores the event before the answer.

Lines that can never run are excluded in ``[tool.coverage.report]``, each with
its reason; nothing is excluded here.

Without ``STRIPELINE_TEST_POSTGRES_URL`` (a developer's SQLite-only run; CI
always sets it) the writer's PostgreSQL paths cannot have run: the writer is
then reported but not required.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from coverage import Coverage

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "stripeline"

WRITER = SRC / "web" / "writer.py"
WHOLE_FILES = [*sorted((SRC / "core").glob("*.py")), WRITER]
FUNCTIONS = {
    SRC / "web" / "asgi.py": (
        "_read_body",
        "_stored_body",
        "_route_path",
        "__call__",
        "receive",
        "answer",
    ),
    SRC / "web" / "intake.py": (
        "refuse",
        "not_configured",
        "too_large",
        "too_slow",
        "disconnected",
        "accept",
        "store",
        "stored",
        "unavailable",
        "receive",
    ),
    SRC / "web" / "wsgi.py": ("_declared_length", "_read_body", "webhook"),
}


def function_lines(path: Path, names: tuple[str, ...]) -> set[int]:
    """Line numbers inside the named functions (nested ones included), defs included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, set[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
            assert node.end_lineno is not None
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found.setdefault(node.name, set()).update(range(start, node.end_lineno + 1))
    missing = set(names) - set(found)
    if missing:
        sys.exit(f"check_coverage: {path.relative_to(ROOT)} has no function {sorted(missing)}")
    return set().union(*found.values())


def main() -> int:
    cov = Coverage(data_file=str(ROOT / ".coverage"), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    failed = False
    with_postgres = bool(os.environ.get("STRIPELINE_TEST_POSTGRES_URL"))
    targets: list[tuple[Path, str, set[int] | None]] = [(p, "", None) for p in WHOLE_FILES]
    targets += [
        (path, f" ({', '.join(names)})", function_lines(path, names))
        for path, names in FUNCTIONS.items()
    ]
    for path, label, only in targets:
        _, statements, excluded, missing, _ = cov.analysis2(str(path))
        if only is not None:
            statements = [n for n in statements if n in only]
            missing = [n for n in missing if n in only]
        ran = len(statements) - len(missing)
        percent = 100.0 * ran / len(statements) if statements else 100.0
        name = f"{path.relative_to(ROOT)}{label}"
        print(f"{percent:6.1f}%  {ran:4d}/{len(statements):<4d} {name}")
        if missing:
            print(f"         not run: {', '.join(map(str, missing))}")
            if path == WRITER and not with_postgres:
                print("         (not required: the PostgreSQL tests did not run)")
            else:
                failed = True
    if failed:
        print("check_coverage: the lines above must be run by a test (100% required)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
