"""The bot folder: built from a support recipe (`lmadapt support build`), loaded to answer.

    bots/<name>/
      bot.json          version, parent version, encoder, index, the thresholds and their calibration figures
      config.yaml       the support recipe, fully resolved
      knowledge.jsonl   known questions with their answers and intents; templates.json: an answer per intent
      intent/           the intent run (a run folder, its own manifest), copied in: the folder is self-contained
      intent_data/      the rows a trained intent run learnt from and was validated on (`update` replays them)
      index/            the known questions' vectors and the vector index; lexical/: BM25 (hybrid retrieval only)
      calibration.json  the calibration messages' figures at the chosen thresholds and along the frontier
      calibration_messages.jsonl  those messages (a new version is calibrated on them again)
      manifest.json     every file with its sha256 and size

Written to a staging sibling and renamed into place, like a run folder; loading verifies the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml
from scipy.special import softmax

import lmadapt
from lmadapt.apps.support.config import COMBINED, SupportConfig, parse_support_config
from lmadapt.apps.support.knowledge import (
    KnowledgeBase,
    by_scope,
    knowledge_base,
    read_history,
    read_templates,
    split_history,
)
from lmadapt.apps.support.policy import (
    Reading,
    Reply,
    Signals,
    Thresholds,
    calibrate,
    decide,
    frontier,
    sweep,
)
from lmadapt.apps.support.scope import ScopeScore, fit_scope_score
from lmadapt.apps.vectors import LexicalIndex, build_index, load_index, save_index
from lmadapt.data.split import Split, concat_splits
from lmadapt.errors import LmadaptError
from lmadapt.inference.engines import AUTO, TORCH, TORCH_BF16
from lmadapt.inference.ood import OUT_OF_SCOPE_CLASS
from lmadapt.runs import Run, load_run, verify_manifest, write_run_folder

log = logging.getLogger(__name__)

BOT_FILE, CONFIG_FILE, CALIBRATION_FILE = "bot.json", "config.yaml", "calibration.json"
MESSAGES_FILE = "calibration_messages.jsonl"  # kept: a new version of the bot is calibrated on them again
INTENT_FOLDER, INDEX_FOLDER, LEXICAL_FOLDER = "intent", "index", "lexical"
INTENT_DATA_FOLDER = "intent_data"  # the rows a trained intent run learnt from and was validated on
DEFAULT_INTENT_SETTINGS = ["model.backbone=minilm", "strategy.name=full", "model.max_length=64"]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, so that inner product is cosine similarity."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class Bot:
    """A loaded bot folder: reads messages (intent, out-of-scope score, nearest known questions) and replies."""

    def __init__(self, folder: Path, backend: str | None = None, engine_workers: int = 0, batch_size: int = 32):
        self.folder = folder
        self.record = json.loads((folder / BOT_FILE).read_text(encoding="utf-8"))
        self.config: SupportConfig = parse_support_config(yaml.safe_load((folder / CONFIG_FILE).read_text("utf-8")))
        self.knowledge = KnowledgeBase.load(folder)
        self.run: Run = load_run(folder / INTENT_FOLDER)
        self.thresholds = Thresholds(**self.record["thresholds"])
        scope = self.record.get("scope_score")
        self.scope = ScopeScore(**scope) if scope else None  # None: the run's own out-of-scope score
        retrieval = self.config.retrieval
        self.index = load_index(
            folder / INDEX_FOLDER, qdrant_url=retrieval.qdrant_url, qdrant_path=retrieval.qdrant_path
        )
        self.lexical = LexicalIndex.load(folder / LEXICAL_FOLDER) if retrieval.lexical_weight > 0 else None
        self.question_vectors = self.index.vectors() if self.lexical is not None else None
        # By default on the path its thresholds were calibrated on (bots built before it was recorded: PyTorch).
        self.predictor = self.run.inference(
            backend or self.record.get("backend", TORCH), batch_size=batch_size, engine_workers=engine_workers
        )
        self.encoder = (
            None if retrieval.encoder == "run" else lmadapt.encoder(resolve_encoder(retrieval.encoder, folder))
        )

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def version(self) -> int:
        return self.record["version"]

    @property
    def backend(self) -> str:
        """The inference path it reads messages on."""
        return self.predictor.engine.name

    @property
    def calibrated_backend(self) -> str:
        """The inference path its thresholds were calibrated on."""
        return self.record.get("backend", TORCH)

    def check_reads(self, texts: Sequence[str], where: str = "message") -> None:
        self.run.check_reads(texts, where)

    def read(self, texts: Sequence[str], k: int | None = None) -> list[Reading]:
        """The intent run's reading of each message and its `k` (default retrieval.top_k) nearest known questions,
        from one forward pass when the run is also the encoder."""
        texts = list(texts)
        ood = self.predictor.ood
        if self.encoder is None or (ood is not None and ood.needs_features):
            logits, features = self.predictor.logits_and_features(texts)
        else:
            logits, features = self.predictor.logits(texts), None
        vectors = unit_rows(features if self.encoder is None else self.encoder(texts))
        probabilities = softmax(logits.astype(np.float64), axis=1)
        ood_scores = ood.scores(logits, features) if ood is not None else None
        if self.scope is not None and ood_scores is not None:
            ood_scores = self.scope(ood_scores, probabilities.max(axis=1))
        forced = ood.forced(logits) if ood is not None else [None] * len(texts)
        neighbours = self.neighbours(texts, vectors, k or self.config.retrieval.top_k)
        labels = self.run.labels.labels
        readings = []
        for i, row in enumerate(probabilities):
            top_two = np.argsort(row)[-2:][::-1]
            second = row[top_two[1]] if len(row) > 1 else 0.0
            readings.append(
                Reading(
                    intent=labels[top_two[0]],
                    confidence=float(row[top_two[0]]),
                    margin=float(row[top_two[0]] - second),
                    ood_score=None if ood_scores is None else float(ood_scores[i]),
                    trained_out_of_scope=forced[i] == OUT_OF_SCOPE_CLASS,
                    neighbours=neighbours[i],
                )
            )
        return readings

    def neighbours(self, texts: list[str], vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """The `k` nearest known questions of each message: cosine similarity, or with hybrid retrieval that blended
        with the BM25 score (scaled to 0..1 per message) over the union of both lists."""
        k = min(k, len(self.knowledge))
        similarities, ids = self.index.search(vectors, k)
        if self.lexical is None:
            return [
                [(int(j), float(s)) for j, s in zip(row_ids, row_sims) if j >= 0]
                for row_ids, row_sims in zip(ids, similarities)
            ]
        weight = self.config.retrieval.lexical_weight
        lexical_scores, lexical_ids = self.lexical.search(texts, k)
        blended = []
        for i in range(len(texts)):
            candidates = {int(j) for j in (*ids[i], *lexical_ids[i]) if j >= 0}
            dense = dict(zip(map(int, ids[i]), similarities[i]))
            top = max(float(lexical_scores[i][0]), 1e-9) if len(lexical_scores[i]) else 1.0
            sparse = {int(j): float(s) / top for j, s in zip(lexical_ids[i], lexical_scores[i]) if j >= 0}
            missing = [j for j in candidates if j not in dense]
            if missing:  # the cosine of lexical candidates the vector search did not return
                dense |= dict(zip(missing, self.question_vectors[missing] @ vectors[i]))
            scored = {j: (1 - weight) * float(dense.get(j, 0.0)) + weight * sparse.get(j, 0.0) for j in candidates}
            blended.append(sorted(scored.items(), key=lambda item: -item[1])[:k])
        return blended

    def reply(self, text: str, reading: Reading, recent_failures: int = 0) -> Reply:
        return decide(reading, text, self.knowledge, self.thresholds, self.config.policy, recent_failures)

    def answer(self, texts: Sequence[str]) -> list[Reply]:
        """Replies to messages outside any conversation."""
        texts = list(texts)
        return [self.reply(text, reading) for text, reading in zip(texts, self.read(texts))]


def release(index) -> None:
    """Close an index that holds a resource (Qdrant's embedded mode locks its folder to one client)."""
    close = getattr(index, "close", None)
    if close is not None:
        close()


def resolve_encoder(encoder: str, folder: Path) -> str:
    """A run folder kept inside the bot, or the backbone as named."""
    kept = folder / "encoder"
    return str(kept) if kept.is_dir() else encoder


def load_bot(folder: str | Path, **options) -> Bot:
    """Open a bot folder after checking its manifest; options: backend (default: the one its thresholds were
    calibrated on), engine_workers, batch_size."""
    folder = Path(folder)
    if not (folder / BOT_FILE).is_file():
        raise LmadaptError(
            "not a bot folder (no bot.json)",
            where=str(folder),
            fix="pass a folder that `lmadapt support build` wrote",
        )
    verify_manifest(folder)
    return Bot(folder, **options)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """One JSON object a line (the rows files the bot keeps and hands to training)."""
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def labelled_rows(texts: Sequence[str], labels: Sequence, text_column: str = "text", label_column: str = "label"):
    return ({text_column: text, label_column: label} for text, label in zip(texts, labels))


def _train_intent_run(config: SupportConfig, train: Split, calibration: Split, out_of_scope: Split, into: Path) -> Run:
    """An intent run trained on the history's in-scope rows, validated (and its detector calibrated) on the
    calibration rows and the out-of-scope ones. Its data is kept in the bot: `update` replays it."""
    data = into / INTENT_DATA_FOLDER
    data.mkdir()
    write_jsonl(data / "train.jsonl", labelled_rows(train.texts, train.labels))
    validation = concat_splits([calibration, out_of_scope])
    write_jsonl(data / "validation.jsonl", labelled_rows(validation.texts, validation.labels))
    label = config.history.out_of_scope_label
    settings = [
        *([] if config.intent.recipe else DEFAULT_INTENT_SETTINGS),
        f"ood.method={'auto' if len(out_of_scope) else 'mahalanobis'}",
        *([f"ood.label={label}"] if len(out_of_scope) else []),
        *(config.intent.settings or []),
        *intent_data_settings(into),
        "data.test=null",
        "data.text_column=text",
        "data.label_column=label",
        "data.format=jsonl",
        f"output_dir={into}",
        f"name={INTENT_FOLDER}",
        f"seed={config.seed}",
    ]
    return lmadapt.train(lmadapt.load_config(config.intent.recipe, settings))


def intent_data_settings(folder: Path) -> list[str]:
    """Where the intent run's data lies in the bot folder (config overrides; none for a reused run)."""
    data = folder / INTENT_DATA_FOLDER
    if not data.is_dir():
        return []
    return [f"data.train={data / 'train.jsonl'}", f"data.validation={data / 'validation.jsonl'}"]


def _calibration_rows(config: SupportConfig, history: Split) -> tuple[Split, Split, Split]:
    """(knowledge rows, in-scope calibration rows, out-of-scope calibration rows)."""
    label = config.history.out_of_scope_label
    if config.calibration.path:
        given = read_history(config.calibration.path, config.history, answers=False)
        return (by_scope(history, label)[0], *by_scope(given, label))
    return split_history(history, label, config.history.calibration_share, config.seed)


def read_in_batches(read, texts: list[str], batch_size: int = 256) -> list[Reading]:
    """`read` (a bot's) over many messages, a batch at a time (bounded memory)."""
    readings = []
    for start in range(0, len(texts), batch_size):
        readings += read(texts[start : start + batch_size])
    return readings


def build_bot(config: SupportConfig, *, overwrite: bool = False, progress=print) -> Path:
    """Train (or reuse) the intent run, embed the known questions, calibrate the thresholds and write the bot
    folder; returns its path."""
    final = config.folder
    if final.exists() and not overwrite:
        raise LmadaptError(f"bot folder already exists: {final}", fix="choose another name, or pass --overwrite")
    history = read_history(config.history.path, config.history)
    templates = read_templates(config.templates) if config.templates.path else {}
    knowledge_rows, calibration, out_of_scope = _calibration_rows(config, history)
    knowledge = knowledge_base(knowledge_rows, templates, config.history.questions_per_intent, config.seed)
    messages = Messages([*calibration.texts, *out_of_scope.texts], [*calibration.labels, *[None] * len(out_of_scope)])

    def fill(staging: Path) -> None:
        if config.intent.run:
            progress(f"reusing the intent run {config.intent.run}")
            shutil.copytree(load_run(config.intent.run).path, staging / INTENT_FOLDER)
        else:
            progress(f"training the intent run on {len(knowledge_rows)} questions")
            _train_intent_run(config, knowledge_rows, calibration, out_of_scope, staging)
        encoder = config.retrieval.encoder
        if encoder != "run" and (Path(encoder) / "manifest.json").is_file():
            shutil.copytree(encoder, staging / "encoder")  # a run as encoder travels with the bot
        assemble(staging, config, knowledge, messages, {"version": 1, "parent": None}, progress)

    write_run_folder(final, fill, overwrite)
    return final


@dataclass
class Messages:
    """Labelled messages: their texts and intents (None: out of scope)."""

    texts: list[str]
    intents: list[str | None]

    def save(self, path: Path) -> None:
        write_jsonl(path, labelled_rows(self.texts, self.intents, label_column="intent"))

    @classmethod
    def load(cls, path: Path) -> Messages:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return cls([row["text"] for row in rows], [row["intent"] for row in rows])


def assemble(
    staging: Path, config: SupportConfig, knowledge: KnowledgeBase, messages: Messages, lineage: dict, progress
) -> None:
    """The bot's files beside its intent run: knowledge, index, calibrated thresholds, record."""
    knowledge.save(staging)
    messages.save(staging / MESSAGES_FILE)
    retrieval = config.retrieval
    (staging / CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), "utf-8")
    progress(f"embedding {len(knowledge)} known questions ({retrieval.encoder})")
    source = staging / INTENT_FOLDER if retrieval.encoder == "run" else resolve_encoder(retrieval.encoder, staging)
    index = build_index(
        unit_rows(lmadapt.embed(source, knowledge.questions)),
        retrieval.index,
        faiss_above=retrieval.faiss_above,
        qdrant_url=retrieval.qdrant_url,
        qdrant_path=retrieval.qdrant_path,
        collection_prefix=config.name,
    )
    (staging / INDEX_FOLDER).mkdir()
    index_record = save_index(index, staging / INDEX_FOLDER)
    release(index)
    if retrieval.lexical_weight > 0:
        (staging / LEXICAL_FOLDER).mkdir()
        LexicalIndex.build(knowledge.questions).save(staging / LEXICAL_FOLDER)
    record = {"name": config.name, **lineage, "encoder": retrieval.encoder, "index": index_record}
    placeholder = Thresholds(0.0, 0.0, None, config.policy.ambiguity_gap)
    write_record(staging, record | {"thresholds": placeholder.to_json()})
    export_intent_run(staging / INTENT_FOLDER, config.intent.backend, progress)
    bot = Bot(staging, backend=config.intent.backend)
    record["backend"] = bot.backend
    outside = sum(intent is None for intent in messages.intents)
    progress(f"calibrating on {len(messages.texts) - outside} in-scope and {outside} out-of-scope messages")
    readings = read_in_batches(bot.read, messages.texts)
    scope = combined_scope_score(readings, messages, config) if config.policy.scope_score == COMBINED else None
    if scope is not None:  # calibrated on each message's score from the fold model that did not see it
        scope, held_out = scope
        readings = [dataclasses.replace(r, ood_score=float(s)) for r, s in zip(readings, held_out)]
        record["scope_score"] = scope.to_json()
    signals = Signals.of(readings, messages.texts, messages.intents, bot.knowledge, config.policy)
    run_threshold = bot.predictor.ood.threshold if bot.predictor.ood is not None and scope is None else None
    points = sweep(signals, config.policy, run_threshold)
    thresholds, found = calibrate(points, config.policy)
    if not found["met"]:
        log.warning(
            "no thresholds reach the target answered accuracy %.0f%% (with the target out-of-scope recall) on the "
            "calibration messages; the most accurate ones are used (%.1f%%)",
            100 * config.policy.target_accuracy,
            100 * (found["answered_accuracy"] or 0.0),
        )
    calibration = {"chosen": found, "frontier": frontier(points)}
    (staging / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1) + "\n", encoding="utf-8")
    write_record(staging, record | {"thresholds": thresholds.to_json(), "calibration": found})


