"""The operator console over HTTP: off unless configured, fail-closed access
control (sessions, CSRF, roles, rate limit, trusted header), security
headers, redaction, cursor pagination, actions and their audit log."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from stripeline import inbox
from stripeline.app import Stripeline
from stripeline.cli import main
from stripeline.db.engine import connect
from stripeline.db.models import ConsoleAudit
from stripeline.errors import ConfigError
from stripeline.settings import load_settings
from stripeline.web import create_app
from stripeline.web.console.auth import SESSION_COOKIE, Signer
from stripeline.worker import Worker
from tests.console_support import (
    ADMIN,
    CONSOLE_SECRET,
    READER,
    console_app,
    customer_events,
    status_of,
    store,
)
from tests.factories import SECRET, event

BASE = "https://testserver"


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    application = console_app(database_url, max_attempts=1)
    yield application
    application.dispose()


@pytest.fixture
def client(app: Stripeline) -> Iterator[TestClient]:
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as http:
        yield http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(client: TestClient, user: tuple[str, str]) -> str:
    """Sign in; the CSRF token of the session's forms."""
    page = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"csrf": csrf_of(page.text), "username": user[0], "password": user[1]},
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/events").text)


def dead_event(app: Stripeline, object_id: str = "in_0001") -> str:
    """An event whose handler fails, made dead by a real worker (max_attempts=1)."""
    body = event("invoice.payment_failed", obj={"id": object_id, "object": "invoice"})

    @app.on("invoice.payment_failed")
    def fail(e: object) -> None:
        raise RuntimeError("ledger unavailable")

    store(app, [body])
    Worker(app, listen=False).drain()
    assert status_of(app, body["id"]) == "dead"
    return str(body["id"])


def test_the_console_is_off_unless_configured(database_url: str) -> None:
    app = Stripeline(load_settings(database_url=database_url, stripe_webhook_secret=SECRET))
    with TestClient(create_app(app), base_url=BASE) as http:
        assert http.get("/console/login").status_code == 404
        assert http.get("/console/events").status_code == 404
    app.dispose()


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"console_users": "x"}, "needs STRIPELINE_CONSOLE_SECRET"),
        ({"console_secret": "short"}, "32 or more"),
        ({"console_secret": CONSOLE_SECRET}, "nobody can sign in"),
        ({"console_secret": CONSOLE_SECRET, "console_users": "ada:admin:hunter2"}, "argon2 hash"),
        (
            {"console_secret": CONSOLE_SECRET, "console_users": "ada:root:$argon2id$x"},
            "admin or read",
        ),
        (
            {"console_secret": CONSOLE_SECRET, "console_trusted_header": "X-Forwarded-User"},
            "TRUSTED_PROXIES",
        ),
    ],
)
def test_half_a_configuration_is_refused_at_start(settings: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(**settings)
    assert "hunter2" not in str(caught.value)


def test_pages_need_a_session_and_carry_strict_headers(client: TestClient) -> None:
    answer = client.get("/console/events?status=dead")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=")
    login = client.get("/console/login")
    csp = login.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"
    assert "<script>" not in login.text  # no inline script anywhere: the CSP forbids it
    assert 'data-testid="mode"' in login.text and "TEST MODE" in login.text


def test_the_session_cookie_is_httponly_strict_secure_and_expires(client: TestClient) -> None:
    page = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"csrf": csrf_of(page.text), "username": ADMIN[0], "password": ADMIN[1]},
    )
    cookie = next(
        v
        for k, v in answer.headers.multi_items()
        if k == "set-cookie" and SESSION_COOKIE + "=" in v
    )
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "secure" in lowered
    assert "max-age=28800" in lowered and "path=/console" in lowered


