"""Hostile but validly signed (or cleverly unsigned) webhooks, on SQLite and PostgreSQL.

Each request here was once answered 500 or 503, or accepted and then failed
every processing attempt. Now each is refused with 400 on its own, nothing of
it is stored, the worker never sees it, and the valid events sent alongside
are stored and answered 200.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, String, select
from sqlalchemy.event import listens_for as event_listener
from starlette.testclient import TestClient

from stripeline import inbox
from stripeline.app import Stripeline
from stripeline.core.envelope import Envelope, parse_envelope
from stripeline.core.signature import parse_header
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Event
from stripeline.errors import EnvelopeError, SignatureError
from stripeline.settings import Settings
from stripeline.web import create_app
from stripeline.web.writer import IngestWriter
from stripeline.worker import Worker
from tests.factories import SECRET, encode, event, signed


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=database_url)
    application = Stripeline(settings, engine=make_engine(database_url))
    yield application
    application.dispose()


@pytest.fixture
def client(app: Stripeline) -> Iterator[TestClient]:
    with TestClient(create_app(app), raise_server_exceptions=False) as c:
        yield c


def stored_ids(app: Stripeline) -> set[str]:
    with connect(app.engine, readonly=True) as conn:
        return set(conn.scalars(select(Event.id)))


def post(client: TestClient, payload: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/webhooks/stripe", content=payload, headers=signed(payload) if headers is None else headers
    )


def nothing_reaches_the_worker(app: Stripeline) -> None:
    seen: list[str] = []
    app.on("*")(lambda e: seen.append(e.id))
    assert Worker(app, listen=False).drain() == 0
    assert seen == []


def _with_raw(text: bytes, key: bytes = b"name") -> bytes:
    """An event whose ``data.object`` has ``key: "text"``, both spliced in as
    raw JSON bytes (escapes kept as written)."""
    obj = {"id": "cus_1", "object": "customer", "KEY": "TEXT"}
    return encode(event(obj=obj)).replace(b"KEY", key).replace(b"TEXT", text)


# -- 1. one unstorable event never fails its group -------------------------------

UNSTORABLE: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("api_version", lambda: {**event(), "api_version": "2" * 65}),
    ("account", lambda: event(account="acct_" + "a" * 251)),
    ("id", lambda: event(id="evt_" + "x" * 252)),
    ("type", lambda: event("customer." + "u" * 250)),
    ("data.object.object", lambda: event(obj={"id": "cus_1", "object": "c" * 65})),
    ("data.object.id", lambda: event(obj={"id": "cus_" + "1" * 252, "object": "customer"})),
    ("id", lambda: event(id="evt_nul\x00byte")),
    ("account", lambda: event(account="acct_\x00")),
    ("api_version", lambda: {**event(), "api_version": "2026-10-28\x00"}),
    ("data.object.id", lambda: event(obj={"id": "cus_\x00", "object": "customer"})),
    ("created", lambda: event(created=2**63)),
    ("created", lambda: event(created=-(2**63) - 1)),
    ("created", lambda: event(created=-1)),
    ("created", lambda: event(created=253_402_300_800)),  # 10000-01-01: no datetime holds it
    ("created", lambda: event(created=10**30)),
]


def test_unstorable_events_are_400_alone_and_the_valid_ones_in_their_group_are_stored(
    client: TestClient, app: Stripeline
) -> None:
    bad = [(field, encode(make())) for field, make in UNSTORABLE for _ in range(2)]
    valid = [encode(event()) for _ in range(60)]
    requests = [(None, p) for p in valid] + bad
    # Interleaved and sent at once: the writer groups them as they come.
    requests = [r for pair in zip(requests[::2], requests[1::2], strict=False) for r in pair]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: (r[0], post(client, r[1])), requests))
    for field, response in answers:
        if field is None:
            assert response.status_code == 200, (response.status_code, response.text)
        else:
            assert response.status_code == 400, (field, response.status_code, response.text)
            body = response.json()
            assert body["error"] == "bad_payload"
            assert body["reason"] == "not_an_event"
            assert field in body["message"], (field, body)
    assert stored_ids(app) == {json.loads(p)["id"] for p in valid}
    assert client.get("/metrics").text.count(f'outcome="bad_payload"}} {len(bad)}.0') == 1


def _length(column: Any) -> int | None:
    assert isinstance(column.type, String)
    return column.type.length


def test_the_limits_are_the_columns() -> None:
    from stripeline.core import envelope as limits

    columns = Event.__table__.c
    assert _length(columns.id) == limits.ID_LENGTH
    assert _length(columns.type) == limits.TYPE_LENGTH
    assert _length(columns.account) == limits.ACCOUNT_LENGTH
    assert _length(columns.api_version) == limits.API_VERSION_LENGTH
    assert _length(columns.object_id) == limits.OBJECT_ID_LENGTH
    assert _length(columns.object_type) == limits.OBJECT_TYPE_LENGTH
    low, high = limits.CREATED_RANGE
    assert -(2**63) <= low and high <= 2**63 - 1  # a BIGINT holds the whole range
    assert datetime.fromtimestamp(high, UTC).year == 9999


def test_values_at_the_limits_are_stored(client: TestClient, app: Stripeline) -> None:
    body = event(
        id="evt_" + "x" * 251,
        account="acct_" + "a" * 250,
        obj={"id": "cus_" + "1" * 251, "object": "c" * 64},
        created=253_402_300_799,
    )
    body["api_version"] = "2" * 64
    assert post(client, encode(body)).status_code == 200
    assert stored_ids(app) == {body["id"]}


def _unchecked(event_id: str, **fields: Any) -> inbox.IncomingEvent:
    """An event as the writer would get it had the envelope not been checked."""
    values: dict[str, Any] = {
        "id": event_id,
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "api_version": None,
        "account": None,
        "object_id": "cus_1",
        "object_type": "customer",
        **fields,
    }
    return inbox.IncomingEvent(
        envelope=Envelope(**values),
        payload=b"{}",
        source="webhook",
        received_at=inbox.utcnow(),
    )


async def _submit_as_one_group(
    writer: IngestWriter, items: list[inbox.IncomingEvent]
) -> list[bool | BaseException]:
    tasks = [asyncio.ensure_future(writer.submit(item)) for item in items]
    await asyncio.sleep(0.05)  # every item queued before the writer starts: one group
    writer.start()
    try:
        return list(await asyncio.gather(*tasks, return_exceptions=True))
    finally:
        writer.stop()


def test_the_writer_retries_a_failed_group_row_by_row(engine: Engine) -> None:
    commits: list[int] = []
    writer = IngestWriter(engine, max_batch=64, on_commit=lambda: commits.append(1))
    items = [_unchecked(f"evt_ok_{i}") for i in range(10)]
    items.insert(3, _unchecked("evt_bad_created", created=2**63))
    items.insert(7, _unchecked("evt_bad_overflow", created=2**70))
    if engine.dialect.name == "postgresql":
        items.insert(5, _unchecked("evt_bad_version", api_version="v" * 65))
        items.insert(9, _unchecked("evt_bad_\x00"))
    results = asyncio.run(_submit_as_one_group(writer, items))
    for item, result in zip(items, results, strict=True):
        if item.envelope.id.startswith("evt_ok_"):
            assert result is True
        else:
            assert isinstance(result, EnvelopeError), (item.envelope.id, result)
            assert result.reason == "not_an_event"
    with connect(engine, readonly=True) as conn:
        stored = set(conn.scalars(select(Event.id)))
    assert stored == {f"evt_ok_{i}" for i in range(10)}
    assert commits  # the stored ones were reported committed


def test_the_writer_answers_503_to_all_when_the_database_is_unreachable() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nothing_listens_here")
    writer = IngestWriter(engine)
    items = [_unchecked(f"evt_{i}") for i in range(3)] + [_unchecked("evt_x", created=2**63)]
    try:
        results = asyncio.run(_submit_as_one_group(writer, items))
    finally:
        engine.dispose()
    assert [type(r).__name__ for r in results] == ["DatabaseUnavailable"] * 4


def test_the_writer_gives_503_to_what_fails_for_another_reason(engine: Engine) -> None:
    writer = IngestWriter(engine)
    broken = inbox.IncomingEvent(
        envelope=None,  # type: ignore[arg-type]  # a bug upstream, not a refusal
        payload=b"{}",
        source="webhook",
        received_at=inbox.utcnow(),
    )
    items = [_unchecked("evt_ok_1"), broken, _unchecked("evt_ok_2")]
    results = asyncio.run(_submit_as_one_group(writer, items))
    assert results[0] is True and results[2] is True
    assert type(results[1]).__name__ == "DatabaseUnavailable"


def test_the_rest_of_the_group_is_503_when_the_database_goes_away_mid_retry(
    sqlite_url: str,
) -> None:
    engine = make_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    locker = make_engine(sqlite_url)
    held: list[Any] = []
    connects: list[int] = []

    @event_listener(engine, "connect")
    def lock_on_the_second_connection(dbapi_connection: Any, _: Any) -> None:
        # The group's connection is the first; when the writer reconnects to
        # retry the rows one by one, another writer holds the database.
        connects.append(1)
        if len(connects) == 2:
            conn = locker.connect()
            conn.begin()  # BEGIN IMMEDIATE: the write lock
            held.append(conn)

    writer = IngestWriter(engine)
    items = [_unchecked("evt_bad", created=2**63), *(_unchecked(f"evt_{i}") for i in range(3))]
    try:
        results = asyncio.run(_submit_as_one_group(writer, items))
    finally:
        for conn in held:
            conn.rollback()
            conn.close()
        locker.dispose()
    # The first row found the database locked: the others were not tried.
    assert len(connects) == 2
    assert [type(r).__name__ for r in results] == ["DatabaseUnavailable"] * 4
    with connect(engine, readonly=True) as conn:
        assert list(conn.scalars(select(Event.id))) == []
    engine.dispose()


def test_a_row_the_database_refuses_after_the_envelope_passed_is_400_alone(
    client: TestClient, app: Stripeline
) -> None:
    # A constraint of the operator's own (or any the envelope does not know):
    # the writer's safety net answers it 400 and stores the rest.
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE stripeline_events ADD CONSTRAINT ck_refused "
                "CHECK (type <> 'refused.by.the.database')"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refused BEFORE INSERT ON stripeline_events "
                "WHEN NEW.type = 'refused.by.the.database' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    valid = [encode(event()) for _ in range(20)]
    refused = encode(event("refused.by.the.database"))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: post(client, p), [*valid[:10], refused, *valid[10:]]))
    assert [a.status_code for a in answers] == [200] * 10 + [400] + [200] * 10
    assert answers[10].json() == {
        "error": "bad_payload",
        "reason": "not_an_event",
        "message": "the database cannot store a field of this event",
    }
    assert stored_ids(app) == {json.loads(p)["id"] for p in valid}


# -- 2. a huge timestamp in the signature header ----------------------------------


def test_a_timestamp_of_5000_digits_is_a_bad_signature_not_a_500(
    client: TestClient, app: Stripeline
) -> None:
    payload = encode(event())
    response = post(client, payload, {"Stripe-Signature": "t=" + "9" * 5000 + ",v1=" + "0" * 64})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert response.json()["reason"] == "malformed_header"
    assert stored_ids(app) == set()
    metrics = client.get("/metrics").text
    assert 'stripeline_webhooks_total{endpoint="account",outcome="bad_signature"} 1.0' in metrics


def test_timestamp_digits_are_bounded() -> None:
    assert parse_header("t=" + "1" * 18 + ",v1=ab") == (int("1" * 18), ["ab"])
    with pytest.raises(SignatureError) as caught:
        parse_header("t=" + "1" * 19 + ",v1=ab")
    assert caught.value.reason == "malformed_header"


# -- 3. deep nesting ---------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    inner: Any = "bottom"
    for _ in range(depth):
        inner = [inner]
    return {"id": "cus_deep", "object": "customer", "metadata": {"deep": inner}}


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        pytest.param("deep_object", id="985-levels-in-data.object"),
        pytest.param("just_too_deep", id="one-level-over-the-limit"),
    ],
)
def test_deeply_nested_json_is_400_and_never_reaches_the_worker(
    client: TestClient, app: Stripeline, payload: bytes | str
) -> None:
    if payload == "deep_object":
        # json.dumps cannot write it either: the nesting is spliced in as bytes
        nested = b"[" * 985 + b"1" + b"]" * 985
        payload = _with_raw(b"TEXT", key=b"metadata").replace(b'"TEXT"', nested)
    elif payload == "just_too_deep":
        from stripeline.core.envelope import MAX_DEPTH

        # the event is 1 level, data 2, data.object 3, metadata 4, then the lists
        payload = encode(event(obj=_nested(MAX_DEPTH - 3)))
    assert isinstance(payload, bytes)
    response = post(client, payload)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_payload"
    assert response.json()["reason"] == "invalid_json"
    assert "nested" in response.json()["message"]
    assert stored_ids(app) == set()
    nothing_reaches_the_worker(app)


def test_nesting_up_to_the_limit_is_stored_and_processed(
    client: TestClient, app: Stripeline
) -> None:
    from stripeline.core.envelope import MAX_DEPTH

    body = event(obj=_nested(MAX_DEPTH - 4))
    assert post(client, encode(body)).status_code == 200
    assert Worker(app, listen=False).drain() == 1


# -- 4. text that is not Unicode ---------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_with_raw(b"\\ud800"), id="escaped-lone-surrogate"),
        pytest.param(_with_raw(b"\\udc00x"), id="escaped-lone-low-surrogate"),
        pytest.param(_with_raw(b"x", key=b"\\ud800"), id="surrogate-in-a-key"),
        pytest.param(_with_raw(b"\xed\xa0\x80"), id="utf8-encoded-surrogate"),
    ],
)
def test_lone_surrogates_are_400_and_never_reach_the_worker(
    client: TestClient, app: Stripeline, payload: bytes
) -> None:
    response = post(client, payload)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_payload"
    assert response.json()["reason"] == "invalid_json"
    assert "surrogate" in response.json()["message"]
    assert stored_ids(app) == set()
    nothing_reaches_the_worker(app)


def test_a_nul_inside_the_object_is_400_and_never_reaches_the_worker(
    client: TestClient, app: Stripeline
) -> None:
    payload = encode(event(obj={"id": "cus_1", "object": "customer", "name": "a\x00b"}))
    response = post(client, payload)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "invalid_json"
    assert "NUL" in response.json()["message"]
    assert stored_ids(app) == set()
    nothing_reaches_the_worker(app)


def test_a_utf16_body_is_checked_as_well(client: TestClient, app: Stripeline) -> None:
    nul = _with_raw(b"a\\u0000b").decode().encode("utf-16")
    response = post(client, nul)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["message"]
    fine = encode(event()).decode().encode("utf-16")
    assert post(client, fine).status_code == 200
    assert Worker(app, listen=False).drain() == 1


def test_a_paired_surrogate_escape_is_ordinary_text(client: TestClient, app: Stripeline) -> None:
    payload = _with_raw(b"\\ud83d\\ude00")
    assert post(client, payload).status_code == 200
    assert Worker(app, listen=False).drain() == 1


def test_parse_envelope_refuses_what_json_cannot_bear() -> None:
    from stripeline.core.envelope import MAX_DEPTH

    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(b"[" * 100_000)
    assert caught.value.reason == "invalid_json"
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(_with_raw(b"\\ud800"))
    assert caught.value.reason == "invalid_json"
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope({**event(), "created": 2**64})
    assert caught.value.reason == "not_an_event"
    # Text given as str: a raw lone surrogate, a NUL from a dict, deep nesting in a dict
    with pytest.raises(EnvelopeError, match="surrogate"):
        parse_envelope(
            encode(event(obj={"id": "cus_1", "object": "x", "n": "TEXT"}))
            .decode()
            .replace("TEXT", "\ud800")
        )
    with pytest.raises(EnvelopeError, match="NUL"):
        parse_envelope(event(obj={"id": "cus_1", "object": "customer", "name": "\x00"}))
    with pytest.raises(EnvelopeError, match="nested"):
        parse_envelope(event(obj=_nested(MAX_DEPTH)))
    body = event(obj={"id": "cus_1", "object": "customer", "name": "Zoë 😀"})
    assert parse_envelope(json.dumps(body, ensure_ascii=False))[1] == body
    assert parse_envelope(body)[1] is body


#: Bodies orjson and ``json`` might read apart: each must be read by
#: ``parse_envelope`` exactly as ``json.loads`` reads it, or refused as before.
_EDGES = [
    b'"a":1,"a":2',  # a repeated key: the last one counts
    b'"a":"\\ud83d\\ude00"',
    b'"a":18446744073709551615',  # 2**64 - 1
    b'"a":18446744073709551616',  # 2**64: read as a float by orjson
    b'"a":-9223372036854775809',
    b'"a":123456789012345678901234567890',
    b'"a":1e999',
    b'"a":-0',
    b'"a":1.0000000000000001',
    b'"a":2.2250738585072011e-308',
    b'"a":"\x7f\xe2\x80\xa8\xc3\xa9"',
]


@pytest.mark.parametrize("edge", _EDGES)
def test_parse_envelope_reads_a_body_as_json_does(edge: bytes) -> None:
    payload = encode(event(obj={"id": "cus_1", "object": "customer"})).replace(
        b'"object":"customer"', b'"object":"customer",' + edge
    )
    assert payload.count(edge) == 1
    expected = json.loads(payload)
    (_, body) = parse_envelope(payload)
    assert body == expected
    assert repr(body) == repr(expected)  # the same types too (an int stays an int)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x01", id="a-raw-control-character"),
        pytest.param(b"\t", id="a-raw-tab"),
        pytest.param(b"\xc0\x80", id="overlong-utf8"),
        pytest.param(b"\xf4\x90\x80\x80", id="past-the-last-code-point"),
        pytest.param(b"\xff", id="not-utf8"),
    ],
)
def test_text_json_refuses_is_refused(raw: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(_with_raw(raw))
    assert caught.value.reason == "invalid_json"


def test_a_utf8_bom_is_read_as_json_reads_it() -> None:
    payload = b"\xef\xbb\xbf" + encode(event())
    assert parse_envelope(payload)[1] == json.loads(payload)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400_and_never_reach_the_worker(
    client: TestClient, app: Stripeline, constant: str
) -> None:
    """Python's json reads them, PostgreSQL's json refuses them: such an event
    would fail every processing attempt there."""
    obj = {"id": "cus_1", "object": "customer", "balance": 0}
    payload = encode(event(obj=obj)).replace(b'"balance":0', b'"balance":' + constant.encode())
    assert constant.encode() in payload
    response = post(client, payload)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "invalid_json"
    assert constant in response.json()["message"]
    assert stored_ids(app) == set()
    nothing_reaches_the_worker(app)


def test_a_client_that_leaves_mid_body_gets_no_500_and_nothing_is_stored(
    client: TestClient, app: Stripeline
) -> None:
    """Broken chunked framing or a dropped connection reaches the route as
    ``http.disconnect`` before the body is whole."""
    payload = encode(event())
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": payload[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in signed(payload).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/stripe",
        "raw_path": b"/webhooks/stripe",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asgi_app = cast(Any, client.app)
    asyncio.run(asgi_app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert stored_ids(app) == set()
    metrics = client.get("/metrics").text
    assert 'stripeline_webhooks_total{endpoint="account",outcome="disconnected"} 1.0' in metrics
