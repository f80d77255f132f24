"""The sandbox is its own distribution: it runs without stripeline, stripeline's
wheel holds none of it, and stripeline says how to install it when it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def blocker(*names: str) -> str:
    """Python source that makes ``import name`` (and ``name.*``) fail for each of ``names``."""
    return textwrap.dedent(
        f"""
        import sys

        class _Absent:
            names = {names!r}

            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] in self.names:
                    raise ImportError(f"{{fullname}} is not installed here")
                return None

        sys.meta_path.insert(0, _Absent())
        """
    )


def python(code: str, cwd: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_sandbox_runs_without_stripeline(tmp_path: Path) -> None:
    code = blocker("stripeline") + textwrap.dedent(
        """
        import json
        import stripe
        from stripeline_sandbox import Sandbox

        try:
            import stripeline  # noqa: F401
        except ImportError:
            blocked = True
        else:
            blocked = False
        with Sandbox() as sb:
            client = stripe.StripeClient(sb.secret_key, base_addresses={"api": sb.url})
            customer = client.v1.customers.create({"email": "a@example.com"})
        print(json.dumps({
            "blocked": blocked,
            "customer": customer.id,
            "email": customer.email,
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "stripeline"),
        }))
        """
    )
    result = python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["blocked"] is True
    assert seen["customer"].startswith("cus_")
    assert seen["email"] == "a@example.com"
    assert seen["loaded"] == []


def test_the_stripeline_wheel_holds_no_sandbox(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--quiet", str(ROOT), "-w", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("stripeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "stripeline/__init__.py" in names
    assert "stripeline/testing/plugin.py" in names
    assert [n for n in names if n.startswith(("stripeline_sandbox", "stripeline/sandbox/"))] == []
    assert [n for n in names if "_payment_intents" in n or "_checkout_sessions" in n] == []


def test_make_event_does_not_import_pytest(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from stripeline.testing import make_event, sign_event

        event = make_event("invoice.paid", {"amount_paid": 500})
        body, headers = sign_event(event, "whsec_test")
        print(json.dumps({
            "type": event["type"],
            "amount_paid": event["data"]["object"]["amount_paid"],
            "signed": headers["Stripe-Signature"].startswith("t="),
            "pytest": sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest")),
            "sandbox": "stripeline_sandbox" in sys.modules,
        }))
        """
    )
    result = python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "type": "invoice.paid",
        "amount_paid": 500,
        "signed": True,
        "pytest": [],
        "sandbox": False,
    }


def test_stripeline_sandbox_says_how_to_install_it(tmp_path: Path) -> None:
    code = blocker("stripeline_sandbox") + textwrap.dedent(
        """
        from stripeline.cli import main

        main(["sandbox", "--port", "0"], prog_name="stripeline")
        """
    )
    result = python(code, tmp_path)
    assert result.returncode == 1
    assert "pip install 'stripeline[sandbox]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_a_key_says_how_to_install_the_sandbox(tmp_path: Path) -> None:
    code = blocker("stripeline_sandbox") + textwrap.dedent(
        """
        from stripeline.cli import main

        try:
            main(["migrate"], prog_name="stripeline")
        except SystemExit as done:
            assert not done.code, done.code
        main(["serve", "--port", "0"], prog_name="stripeline")
        """
    )
    result = python(code, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no STRIPE_SECRET_KEY is set" in result.stderr
    assert "pip install 'stripeline[sandbox]'" in result.stderr
    assert "Traceback" not in result.stderr