def export_intent_run(run_folder: Path, backend: str, progress) -> None:
    """The intent run's ONNX graphs (float32 and int8, with features), where the bot reads on an exported path; for
    `auto`, a run that does not export (or whose graphs fail their check) is read in PyTorch."""
    if backend in (TORCH, TORCH_BF16):
        return
    progress("exporting the intent run to ONNX (float32 and int8, checked against PyTorch)")
    try:
        lmadapt.export(run_folder, quantize="int8")
    except LmadaptError as error:
        if backend != AUTO:
            raise
        log.warning("the bot reads in PyTorch: the intent run's export was refused (%s)", error.what)


def combined_scope_score(readings: list[Reading], messages: Messages, config: SupportConfig):
    """The run's out-of-scope score combined with the intent's uncertainty, fitted on the calibration messages (see
    scope.py), and their held-out scores; None where the run has no score or too few out-of-scope messages."""
    if any(r.ood_score is None for r in readings):
        return None
    out_of_scope = np.array([intent is None for intent in messages.intents])
    return fit_scope_score(
        np.array([r.ood_score for r in readings]), np.array([r.confidence for r in readings]), out_of_scope, config.seed
    )


def write_record(folder: Path, record: dict) -> None:
    stamp = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "lmadapt": lmadapt.__version__}
    (folder / BOT_FILE).write_text(json.dumps(record | stamp, indent=2) + "\n", encoding="utf-8")
