"""Support-bot benchmark (issue 21): a `lmadapt support` bot on Banking77 with the out-of-scope intents of bench/ood.py.

Protocol. The intents are split as in bench/ood.py (one permutation of the 77 sorted intents, numpy default_rng(42)):
the first 10 are out-of-scope test intents, the next 5 calibration intents, the other 62 are in scope.
- History (the bot's training data, columns question,intent): the 62 in-scope intents' official training rows and
  the 5 calibration intents' training rows labelled `oos`. Templates: configs/support/banking77_answers.csv.
- The bot: configs/support/banking77.yaml (MiniLM `full`, 5 epochs; the build holds out a seeded tenth of the
  in-scope history to calibrate the thresholds, beside every `oos` row) with history.questions_per_intent=3 (the
  knowledge base: 3 seeded training questions per intent, answered by the intent's template) and
  policy.target_oos_recall=0.85 besides the recipe's target_accuracy 0.95. Defaults apply otherwise: the intent
  run is exported to ONNX at build and the bot reads on the fastest path here (intent.backend auto), calibrated on
  that path's readings; its out-of-scope score weighs the run's score with the intent's uncertainty, fitted fold
  by fold on the calibration messages (policy.scope_score combined).
- Test messages: the 62 in-scope intents' official test rows and the 10 test intents' test rows labelled `oos`.

Rows (bench/results/support.json; --quick writes support_quick.json):
- `retrieval`, one per encoder (adapted: the bot's intent run's features; frozen: the packaged MiniLM; bm25): the
  in-scope test messages searched against the knowledge base's questions, relevant = a question of the message's
  intent; Recall@1, Recall@5, MRR@10 (numpy exact search on L2-normalised vectors; BM25 by bm25s).
  Target: adapted > frozen > bm25 on Recall@1 and on MRR@10.
- `policy`: `evaluate_bot` on the test messages, one message at a time: containment (in-scope messages answered),
  answered accuracy (an answered out-of-scope message is wrong), out-of-scope recall, escalations by reason,
  latency. Target: containment >= 0.80 at answered accuracy >= 0.95 with out-of-scope recall >= 0.85.
  With --variant, `policy_variant` rows, for contrast: the same intent run recalibrated with the run's own
  out-of-scope score (run-score), and without target_oos_recall (accuracy-only).
- `load`: `lmadapt support serve` (SQLite store) on loopback, --clients concurrent clients (aiohttp, closed loop, no
  think time, the clients on the same cores as the server) for --seconds after a 3 s warm-up, --load-runs times on a
  fresh service and store (the row: the median run by p95, every run under `runs`), each client holding
  conversations of 5 turns (seeded draws from the test messages). Latency of every timed request, errors (non-200 or
  exception); then every acknowledged (200) turn, warm-up included, is looked up in the store (conversation, turn
  id, text) and the store's turn count compared with the acknowledged count: `stored_ok`.
  Target: 0 errors, p95 < 250 ms, stored_ok.
- `crash`: a fresh service and store under the same load, SIGKILLed 5 s into it; the service is restarted on the
  store and every acknowledged turn looked up through GET /v1/conversations/{id}: `lost_messages` (target 0).

    HF_HUB_OFFLINE=1 python bench/support.py --data ../shared/data                 # builds the bot (~10 min)
    HF_HUB_OFFLINE=1 python bench/support.py --data ../shared/data --bot /tmp/lmadapt-support-bench/banking77-bench
    HF_HUB_OFFLINE=1 python bench/support.py --quick     # 20 intents, 1 epoch, 10 s load: support_quick.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from ood import OOS, split_intents
from runner import ROOT, git_commit

DATASET = "banking77"
RECIPE = ROOT / "configs" / "support" / "banking77.yaml"
TEMPLATES = ROOT / "configs" / "support" / "banking77_answers.csv"
QUESTIONS_PER_INTENT = 3
TARGET_OOS_RECALL = 0.85
TURNS_PER_CONVERSATION = 5
WARM_UP_S = 3.0
KILL_AFTER_S = 5.0
DEPTH = 10
QUICK_INTENTS = 20
QUICK_OOS_TEST_ROWS = 200
VARIANTS = {  # --variant: what each policy_variant row changes
    "run-score": "policy.scope_score=run",  # the intent run's own out-of-scope score, not the combined one
    "accuracy-only": "policy.target_oos_recall=null",  # no out-of-scope recall target in calibration
}


def write_data(data: Path, folder: Path, quick: bool) -> dict:
    """history.csv and test.csv (question,intent; out-of-scope rows labelled oos) and the intents of each part."""
    import pandas as pd

    train = pd.read_csv(data / DATASET / "train.csv")
    test = pd.read_csv(data / DATASET / "test.csv")
    test_oos, calibration = split_intents(train["label"].unique().tolist())
    in_scope = sorted(set(train["label"]) - set(test_oos) - set(calibration))
    if quick:
        in_scope = in_scope[:QUICK_INTENTS]
    history = pd.concat(
        [train[train["label"].isin(in_scope)], train[train["label"].isin(calibration)].assign(label=OOS)]
    )
    messages = pd.concat([test[test["label"].isin(in_scope)], test[test["label"].isin(test_oos)].assign(label=OOS)])
    if quick:  # fewer out-of-scope rows beside the 20 intents' test rows
        oos_rows = messages[messages["label"] == OOS].sample(n=QUICK_OOS_TEST_ROWS, random_state=0)
        messages = pd.concat([messages[messages["label"] != OOS], oos_rows])
    folder.mkdir(parents=True, exist_ok=True)
    files = {"history": folder / "history.csv", "test": folder / "test.csv"}
    for name, frame in (("history", history), ("test", messages)):
        frame.rename(columns={"text": "question", "label": "intent"})[["question", "intent"]].to_csv(
            files[name], index=False
        )
    return {
        **files,
        "in_scope": in_scope,
        "test_oos": test_oos,
        "calibration": calibration,
        "history_rows": len(history),
        "test_rows": len(messages),
        "test_oos_rows": int((messages["label"] == OOS).sum()),
    }


def bot_overrides(files: dict, workdir: Path, name: str, quick: bool) -> list[str]:
    return [
        f"name={name}",
        f"output_dir={workdir}",
        f"history.path={files['history']}",
        "history.question_column=question",
        "history.intent_column=intent",
        f"history.out_of_scope_label={OOS}",
        f"history.questions_per_intent={QUESTIONS_PER_INTENT}",
        f"templates.path={TEMPLATES}",
        f"policy.target_oos_recall={TARGET_OOS_RECALL}",
        *(["intent.settings=[train.epochs=1]"] if quick else []),
    ]


def build(overrides: list[str]) -> tuple[Path, float]:
    from lmadapt.apps.support.bot import build_bot
    from lmadapt.apps.support.config import load_support_config

    started = time.perf_counter()
    folder = build_bot(load_support_config(RECIPE, overrides), overwrite=True, progress=print)
    return folder, round(time.perf_counter() - started, 1)


# -- retrieval ---------------------------------------------------------------------------------------------------


def retrieval_rows(bot_folder: Path, test_csv: Path) -> list[dict]:
    import pandas as pd

    import lmadapt
    from lmadapt.apps.support.bot import unit_rows
    from lmadapt.apps.support.evaluate import retrieval_metrics
    from lmadapt.apps.support.knowledge import KnowledgeBase
    from lmadapt.apps.vectors import LexicalIndex, build_index

    knowledge = KnowledgeBase.load(bot_folder)
    test = pd.read_csv(test_csv)
    test = test[test["intent"] != OOS]
    queries, truth = test["question"].astype(str).tolist(), test["intent"].astype(str).tolist()

    def ranked(ids: np.ndarray) -> list[list[str | None]]:
        return [[knowledge.intents[j] if j >= 0 else None for j in row] for row in ids]

    rows = []
    for encoder, source in (("adapted", bot_folder / "intent"), ("frozen", "minilm")):
        started = time.perf_counter()
        embed = lmadapt.encoder(source)
        index = build_index(unit_rows(embed(knowledge.questions)), "numpy")
        _, ids = index.search(unit_rows(embed(queries)), DEPTH)
        rows.append(
            {"encoder": encoder, "source": str(source), **retrieval_metrics(ranked(ids), truth)}
            | {"wall_s": round(time.perf_counter() - started, 1)}
        )
    started = time.perf_counter()
    _, ids = LexicalIndex.build(knowledge.questions).search(queries, DEPTH)
    rows.append(
        {"encoder": "bm25", "source": "bm25s", **retrieval_metrics(ranked(ids), truth)}
        | {"wall_s": round(time.perf_counter() - started, 1)}
    )
    for row in rows:
        row.update(
            kind="retrieval", knowledge_questions=len(knowledge), index="numpy" if row["encoder"] != "bm25" else "bm25"
        )
        for key in ("recall_at_1", "recall_at_5", "mrr_at_10"):
            row[key] = round(row[key], 4)
    return rows


# -- policy ------------------------------------------------------------------------------------------------------


def policy_row(bot_folder: Path, test_csv: Path, output: Path, kind: str) -> dict:
    from lmadapt.apps.support.bot import load_bot
    from lmadapt.apps.support.evaluate import evaluate_bot

    bot = load_bot(bot_folder)
    started = time.perf_counter()
    report = evaluate_bot(bot, str(test_csv), output)
    policy = bot.config.policy
    run_metrics = bot.run.metrics
    return {
        "kind": kind,
        "containment": round(report["containment"], 4),
        "answered_accuracy": round(report["answered_accuracy"], 4),
        "oos_recall": round(report["oos_recall"], 4),
        "escalations": {reason: round(share, 4) for reason, share in report["escalations"].items()},
        "latency_p50_ms": report["latency_ms"]["p50"],
        "latency_p95_ms": report["latency_ms"]["p95"],
        "messages": report["messages"],
        "out_of_scope_messages": report["out_of_scope_messages"],
        "bot_retrieval": {k: round(v, 4) if isinstance(v, float) else v for k, v in report["retrieval"].items()},
        "thresholds": report["thresholds"],
        "calibration": bot.record["calibration"],  # the build's figures on its calibration messages
        "policy": {
            "target_accuracy": policy.target_accuracy,
            "target_oos_recall": policy.target_oos_recall,
            "ambiguity_gap": policy.ambiguity_gap,
        },
        "ood_method": bot.predictor.ood.method if bot.predictor.ood is not None else None,
        "scope_score": bot.record.get("scope_score"),  # the run's score weighed with the intent's uncertainty
        "backend": bot.backend,
        "intent_validation_accuracy": round(run_metrics["validation"]["accuracy"], 4),
        "intent_train_runtime_s": run_metrics["training"]["runtime_s"],
        "intent_epochs": run_metrics["training"].get("epochs"),
        "evaluate_wall_s": round(time.perf_counter() - started, 1),
    }


# -- service load ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(bot_folder: Path, store_url: str) -> tuple[subprocess.Popen, str, list[str]]:
    from lmadapt.serving.app import wait_until_serving

    port = free_port()
    command = [sys.executable, "-m", "lmadapt.cli", "support", "serve", str(bot_folder), "--port", str(port)]
    command += ["--store", store_url]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server, timeout_s=300)
    except RuntimeError:
        server.kill()
        raise RuntimeError(f"the service did not start: {server.stderr.read()[-2000:]}") from None
    return server, url, command


def stop_service(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def load(
    url: str,
    messages: list[str],
    clients: int,
    seconds: float,
    seed: int,
    kill: subprocess.Popen | None = None,
) -> dict:
    """`clients` concurrent customers, each in conversations of TURNS_PER_CONVERSATION turns, back to back: a warm-up
    of WARM_UP_S, then `seconds` timed. With `kill`, that process is SIGKILLed KILL_AFTER_S into the timed part and
    each client stops at its first failure. Every acknowledged turn (conversation, turn id, text) is kept."""
    import aiohttp

    acknowledged: list[tuple[str, int, str]] = []
    latencies: list[float] = []
    errors = 0
    timed = False
    reasons: dict[str, int] = {}

    async def client(index: int, http: aiohttp.ClientSession, deadline: float, rng: random.Random) -> None:
        nonlocal errors
        conversation, turn = None, 0
        while time.perf_counter() < deadline:
            text = rng.choice(messages)
            body = {"message": text} if conversation is None else {"conversation_id": conversation, "message": text}
            started = time.perf_counter()
            ok = False
            try:
                async with http.post(f"{url}/v1/chat", json=body) as response:
                    if response.status == 200:
                        reply = await response.json()
                        ok = True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if timed:
                latencies.append(time.perf_counter() - started)
                errors += not ok
            if not ok:
                if kill is not None:
                    return
                conversation, turn = None, 0
                continue
            acknowledged.append((reply["conversation_id"], reply["turn_id"], text))
            reasons[reply["reason"] or "answered"] = reasons.get(reply["reason"] or "answered", 0) + 1
            conversation, turn = reply["conversation_id"], turn + 1
            if turn == TURNS_PER_CONVERSATION:
                conversation, turn = None, 0

    async def killer() -> float:
        await asyncio.sleep(KILL_AFTER_S)
        os.kill(kill.pid, signal.SIGKILL)
        return time.perf_counter()

    rngs = [random.Random(seed * 1000 + i) for i in range(clients)]
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(client(i, http, time.perf_counter() + WARM_UP_S, rngs[i]) for i in range(clients)))
        warm_up_acks = len(acknowledged)
        timed = True
        started = time.perf_counter()
        tasks = [client(i, http, started + seconds, rngs[i]) for i in range(clients)]
        killed_at = None
        if kill is not None:
            killing = asyncio.ensure_future(killer())
            await asyncio.gather(*tasks)
            killed_at = (await killing) - started
        else:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {
        "acknowledged": acknowledged,
        "warm_up_acks": warm_up_acks,
        "latencies": latencies,
        "errors": errors,
        "seconds": elapsed,
        "reasons": reasons,
        "killed_at_s": killed_at,
    }


def missing_turns(acknowledged: list[tuple[str, int, str]], conversation_of) -> tuple[int, int]:
    """(acknowledged turns not found with their text in their conversation, conversations looked up)."""
    by_conversation: dict[str, list[tuple[int, str]]] = {}
    for conversation, turn, text in acknowledged:
        by_conversation.setdefault(conversation, []).append((turn, text))
    missing = 0
    for conversation, expected in by_conversation.items():
        found = conversation_of(conversation)
        stored = {t["id"]: t["user_text"] for t in found["turns"]} if found else {}
        missing += sum(stored.get(turn) != text for turn, text in expected)
    return missing, len(by_conversation)


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(values, q)), 1) if values else None


def load_run(bot_folder: Path, messages: list[str], database: Path, args, seed: int) -> dict:
    """One timed load on a fresh service and store, then every acknowledged turn looked up in the store."""
    from lmadapt.apps.support.store import ConversationStore, UnknownConversation

    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    url = f"sqlite:///{database}"
    server, service_url, command = start_service(bot_folder, url)
    try:
        found = asyncio.run(load(service_url, messages, args.clients, args.seconds, seed))
    finally:
        stop_service(server)
    acks = found["acknowledged"]
    with ConversationStore(url) as store:

        def conversation_of(conversation_id: str):
            try:
                return store.conversation(conversation_id)
            except UnknownConversation:
                return None

        missing, conversations = missing_turns(acks, conversation_of)
        counts = store.counts()
    latencies = found["latencies"]
    return {
        "seconds": round(found["seconds"], 1),
        "requests": len(latencies),
        "throughput_per_s": round(len(latencies) / found["seconds"], 1),
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
        "errors": found["errors"],
        "acknowledged": len(acks),  # warm-up included
        "warm_up_acknowledged": found["warm_up_acks"],
        "stored_turns": counts["turns"],
        "stored_conversations": counts["conversations"],
        "conversations": conversations,
        "missing_turns": missing,
        "stored_ok": missing == 0 and counts["turns"] == len(acks),
        "replies": found["reasons"],
        "service_command": " ".join(["python", *command[1:]]),
    }


def load_row(bot_folder: Path, messages: list[str], workdir: Path, args) -> dict:
    """--load-runs timed loads, each on a fresh service and store (seeds seed, seed+10, ...): the row's latency
    figures are the median run's (by p95), every run is kept under `runs`; errors and stored_ok cover them all."""
    runs = []
    for i in range(args.load_runs):
        runs.append(load_run(bot_folder, messages, workdir / f"load-{i}.sqlite", args, args.seed + 10 * i))
        print(f"  load run {i + 1}: p95 {runs[-1]['p95_ms']} ms, {runs[-1]['throughput_per_s']} req/s", flush=True)
    median = sorted(runs, key=lambda run: run["p95_ms"])[len(runs) // 2]
    return {
        "kind": "load",
        "clients": args.clients,
        **{key: median[key] for key in ("seconds", "requests", "throughput_per_s", "p50_ms", "p95_ms", "p99_ms")},
        "errors": sum(run["errors"] for run in runs),
        "acknowledged": sum(run["acknowledged"] for run in runs),
        "stored_turns": sum(run["stored_turns"] for run in runs),
        "missing_turns": sum(run["missing_turns"] for run in runs),
        "stored_ok": all(run["stored_ok"] for run in runs),
        "load_runs": len(runs),
        "p95_ms_of_each_run": [run["p95_ms"] for run in runs],
        "runs": runs,
        "turns_per_conversation": TURNS_PER_CONVERSATION,
        "warm_up_s": WARM_UP_S,
        "client": "aiohttp, closed loop, same machine",
        "store": "sqlite (WAL, synchronous=FULL)",
    }


def crash_row(bot_folder: Path, messages: list[str], workdir: Path, args) -> dict:
    import httpx

    from lmadapt.apps.support.store import ConversationStore

    database = workdir / "crash.sqlite"
    for path in workdir.glob("crash.sqlite*"):
        path.unlink()
    url = f"sqlite:///{database}"
    server, service_url, command = start_service(bot_folder, url)
    try:
        found = asyncio.run(load(service_url, messages, args.clients, KILL_AFTER_S + 30, args.seed + 1, kill=server))
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    killed_by = -server.returncode if server.returncode and server.returncode < 0 else server.returncode
    acks = found["acknowledged"]
    restarted, restarted_url, _ = start_service(bot_folder, url)
    try:
        with httpx.Client(base_url=restarted_url, timeout=60) as http:

            def conversation_of(conversation_id: str):
                response = http.get(f"/v1/conversations/{conversation_id}")
                return response.json() if response.status_code == 200 else None

            lost, conversations = missing_turns(acks, conversation_of)
    finally:
        stop_service(restarted)
    with ConversationStore(url) as store:
        counts = store.counts()
    return {
        "kind": "crash",
        "clients": args.clients,
        "killed_at_s": round(found["killed_at_s"], 2),
        "killed_by_signal": killed_by,
        "acknowledged": len(acks),
        "stored": counts["turns"],
        "conversations": conversations,
        "lost_messages": lost,
        "failed_requests": found["errors"],  # in flight at the kill, or sent after it
        "checked_by": "restarted service, GET /v1/conversations/{id}",
        "store": "sqlite (WAL, synchronous=FULL)",
        "service_command": " ".join(["python", *command[1:]]),
    }


# -- main --------------------------------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    print("\n| encoder | Recall@1 | Recall@5 | MRR@10 | queries |\n|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "retrieval":
            print(f"| {r['encoder']} | {r['recall_at_1']} | {r['recall_at_5']} | {r['mrr_at_10']} | {r['messages']} |")
    print("\n| policy | containment | answered acc | oos recall | p50 ms | p95 ms |\n|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"].startswith("policy"):
            print(
                f"| {r.get('variant', r['kind'])} (target_oos_recall={r['policy']['target_oos_recall']}, scope score "
                f"{'combined' if r['scope_score'] else 'run'}) | {r['containment']} "
                f"| {r['answered_accuracy']} | {r['oos_recall']} | {r['latency_p50_ms']} | {r['latency_p95_ms']} |"
            )
    for r in rows:
        if r["kind"] == "load":
            print(
                f"\nload: {r['clients']} clients, {r['requests']} requests, {r['throughput_per_s']}/s, p50 {r['p50_ms']} "
                f"p95 {r['p95_ms']} p99 {r['p99_ms']} ms, errors {r['errors']}, stored_ok {r['stored_ok']} "
                f"({r['stored_turns']} stored / {r['acknowledged']} acknowledged); the median of {r['load_runs']} runs, "
                f"p95 of each {r['p95_ms_of_each_run']}"
            )
        if r["kind"] == "crash":
            print(
                f"crash: killed at {r['killed_at_s']} s, {r['acknowledged']} acknowledged, {r['stored']} stored, "
                f"lost {r['lost_messages']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=42, help="the load's message draws (the bot's seed is 42)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="timed load (after a 3 s warm-up)")
    parser.add_argument("--load-runs", type=int, default=3, help="timed loads, each on a fresh service and store")
    parser.add_argument("--bot", type=Path, default=None, help="reuse this bot folder (no training)")
    parser.add_argument(
        "--intent-run", type=Path, default=None, help="build the bot on this intent run (copied in; no training)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-support-bench"))
    parser.add_argument("--quick", action="store_true", help="20 intents, 1 epoch, 10 s load: support_quick.json")
    parser.add_argument(
        "--variant",
        action="store_true",
        help="also policy_variant rows: the intent run recalibrated on its own out-of-scope score, and without "
        "target_oos_recall",
    )
    args = parser.parse_args()
    if args.quick and args.seconds == 30.0:
        args.seconds = 10.0

    out = ROOT / "bench" / "results" / ("support_quick.json" if args.quick else "support.json")
    workdir = args.workdir / ("quick" if args.quick else "full")
    workdir.mkdir(parents=True, exist_ok=True)
    files = write_data(args.data, workdir / "data", args.quick)
    name = f"{DATASET}-{'quick' if args.quick else 'bench'}"
    stamp = {
        "dataset": DATASET,
        "commit": git_commit(),
        "command": "python " + " ".join(sys.argv),
        "date": date.today().isoformat(),
        "cores": os.cpu_count(),
        "seed": args.seed,
    }
    rows: list[dict] = []

    def add(new: list[dict]) -> None:
        for row in new:
            rows.append({**row, **stamp})
            print(json.dumps(rows[-1]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")

    overrides = bot_overrides(files, args.workdir, name, args.quick)
    if args.intent_run is not None:
        overrides.append(f"intent.run={args.intent_run}")
    if args.bot is None:
        print(f"== building {name} ({files['history_rows']} history rows)", flush=True)
        bot_folder, build_s = build(overrides)
    else:
        bot_folder, build_s = args.bot, None
    bot_info = {
        "bot": str(bot_folder),
        "built_here": args.bot is None,
        "build_wall_s": build_s,
        "bot_overrides": overrides if args.bot is None else None,
        "history_rows": files["history_rows"],
        "in_scope_intents": len(files["in_scope"]),
        "test_oos_intents": files["test_oos"],
        "calibration_intents": files["calibration"],
        "templates": str(TEMPLATES.relative_to(ROOT)),
    }
    print("== retrieval", flush=True)
    add([row | {"bot": str(bot_folder)} for row in retrieval_rows(bot_folder, files["test"])])
    print("== policy", flush=True)
    add([policy_row(bot_folder, files["test"], workdir / "report", "policy") | bot_info])
    if args.variant:  # the same intent run, recalibrated with one setting changed
        for variant_name, setting in VARIANTS.items():
            print(f"== policy variant {variant_name} ({setting})", flush=True)
            variant_overrides = [
                *[o for o in overrides if not o.startswith(("name=", setting.split("=")[0] + "=", "intent.settings="))],
                f"name={name}-{variant_name}",
                f"intent.run={bot_folder / 'intent'}",
                setting,
            ]
            variant, variant_s = build(variant_overrides)
            report = workdir / f"report-{variant_name}"
            add(
                [
                    policy_row(variant, files["test"], report, "policy_variant")
                    | {"variant": variant_name, "bot": str(variant), "build_wall_s": variant_s}
                    | {"bot_overrides": variant_overrides}
                ]
            )
    import pandas as pd

    messages = pd.read_csv(files["test"])["question"].astype(str).tolist()
    print(f"== load: {args.clients} clients, {args.seconds:g} s", flush=True)
    add([load_row(bot_folder, messages, workdir, args) | {"bot": str(bot_folder)}])
    print("== crash", flush=True)
    add([crash_row(bot_folder, messages, workdir, args) | {"bot": str(bot_folder)}])
    print_table(rows)
    print(f"\nrows: {out}; bot: {bot_folder}")


if __name__ == "__main__":
    main()
