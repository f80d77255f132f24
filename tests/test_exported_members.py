"""The public API is exactly what ``__all__`` lists, and all of it exists."""

from __future__ import annotations

import subprocess
import sys
import types

import stripeline


def test_all_names_exist_and_are_sorted() -> None:
    for name in stripeline.__all__:
        assert getattr(stripeline, name) is not None, name
    assert stripeline.__all__ == sorted(stripeline.__all__)


def test_no_public_member_is_left_out_of_all() -> None:
    public = {
        name
        for name in dir(stripeline)
        if not name.startswith("_")
        and not isinstance(getattr(stripeline, name), types.ModuleType)
        and name not in {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    }
    assert public == set(stripeline.__all__) - {"__version__"}


def test_every_error_derives_from_the_root() -> None:
    for name in stripeline.__all__:
        value = getattr(stripeline, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, stripeline.StripelineError), name


def test_import_is_cheap() -> None:
    """``import stripeline`` loads neither SQLAlchemy, pydantic nor the SDK."""
    code = (
        "import sys, stripeline; "
        "print(sorted(m for m in ('sqlalchemy', 'pydantic', 'stripe') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert stripeline.Stripeline.__name__ == "Stripeline"
