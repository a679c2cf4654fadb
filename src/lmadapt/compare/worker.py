"""One strategy of a comparison in a process of its own: train it, measure its inference, write its row.

    python -m lmadapt.compare.worker CONFIG.json ROW.json

A process per strategy makes its peak memory its own. An error (an LmadaptError, or any crash) is
written as the row, {"error": message}, with exit code 2; the comparison keeps it as an error row.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path

from lmadapt.compare.fewshot import error_text
from lmadapt.data.prepare import prepare_data
from lmadapt.errors import LmadaptError
from lmadapt.recipe import parse_config
from lmadapt.runs import write_text_atomic
from lmadapt.training.engine import train

TIMED_TEXTS = 1000  # at most this many texts of the evaluation split timed for throughput
PASS_SECONDS = 15  # a slow model (a causal LM reading demonstrations) is timed on fewer texts, not for minutes
LATENCY_TEXTS = 20  # texts timed one at a time for the latency per text


def inference_figures(run, texts: list[str], pairs: list[str] | None, cpus: int | None = None) -> dict:
    """Throughput (best of two passes) and the median latency of one text, on the fastest path here (on `cpus`
    cores, default all of them)."""
    predictor = run.inference("auto", workers=cpus or os.cpu_count() or 1)
    started = time.perf_counter()
    predictor.scores(texts[:32], pairs[:32] if pairs is not None else None)  # warm-up, and a first rate
    first_rate = min(len(texts), 32) / (time.perf_counter() - started)
    timed = max(64, min(TIMED_TEXTS, int(first_rate * PASS_SECONDS)))
    texts, pairs = texts[:timed], pairs[:timed] if pairs is not None else None
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        predictor.scores(texts, pairs)
        best = max(best, len(texts) / (time.perf_counter() - started))
    single = []
    for i in range(min(LATENCY_TEXTS, len(texts))):
        started = time.perf_counter()
        predictor.scores([texts[i]], [pairs[i]] if pairs is not None else None)
        single.append(time.perf_counter() - started)
    return {
        "backend": predictor.engine.name,
        "texts_per_s": round(best, 1),
        "latency_ms": round(1000 * statistics.median(single), 2),
    }


def measure(config: dict, cpus: int | None = None) -> dict:
    config = parse_config(config)
    run = train(config, overwrite=True)
    metrics = run.metrics
    split = "test" if "test" in metrics else "validation"
    data = prepare_data(config.data, config.seed)
    evaluated = data.test if split == "test" else data.validation
    return {
        "run": str(run.path),
        "split": split,
        "accuracy": metrics[split]["accuracy"],
        "macro_f1": metrics[split]["macro_f1"],
        "trainable_params": metrics["parameters"]["trainable"],
        "trainable_pct": metrics["parameters"]["trainable_pct"],
        "train_s": metrics.get("training", {}).get("runtime_s", 0.0),
        "artifact_mb": metrics.get("artifact_mb"),
        **inference_figures(run, evaluated.texts, evaluated.pairs, cpus),
        # ru_maxrss is in KiB on Linux: the whole process, training and inference.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measured_row(config: dict, cpus: int | None = None) -> dict:
    """The strategy's row (see `measure`), or its error row."""
    try:
        return measure(config, cpus)
    except LmadaptError as error:
        return {"error": error_text(error)}
    except Exception as error:  # a crash is this strategy's error row, not the comparison's end
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def main() -> None:
    config_file, row_file = Path(sys.argv[1]), Path(sys.argv[2])
    row = measured_row(json.loads(config_file.read_text()))
    # The row file, not stderr, carries the error: progress bars closed at exit write after any message.
    write_text_atomic(row_file, json.dumps(row, indent=2) + "\n")
    sys.exit(2 if "error" in row else 0)


if __name__ == "__main__":
    main()
