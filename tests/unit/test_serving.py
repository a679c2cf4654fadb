"""Fast inference and the REST service: ONNX export with its parity check, inference backends, and a
real HTTP server (uvicorn on a free port) driven by an HTTP client: limits, auth, batching, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.serving.app import ServiceSettings, wait_until_serving
from lmadapt.serving.routes import Pool, ServiceRouter
from tests.conftest import REPO, sentiment_rows, tiny_overrides, write_three_splits

TEXTS = ["a great and moving film", "dull boring plot", "the acting was superb", "tedious and lifeless ending"]


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tmp_path_factory):
    """A tiny BERT fully fine-tuned on the synthetic sentiment rows, in a run folder of its own."""
    work = tmp_path_factory.mktemp("serving")
    files = write_three_splits(work, sentiment_rows(360))
    return lmadapt.train(lmadapt.load_config(None, tiny_overrides(tiny_bert, files, work / "runs", "sentiment")))


@pytest.fixture(scope="module")
def exported_run(trained_run):
    lmadapt.export(trained_run.path, quantize="int8")
    return lmadapt.load(trained_run.path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_server(runs, **settings):
    """The service on a free loopback port, in a thread of this process; yields its base URL."""
    import uvicorn

    app = lmadapt.create_app(runs, ServiceSettings(**settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def scores_of(response_json) -> np.ndarray:
    return np.array([[p["scores"][label] for label in ("positive", "negative")] for p in response_json["predictions"]])


# --- export and inference backends -----------------------------------------------------------------------


def test_export_writes_checked_graphs_into_the_run_folder_and_its_manifest(exported_run):
    from lmadapt.runs import verify_manifest

    report = json.loads((exported_run.path / "onnx" / "export.json").read_text())
    for backend in ("onnx", "onnx-int8"):
        assert report[backend]["texts_checked"] == 60  # the run's test rows
        assert report[backend]["label_agreement"] == 1.0
    assert report["onnx"]["max_probability_difference"] < 1e-4
    manifest = json.loads((exported_run.path / "manifest.json").read_text())
    assert {"onnx/model.onnx", "onnx/model.int8.onnx", "onnx/export.json"} <= set(manifest["files"])
    verify_manifest(exported_run.path)


def test_every_backend_agrees_with_pytorch(exported_run):
    reference = exported_run.predictor.scores(TEXTS * 5)
    backends = [("torch", 1e-6), ("onnx", 1e-5), ("onnx-int8", 0.05), ("torch-bf16", 0.05), ("openvino", 0.05)]
    for backend, tolerance in backends:
        predictor = exported_run.inference(backend, workers=2, batch_size=3)
        assert predictor.engine.name == backend
        np.testing.assert_allclose(predictor.scores(TEXTS * 5), reference, atol=tolerance, err_msg=backend)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """This CPU as if it had no bf16 arithmetic: a run that is not exported has PyTorch float32 as its only path."""
    from lmadapt.inference.choice import cpu_description

    here = cpu_description()
    flags = [flag for flag in here["cpu_flags"] if "bf16" not in flag]
    monkeypatch.setattr("lmadapt.runs.cpu_description", lambda: here | {"cpu_flags": flags})


def test_auto_is_measured_once_per_cpu_and_recorded_in_the_run_folder(exported_run, tmp_path, monkeypatch):
    import shutil

    from lmadapt.inference.choice import SPEED_RECORD, cpu_description

    copy = tmp_path / "measured"
    shutil.copytree(exported_run.path, copy)
    # export measured every path here and recorded it
    record = json.loads((copy / SPEED_RECORD).read_text())
    (measured,) = record["machines"]
    assert {key: measured[key] for key in ("cpu", "cpu_flags", "cores")} == cpu_description()
    assert {"torch", "onnx", "onnx-int8", "openvino"} <= set(measured["paths"])
    assert all(found["texts_per_s"] > 0 and found["label_agreement"] >= 0.97 for found in measured["paths"].values())
    assert measured["paths"]["torch"]["label_agreement"] == 1.0
    assert lmadapt.load(copy).inference("auto").engine.name == measured["fastest"]

    # the record is reused: nothing is measured again on this CPU
    def no_measuring(*_args, **_kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr("lmadapt.runs.measure_paths", no_measuring)
    assert lmadapt.load(copy).inference("auto").engine.name == measured["fastest"]
    # on another CPU the paths are measured again, and both machines stay recorded
    monkeypatch.undo()
    other = cpu_description() | {"cpu": "Another CPU (family 1, model 2, stepping 3)", "cpu_flags": ["avx2"]}
    monkeypatch.setattr("lmadapt.runs.cpu_description", lambda: other)
    chosen = lmadapt.load(copy).inference("auto").engine.name
    machines = json.loads((copy / SPEED_RECORD).read_text())["machines"]
    assert [entry["cpu"] for entry in machines] == [measured["cpu"], other["cpu"]]
    assert chosen == machines[1]["fastest"] and "torch-bf16" not in machines[1]["paths"]  # no bf16 arithmetic there


def test_auto_in_a_run_folder_it_cannot_write_measures_without_recording(exported_run, tmp_path, monkeypatch):
    import shutil

    from lmadapt.inference.choice import SPEED_RECORD

    copy = tmp_path / "read-only"
    shutil.copytree(exported_run.path, copy)
    (copy / SPEED_RECORD).unlink()

    def refused(path, _text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("lmadapt.runs.write_text_atomic", refused)
    assert lmadapt.load(copy).inference("auto").engine.name in {"torch", "onnx", "onnx-int8", "openvino"}
    assert not (copy / SPEED_RECORD).exists()


def test_int8_export_keeps_the_closer_of_dynamic_and_static_quantization(exported_run):
    report = json.loads((exported_run.path / "onnx" / "export.json").read_text())["onnx-int8"]
    (other,) = report["not_kept"]
    assert {report["quantization"], other} == {"dynamic", "static"}
    kept, not_kept = report, report["not_kept"][other]
    # both checked on the run's labelled test rows against PyTorch float32
    assert kept["texts_checked"] == not_kept["texts_checked"] == 60
    assert "accuracy_delta" in kept and "accuracy_delta" in not_kept

    def closeness(checked):
        return checked["label_agreement"], -checked["mean_probability_difference"]

    assert closeness(kept) >= closeness(not_kept)


def test_parallel_workers_keep_the_order_of_the_texts(trained_run):
    texts = [f"{word} film {i}" for i, word in enumerate(["great", "dull", "superb", "awful", "moving"] * 8)]
    alone = trained_run.inference("torch", workers=1, batch_size=4).scores(texts)
    together = trained_run.inference("torch", workers=2, batch_size=4).scores(texts)
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_export_above_tolerance_writes_nothing(tiny_bert, tmp_path, cpu_without_bf16):
    files = write_three_splits(tmp_path, sentiment_rows(360))
    run = lmadapt.train(lmadapt.load_config(None, tiny_overrides(tiny_bert, files, tmp_path / "runs", "strict")))
    before = (run.path / "manifest.json").read_bytes()
    with pytest.raises(LmadaptError, match="tolerance 0"):
        lmadapt.export(run.path, quantize="int8", tolerance=0.0)
    assert not (run.path / "onnx").exists()
    assert (run.path / "manifest.json").read_bytes() == before
    with pytest.raises(LmadaptError, match="lmadapt export"):
        lmadapt.load(run.path).inference("onnx")
    # A graph the manifest does not sign (left by an interrupted export, or put there by hand) is not used.
    (run.path / "onnx").mkdir()
    (run.path / "onnx" / "model.onnx").write_bytes(b"not a graph")
    assert lmadapt.load(run.path).inference("auto").engine.name == "torch"
    with pytest.raises(LmadaptError, match="has no onnx export"):
        lmadapt.load(run.path).inference("onnx")


def test_exporting_again_keeps_the_run_loadable(exported_run, tmp_path):
    import shutil

    copy = tmp_path / "again"
    shutil.copytree(exported_run.path, copy)
    lmadapt.export(copy)  # float32 only: the int8 graph and its report stay signed
    again = lmadapt.load(copy)
    assert set(json.loads((copy / "onnx" / "export.json").read_text())) == {"onnx", "onnx-int8"}
    measured = again.measurement_here()  # measured again after the export, with the int8 graph still among the paths
    assert {"onnx", "onnx-int8"} <= set(measured["paths"])
    assert again.inference("auto").engine.name == measured["fastest"]


def test_cli_predict_on_the_onnx_backend(exported_run, monkeypatch, capsys):
    from tests.unit.test_cli import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "predict", exported_run.path, "great film", "--backend", "onnx")
    expected = exported_run.predict(["great film"])[0]
    assert code == 0, err
    assert out.split()[0] == expected["label"]


def test_a_changed_export_is_caught_on_load(exported_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported_run.path, copy)
    with (copy / "onnx" / "model.int8.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(LmadaptError, match="model.int8.onnx"):
        lmadapt.load(copy)


# --- the REST service ------------------------------------------------------------------------------------


def test_predictions_match_predict_and_models_are_listed(exported_run):
    with live_server([exported_run], backend="torch") as url, httpx.Client(base_url=url) as client:
        response = client.post("/v1/predict", json={"texts": TEXTS})
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == exported_run.name
        direct = exported_run.predict(TEXTS)
        assert [p["label"] for p in body["predictions"]] == [d["label"] for d in direct]
        np.testing.assert_allclose(
            scores_of(body), [[d["scores"][k] for k in ("positive", "negative")] for d in direct], atol=1e-6
        )
        models = client.get("/v1/models").json()
        assert [(m["name"], m["backend"], m["labels"]) for m in models] == [
            (exported_run.name, "torch", exported_run.labels.labels)
        ]
        assert client.get("/healthz").json()["status"] == "ok"


def test_every_limit_returns_its_documented_error(trained_run):
    limits = {"max_texts": 3, "max_chars": 40, "max_body_bytes": 400}
    with live_server([trained_run], **limits) as url, httpx.Client(base_url=url) as client:

        def refused(status, code, **request):
            response = client.request(request.pop("method", "POST"), request.pop("path", "/v1/predict"), **request)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == code and error["message"]
            return error

        assert "limit is 3" in refused(422, "too_many_texts", json={"texts": ["great"] * 4})["message"]
        assert "limit is 40" in refused(422, "text_too_long", json={"texts": ["great " * 10]})["message"]
        refused(422, "empty_text", json={"texts": ["great", "  "]})
        refused(422, "no_texts", json={"texts": []})
        refused(422, "invalid_request", json={"texts": "great"})
        refused(422, "invalid_request", json={"model": trained_run.name})
        refused(400, "malformed_json", content=b'{"texts": [', headers={"content-type": "application/json"})
        assert trained_run.name in refused(404, "unknown_model", json={"model": "nope", "texts": ["great"]})["fix"]
        refused(413, "body_too_large", json={"texts": ["great film " * 3] * 20})

        def chunks():  # no content-length: the limit applies to the bytes as they stream in
            yield b'{"texts": ["'
            for _ in range(10):
                yield b"great film " * 10
            yield b'"]}'

        refused(413, "body_too_large", content=chunks(), headers={"content-type": "application/json"})
        refused(404, "not_found", method="GET", path="/v2/nothing")
        refused(405, "method_not_allowed", method="GET", path="/v1/predict")
        metrics = client.get("/metrics").text
        assert 'lmadapt_errors_total{code="too_many_texts"} 1.0' in metrics
        assert 'lmadapt_errors_total{code="body_too_large"} 2.0' in metrics


def test_a_body_that_is_not_json_as_the_standard_has_it_is_refused_with_what_is_wrong(trained_run):
    """RFC 8259 JSON only: UTF-8, no NaN or Infinity, declared as JSON; each refusal says what was wrong and the fix."""
    json_type = {"content-type": "application/json"}
    with live_server([trained_run]) as url, httpx.Client(base_url=url) as client:

        def refused(status, code, content, headers=json_type):
            response = client.post("/v1/predict", content=content, headers=headers)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == code, error
            return error["message"], error["fix"]

        message, fix = refused(400, "malformed_json", '{"texts": ["café"]}'.encode("latin-1"))
        assert message == "the request body is not UTF-8 (at byte offset 15: invalid continuation byte)"
        assert fix == "encode the JSON as UTF-8"
        message, fix = refused(400, "malformed_json", b"[" * 10_000 + b"]" * 10_000)
        assert "nests lists or objects too deeply" in message and '"texts": [' in fix
        for constant in ("NaN", "Infinity", "-Infinity"):
            message, fix = refused(400, "malformed_json", f'{{"texts": ["great"], "x": {constant}}}'.encode())
            assert message == f"the request body has {constant}, which JSON does not allow"
            assert fix == f"send null or a number instead of {constant}"
        message, _ = refused(400, "malformed_json", b'{"texts": [')
        assert message.startswith("the request body is not valid JSON: Expecting value: line 1 column 12")

        message, fix = refused(415, "unsupported_media_type", b'{"texts": ["great"]}', {"content-type": "text/plain"})
        assert message == "the request body is declared as text/plain, not JSON"
        assert fix == "send it as JSON with the header 'Content-Type: application/json'"
        curl_default = {"content-type": "application/x-www-form-urlencoded"}  # curl -d without -H
        message, _ = refused(415, "unsupported_media_type", b'{"texts": ["great"]}', curl_default)
        assert "application/x-www-form-urlencoded, not JSON" in message
        message, _ = refused(415, "unsupported_media_type", b'{"texts": ["great"]}', {})
        assert message == "the request body has no Content-Type"
        assert "body: Field required" in refused(422, "invalid_request", b"", {})[0]  # no body: nothing to declare

        for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
            answer = client.post("/v1/predict", content=b'{"texts": ["great"]}', headers={"content-type": content_type})
            assert answer.status_code == 200, (content_type, answer.text)
        with_bom = client.post("/v1/predict", content=b'\xef\xbb\xbf{"texts": ["great"]}', headers=json_type)
        assert with_bom.status_code == 200, with_bom.text  # RFC 8259 lets a parser ignore a byte order mark
        metrics = client.get("/metrics").text
        assert 'lmadapt_errors_total{code="malformed_json"} 6.0' in metrics
        assert 'lmadapt_errors_total{code="unsupported_media_type"} 3.0' in metrics


def test_a_port_out_of_range_is_refused_before_serving(trained_run, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from lmadapt import cli
    from lmadapt.serving.app import serve_forever

    def serving(_server):
        raise AssertionError("the service started on a port out of range")

    monkeypatch.setattr(uvicorn.Server, "run", serving)
    for port, limit in (("0", "greater than or equal to 1"), ("99999", "less than or equal to 65535")):
        result = CliRunner().invoke(cli.app, ["serve", str(trained_run.path), "--port", port])
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '--port': Input should be {limit}" in result.output
    with pytest.raises(LmadaptError, match="port 99999 is out of range") as caught:
        serve_forever(lmadapt.create_app([trained_run]), port=99999)
    assert caught.value.where == "port" and caught.value.fix == "use a port from 1 to 65535"


def test_api_key_is_required_on_every_route(trained_run):
    with live_server([trained_run], api_key="s3cret") as url, httpx.Client(base_url=url) as client:
        for method, path in (("POST", "/v1/predict"), ("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/metrics")):
            body = {"json": {"texts": ["great"]}} if method == "POST" else {}
            missing = client.request(method, path, **body)
            wrong = client.request(method, path, headers={"X-API-Key": "guess"}, **body)
            assert (missing.status_code, wrong.status_code) == (401, 401), path
            assert missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/predict", json={"texts": ["great"]}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/openapi.json").status_code == 200  # the schema itself is public


def test_the_key_is_checked_before_anything_else_and_read_as_the_standards_say(trained_run):
    with pytest.raises(LmadaptError, match="API key is empty"):
        lmadapt.create_app([trained_run], ServiceSettings(api_key=" "))
    with live_server([trained_run], api_key="s3cret") as url, httpx.Client(base_url=url) as client:
        malformed = client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"})
        assert malformed.status_code == 401  # not 400: without the key nothing is read
        assert client.get("/healthz", headers={"Authorization": "bearer s3cret"}).status_code == 200
        proxied = {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": "s3cret"}
        assert client.get("/healthz", headers=proxied).status_code == 200
        both = {"Authorization": "Bearer wrong", "X-API-Key": "s3cret"}
        assert client.get("/healthz", headers=both).status_code == 401


def test_text_that_is_not_unicode_is_refused(trained_run):
    with live_server([trained_run]) as url, httpx.Client(base_url=url) as client:
        response = client.post(
            "/v1/predict", content=b'{"texts": ["great", "\\ud800"]}', headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_text"


def test_texts_the_backbone_cannot_read_are_refused_before_predicting(trained_run, tmp_path, monkeypatch, capsys):
    """The language guard at prediction: the Python API, a scored file, the CLI and the service."""
    from lmadapt.serving.batch import predict_file
    from tests.unit.test_cli import run_cli
    from tests.unit.test_language import CHINESE

    run = lmadapt.load(trained_run.path)
    with pytest.raises(
        LmadaptError, match=r"100% of their tokens are unknown.*predictions for them would mean nothing"
    ):
        run.predict(CHINESE)
    assert len(run.predict(["great 好"])) == 1  # too few tokens to judge a language by
    source, scored = tmp_path / "chinese.csv", tmp_path / "scored.csv"
    pd.DataFrame({"text": CHINESE * 3}).to_csv(source, index=False)
    with pytest.raises(LmadaptError, match="cannot read these texts") as error:
        predict_file(run, source, scored)
    assert error.value.where == str(source) and not scored.exists()
    code, _, err = run_cli(monkeypatch, capsys, "predict", run.path, *CHINESE)
    assert code == 2 and "cannot read these texts" in err and "Traceback" not in err
    with live_server([run]) as url, httpx.Client(base_url=url) as client:
        refused = client.post("/v1/predict", json={"texts": ["a great film", *CHINESE]})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unreadable_texts"
        assert "e5-multilingual" in refused.json()["error"]["fix"]
        assert client.post("/v1/predict", json={"texts": TEXTS}).status_code == 200


def run_batcher(predict, requests: list[list[str]], **options) -> list:
    import asyncio

    from lmadapt.serving.batching import MicroBatcher

    async def scenario():
        with ThreadPoolExecutor(options.get("slots", 1)) as executor:
            batcher = MicroBatcher(predict, executor, **options)
            batcher.start()
            answers = await asyncio.gather(*(batcher.predict(texts) for texts in requests), return_exceptions=True)
            await batcher.stop()
        return answers

    return asyncio.run(scenario())


def test_a_pass_takes_texts_of_similar_length_and_an_overdue_text_first():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        return [text.upper() for text in texts]

    requests = [["long text", "b"], ["more text", "d"]]
    answers = run_batcher(predict, requests, max_batch=2, max_wait_s=0.2)
    assert answers == [["LONG TEXT", "B"], ["MORE TEXT", "D"]]  # each request's answers in its own order
    assert calls == [["b", "d"], ["long text", "more text"]]  # the tightest length windows
    calls.clear()
    run_batcher(predict, requests, max_batch=2, max_wait_s=0.2, max_delay_s=0)
    assert calls == [["long text", "more text"], ["b", "d"]]  # the oldest text, overdue, goes first


def test_a_pass_groups_texts_by_the_length_measure_gives():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        return texts

    def tokens(texts):  # a model's lengths: long words here count as one token each
        return [len(text.split()) for text in texts]

    requests = [["extraordinarily", "a b c"], ["unbelievable", "x y z"]]
    run_batcher(predict, requests, max_batch=2, max_wait_s=0.2)
    assert calls == [["a b c", "x y z"], ["extraordinarily", "unbelievable"]]  # by characters
    calls.clear()
    run_batcher(predict, requests, max_batch=2, max_wait_s=0.2, measure=tokens)
    assert calls == [["extraordinarily", "unbelievable"], ["a b c", "x y z"]]  # one token each, then three


def test_the_service_measures_a_model_s_texts_in_its_tokens(trained_run):
    predictor = trained_run.inference("torch")
    counts = predictor.token_counts(["great", "a great and moving film", "word " * 1000])
    assert counts[0] < counts[1] < counts[2] == trained_run.max_length  # truncated as predicted
    assert counts[1] == len(predictor.tokenizer("a great and moving film")["input_ids"])


def test_a_large_request_is_spread_over_every_slot():
    running, most = [], []
    lock = threading.Lock()

    def predict(texts):
        with lock:
            running.append(1)
            most.append(len(running))
        time.sleep(0.1)
        with lock:
            running.pop()
        return [len(text) for text in texts]

    texts = [f"text {i}" * (i + 1) for i in range(6)]
    answers = run_batcher(predict, [texts], max_batch=2, max_wait_s=0.05, slots=2)
    assert answers == [[len(text) for text in texts]]
    assert max(most) == 2 and len(most) == 3  # three passes of two, two at a time


def test_a_failing_request_fails_alone_in_its_pass():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        if "bad" in texts:
            raise ValueError("cannot read 'bad'")
        return [text.upper() for text in texts]

    answers = run_batcher(predict, [["a", "b"], ["bad"], ["c"]], max_batch=16, max_wait_s=0.2)
    assert answers[0] == ["A", "B"] and answers[2] == ["C"]
    assert isinstance(answers[1], ValueError)
    assert calls[0] == ["a", "b", "bad", "c"]  # one pass first, then each request alone


def test_slow_predictions_time_out_with_504(trained_run):
    with live_server([trained_run], timeout_s=0.05, max_wait_ms=500) as url, httpx.Client(base_url=url) as client:
        response = client.post("/v1/predict", json={"texts": ["great"]})
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(trained_run):
    requests = [
        [f"{word} story {i}", f"{other} plot {i}"]
        for i, (word, other) in enumerate([("great", "dull"), ("awful", "superb")] * 8)
    ]
    expected = [trained_run.predict(texts) for texts in requests]
    with (
        live_server([trained_run], backend="torch", max_wait_ms=200, max_batch=64) as url,
        httpx.Client(base_url=url) as client,
    ):
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda texts: client.post("/v1/predict", json={"texts": texts}), requests))
        metrics = client.get("/metrics").text
    for answer, wanted in zip(answers, expected):
        assert answer.status_code == 200
        got = answer.json()["predictions"]
        assert [p["label"] for p in got] == [w["label"] for w in wanted]
        np.testing.assert_allclose(
            scores_of(answer.json()), [[w["scores"][k] for k in ("positive", "negative")] for w in wanted], atol=1e-5
        )
    batches = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("lmadapt_batch_size_count"))
    )
    texts = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("lmadapt_batch_size_sum")))
    assert texts == 2 * len(requests)
    assert batches < len(requests)  # some forward passes served more than one request


def test_several_runs_served_by_name(trained_run, exported_run, tmp_path):
    import shutil

    other = tmp_path / "second"
    shutil.copytree(trained_run.path, other)
    with live_server([trained_run, lmadapt.load(other)], backend="torch") as url, httpx.Client(base_url=url) as client:
        assert client.post("/v1/predict", json={"texts": ["great"]}).json()["error"]["code"] == "model_required"
        assert client.post("/v1/predict", json={"model": "second", "texts": ["great"]}).json()["model"] == "second"


def test_sigterm_lets_requests_in_flight_finish(trained_run):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "lmadapt.cli",
        "serve",
        str(trained_run.path),
        "--port",
        str(port),
        "--max-wait-ms",
        "1500",
    ]
    server = subprocess.Popen(
        command, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO / "src")}, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, server)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/predict", json={"texts": ["great"]}, timeout=30)
            time.sleep(0.5)  # the request now waits in the batcher (1.5 s window)
            server.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200 and response.json()["predictions"][0]["label"] in ("positive", "negative")
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_generated_requests_never_get_a_server_error(trained_run):
    """schemathesis generates requests from the OpenAPI schema (and drops the key): each answer conforms
    to the schema, none is a 5xx, and without the key every route says 401. Generated texts are random
    letters, which the language guard may refuse (422 unreadable_texts): a rule of content the schema
    cannot state, so only there a schema-valid request may be refused."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    with live_server([trained_run], backend="torch", max_texts=16, max_chars=200, api_key="k3y") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} == {"/v1/predict", "/v1/models", "/healthz", "/metrics"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                key = {"X-API-Key": "k3y"}
                response = case.call(headers=key)
                unreadable = response.status_code == 422 and response.json()["error"]["code"] == "unreadable_texts"
                case.validate_response(
                    response, headers=key, excluded_checks=[positive_data_acceptance] if unreadable else None
                )

            check()


