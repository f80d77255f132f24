"""``stripeline._json``: orjson where it reads and writes as ``json`` does,
the standard library wherever the two would differ."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from stripeline import _json


def test_loads_reads_what_json_reads() -> None:
    body = {"id": "evt_1", "amount": 1000, "nested": {"list": [1, 2.5, None, True, "é"]}}
    payload = json.dumps(body).encode()
    assert _json.loads(payload) == json.loads(payload) == body


def test_integers_past_64_bits_stay_integers() -> None:
    # orjson would read these as floats: the standard library reads them.
    for number in (2**64, -(2**63) - 1, 10**30):
        value = _json.loads(f'{{"n": {number}}}'.encode())["n"]
        assert value == number and isinstance(value, int)


def test_what_orjson_refuses_is_read_as_json_reads_it() -> None:
    assert math.isnan(_json.loads(b'{"x": NaN}')["x"])
    assert _json.loads(b'{"x": Infinity}')["x"] == math.inf


def test_dumps_is_compact_json_and_falls_back_for_big_integers() -> None:
    assert _json.dumps({"a": [1, "b"]}) == '{"a":[1,"b"]}'
    assert json.loads(_json.dumps({"n": 10**30})) == {"n": 10**30}


def test_rows_carry_aware_times_as_iso_8601() -> None:
    at = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)
    for rows in ([{"at": at}], [{"at": at, "n": 10**30}]):  # orjson, then the fallback
        (row,) = json.loads(_json.dumps_rows(rows))
        assert datetime.fromisoformat(row["at"]) == at
