"""Disputes (``stripeline.flows.disputes``) end to end: the sandbox opens a
dispute on the dispute test card, its signed webhooks reach a served app on
SQLite and PostgreSQL, and the deadlines follow the sandbox's clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from structlog.testing import capture_logs

from stripeline.app import Stripeline, take_once
from stripeline.errors import DisputeDeadlinePassed, DisputeNotOpen
from stripeline.flows.disputes import DisputeCase, Disputes, DueAlarm, Funds
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

DAY = timedelta(days=1)


def make_app(sandbox: Sandbox, key: str, database_url: str) -> Stripeline:
    return Stripeline(
        Settings(
            stripe_secret_key=SecretStr(key),
            stripe_webhook_secret=SecretStr(sandbox.webhook_secret),
            stripe_api_base=sandbox.url,
            database_url=database_url,
            mirror_coalesce_seconds=0,
            max_network_retries=0,
        )
    )


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = make_app(stripe_sandbox, stripe_key, database_url)
    yield app
    app.dispose()


@pytest.fixture
def clock(stripe_sandbox: Sandbox) -> Callable[[], datetime]:
    """The sandbox's time, as the disputes see it."""
    return lambda: datetime.fromtimestamp(stripe_sandbox.clock.now(), UTC)


@pytest.fixture
def disputes(app: Stripeline, clock: Callable[[], datetime]) -> Disputes:
    return Disputes(app, clock=clock)


@pytest.fixture
def env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    app: Stripeline,
    disputes: Disputes,  # its handlers registered before any event
) -> Iterator[StripelineEnv]:
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    yield env
    env.close()


def open_dispute(env: StripelineEnv, order: str = "order_1", amount: int = 8000) -> str:
    client = env.client
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada Lovelace"})
    intent = client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_createDispute",
            "confirm": True,
            "description": "The Analytical Engine, vol. 1",
            "metadata": {"stripeline_order_id": order},
        }
    )
    assert intent.status == "succeeded"
    env.advance_clock(1)
    (dispute_id,) = [
        e.data["data"]["object"]["id"]
        for e in env.events("charge.dispute.created")
        if e.data["data"]["object"]["payment_intent"] == intent.id
    ]
    return str(dispute_id)


