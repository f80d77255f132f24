"""The console in a real headless Chromium (Debian's, driven by Playwright):
an operator signs in, finds a dead event by its object id, reads its
traceback, replays it and sees it processed; bulk-replays a filtered set; a
read-only user sees no action and a forged POST is refused; a POST without
the CSRF token is refused; a session ends at its expiry.

Each test saves a screenshot in its own output folder and copies it to
``$STRIPELINE_CONSOLE_SHOTS`` (default: ``console-shots`` in the temporary
directory) for people to look at."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import func, select

from stripeline import inbox
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect
from stripeline.mirror import refetch
from stripeline.web import create_app
from stripeline.web.console.auth import ENDED_COOKIE, SESSION_COOKIE, Signer
from tests.console_support import (
    ADMIN,
    CONSOLE_SECRET,
    READER,
    console_app,
    customer_events,
    status_of,
    store,
)
from tests.factories import event

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        raise RuntimeError(
            "CI is set but chromium is missing: the console's browser tests must run"
        )
    pytest.skip(
        "chromium is not installed (apt-get install chromium): the console's browser tests need it",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, app: Stripeline, url: str) -> None:
        self.app = app
        self.url = url
        #: While True, the invoice handler fails.
        self.failing = True

    def wait_for(self, event_id: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while status_of(self.app, event_id) != status:
            assert time.monotonic() < deadline, f"{event_id} never became {status}"
            time.sleep(0.05)


@contextmanager
def serving(app: Stripeline) -> Iterator[Served]:
    """``app`` served with its worker on a free port, with a failing invoice handler."""
    port = _free_port()
    result = Served(app, f"http://127.0.0.1:{port}")

    @app.on("invoice.payment_failed")
    def charge_ledger(e: ReceivedEvent) -> None:
        if result.failing:
            raise RuntimeError(f"ledger unavailable for {e.object['id']}")

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app, run_worker=True), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield result
    finally:
        server.should_exit = True
        thread.join(15)
        app.dispose()


@pytest.fixture
def served(sqlite_url: str, request: pytest.FixtureRequest) -> Iterator[Served]:
    extra: dict[str, Any] = {}
    if "stripe_client" in request.fixturenames:  # the test talks to the sandbox: so does the app
        sandbox = request.getfixturevalue("stripe_sandbox")
        extra = {
            "stripe_secret_key": request.getfixturevalue("stripe_key"),
            "stripe_api_base": sandbox.url,
        }
    app = console_app(
        sqlite_url, max_attempts=1, worker_poll_seconds=0.1, catch_up_interval=0, **extra
    )
    with serving(app) as result:
        yield result


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    context = browser.new_context(base_url=served.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    problems: list[str] = []
    # A CSP violation (an inline script or style that slipped in) or a
    # script error fails the test; a refused POST (403) is expected.
    opened.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    context.close()
    assert not problems, f"the browser reported errors: {problems}"


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    folder = Path(
        os.environ.get("STRIPELINE_CONSOLE_SHOTS", Path(tempfile.gettempdir()) / "console-shots")
    )

    def take(page: Any, name: str) -> Path:
        path = tmp_path / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
        return path

    return take


def sign_in(page: Any, user: tuple[str, str]) -> None:
    page.goto("/console/events")
    assert "/console/login" in page.url
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/events.*"))


def dead(served: Served, object_id: str) -> str:
    body = event(
        "invoice.payment_failed", obj={"id": object_id, "object": "invoice", "amount_due": 4200}
    )
    store(served.app, [body])
    served.wait_for(str(body["id"]), "dead")
    return str(body["id"])


def test_find_a_dead_event_read_its_traceback_replay_it(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    event_id = dead(served, "in_ledger_0042")
    store(served.app, [event("customer.updated") for _ in range(3)])
    sign_in(page, ADMIN)
    assert page.get_by_test_id("mode").inner_text().startswith("TEST MODE")
    page.get_by_label("Object id").fill("in_ledger_0042")
    page.get_by_role("button", name="Filter", exact=True).click()
    rows = page.get_by_test_id("events").locator("tbody tr")
    assert rows.count() == 1
    shot(page, "1-filtered")
    rows.get_by_role("link").click()
    traceback = page.get_by_test_id("traceback")
    assert "RuntimeError: ledger unavailable for in_ledger_0042" in traceback.inner_text()
    assert page.get_by_test_id("status").inner_text() == "dead"
    shot(page, "2-dead-event")
    served.failing = False  # the ledger is back
    page.get_by_role("button", name="Replay…").click()
    assert "Confirm replay" in page.inner_text("h1")
    shot(page, "3-confirm")
    page.get_by_role("button", name="Yes, replay").click()
    assert "Replay scheduled" in page.get_by_test_id("flash").inner_text()
    served.wait_for(event_id, "processed")
    page.reload()
    assert page.get_by_test_id("status").inner_text() == "processed"
    assert page.get_by_test_id("attempts").locator("tbody tr").count() == 2
    shot(page, "4-processed")
    page.goto("/console/audit")
    assert "replay" in page.get_by_test_id("audit").inner_text()


def test_bulk_replay_of_a_filtered_set(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    ids = [dead(served, f"in_bulk_{i}") for i in range(3)]
    served.failing = False
    sign_in(page, ADMIN)
    page.goto("/console/events?status=dead&type=invoice.payment_failed")
    assert page.get_by_test_id("events").locator("tbody tr").count() == 3
    shot(page, "1-dead-list")
    page.get_by_role("button", name=re.compile("Replay the dead events")).click()
    assert "Replay 3 dead events" in page.get_by_test_id("bulk-count").inner_text()
    shot(page, "2-confirm")
    page.get_by_role("button", name="Yes, bulk replay").click()
    assert "3 dead events scheduled" in page.get_by_test_id("flash").inner_text()
    for event_id in ids:
        served.wait_for(event_id, "processed")
    page.goto("/console/events?status=processed")
    assert page.get_by_test_id("events").locator("tbody tr").count() == 3
    shot(page, "3-processed")


def test_read_only_sees_no_actions_and_a_forged_post_is_refused(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    event_id = dead(served, "in_readonly")
    sign_in(page, READER)
    page.goto(f"/console/events/{event_id}")
    assert page.get_by_test_id("actions").count() == 0
    assert page.get_by_role("button", name="Replay…").count() == 0
    assert "read-only" in page.inner_text("header")
    shot(page, "1-read-only-event")
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    answer = page.request.post(
        f"/console/events/{event_id}/replay", form={"csrf": token, "confirm": "yes"}
    )
    assert answer.status == 403
    page.set_content(answer.text())
    shot(page, "2-forged-post-refused")
    assert status_of(served.app, event_id) == "dead"


def test_a_post_without_csrf_is_refused(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    event_id = dead(served, "in_csrf")
    sign_in(page, ADMIN)
    answer = page.request.post(f"/console/events/{event_id}/replay", form={"confirm": "yes"})
    assert answer.status == 403
    page.goto(f"/console/events/{event_id}")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.remove())")
    page.get_by_role("button", name="Replay…").click()
    assert "did not come from the console" in page.get_by_test_id("refused").inner_text()
    shot(page, "refused")
    assert status_of(served.app, event_id) == "dead"


def test_signed_out_after_expiry(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    # A session that ends in 2 seconds, minted as sign-in mints it.
    cookie = Signer(CONSOLE_SECRET).issue(ADMIN[0], "admin", 60, now=time.time() - 58)
    page.context.add_cookies(
        [
            {
                "name": SESSION_COOKIE,
                "value": cookie,
                "url": served.url + "/console",
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page.context.add_cookies(
        [
            {
                "name": ENDED_COOKIE,
                "value": Signer(CONSOLE_SECRET).ended_marker(int(time.time()) + 2),
                "domain": "127.0.0.1",
                "path": "/console",  # where sign-in sets it, and sign-out clears it
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page.goto("/console/events")
    assert page.get_by_test_id("user").inner_text() == ADMIN[0]
    time.sleep(2.5)
    page.goto("/console/events")
    assert "/console/login" in page.url
    assert page.get_by_role("button", name="Sign in").is_visible()
    assert page.get_by_test_id("expired").inner_text() == "Your session expired: sign in again."
    shot(page, "signed-out")
    page.reload()  # said once
    assert page.get_by_test_id("expired").count() == 0


def test_overview_then_open_a_customer_by_email(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    dead_id = dead(served, "in_overview")  # the invoice handler fails until told otherwise
    served.failing = False
    bodies = customer_events()
    store(served.app, bodies)
    store(served.app, [event("customer.updated") for _ in range(5)])
    for body in bodies:
        served.wait_for(str(body["id"]), "processed")
    served.app.mirror.link_customer("user_42", "cus_console01")
    sign_in(page, ADMIN)
    page.goto("/console/")
    assert page.get_by_test_id("dead-count").inner_text() == "1"
    assert page.get_by_test_id("chart").locator("rect.bar-processed").count() >= 1
    shot(page, "1-overview")
    page.get_by_role("searchbox", name="Search").fill("grace@example.com")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console/customers/cus_console01$"))
    assert "active" in page.get_by_test_id("subscriptions").inner_text()
    assert "GH-0001" in page.get_by_test_id("invoices").inner_text()
    assert page.get_by_test_id("users").inner_text() == "user_42"
    shot(page, "2-customer")
    page.goto(f"/console/events/{dead_id}")
    assert page.get_by_test_id("status").inner_text() == "dead"


def test_an_event_its_mirror_object_and_the_customer_filter(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    served.failing = False
    bodies = customer_events()
    store(served.app, bodies)
    store(served.app, [event("customer.updated") for _ in range(4)])
    for body in bodies:
        served.wait_for(str(body["id"]), "processed")
    sign_in(page, ADMIN)
    page.goto(f"/console/events/{bodies[2]['id']}")
    touched = page.get_by_test_id("touched")
    assert "this event's state" in touched.inner_text()
    touched.get_by_role("link", name="in_console01").click()
    page.wait_for_url(re.compile(r".*/console/objects/in_console01$"))
    assert '"GH-0001"' in page.get_by_test_id("object-json").inner_text()
    assert bodies[2]["id"] in page.get_by_test_id("object-events").inner_text()
    page.get_by_role("button", name="expand / collapse all").click()  # script: collapse
    assert page.locator("[data-testid=object-json] details[open]").count() == 0
    page.get_by_role("button", name="expand / collapse all").click()
    shot(page, "1-object")
    page.goto("/console/events")
    page.get_by_label("Customer").fill("cus_console01")
    page.get_by_role("button", name="Filter", exact=True).click()
    rows = page.get_by_test_id("events").locator("tbody tr")
    assert rows.count() == 3
    assert "not counted" in page.locator("ul.counts").inner_text()
    shot(page, "2-customer-filter")


def test_a_customer_with_entitlements(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    now = int(time.time())
    bodies = customer_events()
    bodies[1]["data"]["object"]["items"] = {
        "object": "list",
        "has_more": False,
        "data": [
            {
                "id": "si_console01",
                "object": "subscription_item",
                "subscription": "sub_console01",
                "quantity": 1,
                "price": {"id": "price_pro", "object": "price", "product": "prod_pro"},
                "current_period_start": now - 3600,
                "current_period_end": now + 30 * 86400,
            }
        ],
    }
    store(served.app, bodies)
    for body in bodies:
        served.wait_for(str(body["id"]), "processed")
    served.app.entitlements.register("price_pro", "reports", "exports")
    served.app.mirror.link_customer("user_42", "cus_console01")
    sign_in(page, ADMIN)
    page.goto("/console/customers/cus_console01")
    granted = page.get_by_test_id("entitlements").inner_text()
    assert "reports" in granted and "exports" in granted
    assert page.get_by_test_id("users").inner_text() == "user_42"
    shot(page, "customer")


def test_disputes_due_with_countdowns(
    page: Any, served: Served, shot: Callable[[Any, str], Path]
) -> None:
    now = int(time.time())

    def dispute(dispute_id: str, status: str, due_in: int, submitted: int = 0) -> dict[str, Any]:
        return {
            "id": dispute_id,
            "object": "dispute",
            "charge": "ch_console01",
            "amount": 4200,
            "currency": "eur",
            "status": status,
            "reason": "fraudulent",
            "created": now - 86400,
            "evidence": {"customer_name": "Grace Hopper"}
            if submitted or due_in > 86400 * 5
            else {},
            "evidence_details": {
                "due_by": now + due_in,
                "has_evidence": bool(submitted) or due_in > 86400 * 5,
                "submission_count": submitted,
                "past_due": False,
            },
            "balance_transactions": [],
        }

    charge = {
        "id": "ch_console01",
        "object": "charge",
        "customer": "cus_console01",
        "amount": 4200,
        "currency": "eur",
        "status": "succeeded",
        "disputed": True,
        "created": now - 86400,
    }
    bodies = [
        event("charge.succeeded", obj=charge),
        event("charge.dispute.created", obj=dispute("dp_urgent", "needs_response", 20 * 3600)),
        event("charge.dispute.created", obj=dispute("dp_later", "needs_response", 9 * 86400)),
        event("charge.dispute.closed", obj=dispute("dp_won", "won", -5 * 86400, 1)),
    ]
    store(served.app, bodies)
    for body in bodies:
        served.wait_for(str(body["id"]), "processed")
    sign_in(page, ADMIN)
    page.goto("/console/")
    assert page.get_by_test_id("disputes-due").inner_text() == "1"
    page.get_by_role("link", name=re.compile("Disputes due")).click()
    page.wait_for_url(re.compile(r".*/console/disputes$"))
    due = page.get_by_test_id("disputes-due")
    countdowns = due.get_by_test_id("countdown").all_inner_texts()
    assert countdowns[0].startswith("19h") and countdowns[0].endswith("left")
    assert countdowns[1].startswith("8d 23h")
    assert "none yet" in due.inner_text() and "draft, not submitted" in due.inner_text()
    assert "won" in page.get_by_test_id("disputes-other").inner_text()
    shot(page, "disputes")


def test_the_sync_page_and_a_repair(
    page: Any,
    served: Served,
    shot: Callable[[Any, str], Path],
    stripe_client: Any,
    stripe_sandbox: Any,
) -> None:
    from stripeline.sync import backfill, catch_up, check_drift
    from tests.test_verify import plant, world

    app = served.app
    fetcher = app.fetcher
    assert fetcher is not None
    reader = fetcher.reader  # type: ignore[attr-defined]
    # The session's sandbox clock may have been advanced by earlier tests: its
    # events are stamped ahead of our clock. The drift check judges a row newer
    # than its listing as changed meanwhile; list on the sandbox's clock, as a
    # check against Stripe lists on Stripe's (the same as ours).
    reader.clock = lambda: float(stripe_sandbox.clock.now())
    ids = world(stripe_client)
    assert backfill(app.engine, reader, ["customer", "subscription"]).complete
    assert catch_up(app.engine, reader, mode="test").inserted
    # The served worker applies the events caught up, and re-reads the objects
    # whose events tie with the backfill's reads: plant the drift after both,
    # or they would mend it first.
    deadline = time.monotonic() + 20
    while True:
        with connect(app.engine, readonly=True) as conn:
            waiting = conn.scalar(
                select(func.count())
                .select_from(inbox.events)
                .where(inbox.events.c.status.in_(["pending", "processing"]))
            )
            waiting = (waiting or 0) + refetch.pending(conn)
        if not waiting:
            break
        assert time.monotonic() < deadline, f"{waiting} events or reads never done"
        time.sleep(0.05)
    plant(app.engine, ids)
    assert len(check_drift(app.engine, reader, ["customer", "subscription"]).drift) == 3
    sign_in(page, ADMIN)
    page.goto("/console/sync")
    assert "complete" in page.get_by_test_id("catch-up-runs").inner_text()
    assert "2 of 2 types finished" in page.get_by_test_id("backfill-summary").inner_text()
    assert page.get_by_test_id("drifted").locator("tbody tr").count() == 3
    shot(page, "1-drift")
    page.get_by_role("button", name=re.compile("Repair the 3 drifted objects")).click()
    assert "Confirm repair" in page.inner_text("h1")
    shot(page, "2-confirm")
    page.get_by_role("button", name="Yes, repair").click()
    page.wait_for_url(re.compile(r".*/console/sync\?done=3$"))
    assert "3 drifted objects repaired" in page.get_by_test_id("flash").inner_text()
    assert "0 not repaired" in page.get_by_test_id("verify-summary").inner_text()
    shot(page, "3-repaired")
    page.get_by_test_id("drifted").get_by_role("link", name=ids["subscription"]).click()
    assert '"trialing"' in page.get_by_test_id("object-json").inner_text()
    page.goto("/console/audit")
    assert "repair" in page.get_by_test_id("audit").inner_text()