def test_a_graph_a_runtime_cannot_read_is_a_clear_error(tmp_path):
    from lmadapt.inference.engines import OnnxEngine, OpenVinoEngine

    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not a graph")
    for engine, runtime in ((OnnxEngine, "ONNX Runtime"), (OpenVinoEngine, "OpenVINO")):
        with pytest.raises(LmadaptError, match=f"{runtime} cannot load this graph") as caught:
            engine(graph)
        assert caught.value.where == str(graph)


# --- an application's routes on the service ---------------------------------------------------------------


class Question(BaseModel):  # an application's request (at module level: FastAPI resolves the annotations here)
    text: str


def test_an_application_router_shares_the_pool_the_key_the_limits_the_metrics_and_the_error_bodies(trained_run):
    from fastapi.testclient import TestClient

    router = ServiceRouter(prefix="/v1/support")
    pools = []

    @router.post("/answer")
    async def answer(question: Question, pool: Pool) -> dict:
        pools.append(pool)
        return {"intent": (await pool.predict(None, [question.text]))[0]["label"]}

    @router.get("/broken")
    async def broken() -> dict:
        raise RuntimeError("the knowledge base is offline")

    app = lmadapt.create_app([trained_run], ServiceSettings(api_key="s3cret", max_chars=40, backend="torch"), [router])
    key = {"X-API-Key": "s3cret"}
    with TestClient(app, raise_server_exceptions=False) as client:

        def refused(status, code, path="/v1/support/answer", **request):
            response = client.post(path, **request) if "/answer" in path else client.get(path, **request)
            assert response.status_code == status, response.text
            assert set(response.json()) == {"error"} and response.json()["error"]["code"] == code, response.text
            return response.json()["error"]

        answered = client.post("/v1/support/answer", json={"text": "a great film"}, headers=key)
        assert answered.status_code == 200, answered.text
        assert answered.json() == {"intent": trained_run.predict(["a great film"])[0]["label"]}
        assert pools == [app.state.pool]

        assert refused(401, "unauthorized", json={"text": "a great film"})["fix"].startswith("send the key as")
        refused(401, "unauthorized", json={"text": "a great film"}, headers={"X-API-Key": "guess"})
        assert "limit is 40" in refused(422, "text_too_long", json={"text": "great " * 10}, headers=key)["message"]
        assert "text: Field required" in refused(422, "invalid_request", json={}, headers=key)["message"]
        strict = {**key, "content-type": "application/json"}
        assert "NaN" in refused(400, "malformed_json", content=b'{"text": NaN}', headers=strict)["message"]
        refused(
            415, "unsupported_media_type", content=b'{"text": "great"}', headers={**key, "content-type": "text/plain"}
        )
        message = refused(500, "internal", path="/v1/support/broken", headers=key)["message"]
        assert message == "RuntimeError: the knowledge base is offline"

        metrics = client.get("/metrics", headers=key).text
        schema = client.get("/openapi.json").json()
    assert 'lmadapt_requests_total{route="/v1/support/answer",status="200"} 1.0' in metrics
    assert 'lmadapt_requests_total{route="/v1/support/answer",status="422"} 2.0' in metrics
    assert 'lmadapt_requests_total{route="/v1/support/broken",status="500"} 1.0' in metrics
    assert f'lmadapt_predicted_texts_total{{model="{trained_run.name}"}} 1.0' in metrics
    assert 'lmadapt_errors_total{code="unauthorized"} 2.0' in metrics
    assert 'lmadapt_errors_total{code="internal"} 1.0' in metrics
    # The schema says the application's routes need the key, as the service's own do.
    security = schema["paths"]["/v1/support/answer"]["post"]["security"]
    assert security == schema["paths"]["/v1/predict"]["post"]["security"] and security


