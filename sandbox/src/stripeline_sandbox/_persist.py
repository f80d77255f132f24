"""Keeping a sandbox's state in a file across restarts (``Sandbox(state_file=…)``).

The file is JSON: the main key, the webhook secret, the clock's offset and
every account's objects and hidden state. It is written whole to a temporary
file beside it and renamed over it (a crash leaves the old file or the new
one, never half of one), readable by its owner only: it holds the keys.

What is not kept: faults, delivery modes, held and pending deliveries, rate
limits and request counts (they belong to a run, not to the account).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import threading
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from stripeline_sandbox._bank_accounts import TestBankAccount
from stripeline_sandbox._cards import TestCard
from stripeline_sandbox._state import SavedResponse, World

#: Bumped when the file's layout changes; an unknown version is refused.
FORMAT = 1

_TYPES: dict[str, type[Any]] = {
    "TestCard": TestCard,
    "TestBankAccount": TestBankAccount,
    "SavedResponse": SavedResponse,
}


class StateFileError(Exception):
    """The state file cannot be read as a sandbox's state."""


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, set | frozenset):
        return {"$set": sorted(_encode(v) for v in value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if is_dataclass(value) and not isinstance(value, type) and type(value).__name__ in _TYPES:
        return {"$" + type(value).__name__: _encode(asdict(value))}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in the state file")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$set":
            return {_decode(v) for v in inner}
        if tag == "$bytes":
            return base64.b64decode(inner)
        if tag.startswith("$") and tag[1:] in _TYPES:
            cls = _TYPES[tag[1:]]
            args = _decode(inner)
            for f in fields(cls):  # tuples were written as lists
                if isinstance(args.get(f.name), list):
                    args[f.name] = tuple(args[f.name])
            return cls(**args)
    return {k: _decode(v) for k, v in value.items()}


def dump(world: World, *, secret_key: str, webhook_secret: str) -> dict[str, Any]:
    """The state to keep, as JSON-ready data (each account read under its lock)."""
    accounts = []
    for account in world.accounts():
        with account.lock:
            accounts.append(
                {
                    "key": account.key,
                    "objects": _encode(account.objects),
                    "kinds": _encode(account.kinds),
                    "internal": _encode(account.internal),
                    "idempotency": _encode(account.idempotency),
                }
            )
    return {
        "format": FORMAT,
        "secret_key": secret_key,
        "webhook_secret": webhook_secret,
        "clock_offset": world.clock.offset,
        "accounts": accounts,
    }


def read(path: Path) -> dict[str, Any] | None:
    """The state kept in ``path``; None when there is no such file yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read the sandbox state file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateFileError(f"the sandbox state file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateFileError(
            f"the sandbox state file {path} is not a state this sandbox writes "
            f"(format {data.get('format') if isinstance(data, dict) else '?'}, expected {FORMAT}); "
            "move it away to start afresh"
        )
    return data


def restore(world: World, data: dict[str, Any]) -> None:
    """Put the accounts of ``data`` (from ``read``) into ``world``."""
    try:
        for saved in data["accounts"]:
            account = world.account(str(saved["key"]))
            with account.lock:
                account.objects = _decode(saved["objects"])
                account.kinds = _decode(saved["kinds"])
                account.internal = _decode(saved["internal"])
                account.idempotency = _decode(saved.get("idempotency") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"the sandbox state file is damaged: {exc!r}") from exc


def write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, separators=(",", ":"))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Keeper:
    """Writes the world's state to a file when it changed, every ``interval``
    seconds, and once more on ``stop``."""

    def __init__(
        self,
        path: Path,
        world: World,
        *,
        secret_key: str,
        webhook_secret: str,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._world = world
        self._secrets = {"secret_key": secret_key, "webhook_secret": webhook_secret}
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: tuple[Any, ...] | None = None

    def _fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever an API call or a control call may have changed
        something (every API call is counted, every control call that makes
        or moves something shows in the objects or the clock)."""
        counted = 0
        for account in self._world.accounts():
            with account.lock:
                counted += sum(account.requests.values()) + len(account.objects)
                counted += len(account.internal)
        return (counted, self._world.clock.offset)

    def save(self, *, force: bool = False) -> bool:
        """Write the state if it changed since the last write; True if written."""
        fingerprint = self._fingerprint()
        if not force and fingerprint == self._written:
            return False
        write(self.path, dump(self._world, **self._secrets))
        self._written = fingerprint
        return True

    def start(self) -> None:
        if self._thread is None:
            self._written = self._fingerprint()
            self._thread = threading.Thread(target=self._run, name="sandbox-state", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError):  # a full disk: try again next time
                self.save()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.save(force=True)
