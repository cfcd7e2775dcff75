"""The leak search itself: it must find a key however it shows up, and name none in its report."""

from __future__ import annotations

import base64
import json

import pytest
from leaks import find_in

from .conftest import KEY, READ_KEY

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(
    "text",
    [
        f"GET /v0/pipelines: Authorization: Bearer {KEY}",
        f"error body: {KEY[:60]}…",  # an excerpt cut through the key
        f"…{KEY[-30:]} trailing",  # an excerpt that starts inside it
        json.dumps({"data": {"apiKey": base64.b64encode(KEY.encode()).decode()}}),
        base64.b64encode(f"xy{KEY}z".encode()).decode(),  # encoded inside a longer value
    ],
    ids=["whole", "head", "tail", "secret data", "encoded inside"],
)
def test_a_key_is_found_however_it_shows_up(text: str) -> None:
    leaks = find_in([("somewhere", f"line one\n{text}\nline three")], [KEY, READ_KEY])
    assert leaks == [f"key {KEY[:10] + '…'!r} found in somewhere, line 2"]
    assert KEY not in leaks[0] and KEY[10:26] not in leaks[0]


def test_clean_text_and_other_keys_are_not_leaks() -> None:
    text = "Feldera (http://127.0.0.1:1) rejected the API key (401); check the API key Secret"
    assert find_in([("log", text), ("other", KEY)], [READ_KEY]) == []