def test_a_dispute_is_recorded_with_its_links_and_listed_by_deadline(
    env: StripelineEnv, disputes: Disputes, clock: Callable[[], datetime]
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None
    intent = env.client.v1.payment_intents.retrieve(str(case.payment_intent))
    assert (case.status, case.is_open, case.outcome) == ("needs_response", True, None)
    assert case.charge == intent.latest_charge and case.customer == intent.customer
    assert case.order_id == "order_1"
    assert (case.amount, case.currency, case.reason) == (8000, "usd", "fraudulent")
    # The chargeback withdrew the amount and the 15.00 fee.
    assert (case.funds.withdrawn, case.funds.withdrawn_fee, case.funds.net) == (8000, 1500, -9500)
    assert case.due_by is not None and 7 * DAY < case.due_by - clock() <= 8 * DAY
    assert [c.id for c in disputes.due(within=8 * DAY)] == [dispute_id]
    assert disputes.due(within=7 * DAY) == []
    assert [c.id for c in disputes.cases(status="needs_response")] == [dispute_id]

    async def twins() -> tuple[Any, ...]:
        return (
            await disputes.case_async(dispute_id),
            await disputes.due_async(8 * DAY),
            await disputes.cases_async(status="won"),
            await disputes.check_deadlines_async(),
        )

    import asyncio

    assert asyncio.run(twins()) == (case, [case], [], [])


def test_the_alarms_fire_once_each_as_the_clock_advances(
    env: StripelineEnv,
    disputes: Disputes,
    clock: Callable[[], datetime],
    stripe_sandbox: Sandbox,
    stripe_key: str,
    database_url: str,
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.due_by is not None
    # Three workers, each with its own application object and connections.
    apps = [make_app(stripe_sandbox, stripe_key, database_url) for _ in range(3)]
    fired: list[tuple[int, str, float]] = []
    for n, other in enumerate(apps):
        Disputes(other).on_due(lambda alarm, n=n: fired.append((n, alarm.case.id, alarm.lead_days)))

    def check_everywhere() -> None:
        now = clock()
        threads = [
            threading.Thread(target=Disputes(other).check_deadlines, kwargs={"now": now})
            for other in apps
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        check_everywhere()
        assert fired == []
        with capture_logs() as logs:
            for days in (7, 3, 1):
                env.advance_clock(to=int((case.due_by - days * DAY).timestamp()) + 1)
                check_everywhere()
                check_everywhere()
        assert sorted(lead for _, _, lead in fired) == [1, 3, 7]
        assert {d for _, d, _ in fired} == {dispute_id}
        lines = [line for line in logs if line.get("action") == "dispute_due"]
        assert sorted(line["lead_days"] for line in lines) == [1, 3, 7]
        assert all(line["dispute"] == dispute_id and not line["late"] for line in lines)
        assert [key for key, _ in disputes.alarms(dispute_id)] == [
            f"dispute-due:{dispute_id}:168h",
            f"dispute-due:{dispute_id}:72h",
            f"dispute-due:{dispute_id}:24h",
        ]
        # Past the deadline nothing more fires.
        env.advance_clock(to=int(case.due_by.timestamp()) + 60)
        check_everywhere()
        assert len(fired) == 3
    finally:
        for other in apps:
            other.dispose()


def test_an_alarm_missed_while_no_worker_ran_fires_once_when_one_starts(
    env: StripelineEnv, app: Stripeline, disputes: Disputes, clock: Callable[[], datetime]
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.due_by is not None
    alarms: list[DueAlarm] = []
    disputes.on_due(alarms.append)
    # Nothing ran while both the 7-day and the 3-day marks passed.
    env.advance_clock(to=int((case.due_by - 2 * DAY).timestamp()))

    def wait_for(count: int) -> None:
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while len(alarms) < count and datetime.now(UTC) < deadline:
            threading.Event().wait(0.02)

    def start_worker() -> tuple[Worker, threading.Thread]:
        worker = Worker(
            app, listen=False, poll_seconds=0.05, deadline_check_seconds=0.1, deadline_now=clock
        )
        thread = threading.Thread(target=worker.run)
        thread.start()
        return worker, thread

    with capture_logs() as logs:
        worker, thread = start_worker()
        try:
            wait_for(1)
            threading.Event().wait(0.3)  # a few more checks: nothing more
            assert len(alarms) == 1
            # Still running: the 1-day mark is seen by a later check.
            stripe_sandbox_advance(env, case.due_by - DAY)
            wait_for(2)
        finally:
            worker.stop()
            thread.join(10)
        worker, thread = start_worker()  # started again: nothing more
        threading.Event().wait(0.3)
        worker.stop()
        thread.join(10)
    assert [(a.case.id, a.lead_days) for a in alarms] == [(dispute_id, 3), (dispute_id, 1)]
    assert alarms[0].passed == (7 * DAY,) and alarms[0].late
    assert alarms[1].passed == () and not alarms[1].late
    first, second = [line for line in logs if line.get("action") == "dispute_due"]
    assert first["late"] and first["passed_unfired"] == [168]
    assert second["lead_days"] == 1 and second["passed_unfired"] is None


def stripe_sandbox_advance(env: StripelineEnv, to: datetime) -> None:
    now = env.sandbox.clock.now()
    env.sandbox.advance_clock(max(0, int(to.timestamp()) + 1 - now))


def test_a_hook_that_fails_fires_again_at_the_next_check(
    env: StripelineEnv, disputes: Disputes, clock: Callable[[], datetime]
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.due_by is not None
    calls: list[float] = []

    def flaky(alarm: DueAlarm) -> None:
        calls.append(alarm.lead_days)
        assert alarm.connection is not None
        # Written in the alarm's transaction: kept only if the alarm is.
        take_once(alarm.connection, f"paged:{len(calls)}", event_id=None, now=alarm.now)
        if len(calls) == 1:
            raise RuntimeError("the pager is down")

    disputes.on_due(flaky)
    env.advance_clock(to=int((case.due_by - 7 * DAY).timestamp()) + 1)
    with capture_logs() as logs:
        assert disputes.check_deadlines() == []
    assert [line["action"] for line in logs] == ["dispute_due", "dispute_due_hook_failed"]
    assert disputes.alarms(dispute_id) == []  # rolled back
    assert [a.lead_days for a in disputes.check_deadlines()] == [7]
    assert disputes.check_deadlines() == []
    assert calls == [7, 7]
    app = disputes._app
    assert (app.once("paged:1"), app.once("paged:2")) == (True, False)


def test_an_inquiry_closes_as_warning_closed_without_moving_funds(
    env: StripelineEnv, disputes: Disputes
) -> None:
    closed: list[DisputeCase] = []
    disputes.on_closed(closed.append)
    intent = env.client.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "payment_method": "pm_card_createDisputeInquiry",
            "confirm": True,
        }
    )
    env.advance_clock(1)
    (case,) = disputes.due(within=8 * DAY)
    assert (case.payment_intent, case.status, case.funds) == (
        intent.id,
        "warning_needs_response",
        Funds(),
    )
    disputes.submit(case.id, {"product_description": "A pen"})
    env.control("POST", f"/_sandbox/disputes/{case.id}/close", outcome="won")
    env.settle()
    assert [(c.id, c.outcome, c.funds.net) for c in closed] == [(case.id, "warning_closed", 0)]


def test_evidence_after_the_deadline_is_refused_without_a_call(
    env: StripelineEnv, disputes: Disputes, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.due_by is not None
    env.advance_clock(to=int(case.due_by.timestamp()) + 1)
    before = stripe_sandbox.request_counts(stripe_key)
    with pytest.raises(DisputeDeadlinePassed, match="too late") as refused:
        disputes.submit(dispute_id, {"product_description": "A book"})
    assert refused.value.dispute_id == dispute_id and refused.value.due_by == case.due_by
    assert stripe_sandbox.request_counts(stripe_key) == before
    assert env.client.v1.disputes.retrieve(dispute_id).evidence_details.submission_count == 0


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_evidence_is_submitted_once_and_the_outcome_kept(
    env: StripelineEnv,
    disputes: Disputes,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    outcome: str,
) -> None:
    closed: list[DisputeCase] = []
    disputes.on_closed(closed.append)

    @disputes.evidence_provider
    def from_the_shop(case: DisputeCase) -> dict[str, Any]:
        return {
            "refund_policy_disclosure": f"Shown at checkout of {case.order_id}.",
            "shipping_tracking_number": "overridden by the argument",
        }

    dispute_id = open_dispute(env, order="order_9")
    receipt = disputes.upload_evidence_file(b"%PDF-1.4 receipt of order_9", "receipt.pdf")
    assert disputes.upload_evidence_file(b"%PDF-1.4 receipt of order_9", "receipt.pdf") == receipt
    evidence = disputes.build_evidence(
        dispute_id, shipping_tracking_number="1Z999", receipt=receipt
    )
    assert evidence["receipt"] == receipt
    assert evidence["refund_policy_disclosure"] == "Shown at checkout of order_9."
    with pytest.raises(ValueError, match="unknown evidence field"):
        disputes.build_evidence(dispute_id, favourite_colour="blue")
    assert evidence["customer_name"] == "Ada Lovelace"
    assert evidence["customer_email_address"] == "ada@example.com"
    assert evidence["product_description"] == "The Analytical Engine, vol. 1"
    assert evidence["shipping_tracking_number"] == "1Z999"
    assert "Order order_9." in evidence["uncategorized_text"]

    submitted = disputes.submit(dispute_id, evidence)
    assert submitted.status == "under_review" and submitted.submission_count == 1
    counts = stripe_sandbox.request_counts(stripe_key)
    again = disputes.submit(dispute_id, evidence)  # answered from the ledger
    assert again.status == "under_review"
    assert stripe_sandbox.request_counts(stripe_key) == counts
    env.settle()
    with pytest.raises(DisputeNotOpen, match="under_review"):
        disputes.submit(dispute_id, {"uncategorized_text": "more"})

    env.control("POST", f"/_sandbox/disputes/{dispute_id}/close", outcome=outcome)
    env.settle()
    case = disputes.case(dispute_id)
    assert case is not None and case.outcome == outcome and not case.is_open
    assert case.evidence["shipping_tracking_number"] == "1Z999"
    assert case.evidence["receipt"] == receipt
    assert [f.id for f in env.client.v1.files.list().data] == [receipt]  # uploaded once
    reinstated = 8000 if outcome == "won" else 0
    assert (case.funds.withdrawn, case.funds.withdrawn_fee) == (8000, 1500)
    assert case.funds.reinstated == reinstated
    assert case.funds.net == reinstated - 9500
    # The hook ran once, with the outcome and the funds.
    assert [(c.id, c.outcome, c.funds.net) for c in closed] == [
        (dispute_id, outcome, reinstated - 9500)
    ]
    # Another event about the same closing (a new id: not the inbox's duplicate).
    env.deliver([{**env.events("charge.dispute.closed")[0].data, "id": "evt_closed_again"}])
    env.settle()
    assert len(closed) == 1


def test_a_dispute_not_worth_fighting_is_accepted_once(
    env: StripelineEnv, disputes: Disputes, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    closed: list[DisputeCase] = []
    disputes.on_closed(closed.append)
    dispute_id = open_dispute(env)
    accepted = disputes.accept(dispute_id)
    assert accepted.outcome == "lost"
    counts = stripe_sandbox.request_counts(stripe_key)
    assert disputes.accept(dispute_id).outcome == "lost"
    assert stripe_sandbox.request_counts(stripe_key) == counts
    env.settle()
    assert [c.outcome for c in closed] == ["lost"]
    with pytest.raises(DisputeNotOpen):
        disputes.submit(dispute_id, {"product_description": "x"})


def test_hooks_and_lead_times_are_shared_by_every_disputes_of_an_app(app: Stripeline) -> None:
    first, second = Disputes(app), Disputes(app)
    second.lead_times = [2, timedelta(hours=12)]
    assert first.lead_times == (2 * DAY, timedelta(hours=12))
    seen: list[Any] = []
    first.on_due(seen.append)
    assert second._shared.on_due == [seen.append]
    with pytest.raises(ValueError, match="positive"):
        first.lead_times = [0]


def test_the_gauge_counts_open_disputes_due_within_24_and_72_hours(
    env: StripelineEnv, app: Stripeline
) -> None:
    from stripeline.testing import make_event

    now = datetime.now(UTC)

    def dispute(hours: float, status: str = "needs_response") -> dict[str, Any]:
        due_by = int((now + timedelta(hours=hours)).timestamp())
        return make_event(
            "charge.dispute.created",
            {"status": status, "evidence_details": {"due_by": due_by, "has_evidence": False}},
        )

    env.deliver(
        [dispute(10), dispute(50), dispute(100), dispute(10, "under_review"), dispute(-5)],
        copies=1,
    )
    env.settle()

    def gauge(within: str) -> float | None:
        return app.metrics.registry.get_sample_value("stripeline_disputes_due", {"within": within})

    assert (gauge("24h"), gauge("72h")) == (1.0, 2.0)


# -- the command ---------------------------------------------------------------------


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    database_url: str,
    env: StripelineEnv,
) -> StripelineEnv:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_key)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", stripe_sandbox.url)
    monkeypatch.setenv("STRIPELINE_MAX_NETWORK_RETRIES", "0")
    return env


def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from stripeline.cli import main

    return CliRunner().invoke(main, list(args))


def test_the_command_lists_shows_and_submits(
    cli_env: StripelineEnv, disputes: Disputes, clock: Callable[[], datetime], tmp_path: Any
) -> None:
    import json

    from stripeline.commands.disputes import parse_duration, relative

    dispute_id = open_dispute(cli_env, order="order_7")
    # The command's "now" is the machine's: the sandbox's clock may be ahead of it.
    ahead = clock() - datetime.now(UTC)
    within = f"{int((ahead + 8 * DAY) / timedelta(hours=1)) + 1}h"
    listed = cli("disputes", "due", "--within", within, "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["id"], row["order_id"], row["status"]) == (dispute_id, "order_7", "needs_response")
    assert row["funds"] == {
        "withdrawn": 8000,
        "withdrawn_fee": 1500,
        "reinstated": 0,
        "reinstated_fee": 0,
        "net": -9500,
    }
    table = cli("disputes", "due", "--within", within)
    assert table.exit_code == 0 and dispute_id in table.output and "80.00 USD" in table.output
    assert "in 7 days" in table.output or ahead > DAY
    assert "no open dispute" in cli("disputes", "due", "--within", "1h").output

    shown = cli("disputes", "show", dispute_id)
    assert shown.exit_code == 0, shown.output
    assert "order_7" in shown.output and "fraudulent" in shown.output
    assert "withdrawn 80.00 USD + fee 15.00 USD" in shown.output
    assert cli("disputes", "show", "du_nope").exit_code == 1

    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"product_description": "A book", "customer_name": "Ada"}))
    submitted = cli("disputes", "submit", dispute_id, "--evidence", str(evidence))
    assert submitted.exit_code == 0, submitted.output
    assert "evidence submitted" in submitted.output and "under_review" in submitted.output
    assert cli_env.client.v1.disputes.retrieve(dispute_id).status == "under_review"
    cli_env.settle()
    again = cli("disputes", "submit", dispute_id, "--evidence", str(evidence))
    assert again.exit_code == 0, again.output  # the same call: answered from the ledger
    evidence.write_text(json.dumps({"product_description": "Another"}))
    refused = cli("disputes", "submit", dispute_id, "--evidence", str(evidence))
    assert refused.exit_code == 1 and "under_review" in refused.output

    assert parse_duration("72h") == 3 * DAY and parse_duration("2w") == 14 * DAY
    now = datetime.now(UTC)
    assert relative(now + 2 * DAY + timedelta(hours=1), now) == "in 2 days"
    assert relative(now - timedelta(hours=3), now) == "3 hours ago"


def test_an_early_fraud_warning_is_followed_and_linked_to_the_dispute(
    env: StripelineEnv, disputes: Disputes
) -> None:
    warned: list[dict[str, Any]] = []
    disputes.on_early_fraud_warning(warned.append)
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.early_fraud_warnings == ()
    with capture_logs() as logs:
        warning = env.control(
            "POST",
            f"/_sandbox/charges/{case.charge}/early_fraud_warning",
            fraud_type="made_with_stolen_card",
        )
        env.settle()
    case = disputes.case(dispute_id)
    assert case is not None and case.early_fraud_warnings == (warning["id"],)
    assert [w["id"] for w in warned] == [warning["id"]]
    (line,) = [line for line in logs if line.get("action") == "early_fraud_warning"]
    assert (line["charge"], line["fraud_type"]) == (case.charge, "made_with_stolen_card")
    first = env.events("radar.early_fraud_warning.created")[0].data
    env.deliver([{**first, "id": "evt_warned_again", "type": "radar.early_fraud_warning.updated"}])
    env.settle()
    assert len(warned) == 1


def test_the_docs_example_runs(stripeline_env: StripelineEnv) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "disputes.md").read_text("utf-8")
    match = re.search(r"```python\n(# example: disputes\n.*?)```", text, re.DOTALL)
    assert match is not None
    namespace: dict[str, Any] = {}
    exec(compile(match[1], "docs/disputes.md", "exec"), namespace)  # noqa: S102 - our own docs
    namespace["test_a_dispute_from_notice_to_outcome"](stripeline_env)


