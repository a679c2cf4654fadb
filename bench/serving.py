"""Serving benchmark: batch prediction paths against transformers' pipeline, and a load test of the service.

On SST-2 validation (872 sentences) with MiniLM `full` (the sst2 recipe on the benchmarks' seeded
20,000-row subset, trained once into --workdir and exported to ONNX, float32 and int8):

- system `hf_pipeline`: transformers pipeline("text-classification", batch_size=32), the baseline;
- one row per lmadapt inference path (`torch`, `torch_bf16`, `onnx`, `onnx_int8`, `openvino`), each with 1 worker
  (all cores on one batch) and with one worker per core: texts/s (tokenization included, best of
  --repeats passes after a warm-up), accuracy (and its difference from PyTorch float32's), and the ratio to the
  pipeline measured in the same run; the int8 row names the quantization the export kept (dynamic or static);
- system `auto`: the path `auto` takes here, as the export's measurement on this CPU chose it;
- system `service`: `lmadapt serve` on loopback (fastest backend) under --clients concurrent clients
  for --seconds (in --rounds parts), each request --texts-per-request validation sentences: throughput,
  p50/p99 latency, errors, and its ratio to the same backend's offline throughput sustained over
  offline parts interleaved with the load's (and to the best offline pass of any path). The clients run
  on the same 2 cores as the server.

Every row carries the CPU (`cpu`, `cpu_flags`: AMX, AVX-512 bf16/VNNI, AVX2); a rerun replaces this CPU's rows and
keeps other CPUs', so the file holds the CPU matrix.

    python bench/serving.py --data ../shared/data
    python bench/serving.py --data ../shared/data --only-service --service-backend torch-bf16   # another load test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from runner import ROOT, git_commit, sst2_full_run

from lmadapt.inference.choice import cpu_description
from lmadapt.serving.settings import ServiceSettings

PATHS = ["torch", "torch-bf16", "onnx", "onnx-int8", "openvino"]


def trained_run(data: Path, workdir: Path, epochs: int):
    """The MiniLM `full` SST-2 run, trained and exported once (again where an older lmadapt exported it, without
    the choice of int8 quantization); reused when the workdir has it; its paths measured on this CPU."""
    import lmadapt

    run = sst2_full_run(data, workdir, epochs)
    report = run.path / "onnx" / "export.json"
    if "quantization" not in (json.loads(report.read_text()) if report.is_file() else {}).get("onnx-int8", {}):
        lmadapt.export(run, quantize="int8")
    if run.measurement_here() is None:
        run.measure_inference()
    return run


def best_rate(predict, texts: list[str], repeats: int) -> tuple[float, list]:
    """Texts per second of the fastest of `repeats` passes over `texts` (after one warm-up), and its labels."""
    predict(texts[:64])
    best, labels = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        labels = predict(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best, labels


def sustained(predictor, texts: list[str], seconds: float) -> tuple[int, float]:
    """Texts predicted in whole passes over `texts`, back to back for at least `seconds`, and the time taken."""
    predictor.scores(texts[:64])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.scores(texts)
        done += len(texts)
    return done, time.perf_counter() - started


def accuracy(predicted: list, gold: list) -> float:
    return round(100 * float(np.mean([p == g for p, g in zip(predicted, gold)])), 2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def load_test(url: str, texts: list[str], clients: int, seconds: float, per_request: int) -> dict:
    """`clients` concurrent clients posting `per_request` texts each, back to back, for `seconds` (after 1 s of
    warm-up): texts answered, seconds, latencies, errors, and the CPU seconds the clients took.

    aiohttp, not httpx: the clients share the server's cores, so the lighter client leaves more of them to the
    server (what the clients took is reported as client_cores_busy)."""
    import aiohttp

    latencies, errors, done_texts = [], 0, 0
    rng = random.Random(0)
    requests = [json.dumps({"texts": rng.sample(texts, per_request)}) for _ in range(512)]
    headers = {"content-type": "application/json"}

    async def client(index: int, http: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal errors, done_texts
        sent = index
        while time.perf_counter() < deadline:
            body = requests[sent % len(requests)]
            sent += clients
            started = time.perf_counter()
            try:
                async with http.post(f"{url}/v1/predict", data=body, headers=headers) as response:
                    ok = response.status == 200 and len((await response.json())["predictions"]) == per_request
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
            done_texts += per_request if ok else 0

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(client(i, http, time.perf_counter() + 1) for i in range(clients)))  # warm-up
        latencies.clear()
        errors = done_texts = 0
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http, started + seconds) for i in range(clients)))
        elapsed = time.perf_counter() - started
        client_cpu = cpu_seconds() - cpu_before
    return {"texts": done_texts, "seconds": elapsed, "latencies": latencies, "errors": errors, "cpu": client_cpu}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_and_load(run, texts: list[str], args) -> dict:
    """The load test in --rounds parts, each after a part as long as half of it predicting offline on the
    service's backend (its workers = cores): the machine's speed drifts by tens of percent over minutes
    here, and interleaving puts the same drift on both sides of the ratio."""
    port = free_port()
    command = [sys.executable, "-m", "lmadapt.cli", "serve", str(run.path), "--port", str(port)]
    command += ["--backend", args.service_backend, "--max-texts", str(max(256, args.texts_per_request))]
    command += ["--max-batch", str(args.max_batch)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        from lmadapt.serving.app import wait_until_serving

        wait_until_serving(url, server, timeout_s=300)
        backend = httpx.get(f"{url}/v1/models").json()[0]["backend"]
        offline = run.inference(backend, workers=os.cpu_count() or 1, batch_size=args.batch_size)
        part = args.seconds / args.rounds
        offline_texts = offline_seconds = 0.0
        parts = []
        for _ in range(args.rounds):
            done, took = sustained(offline, texts, part / 2)
            offline_texts, offline_seconds = offline_texts + done, offline_seconds + took
            parts.append(asyncio.run(load_test(url, texts, args.clients, part, args.texts_per_request)))
        batches = [
            line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("lmadapt_batch_size_")
        ]
        count = next(float(line.split()[-1]) for line in batches if line.startswith("lmadapt_batch_size_count"))
        total = next(float(line.split()[-1]) for line in batches if line.startswith("lmadapt_batch_size_sum"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    elapsed = sum(p["seconds"] for p in parts)
    latencies = [latency for p in parts for latency in p["latencies"]]
    rate, offline_rate = sum(p["texts"] for p in parts) / elapsed, offline_texts / offline_seconds
    return {
        "backend": backend,
        "texts_per_s": round(rate, 1),
        "offline_texts_per_s": round(offline_rate, 1),
        "ratio_to_offline": round(rate / offline_rate, 2),
        "requests": len(latencies),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
        "errors": sum(p["errors"] for p in parts),
        "seconds": round(elapsed, 1),
        "client_cores_busy": round(sum(p["cpu"] for p in parts) / elapsed, 2),  # what the clients took
        "mean_batch_texts": round(total / count, 1),
    }


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-serving-bench"))
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs of the run measured (the recipe: 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per path; the best counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60, help="of load, in all")
    parser.add_argument("--rounds", type=int, default=3, help="parts of the load test, each after an offline part")
    parser.add_argument("--texts-per-request", type=int, default=8)
    parser.add_argument("--service-backend", default="auto")
    parser.add_argument("--max-batch", type=int, default=ServiceSettings.max_batch, help="the service's --max-batch")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument(
        "--only-service", action="store_true", help="only the load test; offline rows are read from --out"
    )
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    run = trained_run(args.data, args.workdir, args.train_epochs)
    validation = pd.read_csv(args.data / "sst2" / "validation.csv")
    texts, gold = validation["text"].astype(str).tolist(), validation["label"].astype(str).tolist()
    cores = os.cpu_count() or 1
    cpu = cpu_description()
    common = {
        "cpu": cpu["cpu"],
        "cpu_flags": cpu["cpu_flags"],
        "dataset": "sst2",
        "texts": len(texts),
        "commit": git_commit(),
        "command": "python " + " ".join(sys.argv),
        "date": date.today().isoformat(),
        "cores": cores,
        "batch_size": args.batch_size,
    }
    # A rerun replaces the rows it measures on this CPU and keeps the others: other CPUs' rows (the CPU matrix),
    # and with --only-service the offline rows a load test on another backend is compared with.
    recorded = json.loads(args.out.read_text()) if args.out.exists() else []
    other_cpus = [row for row in recorded if row.get("cpu") != cpu["cpu"]]
    kept = [row for row in recorded if row.get("cpu") == cpu["cpu"]]
    rows = []

    def key(row: dict) -> tuple:
        return row["system"], row.get("backend"), row.get("max_batch")

    def add(row: dict) -> None:
        kept[:] = [r for r in kept if key(r) != key(row)]
        rows.append(row)
        print(json.dumps(row), flush=True)

    if args.only_service:
        rows.extend(r for r in kept if r["system"] != "service")
        kept[:] = [r for r in kept if r["system"] == "service"]
    else:  # every offline path is measured again; a load test stays until one with its settings replaces it
        kept[:] = [r for r in kept if r["system"] == "service"]
        measure_paths(run, texts, gold, args, common, add)
    if not args.skip_service:
        best = max(r["texts_per_s"] for r in rows if r["system"] not in ("hf_pipeline", "auto"))
        figures = serve_and_load(run, texts, args)
        service = {"system": "service", "clients": args.clients, "texts_per_request": args.texts_per_request}
        service |= {"max_batch": args.max_batch}
        add(common | service | figures | {"ratio_to_best_offline": round(figures["texts_per_s"] / best, 2)})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows + kept + other_cpus, indent=2) + "\n")


def measure_paths(run, texts: list[str], gold: list[str], args, common: dict, add) -> None:
    """The pipeline baseline, then every lmadapt inference path with 1 worker and one per core (accuracy beside
    PyTorch float32's), then what `auto` takes here as the export measured it."""
    import torch
    from transformers import pipeline

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    classify = pipeline("text-classification", model=str(run.path / "model"), device="cpu", batch_size=args.batch_size)
    rate, predicted = best_rate(
        lambda batch: [r["label"] for r in classify(batch, truncation=True)], texts, args.repeats
    )
    baseline = rate
    add(common | {"system": "hf_pipeline", "texts_per_s": round(rate, 1), "accuracy": accuracy(predicted, gold)})
    exported = json.loads((run.path / "onnx" / "export.json").read_text())
    float32 = None
    for path in PATHS:
        for workers in sorted({1, cores}):
            predictor = run.inference(path, workers=workers, batch_size=args.batch_size)
            rate, predicted = best_rate(lambda batch, p=predictor: p.decide(p.scores(batch)), texts, args.repeats)
            correct = accuracy(predicted, gold)
            float32 = correct if float32 is None else float32  # the torch row comes first
            row = {
                "strategy": "full",
                "system": path.replace("-", "_") + ("" if workers == 1 else f"_{workers}workers"),
                "backend": path,
                "workers": workers,
                "texts_per_s": round(rate, 1),
                "speedup_vs_pipeline": round(rate / baseline, 2),
                "accuracy": correct,
                "accuracy_delta_vs_torch": round(correct - float32, 2),
            }
            if "quantization" in exported.get(path, {}):
                row["quantization"] = exported[path]["quantization"]
            add(common | row)
            torch.set_num_threads(cores)
    measured = run.measurement_here()
    add(common | {"system": "auto", "backend": measured["fastest"], "measured_at_export": measured["paths"]})


if __name__ == "__main__":
    main()