def test_wrong_password_and_unknown_user_are_refused_alike(client: TestClient) -> None:
    for name, password in ((ADMIN[0], "wrong"), ("nobody", ADMIN[1])):
        page = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"csrf": csrf_of(page.text), "username": name, "password": password},
        )
        assert answer.status_code == 401
        assert "Wrong user name or password." in answer.text
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_sign_in_is_rate_limited_even_with_the_right_password(client: TestClient) -> None:
    page = client.get("/console/login")
    token = csrf_of(page.text)
    for _ in range(5):
        answer = client.post(
            "/console/login", data={"csrf": token, "username": ADMIN[0], "password": "guess"}
        )
        assert answer.status_code == 401
    answer = client.post(
        "/console/login", data={"csrf": token, "username": ADMIN[0], "password": ADMIN[1]}
    )
    assert answer.status_code == 429
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_sign_in_without_its_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/console/login")
    answer = client.post("/console/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_a_forged_or_expired_session_is_no_session(app: Stripeline, client: TestClient) -> None:
    signer = Signer(CONSOLE_SECRET)
    expired = signer.issue(ADMIN[0], "admin", 60, now=time.time() - 61)
    forged = Signer("another-secret-of-thirty-two-chars!!").issue(ADMIN[0], "admin", 600)
    body, _, mac = signer.issue(READER[0], "read", 600).rpartition(".")
    promoted = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    promoted["r"] = "admin"
    tampered = (
        base64.urlsafe_b64encode(json.dumps(promoted).encode()).decode().rstrip("=") + "." + mac
    )
    valid = signer.issue(ADMIN[0], "admin", 600)
    for cookie, works in ((valid, True), (expired, False), (forged, False), (tampered, False)):
        client.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local", path="/console")
        answer = client.get("/console/events")
        assert answer.status_code == (200 if works else 303), cookie
        client.cookies.clear()


def test_a_post_without_csrf_is_refused_and_changes_nothing(
    app: Stripeline, client: TestClient
) -> None:
    event_id = dead_event(app)
    sign_in(client, ADMIN)
    for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "forged"}):
        answer = client.post(f"/console/events/{event_id}/replay", data=data)
        assert answer.status_code == 403
    assert status_of(app, event_id) == "dead"


def test_a_read_only_user_sees_no_actions_and_cannot_act(
    app: Stripeline, client: TestClient
) -> None:
    event_id = dead_event(app)
    token = sign_in(client, READER)
    page = client.get(f"/console/events/{event_id}")
    assert page.status_code == 200
    assert "Replay…" not in page.text and "Retry…" not in page.text
    assert "bulk-replay" not in client.get("/console/events?status=dead").text
    answer = client.post(
        f"/console/events/{event_id}/replay", data={"csrf": token, "confirm": "yes"}
    )
    assert answer.status_code == 403
    assert "read-only" in answer.text
    assert status_of(app, event_id) == "dead"


def test_replay_is_confirmed_then_done_and_audited(app: Stripeline, client: TestClient) -> None:
    event_id = dead_event(app)
    token = sign_in(client, ADMIN)
    confirm = client.post(f"/console/events/{event_id}/replay", data={"csrf": token})
    assert confirm.status_code == 200 and "Confirm replay" in confirm.text
    assert status_of(app, event_id) == "dead"  # nothing done before the confirmation
    done = client.post(f"/console/events/{event_id}/replay", data={"csrf": token, "confirm": "yes"})
    assert done.status_code == 303
    assert status_of(app, event_id) == "pending"
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(select(ConsoleAudit.__table__)).mappings().all()
    actions = [(r["actor"], r["action"], r["target"], r["count"]) for r in rows]
    assert (ADMIN[0], "replay", event_id, 1) in actions
    assert (ADMIN[0], "sign_in", None, 0) in actions
    assert event_id in client.get("/console/audit").text


def test_bulk_replay_takes_only_the_filtered_dead_events(
    app: Stripeline, client: TestClient
) -> None:
    first = dead_event(app, "in_bulk_1")
    store(app, [event("invoice.payment_failed", obj={"id": "in_other", "object": "invoice"})])
    Worker(app, listen=False).drain()
    token = sign_in(client, ADMIN)
    confirm = client.post(
        "/console/events/bulk-replay", data={"csrf": token, "object": "in_bulk_1"}
    )
    assert "Replay <strong>1</strong> dead event" in confirm.text
    done = client.post(
        "/console/events/bulk-replay", data={"csrf": token, "object": "in_bulk_1", "confirm": "yes"}
    )
    assert done.status_code == 303 and "replayed=1" in done.headers["location"]
    assert status_of(app, first) == "pending"
    dead = client.get("/console/events?status=dead").text
    assert "in_other" not in dead  # the list shows event ids; check the other is still dead
    with connect(app.engine, readonly=True) as conn:
        still = conn.execute(
            select(inbox.events.c.status).where(inbox.events.c.object_id == "in_other")
        ).scalar_one()
    assert still == "dead"


