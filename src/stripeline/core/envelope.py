"""The Stripe event envelope: what we need of an event to store and route it.

``parse_envelope`` refuses what could never be stored or processed, so that
such a body is answered 400 on its own at ingest instead of failing a commit
(and the events committed with it) or every processing attempt: text fields
longer than their inbox columns (the ``*_LENGTH`` bounds below, from which
``db/models.py`` builds those columns), a NUL character in any string (no
PostgreSQL text or JSONB value can hold one), integers out of a BIGINT's
range, nesting deeper than ``MAX_DEPTH``, and lone UTF-16 surrogates, which
are not Unicode text and cannot be encoded to store or to process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stripeline.core.fastjson import may_hold_long_integer
from stripeline.errors import EnvelopeError

#: The inbox's column lengths for the envelope's text fields (characters).
ID_LENGTH = 255
TYPE_LENGTH = 255
ACCOUNT_LENGTH = 255
API_VERSION_LENGTH = 64
OBJECT_ID_LENGTH = 255
OBJECT_TYPE_LENGTH = 64
#: The range of ``created``: a Unix time from 1970 to the end of year 9999,
#: which a BIGINT column stores and a ``datetime`` can hold (the CLI, the
#: catch-up gap and the mirror turn it into one).
CREATED_RANGE = (0, 253_402_300_799)
#: The deepest nesting of arrays and objects accepted in a body (the event
#: itself is level 1). Stripe's events stay far below it; the worker and the
#: mirror then never meet a body too deep for them to read.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Envelope:
    """The routing fields of a Stripe event: a snapshot event (API v1), or a
    thin one (``thin``: a ``v2.core.event`` notification, see ``parse_thin``)."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    account: str | None
    object_id: str | None
    object_type: str | None
    #: A thin event: the worker fetches what it is about before processing it.
    thin: bool = False


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise EnvelopeError("not_an_event", f"not a Stripe event: {what}")


def _check_text(value: str, field: str, limit: int) -> None:
    if len(value) > limit:
        raise EnvelopeError(
            "not_an_event", f"not a Stripe event: {field} is longer than {limit} characters"
        )
    if "\x00" in value:
        raise EnvelopeError("not_an_event", f"not a Stripe event: {field} contains a NUL character")


def _optional_text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    _require(isinstance(value, str), f"{field} is not a string")
    _check_text(value, field, limit)
    return str(value)


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise EnvelopeError("invalid_json", "body has a NUL character in a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EnvelopeError(
                "invalid_json", "body has a lone surrogate (\\ud800-\\udfff): not Unicode text"
            ) from None


