"""Outgoing calls with intent: every write the flows make to Stripe.

A write is named by the business action and its reference
(``customer:create`` for ``user_7``, ``payment_intent:create`` for
``order_42``) and carries its parameters. ``Calls.run`` records it in
``stripeline_calls`` *before* sending it, with the idempotency key derived
from the name and a hash of the parameters, and records the answer after::

    customer = app.calls.run(
        "customer:create", "user_7", params,
        lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),
        find=lambda client: ...,  # look the object up (past Stripe's 24 h window)
    )

What that gives, whatever happens between two tries:

* The same call again (a retry, a second thread, a process restarted after a
  crash) sends the *same* idempotency key: Stripe answers with the object it
  made the first time, never a second one. Once answered, the recorded
  object is returned without a call at all.
* Sent more than ``WINDOW`` ago (Stripe keeps keys for at least 24 hours)
  and never answered, the call first looks the object up with ``find`` (by
  the recorded id, or by the metadata the flows stamp on every object) and
  only then sends again, with a new key.
* The same name with other parameters (a changed amount for ``order_42``)
  raises ``CallConflict``: never a silent replay of the old call, never a
  second object.
* A refusal Stripe gives for good (a decline, an invalid request) is
  recorded and raised again for the same call without calling; a retryable
  failure (network, 429 and ``lock_timeout``, 409, 5xx: the SDK already
  retried it ``max_network_retries`` times with the same key) leaves the
  call pending for the next try; a refused key (401, 403) is logged as a
  configuration alarm (``stripe_key_refused``) and counted.
* What Stripe returned is written to the mirror at once, stamped with the
  time of the answer: a read right after the call sees it, and older
  webhooks arriving later do not roll it back.

Calls are made from the application's own code (a request handler, a job),
not from inside an event handler: on SQLite the event's transaction holds the
database's one write lock (``SecondWriteTransaction``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import Connection, Table, select, update

from stripeline.db import models
from stripeline.db.engine import connect, insert_for, read
from stripeline.errors import (
    CallConflict,
    ModeMismatch,
    StripeAPIError,
    StripeAuthenticationError,
    StripeCardError,
    StripeConnectionError,
    StripeIdempotencyError,
    StripeInvalidRequestError,
    StripePermissionError,
    StripeRateLimitError,
    StripeServerError,
)
from stripeline.flows._twin import in_thread
from stripeline.inbox import utcnow
from stripeline.mirror._store import (
    apply_states,
    held_marker,
    lock_objects,
    mirrorable,
    object_key,
    state_from_fetch,
)

if TYPE_CHECKING:
    from stripeline.app import Stripeline
    from stripeline.gateway import StripeClient

__all__ = [
    "MAX_KEY_LENGTH",
    "WINDOW",
    "CallRecord",
    "Calls",
    "as_dict",
    "check_account",
    "idempotency_key",
    "params_hash",
    "recorded_error",
    "request_options",
    "write_to_mirror",
]

log = structlog.get_logger("stripeline.calls")

calls = cast(Table, models.Call.__table__)

#: How long a sent key is trusted to be remembered by Stripe (it keeps them
#: for at least 24 hours); past it, the object is looked up before a resend.
WINDOW = timedelta(hours=23)
#: The longest ``<action>:<reference>`` (the idempotency key adds ~25 characters
#: and Stripe takes up to 255).
MAX_KEY_LENGTH = 200

_ERRORS: dict[str, type[StripeAPIError]] = {
    cls.__name__: cls
    for cls in (
        StripeAPIError,
        StripeAuthenticationError,
        StripeCardError,
        StripeConnectionError,
        StripeIdempotencyError,
        StripeInvalidRequestError,
        StripePermissionError,
        StripeRateLimitError,
        StripeServerError,
    )
}

Send = Callable[["StripeClient", str], Any]
Find = Callable[["StripeClient"], Any]
Admit = Callable[[Connection], None]


@dataclass(frozen=True)
class CallRecord:
    """One row of ``stripeline_calls`` (``Calls.record``)."""

    account: str
    key: str
    livemode: bool
    params_hash: str
    idempotency_key: str
    generation: int
    status: str
    object_type: str | None
    object_id: str | None
    result: dict[str, Any] | None
    error_type: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``params`` as canonical JSON (sorted keys)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(key: str, digest: str, generation: int = 1) -> str:
    """The ``Idempotency-Key`` for call ``key`` with parameters ``digest``."""
    suffix = "" if generation == 1 else f":{generation}"
    return f"sl:{key}:{digest[:16]}{suffix}"


def check_account(account: str | None) -> None:
    """Refuse an ``account`` that is not a connected account's id (None or
    "" is the platform): a flow's ``account=`` is checked before any call.

    Raises:
        ValueError: ``account`` is not an ``acct_…`` id.
    """
    if account is None or account == "":
        return
    if not isinstance(account, str) or not account.startswith("acct_"):
        raise ValueError("account is a connected account's id (acct_…), or None for the platform")


def request_options(account: str | None, key: str | None = None) -> Any:
    """The SDK's request options of a flow's call: the idempotency key, and
    ``Stripe-Account`` for a connected account (None or "": the platform)."""
    options: dict[str, str] = {}
    if key is not None:
        options["idempotency_key"] = key
    if account:
        options["stripe_account"] = account
    return options


def as_dict(obj: Any) -> dict[str, Any]:
    """A plain dict of what the SDK returned (a ``StripeObject``, or a dict)."""
    if obj is None:
        return {}
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return cast(dict[str, Any], to_dict(for_json=True))
    return dict(obj)


def _error_fields(exc: StripeAPIError) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": exc.message,
        "code": exc.code,
        "http_status": exc.http_status,
        "request_id": exc.request_id,
        "retryable": exc.retryable,
        "decline_code": getattr(exc, "decline_code", None),
        "param": getattr(exc, "param", None),
    }


def recorded_error(fields: Mapping[str, Any]) -> StripeAPIError:
    """The error a failed call recorded, raised again for the same call."""
    cls = _ERRORS.get(str(fields.get("type")), StripeAPIError)
    common: dict[str, Any] = {
        "request_id": fields.get("request_id"),
        "http_status": fields.get("http_status"),
        "code": fields.get("code"),
        "retryable": bool(fields.get("retryable")),
    }
    message = fields.get("message")
    if cls is StripeCardError:
        return StripeCardError(message, decline_code=fields.get("decline_code"), **common)
    if cls is StripeInvalidRequestError:
        return StripeInvalidRequestError(message, param=fields.get("param"), **common)
    return cls(message, **common)


def _record(row: Any) -> CallRecord:
    return CallRecord(**{name: getattr(row, name) for name in CallRecord.__dataclass_fields__})


class Calls:
    """The ledger of outgoing writes to Stripe (``app.calls``); see the module."""

    def __init__(self, app: Stripeline) -> None:
        self._app = app
        self._client: StripeClient | None = None
        self._lock = threading.Lock()

    # -- what the flows use -------------------------------------------------

    @property
    def client(self) -> StripeClient:
        """The ``StripeClient`` writes go through (``max_network_retries`` set
        explicitly). Raises ``ConfigError`` when no key is set."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from stripeline.gateway import make_client

                    self._client = make_client(
                        self._app.settings,
                        max_network_retries=self._app.settings.max_network_retries,
                    )
        return self._client

    @property
    def livemode(self) -> bool:
        return self._app.settings.livemode

    def check_mode(self, *object_ids: str | None, account: str | None = None) -> None:
        """Refuse, before any call, an object id the mirror knows from the other
        mode (a test object given to a live deployment, or the reverse).

        Raises:
            ModeMismatch: the mirror holds one of the ids with the other mode.
        """
        wanted = [object_id for object_id in object_ids if object_id]
        if not wanted:
            return
        livemode = self.livemode
        mirror = self._app.mirror.for_account(account)
        for object_id in wanted:
            held = mirror.get(object_id)
            if held is not None and "livemode" in held and bool(held["livemode"]) != livemode:
                raise ModeMismatch(
                    f"{object_id} is a {'live' if held['livemode'] else 'test'}-mode object and "
                    f"this deployment runs in {'live' if livemode else 'test'} mode (its key's); "
                    "nothing was sent to Stripe"
                )

    def record(
        self, action: str, reference: str, *, account: str | None = None
    ) -> CallRecord | None:
        """The recorded call ``<action>:<reference>``, or None."""
        key = _key(action, reference)

        def fetch(conn: Connection) -> CallRecord | None:
            row = conn.execute(
                select(calls).where(calls.c.account == (account or ""), calls.c.key == key)
            ).first()
            return None if row is None else _record(row)

        return read(self._app.engine, fetch)

    def run(
        self,
        action: str,
        reference: str,
        params: Mapping[str, Any],
        send: Send,
        *,
        find: Find | None = None,
        account: str | None = None,
        admit: Admit | None = None,
        lock: str | None = None,
    ) -> dict[str, Any]:
        """Make the call ``<action>:<reference>`` with ``params`` exactly once;
        return the object Stripe answered with (as a dict).

        ``send(client, idempotency_key)`` makes the SDK call; ``find(client)``
        returns the object if it exists already (or None), used for a call
        first sent longer ago than Stripe keeps idempotency keys.

        ``admit(conn)`` runs once, when the call is first recorded, in the
        transaction that records it, and may refuse it by raising (nothing is
        then recorded or sent): a refund checks there what is left to refund,
        counting the refund calls recorded before it. Calls that name the same
        ``lock`` are admitted one at a time, across processes (PostgreSQL: an
        advisory lock; SQLite: the one write lock).

        Raises:
            CallConflict: the same call was made before with other parameters.
            StripeAPIError: Stripe refused the call (for good: recorded, and
                raised again for the same call; or for now: ``retryable``).
        """
        key = _key(action, reference)
        account_key = account or ""
        digest = params_hash(params)
        row = self._take(account_key, key, digest, admit=admit, lock=lock)
        if row.params_hash != digest:
            raise CallConflict(
                f"{key} was already called with other parameters; a changed call needs "
                "a new reference (nothing was sent to Stripe)",
                key=key,
            )
        if row.status == "done" and row.result is not None:
            return row.result
        if row.status == "failed" and row.result is not None:
            raise recorded_error(row.result.get("error") or {})
        idem = row.idempotency_key
        if row.sent_at is not None and utcnow() - row.sent_at > WINDOW:
            found = None
            if find is not None:
                found = self._send(account_key, key, find, recording=False)
            if found:
                return self._done(account_key, key, as_dict(found))
            idem = self._next_generation(row)
        first_sent = self._mark_sent(account_key, key)
        answer = self._send(account_key, key, lambda client: send(client, idem))
        # An idempotent replay is the state of the first answer, not today's:
        # it goes to the mirror stamped with the time it was first sent.
        replayed = _header(answer, "idempotent-replayed") == "true"
        return self._done(account_key, key, as_dict(answer), as_of=first_sent if replayed else None)

    run_async = in_thread(run)

    # -- the ledger -----------------------------------------------------------

    def _take(
        self, account: str, key: str, digest: str, *, admit: Admit | None, lock: str | None
    ) -> CallRecord:
        now = utcnow()
        insert = insert_for(self._app.engine)
        statement = (
            insert(calls)
            .values(
                account=account,
                key=key,
                livemode=self.livemode,
                params_hash=digest,
                idempotency_key=idempotency_key(key, digest),
                generation=1,
                status="pending",
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[calls.c.account, calls.c.key])
        )
        this = select(calls).where(calls.c.account == account, calls.c.key == key)
        with connect(self._app.engine) as conn:
            row = conn.execute(this).first()
            if row is None:
                if lock is not None:
                    lock_objects(conn, [object_key(account, f"call-lock:{lock}")])
                    row = conn.execute(this).first()
                if row is None:
                    if admit is not None:
                        admit(conn)
                    conn.execute(statement)
                    row = conn.execute(this).one()
        return _record(row)

    def _update(self, account: str, key: str, **values: Any) -> None:
        with connect(self._app.engine) as conn:
            conn.execute(
                update(calls)
                .where(calls.c.account == account, calls.c.key == key)
                .values(updated_at=utcnow(), **values)
            )

    def _mark_sent(self, account: str, key: str) -> datetime:
        """Count an attempt; return when this generation's key was first sent."""
        now = utcnow()
        with connect(self._app.engine) as conn:
            conn.execute(
                update(calls)
                .where(calls.c.account == account, calls.c.key == key)
                .values(attempts=calls.c.attempts + 1, updated_at=now)
            )
            conn.execute(
                update(calls)
                .where(calls.c.account == account, calls.c.key == key, calls.c.sent_at.is_(None))
                .values(sent_at=now)
            )
            first = conn.execute(
                select(calls.c.sent_at).where(calls.c.account == account, calls.c.key == key)
            ).scalar_one()
        return cast(datetime, first)

    def _next_generation(self, row: CallRecord) -> str:
        generation = row.generation + 1
        idem = idempotency_key(row.key, row.params_hash, generation)
        self._update(
            row.account, row.key, generation=generation, idempotency_key=idem, sent_at=None
        )
        log.warning(
            "stripe_call_resent",
            action="stripe_call_resent",
            call=row.key,
            generation=generation,
            reason="first sent longer ago than Stripe keeps idempotency keys; not found",
        )
        return idem

    def _send(
        self,
        account: str,
        key: str,
        call: Callable[[StripeClient], Any],
        *,
        recording: bool = True,
    ) -> Any:
        from stripeline.gateway.client import stripe_errors

        started = time.perf_counter()
        try:
            with stripe_errors():
                return call(self.client)
        except StripeAPIError as exc:
            if recording:
                self._failed(account, key, exc)
            raise
        finally:
            self._app.metrics.stripe_call_seconds.labels(action=_action(key)).observe(
                time.perf_counter() - started
            )

    def _failed(self, account: str, key: str, exc: StripeAPIError) -> None:
        fields = _error_fields(exc)
        refused_key = isinstance(exc, StripeAuthenticationError | StripePermissionError)
        for_good = not (exc.retryable or refused_key or isinstance(exc, StripeConnectionError))
        outcome = "refused" if for_good else ("key_refused" if refused_key else "retryable")
        self._app.metrics.stripe_calls.labels(action=_action(key), outcome=outcome).inc()
        values: dict[str, Any] = {
            "error_type": fields["type"],
            "error_code": (exc.code or "")[:64] or None,
            "error_message": exc.message[:2000],
        }
        if for_good:
            values.update(status="failed", result={"error": fields})
        self._update(account, key, **values)
        if refused_key:
            log.error(
                "stripe_key_refused",
                action="stripe_key_refused",
                call=key,
                http_status=exc.http_status,
                request_id=exc.request_id,
                error=exc.message[:300],
                fix="check STRIPE_SECRET_KEY (restricted keys need write access to this resource)",
            )
        else:
            log.warning(
                "stripe_call_failed",
                action="stripe_call_failed",
                call=key,
                outcome=outcome,
                code=exc.code,
                http_status=exc.http_status,
                request_id=exc.request_id,
            )

    def _done(
        self, account: str, key: str, data: dict[str, Any], *, as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Record the answer and write it to the mirror, in one transaction
        (``as_of``: the time the state is from, for a replayed answer)."""
        now = utcnow()
        object_id = data.get("id") if isinstance(data.get("id"), str) else None
        object_type = data.get("object") if isinstance(data.get("object"), str) else None
        with connect(self._app.engine) as conn:
            conn.execute(
                update(calls)
                .where(calls.c.account == account, calls.c.key == key)
                .values(
                    status="done",
                    object_id=object_id,
                    object_type=object_type,
                    result=data,
                    error_type=None,
                    error_code=None,
                    error_message=None,
                    updated_at=now,
                )
            )
            if object_id and object_type and mirrorable(data):
                write_to_mirror(
                    conn, data, account=account, livemode=self.livemode, now=now, as_of=as_of
                )
        self._app.metrics.stripe_calls.labels(action=_action(key), outcome="done").inc()
        return data


def write_to_mirror(
    conn: Connection,
    data: dict[str, Any],
    *,
    account: str,
    livemode: bool,
    now: datetime,
    as_of: datetime | None = None,
) -> None:
    """Apply an object the API just returned to the mirror, stamped past what
    the mirror holds (the answer is the newest state there is).

    ``as_of``: the answer is an idempotent replay, the state of the time the
    call was first sent: it is stamped with that time and, like an event,
    never overwrites a newer state (a concurrent call's, or a webhook's)."""
    over = None if as_of is not None else held_marker(conn, data["object"], account, data["id"])
    state = state_from_fetch(
        data,
        object_type=data["object"],
        object_id=data["id"],
        account=account,
        livemode=bool(data.get("livemode", livemode)),
        fetched_at=int(as_of.timestamp()) if as_of is not None else int(time.time()),
        over=over,
    )
    apply_states(conn, [state], now=now)


def _header(obj: Any, name: str) -> str | None:
    """A header of the HTTP answer an SDK object came from, lower-cased name."""
    headers = getattr(getattr(obj, "last_response", None), "headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value).lower()
    return None


def _key(action: str, reference: str) -> str:
    if not action or not reference:
        raise ValueError("a call needs an action and a reference")
    key = f"{action}:{reference}"
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a call's action and reference are at most {MAX_KEY_LENGTH} characters")
    return key


def _action(key: str) -> str:
    """The action part of a key (``customer:create``), for metric labels."""
    return ":".join(key.split(":")[:2])