def test_the_payload_is_pretty_and_redacted(app: Stripeline, client: TestClient) -> None:
    body = event(
        "payment_intent.succeeded",
        obj={
            "id": "pi_0001",
            "object": "payment_intent",
            "client_secret": "pi_0001_secret_abcdef",
            "description": "paid with sk_test_abcdefghijkl",
            "metadata": {"note": "card 4242 4242 4242 4242"},
        },
    )
    store(app, [body])
    sign_in(client, ADMIN)
    page = client.get(f"/console/events/{body['id']}").text
    assert "pi_0001" in page and "<details" in page
    for secret in ("pi_0001_secret_abcdef", "sk_test_abcdefghijkl", "4242 4242 4242 4242"):
        assert secret not in page
    assert "[redacted]" in page


def test_the_list_pages_by_cursor_with_filters(app: Stripeline, client: TestClient) -> None:
    start = inbox.utcnow() - timedelta(hours=2)
    bodies = [event("customer.updated") for _ in range(120)]
    for i, body in enumerate(bodies):
        store(app, [body], at=start + timedelta(seconds=i // 2))  # ties on received_at
    store(app, [event("invoice.paid")], at=start)
    sign_in(client, ADMIN)
    seen: list[str] = []
    url: str | None = "/console/events?type=customer.*"
    while url:
        page = client.get(url).text
        seen += re.findall(r'href="/console/events/(evt_[^"]+)"', page)
        found = re.search(
            r'href="(/console/events\?[^"]*cursor=[^"]+)" class="button" rel="next"', page
        )
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(seen) == sorted(str(b["id"]) for b in bodies)
    assert len(seen) == len(set(seen)) == 120
    assert seen[0] == bodies[-1]["id"] or seen[0] == bodies[-2]["id"]  # newest first


def test_a_trusted_header_signs_in_only_from_a_trusted_proxy(database_url: str) -> None:
    app = console_app(
        database_url,
        console_users=None,
        console_trusted_header="X-Forwarded-User",
        console_trusted_proxies="10.9.9.9",
    )
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as http:
        answer = http.get("/console/events", headers={"X-Forwarded-User": "mallory"})
        assert answer.status_code == 303  # testclient's address is not a trusted proxy
    app.dispose()
    trusted = console_app(
        database_url,
        console_users=None,
        console_trusted_header="X-Forwarded-User",
        console_trusted_proxies="testclient",  # the address TestClient's requests come from
    )
    with TestClient(create_app(trusted), base_url=BASE, follow_redirects=False) as http:
        assert http.get("/console/events").status_code == 303  # no header: no session
        page = http.get("/console/events", headers={"X-Forwarded-User": "oscar"})
        assert page.status_code == 200
        assert 'data-testid="user">oscar<' in page.text
        assert "bulk-replay" not in page.text  # the header's role is read by default
    trusted.dispose()


def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "console.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/console.md", "exec"), {})  # noqa: S102


def test_hash_password_prints_an_entry_that_signs_in(database_url: str) -> None:
    printed = CliRunner().invoke(
        main,
        ["console", "hash-password", "--user", "olga", "--role", "admin"],
        input="a long enough password\na long enough password\n",
    )
    assert printed.exit_code == 0, printed.output
    entry = printed.output.strip().splitlines()[-1]
    assert entry.startswith("olga:admin:$argon2id$") and "a long enough" not in entry
    app = console_app(database_url, console_users=entry)
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as http:
        sign_in(http, ("olga", "a long enough password"))
    app.dispose()
    secret = CliRunner().invoke(main, ["console", "secret"])
    assert len(secret.output.strip()) >= 32


