"""The recommender on the shared service: GET and POST /v1/recommend answer what the loaded folder answers, a
visitor is served from items or a description by the text model, and refusals (unknown user or item, a model that
reads no text, limits, the API key) are JSON 4xx bodies that say what to do."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from lmadapt.apps.recommend.recommender import open_recommender
from lmadapt.apps.recommend.service import create_recommend_app
from lmadapt.serving.settings import ServiceSettings
from tests.unit.test_recommend_cli import data_files, ease_folder, text_folder  # noqa: F401 (fixtures)
from tests.unit.test_recommend_text import tiny_bert  # noqa: F401 (a fixture)


def client_for(folder, **settings) -> TestClient:
    return TestClient(create_recommend_app(open_recommender(folder), ServiceSettings(**settings)))


@pytest.fixture(scope="module")
def text_client(text_folder):  # noqa: F811
    with client_for(text_folder) as client:
        yield client


@pytest.fixture(scope="module")
def ease_client(ease_folder):  # noqa: F811
    with client_for(ease_folder) as client:
        yield client


def items_of(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["item"] for row in response.json()["items"]]


def test_get_and_post_for_a_user_answer_what_the_folder_answers(ease_client, ease_folder):  # noqa: F811
    expected = open_recommender(ease_folder).recommend("u3", 4)
    response = ease_client.get("/v1/recommend", params={"user": "u3", "k": 4})
    assert response.json() == {"recommender": ease_folder.name, "model": "ease", "items": expected}
    assert items_of(ease_client.post("/v1/recommend", json={"user": "u3", "k": 4})) == [r["item"] for r in expected]
    info = ease_client.get("/v1/recommender").json()
    assert info["model"] == "ease" and info["items"] == 64 and info["users"] == 48
    assert info["metrics"]["hr_at_5"] > 0


def test_a_visitor_is_served_from_their_items_or_a_description(text_client, text_folder):  # noqa: F811
    saved = open_recommender(text_folder)
    history = ["i2-0", "i2-1"]
    found = items_of(text_client.post("/v1/recommend", json={"items": history, "k": 5}))
    assert found == [row["item"] for row in saved.for_history(history, k=5)]
    assert not set(history) & set(found)
    described = items_of(text_client.post("/v1/recommend", json={"text": "great wonderful", "k": 3}))
    assert described == [row["item"] for row in saved.for_history(text="great wonderful", k=3)]
    similar = items_of(text_client.get("/v1/similar", params={"item": "i2-0", "k": 3}))
    assert similar == [row["item"] for row in saved.similar("i2-0", 3)] and "i2-0" not in similar


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code", "message"),
    [
        ("get", "/v1/recommend", {"user": "nobody"}, 404, "unknown_user", "user 'nobody' has no interactions"),
        ("post", "/v1/recommend", {"user": "nobody"}, 404, "unknown_user", "user 'nobody'"),
        ("post", "/v1/recommend", {"items": ["i0-1", "nope"]}, 422, "refused", "item 'nope' is not in the catalogue"),
        ("post", "/v1/recommend", {}, 422, "nothing_to_recommend_from", "no user, no items and no text"),
        ("post", "/v1/recommend", {"user": "u0", "text": "x"}, 422, "user_and_history", "a user or a history"),
        ("post", "/v1/recommend", {"text": " "}, 422, "refused", "text is empty"),
        ("post", "/v1/recommend", {"text": "x" * 101}, 422, "text_too_long", "limit is 100"),
        ("post", "/v1/recommend", {"items": ["i0-1"] * 3}, 422, "too_many_items", "limit is 2"),
        ("get", "/v1/recommend", {"user": "u0", "k": 0}, 422, "invalid_request", "k"),
        ("get", "/v1/similar", {"item": "nope"}, 422, "refused", "item 'nope' is not in the catalogue"),
    ],
)
def test_bad_requests_get_a_json_4xx_that_says_why(method, path, payload, status, code, message, text_folder):  # noqa: F811
    with client_for(text_folder, max_chars=100, max_texts=2) as client:
        sent = {"params": payload} if method == "get" else {"json": payload}
        response = getattr(client, method)(path, **sent)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"]


def test_a_collaborative_model_reads_histories_but_no_description(ease_client, ease_folder):  # noqa: F811
    saved = open_recommender(ease_folder)
    found = items_of(ease_client.post("/v1/recommend", json={"items": ["i0-1", "i0-2"], "k": 3}))
    assert found == [row["item"] for row in saved.for_history(["i0-1", "i0-2"], k=3)]
    assert items_of(ease_client.get("/v1/similar", params={"item": "i0-1", "k": 3})) == [
        row["item"] for row in saved.similar("i0-1", 3)
    ]
    response = ease_client.post("/v1/recommend", json={"text": "great films"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "the ease model reads no text" in error["message"] and "model=text" in error["fix"]


def test_the_api_key_guards_the_routes(ease_folder):  # noqa: F811
    with client_for(ease_folder, api_key="secret") as client:
        assert client.get("/v1/recommend", params={"user": "u0"}).status_code == 401
        answered = client.get("/v1/recommend", params={"user": "u0"}, headers={"X-API-Key": "secret"})
        assert answered.status_code == 200


def test_items_posted_are_recommended_from_the_next_request_and_kept_in_the_folder(text_folder, tmp_path):  # noqa: F811
    folder = tmp_path / "recommender"
    shutil.copytree(text_folder, folder)
    before = open_recommender(folder)
    twin_of = "i2-3"  # the new item has this item's text: the nearest of all items to it
    text = before.catalog.texts[before.catalog.index[twin_of]].removesuffix(".")
    with client_for(folder, max_chars=200, max_texts=2) as client:
        assert "new-1" not in items_of(client.get("/v1/similar", params={"item": twin_of, "k": 3}))
        response = client.post("/v1/items", json={"items": [{"id": "new-1", "text": text}]})
        assert response.status_code == 200, response.text
        assert response.json() == {"recommender": folder.name, "added": 1, "items": len(before.catalog) + 1}
        assert items_of(client.get("/v1/similar", params={"item": twin_of, "k": 1})) == ["new-1"]
        assert client.get("/v1/recommender").json()["items"] == len(before.catalog) + 1

        again = client.post("/v1/items", json={"items": [{"id": "new-1", "text": text}]})
        assert again.status_code == 422 and "already in the catalogue" in again.json()["error"]["message"]
        many = [{"id": f"n{i}", "text": "great"} for i in range(3)]
        assert client.post("/v1/items", json={"items": many}).json()["error"]["code"] == "too_many_items"
        long = client.post("/v1/items", json={"items": [{"id": "n9", "text": "x" * 201}]})
        assert long.json()["error"]["code"] == "text_too_long"
        assert client.post("/v1/items", json={"items": []}).status_code == 422
    reloaded = open_recommender(folder)  # written before the answer: a restarted service has it
    assert reloaded.catalog.ids[-1] == "new-1" and reloaded.record["added_items"] == 1


def test_a_collaborative_service_refuses_new_items_and_keeps_its_folder(ease_folder):  # noqa: F811
    before = (ease_folder / "manifest.json").read_bytes()
    with client_for(ease_folder) as client:
        response = client.post("/v1/items", json={"items": [{"id": "x", "text": "a film"}]})
    assert response.status_code == 422 and "model=text" in response.json()["error"]["fix"]
    assert (ease_folder / "manifest.json").read_bytes() == before
