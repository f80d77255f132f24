"""The console's ASGI app: pages, forms and the checks every request passes.

Every response carries strict security headers (a CSP with no inline script,
``frame-ancestors 'none'``, no caching). Every page but the sign-in page
needs a session; every POST needs the session's CSRF token and, to change
anything, the ``admin`` role. Actions are confirmed on a page of their own
and recorded in the audit log before the answer.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stripeline import inbox, ops
from stripeline.app import Stripeline
from stripeline.db import connect
from stripeline.errors import StripeAPIError
from stripeline.log import get_logger
from stripeline.mirror import to_major
from stripeline.sync import history
from stripeline.sync.catch_up import GAP_ALARM_SECONDS
from stripeline.sync.cursors import COVERED_CURSOR, catch_up_gap, read_cursor
from stripeline.sync.drift import repair_drift
from stripeline.web.console import queries
from stripeline.web.console.auth import (
    ENDED_COOKIE,
    ENDED_GRACE_SECONDS,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    Signer,
    SignInLimiter,
    check_password,
)

log = get_logger("stripeline.console")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "cross-origin-opener-policy": "same-origin",
}
#: Largest form body read (the console's forms are a few hundred bytes).
FORM_LIMIT = 64 * 1024
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}

#: Keys whose values are never shown, whatever object holds them (a card
#: number, under any key, is caught by its digits: an invoice's ``number``
#: is shown).
SECRET_KEYS = frozenset({"client_secret", "secret", "password", "cvc", "api_key", "webhook_secret"})
_SECRET_TEXT = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9+/=]+")
_CARD_NUMBER = re.compile(r"\b(?:\d[ -]?){13,19}\b")
REDACTED = "[redacted]"


def scrub(text: str | None) -> str | None:
    """``text`` with keys, webhook secrets and card-number-like digit runs removed."""
    if text is None:
        return None
    return _CARD_NUMBER.sub(REDACTED, _SECRET_TEXT.sub(REDACTED, text))


def redact(value: Any) -> Any:
    """A payload with secret-bearing fields and key-like strings redacted."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key in SECRET_KEYS and item not in (None, "") else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "–"
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def countdown(due_by: datetime | None, now: datetime) -> dict[str, str]:
    """A deadline as words and an urgency class, computed when the page is
    rendered (no script): ``3d 4h left`` / ``late by 2h 5m``."""
    if due_by is None:
        return {"text": "no deadline", "level": "none"}
    seconds = int((due_by - now).total_seconds())
    if seconds < 0:
        return {"text": f"late by {_span(-seconds)}", "level": "late"}
    level = "urgent" if seconds < 2 * 86400 else "soon" if seconds < 7 * 86400 else "later"
    return {"text": f"{_span(seconds)} left", "level": level}


