"""The envelope of a thin event (``object: v2.core.event``): the pure rules of
``core.envelope.parse_thin``, reached through ``parse_envelope``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stripeline.core.envelope import context_account, parse_envelope
from stripeline.errors import EnvelopeError


def thin(**fields: Any) -> bytes:
    body = {
        "id": "evt_test_thin1",
        "object": "v2.core.event",
        "type": "v1.customer.updated",
        "created": "2026-11-27T10:00:00.000Z",
        "livemode": False,
        "related_object": {"id": "cus_1", "type": "customer", "url": "/v1/customers/cus_1"},
        "snapshot_event": "evt_1Snapshot",
        **fields,
    }
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_a_v1_thin_event_is_the_snapshot_event_it_announces() -> None:
    envelope, _ = parse_envelope(thin(context="org_1/acct_1Connected"))
    assert (envelope.id, envelope.type, envelope.thin) == (
        "evt_1Snapshot",
        "customer.updated",
        True,
    )
    assert (envelope.object_id, envelope.object_type) == ("cus_1", "customer")
    assert envelope.account == "acct_1Connected"
    assert envelope.created == 1795773600  # 2026-11-27T10:00:00Z


def test_without_a_snapshot_event_it_keeps_its_own_id_and_type() -> None:
    envelope, _ = parse_envelope(
        thin(snapshot_event=None, type="v2.core.health.event_generation_failure.resolved")
    )
    assert (envelope.id, envelope.type) == (
        "evt_test_thin1",
        "v2.core.health.event_generation_failure.resolved",
    )


@pytest.mark.parametrize(
    ("created", "seconds"),
    [
        (1795773600, 1795773600),  # an integer is taken as it is
        ("2026-11-27T10:00:00", 1795773600),  # no offset: UTC
        ("2026-11-27T11:00:00+01:00", 1795773600),
    ],
)
def test_created_is_an_rfc_3339_time_or_seconds(created: Any, seconds: int) -> None:
    envelope, _ = parse_envelope(thin(created=created))
    assert envelope.created == seconds


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"created": "yesterday"}, "created is not a time"),
        ({"created": True}, "created missing"),
        ({"created": -1}, "created is out of range"),
        ({"livemode": None}, "livemode missing"),
        ({"related_object": "cus_1"}, "related_object is not an object"),
    ],
)
def test_a_thin_event_that_cannot_be_stored_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(EnvelopeError, match=message) as refused:
        parse_envelope(thin(**fields))
    assert refused.value.reason == "not_an_event"


def test_context_account() -> None:
    assert context_account(None) is None
    assert context_account("acct_1") == "acct_1"
    assert context_account("org_1/acct_2") == "acct_2"
