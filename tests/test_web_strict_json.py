"""Hostile JSON bodies get a JSON 400 from the web API, never a 500, and NaN never goes out
(issue 10.10, 10.16). Through the real app on the real embedded Redis."""

from __future__ import annotations

import json
import math

import pytest
from flask import Flask, jsonify

from settings import load_settings
from web.app import create_app
from web.strict_json import StrictJSONProvider


@pytest.fixture
def client(redis_url: str):
    with create_app(load_settings(auth_disabled=True)).test_client() as test_client:
        yield test_client


def post(client, body: str):
    return client.post("/lock", data=body, content_type="application/json")


@pytest.mark.parametrize("levels", [500, 5000, 50_000 // 2])
def test_deeply_nested_bodies_are_400_not_500(client, levels: int) -> None:
    # A valid counter request with a deep extra field: ~1 KB at 500 levels.
    nested = "[" * levels + "]" * levels
    answer = post(client, f'{{"app_id": "a", "token_count": 1, "extra": {nested}}}')
    assert answer.status_code == 400, answer.data[:200]
    assert "nested deeper than" in answer.json["detail"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_in(client, constant: str) -> None:
    answer = post(client, f'{{"app_id": "a", "token_count": {constant}}}')
    assert answer.status_code == 400
    assert "not JSON" in answer.json["detail"]


def test_a_number_too_long_to_parse_is_400_not_500(client) -> None:
    # Python refuses integers of more than 4,300 digits with a ValueError, not a JSON one.
    answer = post(client, '{"app_id": "a", "token_count": ' + "9" * 5000 + "}")
    assert answer.status_code == 400 and "detail" in answer.json


def test_a_body_over_the_limit_is_413_json(client) -> None:
    answer = post(client, json.dumps({"app_id": "a", "token_count": 1, "pad": "x" * 70_000}))
    assert answer.status_code == 413 and "detail" in answer.json


def test_a_good_body_still_locks(client) -> None:
    answer = post(client, '{"app_id": "a", "token_count": 10}')
    assert answer.status_code == 200 and answer.json["allowed"] is True


def test_nan_is_never_emitted() -> None:
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    with app.app_context():
        with pytest.raises(ValueError, match="JSON compliant"):
            jsonify(value=math.nan)
        assert json.loads(jsonify(value=0.5).get_data()) == {"value": 0.5}
