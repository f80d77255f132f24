"""The application the duplicates suite serves: one handler for every event.

It writes one row per run to ``proof_effects`` through the event's
connection (a database effect: committed with the event, or not at all), and
appends the event id to the file named by ``PROOF_EFFECTS_FILE`` once per
event, guarded by ``once()`` (an outside effect). The suite creates the table
before it starts the server and counts both afterwards.

For the kill -9 and outage suites, two more outside effects when their
files are named: ``PROOF_UNGUARDED_FILE`` gets a line per run, unguarded (at
least once: every run the process did not die before shows), and
``PROOF_ONCE_PIDS_FILE`` the ``once()``-guarded line with the process's id,
so that a repeated effect can be traced to a process killed before its commit.
"""

from __future__ import annotations

import os

from sqlalchemy import text

import stripeline

app = stripeline.Stripeline()


@app.on("*")
def record(event: stripeline.ReceivedEvent) -> None:
    event.connection.execute(
        text("INSERT INTO proof_effects (event_id) VALUES (:id)"), {"id": event.id}
    )
    if unguarded := os.environ.get("PROOF_UNGUARDED_FILE"):
        _append(unguarded, f"{event.id} {os.getpid()}\n")
    if event.once(f"proof:{event.id}"):
        with open(os.environ["PROOF_EFFECTS_FILE"], "a") as fh:
            fh.write(event.id + "\n")
        if pids := os.environ.get("PROOF_ONCE_PIDS_FILE"):
            _append(pids, f"{event.id} {os.getpid()}\n")


def _append(path: str, line: str) -> None:
    """One ``write`` of the whole line to a file opened for appending: lines
    of several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# -- the secrets suite --------------------------------------------------------
#: The application the secrets suite serves: its handler fails when the
#: customer's metadata says ``proof: fail``, and calls the API (through the
#: official SDK, with the configured key) when it says ``proof: api``; the
#: call fails (an unknown customer, or an error the sandbox is told to answer).
secrets_app = stripeline.Stripeline()


@secrets_app.on("*")
def troublesome(event: stripeline.ReceivedEvent) -> None:
    proof = (event.object.get("metadata") or {}).get("proof")
    if proof == "fail":
        raise RuntimeError(f"the handler failed on purpose for {event.id}")
    if proof == "api":
        import stripe

        settings = secrets_app.settings
        key = settings.stripe_secret_key
        if key is None or settings.stripe_api_base is None:
            raise RuntimeError("no key or API base configured")
        client = stripe.StripeClient(
            key.get_secret_value(), base_addresses={"api": settings.stripe_api_base}
        )
        client.v1.customers.retrieve(event.object["id"] + "_gone")
