"""Webhook delivery: signed as Stripe signs, in a background thread, with retries.

Each event goes to every enabled endpoint of its account whose
``enabled_events`` match, as ``POST`` with ``Stripe-Signature: t=…,v1=…``
computed by ``_signature.sign`` with the endpoint's secret and
a fresh real-time ``t`` on every attempt. Only a 2xx is a success; anything
else (status, connection error, timeout) is retried after each of
``retry_delays`` in turn, then given up. A ``DeliveryMode`` per account makes
deliveries duplicated, delayed, or held and then released in any order.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stripeline_sandbox._event_destinations import (
    DESTINATION,
    THIN_EVENT,
    destination_targets,
    notification,
    snapshot_mode,
)
from stripeline_sandbox._event_destinations import target as destination_target
from stripeline_sandbox._objects import copy
from stripeline_sandbox._signature import sign
from stripeline_sandbox._state import Account, Obj

#: Seconds before each retry (Stripe's sandbox retries 3 times, over hours;
#: tests want seconds, so the sandbox default is short and configurable).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 30.0)
DEFAULT_DELIVERY_TIMEOUT = 10.0
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


@dataclass
class DeliveryMode:
    """How an account's events are delivered (see ``Sandbox.set_delivery``)."""

    #: Each delivery is sent this many times (at-least-once, for dedup tests).
    duplicate: int = 1
    #: Seconds to wait before the first attempt.
    delay: float = 0.0
    #: Keep deliveries until ``flush`` releases them in a chosen order.
    hold: bool = False


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as the sandbox saw it."""

    event_id: str
    event_type: str
    endpoint_id: str
    attempt: int
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    account: Account = field(compare=False)
    endpoint_id: str = field(compare=False)
    event_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    #: The connected account whose event a platform's Connect endpoint receives
    #: (None: the event is the endpoint's own account's).
    source: Account | None = field(compare=False, default=None)


def default_version(account: Account) -> str | None:
    """The account's default API version (``_versions.default_version``)."""
    from stripeline_sandbox._versions import default_version as found

    return found(account)


def _in_version(account: Account, event: Obj, version: Any) -> Obj:
    """The event as an endpoint created with an older ``api_version`` receives it:
    ``data.object`` in that version's shapes (``_versions``)."""
    from stripeline_sandbox._versions import renderer

    render = renderer(account, str(version) if version else None)
    if render is None:
        return event
    shown: Obj = copy(event)
    shown["api_version"] = str(version)
    shown["data"]["object"] = render(shown["data"]["object"])
    return shown


def _wants(endpoint: Obj, event_type: str) -> bool:
    if endpoint.get("status") != "enabled":
        return False
    enabled = endpoint.get("enabled_events") or []
    return "*" in enabled or event_type in enabled