def test_an_application_router_that_reads_bodies_its_own_way_is_refused(trained_run):
    from fastapi import APIRouter

    plain, service = APIRouter(), ServiceRouter()
    plain.post("/v1/plain")(lambda: {})
    service.post("/v1/strict")(lambda: {})
    with pytest.raises(
        TypeError, match=r"the routes \['/v1/plain'\] do not read JSON .* build them on a ServiceRouter"
    ):
        lmadapt.create_app([trained_run], routers=[service, plain])


def test_a_prediction_hook_sees_and_can_change_what_predict_returns(trained_run):
    from fastapi.testclient import TestClient

    seen = []

    def out_of_scope(name, texts, results):
        return [
            {**result, "label": "out_of_scope"} if "music" in text else result for text, result in zip(texts, results)
        ]

    def observe(name, texts, results):
        seen.append((name, list(texts), [result["label"] for result in results]))

    texts = ["a great film", "the music was dull"]
    app = lmadapt.create_app([trained_run], ServiceSettings(backend="torch"))
    app.state.pool.hooks.extend([out_of_scope, observe])
    with TestClient(app) as client:
        answered = client.post("/v1/predict", json={"texts": texts})
    assert answered.status_code == 200, answered.text
    predictions = answered.json()["predictions"]
    direct = trained_run.predict(texts)
    assert [p["label"] for p in predictions] == [direct[0]["label"], "out_of_scope"]
    np.testing.assert_allclose(
        scores_of(answered.json()), [[d["scores"][k] for k in ("positive", "negative")] for d in direct], atol=1e-6
    )
    assert seen == [(trained_run.name, texts, [direct[0]["label"], "out_of_scope"])]  # in order: it saw the change
