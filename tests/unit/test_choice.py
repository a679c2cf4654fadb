"""`auto` by measurement: the CPU's description, and the choice of the fastest path that agrees with PyTorch."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lmadapt.errors import LmadaptError
from lmadapt.inference.choice import (
    bf16_arithmetic,
    describe_cpu,
    measure_paths,
    recorded_fastest,
    with_measurement,
)

EPYC = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 1
model name	: AMD EPYC
stepping	: 2
flags		: fpu sse2 avx avx2 fma

processor	: 1
model name	: AMD EPYC
"""
SAPPHIRE_RAPIDS = """processor	: 0
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8488C
stepping	: 8
flags		: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_a_cpu_is_named_with_its_generation_and_the_flags_that_decide_the_path():
    epyc = describe_cpu(EPYC, 2)
    assert epyc == {"cpu": "AMD EPYC (family 23, model 1, stepping 2)", "cpu_flags": ["avx2"], "cores": 2}
    assert not bf16_arithmetic(epyc)
    xeon = describe_cpu(SAPPHIRE_RAPIDS, 2)
    assert xeon["cpu_flags"] == ["amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"]
    assert bf16_arithmetic(xeon)
    assert describe_cpu("", 4)["cpu_flags"] == []  # no /proc/cpuinfo: no flags, the platform's name


class Sleeper:
    """A predictor that takes `seconds_per_text` and reads label 0 except on the texts `flips` names."""

    def __init__(self, seconds_per_text: float, flips: int = 0):
        self.seconds_per_text, self.flips = seconds_per_text, flips

    def scores(self, texts):
        time.sleep(self.seconds_per_text * len(texts))
        scores = np.tile([0.9, 0.1], (len(texts), 1))
        scores[: self.flips] = [0.1, 0.9]
        return scores


def test_the_fastest_path_that_agrees_with_pytorch_is_chosen(monkeypatch):
    monkeypatch.setattr("lmadapt.inference.choice.MIN_SECONDS", 0.0)
    predictors = {
        "torch": Sleeper(2e-4),
        "onnx": Sleeper(1e-4),
        "onnx-int8": Sleeper(2e-5, flips=10),  # fastest, but 10 of 100 labels differ
    }

    def load(path):
        if path == "openvino":
            raise LmadaptError("OpenVINO cannot load this graph")
        return predictors[path]

    cpu = describe_cpu(EPYC, 2)
    measured = measure_paths(load, ["torch", "onnx", "onnx-int8", "openvino"], ["text"] * 100, cpu)
    assert measured["fastest"] == "onnx"
    assert measured["paths"]["onnx-int8"]["label_agreement"] == pytest.approx(0.9)
    assert measured["paths"]["onnx"]["texts_per_s"] > measured["paths"]["torch"]["texts_per_s"]
    assert measured["paths"]["openvino"] == {"error": "OpenVINO cannot load this graph"}
    assert measured["cpu"] == cpu["cpu"] and measured["texts"] == 100


def test_a_measurement_counts_only_for_its_cpu_and_its_paths():
    epyc, xeon = describe_cpu(EPYC, 2), describe_cpu(SAPPHIRE_RAPIDS, 2)
    paths = {"torch": {}, "onnx-int8": {}}
    record = with_measurement({"machines": []}, epyc | {"paths": paths, "fastest": "onnx-int8"})
    record = with_measurement(record, xeon | {"paths": paths | {"torch-bf16": {}}, "fastest": "torch-bf16"})
    assert recorded_fastest(record, epyc, ["torch", "onnx-int8"]) == "onnx-int8"
    assert recorded_fastest(record, xeon, ["torch", "torch-bf16", "onnx-int8"]) == "torch-bf16"
    assert recorded_fastest(record, epyc, ["torch", "onnx-int8", "openvino"]) is None  # a path was added since
    assert recorded_fastest(record, describe_cpu(EPYC, 4), ["torch", "onnx-int8"]) is None  # other cores
    again = with_measurement(record, epyc | {"paths": paths, "fastest": "torch"})
    assert len(again["machines"]) == 2
    assert recorded_fastest(again, epyc, ["torch", "onnx-int8"]) == "torch"