def test_the_overview_counts_and_charts_what_the_worker_did(
    app: Stripeline, client: TestClient
) -> None:
    dead_event(app)
    store(app, [event("customer.updated") for _ in range(4)])
    Worker(app, listen=False).drain()
    store(app, [event("customer.updated")])  # waiting
    sign_in(client, ADMIN)
    page = client.get("/console/")
    assert page.status_code == 200
    assert re.search(r'data-testid="dead-count">1<', page.text)
    assert re.search(r'data-testid="backlog">1<', page.text)
    assert "processed 4" in page.text and "failed 1" in page.text  # the last hour's attempts
    assert page.text.count('class="bar-processed"') >= 1
    assert page.text.count('class="bar-failed"') == 1
    assert "No dispute is due within 7 days." in page.text


def test_a_customer_page_and_search(app: Stripeline, client: TestClient) -> None:
    store(app, customer_events())
    Worker(app, listen=False).drain()
    app.mirror.link_customer("user_42", "cus_console01")
    sign_in(client, ADMIN)
    page = client.get("/console/customers/cus_console01").text
    assert "Grace Hopper" in page and "sub_console01" in page and "in_console01" in page
    assert "19.00 EUR" in page and "user_42" in page
    for q in ("cus_console01", "grace@example.com", "user_42", "in_console01", "sub_console01"):
        answer = client.get("/console/search", params={"q": q})
        assert answer.status_code == 303, q
        want = "customers/cus_console01" if q[:4] in ("cus_", "grac", "user") else f"objects/{q}"
        assert answer.headers["location"] == f"/console/{want}", q
    found = client.get("/console/search", params={"q": "nobody@example.com"})
    assert found.status_code == 200 and "Nothing found" in found.text


def test_live_mode_is_unmistakable(database_url: str) -> None:
    app = console_app(database_url, stripe_secret_key="sk_live_console0123456789")
    with TestClient(create_app(app), base_url=BASE) as http:
        page = http.get("/console/login").text
    assert "LIVE MODE" in page and 'class="mode-banner mode-live"' in page
    assert "TEST MODE" not in page
    app.dispose()


def test_mounted_under_a_prefix_through_app_asgi(app: Stripeline) -> None:
    outer = Starlette(routes=[Mount("/stripe", app=app.asgi(run_worker=False))])
    with TestClient(outer, base_url=BASE, follow_redirects=False) as http:
        answer = http.get("/stripe/console/events")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/stripe/console/login?next=")
        page = http.get("/stripe/console/login")
        assert 'action="/stripe/console/login"' in page.text
        assert 'href="/stripe/console/static/console.css"' in page.text
        signed = http.post(
            "/stripe/console/login",
            data={"csrf": csrf_of(page.text), "username": ADMIN[0], "password": ADMIN[1]},
        )
        assert signed.status_code == 303
        assert "path=/stripe/console" in signed.headers["set-cookie"].lower()
        assert http.get("/stripe/console/events").status_code == 200
        assert http.get("/stripe/console/static/console.css").status_code == 200


def test_oldest_pending_is_the_oldest_waiting_event_whatever_its_status(
    app: Stripeline,
) -> None:
    start = inbox.utcnow() - timedelta(hours=5)
    with connect(app.engine, readonly=True) as conn:
        assert inbox.oldest_pending(conn) is None
    old, failing, fresh = (event("customer.updated") for _ in range(3))
    store(app, [old], at=start)
    store(app, [failing], at=start + timedelta(hours=1))
    store(app, [fresh], at=start + timedelta(hours=2))
    with connect(app.engine) as conn:
        conn.execute(
            inbox.events.update()
            .where(inbox.events.c.id == old["id"])
            .values(status="processed", next_attempt_at=None)
        )
        conn.execute(
            inbox.events.update().where(inbox.events.c.id == failing["id"]).values(status="failed")
        )
    with connect(app.engine, readonly=True) as conn:
        assert inbox.oldest_pending(conn) == start + timedelta(hours=1)
