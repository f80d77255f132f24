"""Sandbox state: one ``Account`` per secret key, inside one ``World``.

Objects are plain JSON-shaped dicts (exactly what the API returns), kept by
id; each object type keeps its ids in creation order for listing. What
Stripe knows but does not show (a card's test behaviour, an endpoint's
secret) lives in ``Account.internal`` so it can never leak into a response.
Every write to an account happens under its lock, one request at a time.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stripeline_sandbox._clock import SandboxClock
from stripeline_sandbox._ids import publishable_key_for

if TYPE_CHECKING:
    from stripeline_sandbox._delivery import Deliverer, DeliveryMode
    from stripeline_sandbox._faults import Fault
    from stripeline_sandbox._routes import Call

Obj = dict[str, Any]
PaymentOutcomeHandler = Callable[["Call", Obj], None]

#: The API version of the installed SDK (checked by a test); events carry it.
API_VERSION = "2026-10-28.endive"
#: How many of an account's newest API requests ``Account.request_log`` keeps.
REQUEST_LOG_LENGTH = 10_000


@dataclass
class SavedResponse:
    """An Idempotency-Key's first answer, replayed while the key lives."""

    fingerprint: str
    status: int
    body: bytes
    request_id: str
    created: int


@dataclass
class Account:
    """Everything one ``sk_test_…`` key sees."""

    key: str
    #: The ``pk_test_…`` key of the account (what Stripe.js is given).
    publishable_key: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    objects: dict[str, Obj] = field(default_factory=dict)
    kinds: dict[str, list[str]] = field(default_factory=dict)
    internal: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[str, SavedResponse] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    rate_limit: float = 0.0
    recent_requests: deque[float] = field(default_factory=deque)
    #: Requests answered 429 by the rate limit (``Sandbox.rate_limited_count``).
    rate_limited: int = 0
    #: API requests by ``"METHOD /route/{pattern}"`` (``Sandbox.request_counts``).
    requests: Counter[str] = field(default_factory=Counter)
    #: The newest API requests made with this key, as (method, path, the
    #: ``Stripe-Account`` or ``Stripe-Context`` they acted for) (``Sandbox.request_log``).
    request_log: deque[tuple[str, str, str | None]] = field(
        default_factory=lambda: deque(maxlen=REQUEST_LOG_LENGTH)
    )
    delivery: DeliveryMode | None = None
    held: list[Any] = field(default_factory=list)
    attempts: list[Any] = field(default_factory=list)
    #: For a Connect account (keyed by its ``acct_…`` id): the platform's account.
    platform: Account | None = None

    @property
    def id(self) -> str:
        """The ``acct_…`` id Stripe names the account by (``GET /v1/account``)."""
        if self.key.startswith("acct_"):  # a connected account is keyed by its id
            return self.key
        return "acct_" + self.publishable_key[8:24]

    def add(self, obj: Obj) -> Obj:
        """Store a new object; it is listed after every older one of its type."""
        self.objects[obj["id"]] = obj
        self.kinds.setdefault(obj["object"], []).append(obj["id"])
        return obj

    def remove(self, object_id: str) -> None:
        obj = self.objects.pop(object_id, None)
        if obj is not None:
            ids = self.kinds.get(obj["object"], [])
            if object_id in ids:
                ids.remove(object_id)

    def find(self, kind: str, object_id: str) -> Obj | None:
        obj = self.objects.get(object_id)
        if obj is None or obj.get("object") != kind:
            return None
        return obj

    def all(self, kind: str) -> list[Obj]:
        """Objects of ``kind``, newest first (Stripe's list order)."""
        ids = self.kinds.get(kind, [])
        return [self.objects[i] for i in reversed(ids)]

    def hidden(self, object_id: str) -> dict[str, Any]:
        return self.internal.setdefault(object_id, {})


class World:
    """All accounts of one sandbox, its clock and its webhook deliverer."""

    def __init__(
        self,
        clock: SandboxClock,
        deliverer: Deliverer,
        payment_outcome_handlers: Sequence[PaymentOutcomeHandler] = (),
    ) -> None:
        self.clock = clock
        self.deliverer = deliverer
        #: Called with (request, payment_intent) when a PaymentIntent succeeds or
        #: its bank debit fails, in order (``_app.PAYMENT_OUTCOME_HANDLERS``).
        self.payment_outcome_handlers = tuple(payment_outcome_handlers)
        #: Where hosted pages (Checkout, billing portal) answer; None: Stripe's own hosts.
        self.public_url: str | None = None
        self._accounts: dict[str, Account] = {}
        self._publishable: dict[str, Account] = {}
        self._lock = threading.Lock()

    def accounts(self) -> list[Account]:
        """Every account made so far."""
        with self._lock:
            return list(self._accounts.values())

    def account(self, key: str) -> Account:
        with self._lock:
            account = self._accounts.get(key)
            if account is None:
                account = Account(key, publishable_key_for(key))
                self._accounts[key] = account
                self._publishable[account.publishable_key] = account
            return account

    def account_for_publishable(self, key: str) -> Account | None:
        """The account whose publishable key is ``key`` (None: no such account yet)."""
        with self._lock:
            return self._publishable.get(key)
