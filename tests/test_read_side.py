"""The read side's shape: what ``stripeline.gateway`` and ``stripeline.sync``
export, and that only the gateway loads the ``stripe`` SDK."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import stripeline.gateway
import stripeline.sync

SRC = Path(__file__).resolve().parent.parent / "src" / "stripeline"
PACKAGES = [stripeline.gateway, stripeline.sync]


def _ruff_order(name: str) -> tuple[int, str]:
    """The order ruff (RUF022) keeps ``__all__`` in: CONSTANTS, Classes, functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_names_exist_and_are_sorted(package: types.ModuleType) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.__all__ == sorted(package.__all__, key=_ruff_order)
    assert len(set(package.__all__)) == len(package.__all__)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_no_public_member_is_left_out_of_all(package: types.ModuleType) -> None:
    public = {
        name
        for name in dir(package)
        if not name.startswith("_")
        and not isinstance(getattr(package, name), types.ModuleType)
        and name not in {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    }
    assert public == set(package.__all__)


def test_the_entry_points_are_the_functions_not_their_modules() -> None:
    """``catch_up`` and ``backfill`` share their names with their modules."""
    import stripeline.sync.backfill
    import stripeline.sync.catch_up

    for name in ("catch_up", "backfill"):
        assert isinstance(getattr(stripeline.sync, name), types.FunctionType), name


@pytest.mark.parametrize("module", ["stripeline.app", "stripeline.worker", "stripeline.web"])
def test_importing_does_not_load_the_stripe_sdk(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'stripe'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_sync_jobs_load_the_sdk_only_when_they_read() -> None:
    code = (
        "import sys, stripeline.sync, stripeline.gateway.reader; "
        "print('stripe' in sys.modules); "
        "from stripeline.gateway import make_client; "
        "print('stripe' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


_IMPORTS_STRIPE = re.compile(r"^\s*(import stripe\b|from stripe\b)", re.MULTILINE)


def test_only_the_gateway_imports_the_sdk() -> None:
    """The sandbox speaks the wire protocol and may; nothing else of stripeline does."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(("gateway/", "sandbox/")) or "stripeline_sandbox" in relative:
            continue
        if _IMPORTS_STRIPE.search(path.read_text(encoding="utf-8")):
            offenders.append(relative)
    assert offenders == []