def _check_tree(body: dict[str, Any], raw: bytes | str | None, *, strict: bool = False) -> None:
    """Every string of ``body`` storable text, and no nesting over ``MAX_DEPTH``.

    ``raw`` is what ``body`` was read from (None: a dict was given). Most
    events are spared the walk: in UTF-8, a NUL or a lone surrogate comes only
    from a ``\\u`` escape or from bytes that encode a surrogate (lead 0xED),
    and a body with few brackets cannot nest deep. ``strict``: orjson read
    ``raw`` (strict UTF-8, no lone surrogate, no raw control character), so
    a NUL can only come from the escape ``\\u0000``. Iterative: a hostile
    body cannot exhaust the stack here.
    """
    check_text = True
    if raw is not None:
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        if strict:
            check_text = b"\\u0000" in data
        else:
            # (NUL bytes: a UTF-16 or UTF-32 body, which json.loads also reads)
            check_text = b"\\u" in data or b"\xed" in data or b"\x00" in data
        if not check_text and data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
            return
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EnvelopeError("invalid_json", f"body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if check_text:
                for key in value:
                    _check_string(key)
            children: Any = value.values()
        else:
            children = value
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif check_text and isinstance(child, str):
                _check_string(child)


def _refuse_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259), though
    Python's reader takes them; PostgreSQL's ``json`` refuses them, so an event
    carrying one could never be processed."""
    raise EnvelopeError("invalid_json", f"body has {name}, which is not JSON")


#: One decoder for every body: ``json.loads`` with an argument builds a new
#: one per call, which was a third of the parse of a 3 KB event.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _decode(payload: bytes | str) -> tuple[Any, bool]:
    """The JSON value of a body, read as ``json.loads`` reads it (``NaN`` and
    the infinities refused), and whether orjson read it (``_check_tree``'s
    ``strict``).

    orjson reads a ~3 KB event several times faster. What it accepts, it
    reads as ``json`` does, but for integers past 64 bits (it reads them as
    floats: a body with a run of 19 digits goes to ``json``); what it
    refuses (bytes that are not UTF-8, UTF-16 or -32, a lone surrogate,
    ``NaN``, nesting past 1,024 levels, anything not JSON) is read by
    ``json`` as before, which refuses it or returns what the checks below
    then refuse, with the same reason as ever."""
    if isinstance(payload, bytes) and not may_hold_long_integer(payload):
        try:
            return orjson.loads(payload), True
        except orjson.JSONDecodeError:
            pass
    # As json.loads reads bytes: UTF-8, -16 or -32, found from the first bytes.
    text = (
        payload
        if isinstance(payload, str)
        else payload.decode(json.detect_encoding(payload), "surrogatepass")
    )
    return _DECODER.decode(text), False


def parse_envelope(payload: bytes | str | dict[str, Any]) -> tuple[Envelope, dict[str, Any]]:
    """Parse and check an event body; return its envelope and the parsed dict.

    Raises:
        EnvelopeError: ``invalid_json`` when the body is not JSON, or JSON
            that cannot be stored and processed (nested deeper than
            ``MAX_DEPTH``, a NUL character or a lone surrogate in a string);
            ``not_an_event`` when it is JSON but not a Stripe event, or
            an event with a field its inbox column cannot hold (the message
            names the field). A thin ``v2.core.event`` is read by
            ``parse_thin``.
    """
    strict = False
    if isinstance(payload, dict):
        body: Any = payload
    else:
        try:
            body, strict = _decode(payload)
        except RecursionError:
            raise EnvelopeError(
                "invalid_json", f"body is nested deeper than {MAX_DEPTH} levels"
            ) from None
        except ValueError:  # UnicodeDecodeError and over-long integers included
            raise EnvelopeError("invalid_json", "body is not valid JSON") from None
    _require(isinstance(body, dict), "body is not a JSON object")
    if body.get("object") == THIN_OBJECT:
        envelope = parse_thin(body)
        _check_tree(body, None if isinstance(payload, dict) else payload, strict=strict)
        return envelope, body
    _require(body.get("object") == "event", "object is not 'event'")
    event_id = body.get("id")
    _require(isinstance(event_id, str) and len(event_id) > 0, "id missing")
    _check_text(event_id, "id", ID_LENGTH)
    event_type = body.get("type")
    _require(isinstance(event_type, str) and len(event_type) > 0, "type missing")
    _check_text(event_type, "type", TYPE_LENGTH)
    created = body.get("created")
    _require(isinstance(created, int) and not isinstance(created, bool), "created missing")
    low, high = CREATED_RANGE
    _require(low <= created <= high, "created is out of range")
    livemode = body.get("livemode")
    _require(isinstance(livemode, bool), "livemode missing")
    data = body.get("data")
    _require(isinstance(data, dict) and isinstance(data.get("object"), dict), "data.object missing")
    api_version = _optional_text(body.get("api_version"), "api_version", API_VERSION_LENGTH)
    account = _optional_text(body.get("account"), "account", ACCOUNT_LENGTH)
    obj = data["object"]
    object_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    object_type = obj.get("object") if isinstance(obj.get("object"), str) else None
    _optional_text(object_id, "data.object.id", OBJECT_ID_LENGTH)
    _optional_text(object_type, "data.object.object", OBJECT_TYPE_LENGTH)
    _check_tree(body, None if isinstance(payload, dict) else payload, strict=strict)
    return (
        Envelope(
            id=event_id,
            type=event_type,
            created=created,
            livemode=livemode,
            api_version=api_version,
            account=account,
            object_id=object_id,
            object_type=object_type,
        ),
        body,
    )


#: The ``object`` of a thin event (Event Destinations, API v2).
THIN_OBJECT = "v2.core.event"


def _thin_created(value: Any) -> int:
    """A thin event's ``created``: an RFC 3339 string (an integer is taken too)."""
    if isinstance(value, int) and not isinstance(value, bool):
        created = value
    else:
        _require(isinstance(value, str) and len(value) <= 64, "created missing")
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise EnvelopeError(
                "not_an_event", "not a Stripe event: created is not a time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        created = int(moment.timestamp())
    low, high = CREATED_RANGE
    _require(low <= created <= high, "created is out of range")
    return created


def context_account(context: str | None) -> str | None:
    """The connected account a thin event's ``context`` names (its last
    segment: a context may be a path such as ``org_…/acct_…``), or None."""
    if not context:
        return None
    return context.rsplit("/", 1)[-1] or None


def parse_thin(body: dict[str, Any]) -> Envelope:
    """The envelope of a thin event (``object: v2.core.event``).

    A v1 thin event (``v1.customer.updated``) is stored as the change it
    announces: its id is the ``snapshot_event`` it carries (when it does), and
    its type the snapshot name (``customer.updated``), so that the snapshot
    event and the thin event of one change are one inbox row, whichever
    arrives first. ``context`` is the account; ``related_object`` the object.

    Raises:
        EnvelopeError: ``not_an_event`` when a field is missing or too long.
    """
    event_id = body.get("id")
    _require(isinstance(event_id, str) and len(event_id) > 0, "id missing")
    event_type = body.get("type")
    _require(isinstance(event_type, str) and len(event_type) > 0, "type missing")
    snapshot = body.get("snapshot_event")
    if isinstance(snapshot, str) and snapshot:
        event_id = snapshot
    if str(event_type).startswith("v1."):
        event_type = str(event_type)[3:]
    _check_text(str(event_id), "id", ID_LENGTH)
    _check_text(str(event_type), "type", TYPE_LENGTH)
    livemode = body.get("livemode")
    _require(isinstance(livemode, bool), "livemode missing")
    context = _optional_text(body.get("context"), "context", ACCOUNT_LENGTH)
    related = body.get("related_object")
    object_id = object_type = None
    if related is not None:
        _require(isinstance(related, dict), "related_object is not an object")
        object_id = _optional_text(related.get("id"), "related_object.id", OBJECT_ID_LENGTH)
        object_type = _optional_text(related.get("type"), "related_object.type", OBJECT_TYPE_LENGTH)
    return Envelope(
        id=str(event_id),
        type=str(event_type),
        created=_thin_created(body.get("created")),
        livemode=bool(livemode),
        api_version=None,
        account=context_account(context),
        object_id=object_id,
        object_type=object_type,
        thin=True,
    )


__all__ = ["THIN_OBJECT", "Envelope", "context_account", "parse_envelope", "parse_thin"]
