"""The application the duplicates suite serves: one handler for every event.

It writes one row per run to ``proof_effects`` through the event's
connection (a database effect: committed with the event, or not at all), and
appends the event id to the file named by ``PROOF_EFFECTS_FILE`` once per
event, guarded by ``once()`` (an outside effect). The suite creates the table
before it starts the server and counts both afterwards.
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
    if event.once(f"proof:{event.id}"):
        with open(os.environ["PROOF_EFFECTS_FILE"], "a") as fh:
            fh.write(event.id + "\n")
