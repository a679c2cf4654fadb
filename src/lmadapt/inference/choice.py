"""`auto`: the fastest inference path for a run on this machine, as measured on the run's own texts.

Which path is fastest depends on the CPU (AMX, AVX-512 bf16 or VNNI, AVX2 only), its cores and the model, so it is
measured, not guessed from flags: each path the run has (PyTorch float32; bf16 where the CPU has bf16 arithmetic;
its ONNX exports; OpenVINO on the float32 export) reads a sample of the run's texts, and the fastest whose labels
agree with PyTorch float32's on at least MIN_AGREEMENT of them wins. The measurement is recorded in the run folder
(`inference.json`, per CPU) and reused while the CPU and the paths stay the same; on another CPU it is made again.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

from lmadapt.errors import LmadaptError
from lmadapt.inference.engines import ONNX, ONNX_INT8, OPENVINO, TORCH, TORCH_BF16, has_export, openvino_installed

SPEED_RECORD = "inference.json"  # beside the manifest, not in it: a measurement of machines, not part of the model
MIN_AGREEMENT = 0.97  # least share of the sample's labels a path must give as PyTorch float32 does
SAMPLE_TEXTS = 128
MIN_SECONDS = 1.0  # each path reads the sample for at least this long (at least two passes), its best pass counts
# The instruction sets that decide which path is fast (bf16 and int8 matrix units, dot-product instructions).
FAST_PATH_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "avx2")


@functools.cache
def cpu_description() -> dict:
    """This machine's CPU (see describe_cpu)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:  # not Linux: the platform's own name, no flags
        cpuinfo = ""
    return describe_cpu(cpuinfo, os.cpu_count() or 1)


def describe_cpu(cpuinfo: str, cores: int) -> dict:
    """A CPU as /proc/cpuinfo describes it: its model (with family, model and stepping: names such as "AMD EPYC"
    cover generations), the FAST_PATH_FLAGS it has, and `cores`."""
    fields = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():  # the first core speaks for all
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields.get('model')}, stepping {fields.get('stepping')})"
    flags = set(fields.get("flags", "").split())
    return {"cpu": cpu, "cpu_flags": [flag for flag in FAST_PATH_FLAGS if flag in flags], "cores": cores}


def bf16_arithmetic(cpu: dict) -> bool:
    """The CPU multiplies bf16 in hardware (AMX or AVX-512 bf16); elsewhere bf16 is emulated, slower than float32."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu["cpu_flags"]))


def candidate_paths(run_path: Path, signed: Callable[[str], bool], cpu: dict) -> list[str]:
    """The paths this run can take here, PyTorch float32 first."""
    paths = [TORCH] + ([TORCH_BF16] if bf16_arithmetic(cpu) else [])
    paths += [backend for backend in (ONNX, ONNX_INT8) if has_export(run_path, backend, signed)]
    if has_export(run_path, OPENVINO, signed) and openvino_installed():
        paths.append(OPENVINO)
    return paths


def read_record(run_path: Path) -> dict:
    """The run's recorded measurements ({"machines": [...]}), empty where there are none or the file is unreadable
    (it is only ever a cache of measurements)."""
    try:
        record = json.loads((run_path / SPEED_RECORD).read_text(encoding="utf-8"))
        return record if isinstance(record.get("machines"), list) else {"machines": []}
    except (OSError, ValueError, AttributeError):
        return {"machines": []}


def same_machine(entry: dict, cpu: dict) -> bool:
    return all(entry.get(key) == cpu[key] for key in ("cpu", "cpu_flags", "cores"))


def recorded_fastest(record: dict, cpu: dict, paths: list[str]) -> str | None:
    """The fastest path measured on this CPU among exactly these paths, if such a measurement is recorded."""
    for entry in record["machines"]:
        if same_machine(entry, cpu) and sorted(entry.get("paths", {})) == sorted(paths):
            return entry.get("fastest")
    return None


def with_measurement(record: dict, measured: dict) -> dict:
    """`record` with `measured` replacing the entry of its machine."""
    return {"machines": [entry for entry in record["machines"] if not same_machine(entry, measured)] + [measured]}


def best_rate(predictor, texts: list[str]) -> tuple[float, np.ndarray]:
    """Texts per second of the fastest pass over `texts` (after a warm-up batch; at least two passes, for at
    least MIN_SECONDS), and the labels (class indices) it read."""
    predictor.scores(texts[:32])
    passes, best, started = 0, 0.0, time.perf_counter()
    while passes < 2 or time.perf_counter() - started < MIN_SECONDS:
        begun = time.perf_counter()
        scores = predictor.scores(texts)
        best = max(best, len(texts) / (time.perf_counter() - begun))
        passes += 1
    return best, scores.argmax(axis=1)


def measure_paths(load: Callable[[str], object], paths: list[str], texts: list[str], cpu: dict) -> dict:
    """Each path's texts/s on `texts` and its labels' agreement with the first path's (PyTorch float32); `load(path)`
    gives a path's predictor. A path that does not load here is recorded with the reason and never chosen."""
    measured, reference = {}, None
    for path in paths:
        try:
            predictor = load(path)
        except LmadaptError as error:
            measured[path] = {"error": error.what}
            continue
        rate, labels = best_rate(predictor, texts)
        reference = labels if reference is None else reference
        measured[path] = {"texts_per_s": round(rate, 1), "label_agreement": float(np.mean(labels == reference))}
        del predictor  # one path's model in memory at a time
    agreeing = [path for path, found in measured.items() if found.get("label_agreement", 0) >= MIN_AGREEMENT]
    fastest = max(agreeing, key=lambda path: measured[path]["texts_per_s"])
    return cpu | {"date": date.today().isoformat(), "texts": len(texts), "paths": measured, "fastest": fastest}