class Deliverer:
    """The background thread that sends webhooks."""

    def __init__(
        self,
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        timeout: float = DEFAULT_DELIVERY_TIMEOUT,
    ) -> None:
        self.retry_delays = retry_delays
        self.timeout = timeout
        self._heap: list[_Job] = []
        self._seq = 0
        self._running = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="sandbox-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def enqueue(self, account: Account, events: list[Obj]) -> None:
        """Schedule ``events`` for every matching endpoint of ``account``."""
        mode = account.delivery or DeliveryMode()
        jobs: list[_Job] = []
        platform = account.platform
        connect: list[Obj] = []
        platform_destinations: list[Obj] = []
        if platform is not None:
            # A connected account's events go to the platform's Connect endpoints
            # (and to its Event Destinations with ``@accounts``).
            with platform.lock:
                connect = [
                    e
                    for e in reversed(platform.all("webhook_endpoint"))
                    if platform.internal.get(e["id"], {}).get("connect")
                ]
                platform_destinations = [dict(d) for d in reversed(platform.all(DESTINATION))]
        with account.lock:
            # A Connect endpoint gets its connected accounts' events, not its own account's.
            endpoints = [
                e
                for e in account.all("webhook_endpoint")
                if not account.internal.get(e["id"], {}).get("connect")
            ]
            for event in events:
                thin = event.get("object") == THIN_EVENT
                targets = [
                    (e["id"], event["id"])
                    for e in reversed(endpoints)
                    if not thin and _wants(e, event["type"])
                ]
                # Event Destinations: snapshot ones get the event, thin ones its thin twin.
                targets.extend(destination_targets(account, event))
                platform_targets = [
                    e["id"] for e in connect if not thin and _wants(e, event["type"])
                ]
                thin_targets: list[tuple[str, str]] = []
                if platform_destinations:
                    for destination_id, event_id in destination_targets(
                        account, event, platform_destinations
                    ):
                        if event_id == event["id"]:  # the event itself
                            platform_targets.append(destination_id)
                        else:  # its thin twin
                            thin_targets.append((destination_id, event_id))
                if not thin:
                    event["pending_webhooks"] = sum(e == event["id"] for _, e in targets) + len(
                        platform_targets
                    )
                for target_id, event_id in targets:
                    for _ in range(max(1, mode.duplicate)):
                        jobs.append(_Job(0.0, 0, account, target_id, event_id))
                platform_jobs = [(e, event["id"]) for e in platform_targets] + thin_targets
                for endpoint_id, event_id in platform_jobs:
                    assert platform is not None  # noqa: S101 - connect implies a platform
                    for _ in range(max(1, mode.duplicate)):
                        jobs.append(_Job(0.0, 0, platform, endpoint_id, event_id, source=account))
            if mode.hold:
                account.held.extend(jobs)
                return
        self._push(jobs, delay=mode.delay)

    def flush(self, account: Account, order: str = "fifo", seed: int | None = None) -> int:
        """Release held deliveries in ``order`` (fifo, reverse, shuffle); return how many."""
        with account.lock:
            jobs, account.held = account.held, []
        if order == "reverse":
            jobs.reverse()
        elif order == "shuffle":
            random.Random(seed).shuffle(jobs)  # noqa: S311 - test ordering, not security
        elif order != "fifo":
            raise ValueError(f"unknown order {order!r}")
        mode = account.delivery or DeliveryMode()
        self._push(jobs, delay=mode.delay)
        return len(jobs)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or being sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _push(self, jobs: list[_Job], *, delay: float) -> None:
        due = time.monotonic() + delay
        with self._cond:
            for job in jobs:
                self._seq += 1
                job.due, job.seq = due, self._seq
                heapq.heappush(self._heap, job)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        wait = self._heap[0].due - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                job = heapq.heappop(self._heap)
                self._running += 1
            try:
                self._attempt(job)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _attempt(self, job: _Job) -> None:
        account = job.account
        source = job.source or account
        with account.lock:
            endpoint = account.objects.get(job.endpoint_id)
            if endpoint is None:
                return
            if endpoint.get("object") == "webhook_endpoint":
                if endpoint.get("status") != "enabled":
                    return
                url = str(endpoint["url"])
                secret = str(account.hidden(job.endpoint_id)["secret"])
                version = endpoint.get("api_version") or default_version(account)
            else:  # an Event Destination
                found = destination_target(account, job.endpoint_id)
                if found is None:
                    return
                url, secret = found
                version = default_version(account)
        with source.lock:
            event = source.objects.get(job.event_id)
            if event is None:
                return
            if event.get("object") == THIN_EVENT:
                shown = notification(event, snapshot_mode(source))
            else:
                shown = _in_version(source, event, version)
            payload = json.dumps(shown, indent=2).encode()
            event_type = str(event["type"])
        status, error = self._post(url, payload, secret)
        attempt = Attempt(
            job.event_id, event_type, job.endpoint_id, job.attempt, status, error, time.time()
        )
        with account.lock:
            account.attempts.append(attempt)
        if attempt.ok:
            if event.get("object") == THIN_EVENT:
                return  # thin events keep no pending_webhooks count
            with source.lock:
                delivered: set[str] = source.hidden(job.event_id).setdefault("delivered", set())
                if job.endpoint_id not in delivered:
                    delivered.add(job.endpoint_id)
                    event["pending_webhooks"] = max(0, int(event["pending_webhooks"]) - 1)
            return
        if job.attempt <= len(self.retry_delays):
            retry = _Job(
                0.0, 0, account, job.endpoint_id, job.event_id, job.attempt + 1, job.source
            )
            self._push([retry], delay=self.retry_delays[job.attempt - 1])

    def _post(self, url: str, payload: bytes, secret: str) -> tuple[int | None, str | None]:
        parts = urlsplit(url)
        connection_class: Any = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(payload, secret, int(time.time())),
        }
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout)
        try:
            connection.request("POST", target, body=payload, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, None
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