def attempt_rows(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempt log numbered in order (``ordinal``, never restarting) with
    its ``round``: a replay or a retry starts the stored counter (``number``,
    the one ``max_attempts`` counts) again, and a new round."""
    rows: list[dict[str, Any]] = []
    round_ = 1
    previous: int | None = None
    for ordinal, attempt in enumerate(logged, start=1):
        if previous is not None and attempt["number"] <= previous:
            round_ += 1
        previous = attempt["number"]
        rows.append({**attempt, "ordinal": ordinal, "round": round_})
    return rows


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "–"
    if not currency:
        return str(amount)
    return f"{to_major(amount, currency)} {currency.upper()}"


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    height: float
    kind: str
    title: str


def chart(minutes: list[queries.Minute], *, width: int = 1200, height: int = 160) -> dict[str, Any]:
    """The overview's chart as SVG geometry: per minute, a bar of events
    processed (up) and one of attempts failed (down from the axis), and a
    tick per ten minutes. Drawn on the server: no script, no inline style."""
    top = max([max(m.processed, m.failed, m.received) for m in minutes] + [1])
    slot = width / max(len(minutes), 1)
    half = (height - 20) / 2
    axis = 10 + half
    bars: list[Bar] = []
    ticks = []
    for i, minute in enumerate(minutes):
        x = i * slot
        label = minute.start.strftime("%H:%M")
        if minute.processed:
            h = max(1.0, half * minute.processed / top)
            bars.append(
                Bar(
                    x + 1,
                    axis - h,
                    h,
                    "processed",
                    f"{label}: {minute.processed} processed, {minute.received} received",
                )
            )
        if minute.failed:
            h = max(1.0, half * minute.failed / top)
            bars.append(Bar(x + 1, axis, h, "failed", f"{label}: {minute.failed} failed"))
        if i % 10 == 0:
            ticks.append({"x": x, "label": label})
    return {
        "width": width,
        "height": height + 16,
        "axis": axis,
        "slot": max(slot - 2, 1),
        "bars": bars,
        "ticks": ticks,
        "top": top,
        "processed": sum(m.processed for m in minutes),
        "failed": sum(m.failed for m in minutes),
        "received": sum(m.received for m in minutes),
    }


class _Headers:
    """Adds the security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_console(app: Stripeline) -> ASGIApp | None:
    """The console's ASGI app for ``app``, to mount under ``/console``; None
    when the console is not configured (it is off unless it is)."""
    settings = app.settings
    if not settings.console_enabled or settings.console_secret is None:
        return None
    signer = Signer(settings.console_secret.get_secret_value())
    users = settings.console_accounts
    limiter = SignInLimiter()
    mode = settings.effective_mode
    env = Environment(
        loader=PackageLoader("stripeline.web.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["epoch"] = lambda seconds: _when(datetime.fromtimestamp(seconds, UTC))
    env.globals["STATUSES"] = inbox.STATUSES
    env.filters["money"] = _money

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def current(request: Request) -> Session | None:
        header = settings.console_trusted_header
        if header is not None and client_of(request) in settings.console_trusted_proxies:
            name = request.headers.get(header, "").strip()
            if name:
                return Session(name[:255], settings.console_header_role, 0, "header:" + name)
        return signer.session(request.cookies.get(SESSION_COOKIE))

    def cookie_options(request: Request) -> dict[str, Any]:
        return {
            "path": base(request) or "/",
            "httponly": True,
            "samesite": "strict",
            "secure": settings.console_secure_cookie,
        }

    def render(
        request: Request,
        template: str,
        session: Session | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        html = env.get_template(template).render(
            base=base(request),
            mode=mode,
            session=session,
            csrf=signer.csrf(session.nonce) if session else None,
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def refuse(request: Request, session: Session | None, status: int, message: str) -> Response:
        return render(request, "refused.html", session, status_code=status, message=message)

    def to_login(request: Request) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(
            f"{base(request)}/login?{urlencode({'next': target})}", status_code=303
        )

    async def form_of(request: Request) -> dict[str, str]:
        """The POSTed form (URL-encoded, at most 64 KiB; anything else is empty)."""
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return {}
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_LIMIT:
                return {}
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=100)
        return {key: values[0] for key, values in fields.items() if values}

    async def acting(request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and form of a POST that may change something, or its refusal."""
        session = current(request)
        if session is None:
            return refuse(request, None, 401, "Sign in first.")
        form = await form_of(request)
        if not signer.csrf_ok(session.nonce, form.get("csrf")):
            return refuse(
                request,
                session,
                403,
                "This form has expired or did not come from the console: reload the page and try again.",
            )
        if not session.can_act:
            return refuse(request, session, 403, "Your role is read-only: you can look, not act.")
        return session, form

    # -- sign-in -------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        if current(request) is not None:
            return RedirectResponse(f"{base(request)}/", status_code=303)
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        expired = signer.ended(request.cookies.get(ENDED_COOKIE))
        response = render(
            request,
            "login.html",
            None,
            login_csrf=signer.csrf("login:" + nonce),
            next=request.query_params.get("next", ""),
            error=None,
            expired=expired,
        )
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=1800, **cookie_options(request))
        if expired:
            # Said once: the next visit of the sign-in page is a plain one.
            response.delete_cookie(ENDED_COOKIE, path=base(request) or "/")
            response.delete_cookie(SESSION_COOKIE, path=base(request) or "/")
        return response

    async def login_submit(request: Request) -> Response:
        form = await form_of(request)
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce or not signer.csrf_ok("login:" + nonce, form.get("csrf")):
            return refuse(
                request, None, 403, "This sign-in form has expired: reload the page and try again."
            )
        name = form.get("username", "").strip()[:64]
        client = client_of(request)
        again = {"login_csrf": form.get("csrf"), "next": form.get("next", "")}
        if limiter.blocked(client, name):
            log.warning("console_sign_in_limited", action="refused")
            return render(
                request,
                "login.html",
                None,
                status_code=429,
                error="Too many failed sign-ins: wait a few minutes and try again.",
                **again,
            )
        user = await run_in_threadpool(check_password, users, name, form.get("password", ""))
        if user is None:
            limiter.failed(client, name)
            log.warning("console_sign_in_failed", action="refused")
            return render(
                request,
                "login.html",
                None,
                status_code=401,
                error="Wrong user name or password.",
                **again,
            )
        await run_in_threadpool(_audit, user.name, user.role, "sign_in", None, 0, client)
        target = form.get("next", "")
        if not target.startswith(base(request) + "/") or target.startswith("//"):
            target = f"{base(request)}/"
        response = RedirectResponse(target, status_code=303)
        issued = time.time()
        seconds = settings.console_session_seconds
        response.set_cookie(
            SESSION_COOKIE,
            signer.issue(user.name, user.role, seconds, now=issued),
            max_age=seconds,
            **cookie_options(request),
        )
        response.set_cookie(
            ENDED_COOKIE,
            signer.ended_marker(int(issued) + seconds),
            max_age=seconds + ENDED_GRACE_SECONDS,
            **cookie_options(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path=base(request) or "/")
        return response

    async def logout(request: Request) -> Response:
        session = current(request)
        form = await form_of(request)
        if session is None or not signer.csrf_ok(session.nonce, form.get("csrf")):
            return refuse(
                request, session, 403, "This form has expired: reload the page and try again."
            )
        await run_in_threadpool(
            _audit, session.user, session.role, "sign_out", None, 0, client_of(request)
        )
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base(request) or "/")
        response.delete_cookie(ENDED_COOKIE, path=base(request) or "/")
        return response

    def _audit(
        actor: str, role: str, action: str, target: str | None, count: int, client: str
    ) -> None:
        with connect(app.engine) as conn:
            queries.record(
                conn,
                actor=actor,
                role=role,
                action=action,
                target=target,
                count=count,
                client=client,
            )

    # -- pages -----------------------------------------------------------------

    async def home(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        now = datetime.now(UTC)

        def load() -> tuple[queries.Overview, list[Any], history.StoredReport | None]:
            with connect(app.engine, readonly=True) as conn:
                seen = queries.overview(conn, now=now)
                report = history.last_verify_report(conn)
            try:
                due = app.disputes.due(timedelta(days=7), now=now, limit=20)
            except Exception:  # a mirror without disputes yet: the rest still shows
                log.warning("console_disputes_unreadable", action="skipped", exc_info=True)
                due = []
            return seen, due, report

        seen, due, report = await run_in_threadpool(load)
        backlog = sum(seen.counts[s] for s in ("pending", "processing", "failed"))
        return render(
            request,
            "overview.html",
            session,
            seen=seen,
            backlog=backlog,
            chart=chart(seen.minutes),
            due=due,
            report=report,
            ago=lambda moment: _ago(moment, now),
            span=_span,
            gap_alarm=GAP_ALARM_SECONDS,
        )

    def filter_of(request: Request) -> queries.EventFilter:
        q = request.query_params
        status = q.get("status") or None
        return queries.EventFilter(
            type=(q.get("type") or "").strip() or None,
            status=status if status in inbox.STATUSES else None,
            object_id=(q.get("object") or "").strip() or None,
            since=_parse_time(q.get("since")),
            until=_parse_time(q.get("until")),
            customer=(q.get("customer") or "").strip()[:255] or None,
        )

    def filter_query(where: queries.EventFilter) -> dict[str, str]:
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in (
                ("type", where.type),
                ("status", where.status),
                ("object", where.object_id),
                ("since", where.since),
                ("until", where.until),
                ("customer", where.customer),
            )
            if value
        }

    async def event_list(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        where = filter_of(request)
        cursor = request.query_params.get("cursor")

        def load() -> tuple[queries.EventPage, dict[str, int], dict[str, int]]:
            with connect(app.engine, readonly=True) as conn:
                found = where.with_customer_objects(conn)
                page = queries.list_events(conn, found, cursor=cursor)
                totals = queries.attempt_totals(conn, [e.id for e in page.events])
                return page, queries.count_by_status(conn), totals

        page, counts, totals = await run_in_threadpool(load)
        params = filter_query(where)
        return render(
            request,
            "events.html",
            session,
            page=page,
            counts=counts,
            totals=totals,
            where=where,
            params=params,
            next_url=(
                f"{base(request)}/events?{urlencode({**params, 'cursor': page.next_cursor})}"
                if page.next_cursor
                else None
            ),
            first_url=f"{base(request)}/events?{urlencode(params)}" if cursor else None,
            ago=lambda moment: _ago(moment, datetime.now(UTC)),
            scrub=scrub,
            replayed=request.query_params.get("replayed"),
        )

    async def event_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        event_id = request.path_params["event_id"]

        def load() -> tuple[ops.EventDetail | None, Any, list[queries.Touched]]:
            with connect(app.engine, readonly=True) as conn:
                detail = ops.get_event(conn, event_id)
                if detail is None:
                    return None, None, []
                try:
                    raw: Any = json.loads(detail.payload)
                except ValueError:
                    return detail, None, []
                touched = queries.touched_by(conn, event_id, raw, detail.summary.account)
                return detail, redact(raw), touched

        detail, payload, touched = await run_in_threadpool(load)
        if detail is None:
            return refuse(request, session, 404, "No event with this id is in the inbox.")
        attempts = attempt_rows(detail.attempts)
        return render(
            request,
            "event.html",
            session,
            event=detail,
            attempts=attempts,
            rounds=attempts[-1]["round"] if attempts else 1,
            touched=touched,
            payload=payload,
            scrub=scrub,
            done=request.query_params.get("done"),
            ago=lambda moment: _ago(moment, datetime.now(UTC)),
        )

    async def event_action(request: Request) -> Response:
        checked = await acting(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        event_id = request.path_params["event_id"]
        action = request.path_params["action"]
        if action not in ("retry", "replay"):
            return refuse(request, session, 404, "No such action.")
        if form.get("confirm") != "yes":
            return render(
                request,
                "confirm.html",
                session,
                action=action,
                event_id=event_id,
                count=1,
                url=f"{base(request)}/events/{event_id}/{action}",
                fields={},
                describe=event_id,
            )

        def act() -> int:
            with connect(app.engine) as conn:
                if action == "retry":
                    changed = inbox.retry(conn, event_id=event_id)
                else:
                    changed = 1 if inbox.replay(conn, event_id) else 0
                queries.record(
                    conn,
                    actor=session.user,
                    role=session.role,
                    action=action,
                    target=event_id,
                    count=changed,
                    client=client_of(request),
                )
                return changed

        changed = await run_in_threadpool(act)
        log.info(
            "console_action", action=action, event_id=event_id, changed=changed, actor=session.user
        )
        outcome = f"{action}_done" if changed else f"{action}_refused"
        return RedirectResponse(
            f"{base(request)}/events/{event_id}?{urlencode({'done': outcome})}", status_code=303
        )

    async def bulk_replay(request: Request) -> Response:
        checked = await acting(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        where = queries.EventFilter(
            type=form.get("type") or None,
            status="dead",
            object_id=form.get("object") or None,
            since=_parse_time(form.get("since")),
            until=_parse_time(form.get("until")),
            customer=(form.get("customer") or "").strip()[:255] or None,
        )

        def matching() -> list[str]:
            with connect(app.engine, readonly=True) as conn:
                return queries.dead_ids(conn, where.with_customer_objects(conn))

        if form.get("confirm") != "yes":
            ids = await run_in_threadpool(matching)
            return render(
                request,
                "confirm.html",
                session,
                action="bulk replay",
                event_id=None,
                count=len(ids),
                limit=queries.BULK_LIMIT,
                url=f"{base(request)}/events/bulk-replay",
                fields=filter_query(where),
                describe=where.describe(),
            )

        def act() -> int:
            with connect(app.engine) as conn:
                ids = queries.dead_ids(conn, where.with_customer_objects(conn))
                changed = sum(1 for event_id in ids if inbox.replay(conn, event_id))
                queries.record(
                    conn,
                    actor=session.user,
                    role=session.role,
                    action="bulk_replay",
                    target=where.describe(),
                    count=changed,
                    client=client_of(request),
                )
                return changed

        changed = await run_in_threadpool(act)
        log.info("console_action", action="bulk_replay", changed=changed, actor=session.user)
        params = {k: v for k, v in filter_query(where).items() if k != "status"}
        return RedirectResponse(
            f"{base(request)}/events?{urlencode({**params, 'replayed': changed})}",
            status_code=303,
        )

    def entitlements_of(customer_id: str) -> list[tuple[str, datetime]] | None:
        """Each feature the customer may use now and until when (None: unreadable)."""
        try:
            granted = app.entitlements.features(customer_id)
            return [
                (feature, until)
                for feature in sorted(granted)
                if (until := app.entitlements.access_until(customer_id, feature)) is not None
            ]
        except Exception:  # the rest of the page still shows
            log.warning("console_entitlements_unreadable", action="skipped", exc_info=True)
            return None

    def customer_story(customer_id: str) -> dict[str, Any] | None:
        mirror = app.mirror
        customer = mirror.customer(customer_id)
        if customer is None:
            return None
        charges = mirror.charges(customer_id, limit=50)
        refunds = [r for c in charges if c.amount_refunded for r in mirror.refunds(charge=c.id)]
        disputes = [d for c in charges if c.disputed for d in mirror.disputes(charge=c.id)]
        with connect(app.engine, readonly=True) as conn:
            about = queries.EventFilter(customer=customer_id).with_customer_objects(conn)
            touched = queries.list_events(conn, about, limit=20).events
        return {
            "customer": customer,
            "entitlements": entitlements_of(customer_id),
            "subscriptions": mirror.subscriptions(customer_id, limit=50),
            "invoices": mirror.invoices(customer_id, limit=50),
            "payment_intents": mirror.payment_intents(customer_id, limit=50),
            "charges": charges,
            "refunds": refunds,
            "disputes": disputes,
            "users": mirror.users_for_customer(customer_id),
            "events": touched,
        }

    async def customer_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        story = await run_in_threadpool(customer_story, request.path_params["customer_id"])
        if story is None:
            return refuse(request, session, 404, "No customer with this id is in the mirror.")
        return render(
            request, "customer.html", session, ago=lambda m: _ago(m, datetime.now(UTC)), **story
        )

    def find(q: str) -> str | list[Any] | None:
        """Where a search leads: a URL, a list of customers, or None (nothing)."""
        mirror = app.mirror
        if q.startswith("evt_"):
            with connect(app.engine, readonly=True) as conn:
                return f"/events/{q}" if ops.get_event(conn, q) is not None else None
        if "@" in q:
            found = mirror.customers(email=q, limit=20)
            if len(found) == 1:
                return f"/customers/{found[0].id}"
            return found or None
        if q.startswith("cus_") and mirror.customer(q) is not None:
            return f"/customers/{q}"
        if "_" in q:
            obj = mirror.get(q)
            if obj is not None:
                return f"/objects/{quote(q, safe='')}"
            with connect(app.engine, readonly=True) as conn:
                page = queries.list_events(conn, queries.EventFilter(object_id=q), limit=1)
            if page.events:
                return f"/events?{urlencode({'object': q})}"
        linked = mirror.customer_for_user(q)
        if linked is not None:
            return f"/customers/{linked.id}"
        return None

    async def search(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        q = request.query_params.get("q", "").strip()[:255]
        found = await run_in_threadpool(find, q) if q else None
        if isinstance(found, str):
            return RedirectResponse(base(request) + found, status_code=303)
        return render(request, "search.html", session, q=q, customers=found or [])

    async def audit_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)

        def load() -> list[Any]:
            with connect(app.engine, readonly=True) as conn:
                return list(queries.recent_audit(conn))

        return render(request, "audit.html", session, rows=await run_in_threadpool(load))

    async def object_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        object_id = request.path_params["object_id"]
        cursor = request.query_params.get("cursor")

        def load() -> tuple[queries.MirrorRow | None, queries.EventPage]:
            with connect(app.engine, readonly=True) as conn:
                row = queries.mirror_row(conn, object_id)
                made = queries.list_events(
                    conn, queries.EventFilter(object_id=object_id), cursor=cursor
                )
                return row, made

        row, made = await run_in_threadpool(load)
        if row is None and not made.events:
            return refuse(
                request, session, 404, "No object with this id is in the mirror or the inbox."
            )
        customer = row.data.get("customer") if row is not None else None
        return render(
            request,
            "object.html",
            session,
            object_id=object_id,
            row=row,
            data=redact(row.data) if row is not None else None,
            customer=customer if isinstance(customer, str) else None,
            made=made,
            next_url=(
                f"{base(request)}/objects/{object_id}?{urlencode({'cursor': made.next_cursor})}"
                if made.next_cursor
                else None
            ),
            ago=lambda moment: _ago(moment, datetime.now(UTC)),
        )

    async def disputes_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        now = datetime.now(UTC)

        def load() -> tuple[list[Any], list[Any]]:
            due = app.disputes.due(timedelta(days=30), now=now, limit=200)
            shown = {case.id for case in due}
            others = [c for c in app.disputes.cases(limit=100) if c.id not in shown]
            return due, others

        due, others = await run_in_threadpool(load)
        return render(
            request,
            "disputes.html",
            session,
            due=due,
            others=others,
            countdown=lambda moment: countdown(moment, now),
        )

    def sync_story() -> dict[str, Any]:
        now = datetime.now(UTC)
        with connect(app.engine, readonly=True) as conn:
            cursor = read_cursor(conn)
            covered = read_cursor(conn, COVERED_CURSOR)
            return {
                "cursor": cursor,
                "covered": covered,
                "gap": catch_up_gap(conn, now),
                "runs": history.catch_up_history(conn),
                "backfill": history.backfill_progress(conn),
                "report": history.last_verify_report(conn),
            }

    async def sync_page(request: Request) -> Response:
        session = current(request)
        if session is None:
            return to_login(request)
        story = await run_in_threadpool(sync_story)
        now = datetime.now(UTC)
        return render(
            request,
            "sync.html",
            session,
            gap_alarm=GAP_ALARM_SECONDS,
            interval=(settings.catch_up_interval if settings.stripe_secret_key is not None else 0),
            can_read_stripe=settings.stripe_secret_key is not None,
            done=request.query_params.get("done"),
            ago=lambda moment: _ago(moment, now),
            span=_span,
            **story,
        )

    async def sync_repair(request: Request) -> Response:
        checked = await acting(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked

        def last() -> history.StoredReport | None:
            with connect(app.engine, readonly=True) as conn:
                return history.last_verify_report(conn)

        report = await run_in_threadpool(last)
        if report is None or not report.unrepaired:
            return refuse(request, session, 409, "The last verify report has nothing to repair.")
        if str(report.id) != form.get("report"):
            return refuse(
                request,
                session,
                409,
                "A newer verify report came in since this page was shown: look at it first.",
            )
        from stripeline.gateway import StripeFetcher

        fetcher = app.fetcher
        if not isinstance(fetcher, StripeFetcher):
            return refuse(
                request, session, 409, "No Stripe API key is configured: the mirror cannot be read."
            )
        objects = report.unrepaired
        if form.get("confirm") != "yes":
            return render(
                request,
                "confirm.html",
                session,
                action="repair",
                event_id=None,
                count=len(objects),
                url=f"{base(request)}/sync/repair",
                cancel=f"{base(request)}/sync",
                fields={"report": str(report.id)},
                message=(
                    f"Read the {len(objects)} drifted object{'' if len(objects) == 1 else 's'} "
                    "of the last verify report again from Stripe and write Stripe's state "
                    "over the mirror's?"
                ),
            )

        def act() -> int:
            done = repair_drift(
                app.engine,
                fetcher.reader,
                [(d["type"], d["id"], d["kind"], d.get("fields", ())) for d in objects],
                actor=f"console:{session.user}",
            )
            repaired = sum(1 for d in done.drift if d.repaired)
            _audit(
                session.user,
                session.role,
                "repair",
                f"verify report {report.id}",
                repaired,
                client_of(request),
            )
            return repaired

        try:
            repaired = await run_in_threadpool(act)
        except StripeAPIError as exc:
            return refuse(request, session, 502, f"Stripe refused a read: {scrub(exc.message)}")
        log.info("console_action", action="repair", changed=repaired, actor=session.user)
        return RedirectResponse(
            f"{base(request)}/sync?{urlencode({'done': repaired})}", status_code=303
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404)
        body = resources.files("stripeline.web.console").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=300"})

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events", event_list, methods=["GET"]),
        Route("/events/bulk-replay", bulk_replay, methods=["POST"]),
        Route("/events/{event_id}", event_page, methods=["GET"]),
        Route("/events/{event_id}/{action}", event_action, methods=["POST"]),
        Route("/audit", audit_page, methods=["GET"]),
        Route("/customers/{customer_id}", customer_page, methods=["GET"]),
        Route("/objects/{object_id}", object_page, methods=["GET"]),
        Route("/disputes", disputes_page, methods=["GET"]),
        Route("/sync", sync_page, methods=["GET"]),
        Route("/sync/repair", sync_repair, methods=["POST"]),
        Route("/search", search, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
    ]
    return _Headers(Starlette(routes=routes))