def test_three_running_workers_fire_each_alarm_once(
    env: StripelineEnv,
    disputes: Disputes,
    clock: Callable[[], datetime],
    stripe_sandbox: Sandbox,
    stripe_key: str,
    database_url: str,
) -> None:
    dispute_id = open_dispute(env)
    case = disputes.case(dispute_id)
    assert case is not None and case.due_by is not None
    fired: list[tuple[int, float]] = []
    lock = threading.Lock()
    apps = [make_app(stripe_sandbox, stripe_key, database_url) for _ in range(3)]
    workers = []
    for n, other in enumerate(apps):

        def record(alarm: DueAlarm, n: int = n) -> None:
            with lock:
                fired.append((n, alarm.lead_days))

        Disputes(other).on_due(record)
        worker = Worker(
            other, listen=False, poll_seconds=0.05, deadline_check_seconds=0.02, deadline_now=clock
        )
        workers.append((worker, threading.Thread(target=worker.run)))
    for _, thread in workers:
        thread.start()
    try:
        for count, days in enumerate((7, 3, 1), start=1):
            stripe_sandbox_advance(env, case.due_by - days * DAY)
            deadline = datetime.now(UTC) + timedelta(seconds=5)
            while len(fired) < count and datetime.now(UTC) < deadline:
                threading.Event().wait(0.02)
            threading.Event().wait(0.2)  # every worker checked again meanwhile
    finally:
        for worker, _ in workers:
            worker.stop()
        for _, thread in workers:
            thread.join(10)
        for other in apps:
            other.dispose()
    assert sorted(lead for _, lead in fired) == [1, 3, 7]
