"""One ``Settings`` object, read from the environment and validated at start.

Stripe's own names are read as they are (``STRIPE_SECRET_KEY``,
``STRIPE_WEBHOOK_SECRET``, ``STRIPE_CONNECT_WEBHOOK_SECRET``); everything of
ours carries the ``STRIPELINE_`` prefix. ``load_settings()`` turns every
problem into one ``ConfigError`` whose message says what to fix. Secrets are
``SecretStr``: they never show in a repr, a log line or an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from stripeline.errors import ConfigError

Mode = Literal["test", "live"]

DEFAULT_DATABASE_URL = "sqlite:///./stripeline.db"
DEFAULT_BODY_LIMIT = 2 * 1024 * 1024
DEFAULT_TOLERANCE = 300
#: Seconds to wait before attempt 2, 3, …; the last value repeats up to max_attempts.
DEFAULT_RETRY_SCHEDULE = (10, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
DEFAULT_MAX_ATTEMPTS = 10

KEY_PATTERN = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]{8,}$")
WEBHOOK_SECRET_PATTERN = re.compile(r"^whsec_[A-Za-z0-9+/=_-]{8,}$")


def key_mode(key: str) -> Mode:
    """``test`` or ``live``, from a well-formed secret or restricted key."""
    return "live" if "_live_" in key[:8] else "test"


def database_url_problem(url: str) -> str | None:
    """What is wrong with a ``STRIPELINE_DATABASE_URL`` (None: nothing).

    Parsed as the engine will parse it, so that a URL no engine can be made
    of (a port that is not a number, say) is a configuration error at start,
    not a traceback in the first command that connects. The URL itself is
    never quoted: it may hold a password.
    """
    if not url.startswith(("sqlite", "postgresql", "postgres")):
        return "STRIPELINE_DATABASE_URL must be a sqlite:/// or postgresql:// URL"
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return (
            "STRIPELINE_DATABASE_URL cannot be parsed: expected sqlite:///path/to/file.db or "
            "postgresql://user:password@host:port/database (the port a number)"
        )
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        return "STRIPELINE_DATABASE_URL must be a sqlite:/// or postgresql:// URL"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return "STRIPELINE_DATABASE_URL has a port out of range: expected 1 to 65535"
    return None


def sqlite_files_problem(url: str) -> str | None:
    """What keeps this process from writing a SQLite database (None: nothing).

    The database file, its directory and its ``-wal``/``-shm`` files, where
    they exist, must be readable and writable by this process. SQLite maps
    ``-shm`` into memory: a write-protected one does not fail with an error
    but kills the process (SIGBUS), so it is refused at start, naming the
    file and the fix. A file or directory that does not exist yet is left to
    SQLite (it creates the file; it reports a missing directory).
    """
    if not url.startswith("sqlite"):
        return None
    try:
        database = make_url(url).database
    except (ArgumentError, ValueError):
        return None  # database_url_problem says what is wrong
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    directory = path.parent
    if directory.is_dir() and not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        return (
            f"the SQLite database's directory {directory} is not writable by this process "
            "(SQLite creates its -wal and -shm files there): give the user running "
            "stripeline write access to it"
        )
    for file in (path, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return (
                f"the SQLite file {file} is not readable and writable by this process: "
                "give the user running stripeline read and write access to it "
                "(chown or chmod u+rw)"
            )
    return None


#: The shortest shared secret an Event Grid endpoint takes.
MIN_EVENT_GRID_SECRET_LENGTH = 16


def _split_secrets(raw: SecretStr | None) -> tuple[SecretStr, ...]:
    if raw is None:
        return ()
    return tuple(
        SecretStr(part.strip()) for part in raw.get_secret_value().split(",") if part.strip()
    )


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """One entry of ``STRIPELINE_CONSOLE_USERS``."""

    name: str
    #: ``admin`` (sees and acts) or ``read`` (sees only).
    role: Literal["admin", "read"]
    #: An argon2 hash (``$argon2id$…``), never the password.
    password_hash: str = field(repr=False)


_USER_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


def parse_console_users(raw: str) -> dict[str, ConsoleUser]:
    """``name:role:hash`` entries separated by whitespace or ``;``, by name.

    Raises:
        ValueError: an entry is malformed (the message never quotes a hash).
    """
    users: dict[str, ConsoleUser] = {}
    for i, entry in enumerate(re.split(r"[\s;]+", raw.strip()), start=1):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, password_hash = rest.partition(":")
        if not _USER_NAME.match(name):
            raise ValueError(
                f"STRIPELINE_CONSOLE_USERS entry {i}: expected name:role:hash, the name "
                "made of letters, digits and _.@+-"
            )
        if role not in ("admin", "read"):
            raise ValueError(f"STRIPELINE_CONSOLE_USERS entry {i}: the role must be admin or read")
        if not password_hash.startswith("$argon2"):
            raise ValueError(
                f"STRIPELINE_CONSOLE_USERS entry {i}: the password must be an argon2 hash "
                "($argon2id$…), as `stripeline console hash-password` prints it"
            )
        if name in users:
            raise ValueError(f"STRIPELINE_CONSOLE_USERS entry {i}: {name!r} is named twice")
        users[name] = ConsoleUser(name, role, password_hash)  # type: ignore[arg-type]
    if not users:
        raise ValueError("STRIPELINE_CONSOLE_USERS is set but names nobody")
    return users


def console_problem(settings: Settings) -> str | None:
    """What is wrong with the console's settings (None: nothing, on or off).

    The console is on when ``STRIPELINE_CONSOLE_SECRET`` and a way to sign in
    (users, or a trusted header with its proxies) are set; half a
    configuration is an error at start, never a console that lets anyone in.
    """
    secret = settings.console_secret.get_secret_value() if settings.console_secret else None
    users = settings.console_users.get_secret_value() if settings.console_users else None
    header = settings.console_trusted_header
    if secret is None:
        if users or header:
            return (
                "the console needs STRIPELINE_CONSOLE_SECRET (32 or more random characters) "
                "to sign its cookies: set it, or unset STRIPELINE_CONSOLE_USERS and "
                "STRIPELINE_CONSOLE_TRUSTED_HEADER"
            )
        return None
    if len(secret) < 32:
        return "STRIPELINE_CONSOLE_SECRET must be 32 or more characters"
    if header is not None and not settings.console_trusted_proxies:
        return (
            "STRIPELINE_CONSOLE_TRUSTED_HEADER needs STRIPELINE_CONSOLE_TRUSTED_PROXIES: "
            "the addresses of the proxies allowed to set it"
        )
    if users:
        try:
            parse_console_users(users)
        except ValueError as exc:
            return str(exc)
    elif header is None:
        return (
            "STRIPELINE_CONSOLE_SECRET is set but nobody can sign in: set "
            "STRIPELINE_CONSOLE_USERS or STRIPELINE_CONSOLE_TRUSTED_HEADER"
        )
    return None


class Settings(BaseSettings):
    """Everything stripeline reads from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="STRIPELINE_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    stripe_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_SECRET_KEY", "stripe_secret_key")
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secret"),
        description="One or several whsec_ secrets, comma-separated (rotation).",
    )
    stripe_connect_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "STRIPE_CONNECT_WEBHOOK_SECRET", "stripe_connect_webhook_secret"
        ),
    )
    stripe_api_base: str | None = Field(
        default=None, description="Point the SDK somewhere else than api.stripe.com (the sandbox)."
    )
    mode: Mode | None = Field(default=None, description="Expected mode; must agree with the key.")
    max_network_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries the SDK makes of a write (network error, 409, 429, 5xx), same key.",
    )
    database_url: str = DEFAULT_DATABASE_URL
    webhook_tolerance: int = Field(default=DEFAULT_TOLERANCE, ge=1, le=3600)
    body_limit: int = Field(default=DEFAULT_BODY_LIMIT, ge=1024, le=64 * 1024 * 1024)
    #: Comma-separated seconds in the environment: ``10,30,120``.
    retry_schedule: Annotated[tuple[int, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=100)
    lease_seconds: int = Field(default=120, ge=1, le=24 * 3600)
    worker_batch_size: int = Field(default=500, ge=1, le=10_000)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    handler_timeout: float = Field(
        default=30.0,
        gt=0,
        le=24 * 3600,
        description="Seconds an event's handlers may run before its attempt fails.",
    )
    mirror_policy: Literal["payload", "refetch"] = Field(
        default="payload",
        description="payload: apply each event's object; refetch: read the object from the API.",
    )
    #: Per object type, ``subscription=refetch,invoice=refetch`` in the environment.
    mirror_policies: Annotated[dict[str, Literal["payload", "refetch"]], NoDecode] = Field(
        default_factory=dict
    )
    mirror_coalesce_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="Re-fetches of one object within this window are one read.",
    )
    api_reads_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Token-bucket limit on API reads per process; default 20/s test, 80/s live.",
    )
    catch_up_interval: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between catch-up runs inside serve; 0 turns it off.",
    )
    # Connection bounds of `stripeline serve` (docs/deployment.md, "Slow clients").
    max_connections: int | None = Field(
        default=None,
        ge=16,
        le=1_000_000,
        description="Open connections serve holds at most; default: what the open-file limit allows.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a client has to send a request's headers; then 408 and closed.",
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a client has to send a webhook's body; then 408 and closed.",
    )
    keep_alive_timeout: int = Field(
        default=5,
        ge=1,
        le=600,
        description="Seconds an idle keep-alive connection is kept open between requests.",
    )
    thread_switch_interval: float = Field(
        default=0.0005,
        ge=0,
        le=1,
        description=(
            "serve: the interpreter's thread switch interval in seconds "
            "(sys.setswitchinterval); 0 keeps Python's (5 ms)."
        ),
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    inbox_retention_days: int | None = Field(
        default=None,
        ge=7,
        le=36500,
        description="serve prunes processed events older than this many days; unset: kept.",
    )
    # -- the operator console (docs/console.md): off unless configured ---------
    console_users: SecretStr | None = Field(
        default=None,
        description=(
            "Console sign-in: entries name:role:password-hash (role admin or read; an "
            "argon2 hash from `stripeline console hash-password`), separated by spaces, "
            "newlines or ';'."
        ),
    )
    console_secret: SecretStr | None = Field(
        default=None,
        description="Signs the console's session cookies and CSRF tokens (32+ characters).",
    )
    console_session_seconds: int = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds a console session lasts from sign-in; then sign in again.",
    )
    console_trusted_header: str | None = Field(
        default=None,
        description="A header naming the user, set by a proxy that signed them in.",
    )
    console_trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Client addresses whose console_trusted_header is believed (comma-separated).",
    )
    console_header_role: Literal["admin", "read"] = Field(
        default="read",
        description="The role of a user signed in by the trusted header.",
    )
    console_secure_cookie: bool = Field(
        default=True,
        description="Mark the console's cookies Secure (served over HTTPS, or on localhost).",
    )
    stripe_thin_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_THIN_WEBHOOK_SECRET", "stripe_thin_webhook_secret"),
        description=(
            "The signing secrets of Event Destinations (thin events), comma-separated "
            "(rotation); accepted on the webhook routes besides STRIPE_WEBHOOK_SECRET."
        ),
    )

    stripe_event_grid_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_EVENT_GRID_SECRET", "stripe_event_grid_secret"),
        description=(
            "Shared secrets an Azure Event Grid delivery must carry (?code= or the "
            "Stripeline-Event-Grid-Secret header), comma-separated (rotation); "
            "set, `serve` answers Event Grid at /webhooks/eventgrid."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _retry_schedule_from_csv(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("retry_schedule")
            if isinstance(raw, str):
                try:
                    schedule = tuple(int(x) for x in raw.split(",") if x.strip())
                except ValueError:
                    raise ValueError(
                        "STRIPELINE_RETRY_SCHEDULE must be comma-separated non-negative seconds"
                    ) from None
                data = {**data, "retry_schedule": schedule}
        return data

    @model_validator(mode="before")
    @classmethod
    def _mirror_policies_from_csv(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("mirror_policies")
            if isinstance(raw, str):
                policies: dict[str, str] = {}
                for part in raw.split(","):
                    if not part.strip():
                        continue
                    name, sep, policy = part.partition("=")
                    if not sep or policy.strip() not in ("payload", "refetch"):
                        raise ValueError(
                            "STRIPELINE_MIRROR_POLICIES must look like subscription=refetch,invoice=payload"
                        )
                    policies[name.strip()] = policy.strip()
                data = {**data, "mirror_policies": policies}
        return data

    @model_validator(mode="before")
    @classmethod
    def _trusted_proxies_from_csv(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("console_trusted_proxies")
            if isinstance(raw, str):
                proxies = tuple(part.strip() for part in raw.split(",") if part.strip())
                data = {**data, "console_trusted_proxies": proxies}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        key = self.stripe_secret_key.get_secret_value() if self.stripe_secret_key else None
        if key is not None:
            if not KEY_PATTERN.match(key):
                raise ValueError(
                    "STRIPE_SECRET_KEY is malformed: expected sk_test_, sk_live_, rk_test_ or "
                    "rk_live_ followed by 8 or more letters, digits or underscores"
                )
            if self.mode is not None and key_mode(key) != self.mode:
                raise ValueError(
                    f"STRIPE_SECRET_KEY is a {key_mode(key)} key but STRIPELINE_MODE={self.mode}: "
                    "use a key of that mode or change STRIPELINE_MODE"
                )
        elif self.mode == "live":
            raise ValueError(
                "STRIPELINE_MODE=live needs STRIPE_SECRET_KEY (an sk_live_ or rk_live_ key)"
            )
        for name, raw in (
            ("STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret),
            ("STRIPE_CONNECT_WEBHOOK_SECRET", self.stripe_connect_webhook_secret),
            ("STRIPE_THIN_WEBHOOK_SECRET", self.stripe_thin_webhook_secret),
        ):
            for i, secret in enumerate(_split_secrets(raw), start=1):
                if not WEBHOOK_SECRET_PATTERN.match(secret.get_secret_value()):
                    raise ValueError(f"{name} entry {i} is malformed: expected whsec_…")
        for i, secret in enumerate(self.event_grid_secrets, start=1):
            if len(secret.get_secret_value()) < MIN_EVENT_GRID_SECRET_LENGTH:
                raise ValueError(
                    f"STRIPE_EVENT_GRID_SECRET entry {i} is too short: at least "
                    f"{MIN_EVENT_GRID_SECRET_LENGTH} characters (make it random)"
                )
        if self.effective_mode == "live" and not self.webhook_secrets:
            raise ValueError("a live key needs STRIPE_WEBHOOK_SECRET: webhooks cannot be verified")
        if not self.retry_schedule or any(s < 0 for s in self.retry_schedule):
            raise ValueError(
                "STRIPELINE_RETRY_SCHEDULE must be comma-separated non-negative seconds"
            )
        problem = database_url_problem(self.database_url) or sqlite_files_problem(self.database_url)
        if problem is not None:
            raise ValueError(problem)
        console = console_problem(self)
        if console is not None:
            raise ValueError(console)
        return self

    @property
    def effective_mode(self) -> Mode:
        """The mode events must carry: the key's, else STRIPELINE_MODE, else test."""
        if self.stripe_secret_key is not None:
            return key_mode(self.stripe_secret_key.get_secret_value())
        return self.mode or "test"

    def policy_for(self, object_type: str) -> str:
        """The mirror policy of one object type."""
        return self.mirror_policies.get(object_type, self.mirror_policy)

    @property
    def reads_per_second(self) -> float:
        """API reads allowed per second: below Stripe's 25/s (test) and 100/s (live)."""
        if self.api_reads_per_second is not None:
            return self.api_reads_per_second
        return 80.0 if self.effective_mode == "live" else 20.0

    @property
    def livemode(self) -> bool:
        return self.effective_mode == "live"

    @property
    def webhook_secrets(self) -> tuple[SecretStr, ...]:
        return _split_secrets(self.stripe_webhook_secret)

    @property
    def connect_webhook_secrets(self) -> tuple[SecretStr, ...]:
        return _split_secrets(self.stripe_connect_webhook_secret)

    @property
    def thin_webhook_secrets(self) -> tuple[SecretStr, ...]:
        """The Event Destinations' secrets (``STRIPE_THIN_WEBHOOK_SECRET``)."""
        return _split_secrets(self.stripe_thin_webhook_secret)

    @property
    def event_grid_secrets(self) -> tuple[SecretStr, ...]:
        """The Azure Event Grid endpoint's shared secrets (``STRIPE_EVENT_GRID_SECRET``)."""
        return _split_secrets(self.stripe_event_grid_secret)

    @property
    def uses_sandbox(self) -> bool:
        """No key: ``serve`` runs the offline sandbox in-process."""
        return self.stripe_secret_key is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def console_enabled(self) -> bool:
        """The console is served (its secret and a way to sign in are set)."""
        return self.console_secret is not None and (
            self.console_users is not None or self.console_trusted_header is not None
        )

    @property
    def console_accounts(self) -> dict[str, ConsoleUser]:
        """The console's users by name (empty: none configured)."""
        if self.console_users is None:
            return {}
        return parse_console_users(self.console_users.get_secret_value())


def load_settings(**overrides: object) -> Settings:
    """Read and check the settings; raise ``ConfigError`` with one line per problem.

    Raises:
        ConfigError: the environment holds settings that cannot work.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where.upper() + ': ' if where else ''}{msg}")
        raise ConfigError("; ".join(lines)) from None
