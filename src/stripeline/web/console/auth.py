"""The console's sessions, CSRF tokens, passwords and sign-in rate limit.

A session is a cookie holding ``user``, ``role``, its expiry and a random
nonce, signed with HMAC-SHA256 under ``STRIPELINE_CONSOLE_SECRET``: nothing
is stored server-side, a changed byte or a past expiry is no session. The
CSRF token of a session is an HMAC of its nonce (so a form from another
session, or from no session, is refused). Passwords are argon2 hashes
(argon2-cffi): the password is never stored, logged or compared in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stripeline.settings import ConsoleUser

Role = Literal["admin", "read"]

SESSION_COOKIE = "stripeline_console"
LOGIN_COOKIE = "stripeline_console_login"
#: Outlives the session cookie by ``ENDED_GRACE_SECONDS`` and holds only the
#: session's signed expiry, so that the sign-in page can say "your session
#: expired" rather than show a bare form (it grants nothing).
ENDED_COOKIE = "stripeline_console_ended"
ENDED_GRACE_SECONDS = 7 * 86400

_hasher = PasswordHasher()
#: Verified against when the user is unknown, so that a wrong name costs the
#: same time as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for ``STRIPELINE_CONSOLE_USERS``."""
    return _hasher.hash(password)


def check_password(users: dict[str, ConsoleUser], name: str, password: str) -> ConsoleUser | None:
    """The user ``name`` if ``password`` is theirs, else None (same cost either way)."""
    user = users.get(name)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user."""

    user: str
    role: Role
    expires: int
    nonce: str

    @property
    def can_act(self) -> bool:
        return self.role == "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks the console's cookies and tokens with one secret."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"stripeline-console:" + secret.encode()).digest()

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{data}".encode(), hashlib.sha256).digest())

    def issue(self, user: str, role: Role, seconds: int, *, now: float | None = None) -> str:
        """A session cookie's value for ``user``, valid ``seconds`` from now."""
        now = time.time() if now is None else now
        body = _b64(
            json.dumps(
                {"u": user, "r": role, "e": int(now) + seconds, "n": secrets.token_urlsafe(16)},
                separators=(",", ":"),
            ).encode()
        )
        return f"{body}.{self._mac('session', body)}"

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie holds, None when absent, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(str(data["u"]), data["r"], int(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.role not in ("admin", "read"):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def ended_marker(self, expires: int) -> str:
        """The value of ``ENDED_COOKIE`` for a session ending at ``expires``."""
        return f"{expires}.{self._mac('ended', str(expires))}"

    def ended(self, marker: str | None, *, now: float | None = None) -> bool:
        """Whether ``marker`` (``ENDED_COOKIE``) is genuine and its session's end has passed."""
        if not marker or "." not in marker:
            return False
        expires, _, mac = marker.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(mac, self._mac("ended", expires)):
            return False
        return int(expires) <= (time.time() if now is None else now)

    def csrf(self, nonce: str) -> str:
        """The CSRF token of forms shown to the holder of ``nonce``."""
        return self._mac("csrf", nonce)

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of ``nonce`` (both present)."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.csrf(nonce))


class SignInLimiter:
    """At most ``limit`` failed sign-ins per client address and per user name
    within ``window`` seconds (in this process); then refused until the
    oldest failure leaves the window."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def blocked(self, client: str, user: str, *, now: float | None = None) -> bool:
        """Whether a sign-in from ``client`` as ``user`` is refused right now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(
                len(self._recent(key, now)) >= self.limit
                for key in (f"client:{client}", f"user:{user}")
            )

    def failed(self, client: str, user: str, *, now: float | None = None) -> None:
        """Count a failed sign-in."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 10_000:  # bounded: forget the quietest first
                self._failures.clear()
            for key in (f"client:{client}", f"user:{user}"):
                self._recent(key, now).append(now)
