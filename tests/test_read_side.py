"""The read side's shape: the sync entry points are the functions, and only
the gateway loads the ``stripe`` SDK (the exported members are pinned in
``test_exported_members.py``)."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "stripeline"


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


def test_the_app_s_readers_share_one_rate_limit(tmp_path: Path) -> None:
    """Re-fetches and catch-up in one process draw from one token bucket, so
    together they stay within STRIPELINE_API_READS_PER_SECOND."""
    from pydantic import SecretStr

    from stripeline import Settings, Stripeline
    from stripeline.gateway import StripeFetcher

    settings = Settings(
        stripe_secret_key=SecretStr("sk_test_" + "a" * 24),
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        api_reads_per_second=3,
    )
    app = Stripeline(settings)
    fetcher = app.fetcher
    assert isinstance(fetcher, StripeFetcher)
    assert fetcher.reader.limiter is app.api_limiter
    assert app.api_limiter.rate == 3
    # New settings (serve points the app at its sandbox) give a new bucket.
    app.use_settings(settings.model_copy(update={"api_reads_per_second": 5}))
    assert app.api_limiter.rate == 5
