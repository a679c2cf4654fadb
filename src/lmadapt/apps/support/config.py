"""A support bot's recipe: the history it learns from, the intent run, the encoder, the index and the answering
policy, as dataclasses whose every field has help (`lmadapt support keys` lists them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from lmadapt.apps.vectors import INDEX_KINDS
from lmadapt.config import ConfigKey, apply_overrides, build_dataclass, option, read_recipe, section_keys
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.inference.engines import BACKENDS

DEFAULT_HUMAN_PHRASES = (
    "talk to a human",
    "speak to a human",
    "talk to a person",
    "speak to a person",
    "real person",
    "human agent",
    "talk to an agent",
    "speak to an agent",
    "talk to someone",
    "speak to someone",
    "customer service representative",
    "live agent",
)

COMBINED = "combined"
SCOPE_SCORES = (COMBINED, "run")


@dataclass
class HistoryConfig:
    path: str | None = option(
        None, "Past exchanges: a CSV/TSV/JSONL/Parquet file with a question, its answer and optionally its intent."
    )
    format: str = option("auto", "File format: auto (from the extension), csv, tsv, jsonl, parquet.")
    question_column: str = option("question", "Column holding the customer's question.")
    answer_column: str | None = option(
        "answer", "Column holding the answer given (empty: none; the intents' templates then answer)."
    )
    intent_column: str = option("intent", "Column holding the question's intent.")
    out_of_scope_label: str | None = option(
        None,
        "The intent of questions the bot must not answer (e.g. oos): their rows calibrate the escalation of "
        "out-of-scope messages and are never answers.",
    )
    questions_per_intent: int | None = option(
        None, "Keep this many (seeded) questions per intent in the knowledge base; empty: every question."
    )
    calibration_share: float = option(
        0.1,
        "Share of the history's in-scope rows held out (seeded, stratified) to calibrate the thresholds, when "
        "calibration.path is not given; a trained intent run validates on the same rows.",
    )


@dataclass
class TemplatesConfig:
    path: str | None = option(None, "Answer templates: a CSV/TSV/JSONL/Parquet file with one answer per intent.")
    intent_column: str = option("intent", "Column holding the intent.")
    answer_column: str = option("answer", "Column holding the intent's answer.")


@dataclass
class IntentConfig:
    run: str | None = option(None, "An intent run folder to reuse (copied into the bot); empty: train one.")
    recipe: str | None = option(
        None,
        "The recipe an intent run is trained with on the history (its data keys are set by the bot); empty: "
        "lmadapt's defaults with model.backbone=minilm, strategy full and ood.method=auto.",
    )
    settings: list[str] | None = option(
        None, "Overrides for the intent recipe, `section.key=value` each (e.g. train.epochs=3)."
    )
    backend: str = option(
        "auto",
        "How the bot reads messages; its thresholds are calibrated on this path's readings and it serves on it: "
        "auto (the fastest path here, as `lmadapt predict` takes it; the intent run is exported to ONNX at build, "
        "PyTorch kept where the export fails its check), torch, torch-bf16, onnx, onnx-int8, openvino.",
    )


@dataclass
class CalibrationConfig:
    path: str | None = option(
        None,
        "Labelled messages to calibrate the thresholds on (history's columns; out-of-scope ones labelled "
        "history.out_of_scope_label); empty: a held-out share of the history.",
    )


@dataclass
class RetrievalConfig:
    encoder: str = option(
        "run",
        "What embeds questions and messages: run (the intent run's adapted encoder), a packaged backbone alias, a "
        "model folder or another run folder.",
    )
    index: str = option(
        "auto",
        "Vector index: auto (exact numpy search up to faiss_above questions, faiss HNSW above), numpy, faiss-flat, "
        "faiss-hnsw, qdrant (a Qdrant server at qdrant_url, or its embedded mode in qdrant_path).",
    )
    faiss_above: int = option(100_000, "auto: questions beyond which the index is faiss HNSW rather than exact numpy.")
    qdrant_url: str | None = option(None, "Qdrant server URL for index=qdrant, e.g. http://127.0.0.1:6333.")
    qdrant_path: str | None = option(None, "Folder of Qdrant's embedded local mode for index=qdrant (no server).")
    top_k: int = option(5, "Known questions retrieved for each message (the answer's sources).")
    lexical_weight: float = option(
        0.0,
        "Hybrid retrieval: weight of the BM25 score (scaled to 0..1 per message) beside the vector similarity; 0: "
        "vectors only.",
    )


@dataclass
class PolicyConfig:
    target_accuracy: float = option(
        0.95,
        "Calibration: the thresholds answer as many in-scope calibration messages as they can while at least this "
        "share of those answered is answered right.",
    )
    target_oos_recall: float | None = option(
        0.85,
        "Calibration: and escalate at least this share of the out-of-scope calibration messages (when there are "
        "any); empty: only target_accuracy binds.",
    )
    min_confidence: float | None = option(
        None, "Answer from the intent's template only at this intent probability or above; empty: calibrated."
    )
    min_similarity: float | None = option(
        None, "Answer with the nearest known answer only at this cosine similarity or above; empty: calibrated."
    )
    scope_score: str = option(
        COMBINED,
        "The out-of-scope score: combined (the intent run's score and the intent's uncertainty, weighed by a "
        "logistic regression fitted fold by fold on the calibration messages' out-of-scope examples; the run's score "
        "where there are fewer than 10 of them), run (the intent run's own score).",
    )
    max_ood_score: float | None = option(
        None,
        "Escalate as out_of_scope above this out-of-scope score (see scope_score); empty: calibrated (or the run's "
        "own threshold without out-of-scope calibration messages).",
    )
    ambiguity_gap: float = option(
        0.1, "Escalate as ambiguous when the two most probable intents are closer than this (Rasa's default 0.1)."
    )
    human_phrases: list[str] | None = option(
        None,
        "Phrases (case-insensitive) by which a customer asks for a person: escalated as user_asked_for_human; "
        f"empty: {', '.join(DEFAULT_HUMAN_PHRASES)}.",
    )
    human_intents: list[str] | None = option(
        None, "Intents that mean the customer wants a person (e.g. contact_agent)."
    )
    max_failures: int = option(
        2,
        "Escalate as repeated_failure once this many of the conversation's last turns were not answered; 0: never.",
    )


@dataclass
class SupportConfig:
    name: str = option("support-bot", "The bot's name: its folder under output_dir.")
    output_dir: str = option("bots", "Folder that receives the bot folder.")
    seed: int = option(42, "Seed of the calibration split and the knowledge base's sample.")
    history: HistoryConfig = field(default_factory=HistoryConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    intent: IntentConfig = field(default_factory=IntentConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / self.name


SECTIONS = {
    "history": HistoryConfig,
    "templates": TemplatesConfig,
    "intent": IntentConfig,
    "calibration": CalibrationConfig,
    "retrieval": RetrievalConfig,
    "policy": PolicyConfig,
}


def parse_support_config(raw: dict) -> SupportConfig:
    """A checked SupportConfig from a mapping (a recipe with overrides applied)."""
    if not isinstance(raw, dict):
        raise LmadaptError("a support config must be a mapping of sections (history, templates, intent, ...)")
    raw = dict(raw)
    sections = {name: build_dataclass(cls, raw.pop(name, None), name) for name, cls in SECTIONS.items()}
    config = dataclasses.replace(build_dataclass(SupportConfig, raw, ""), **sections)
    check_support_config(config)
    return config


def load_support_config(path: str | Path | None, overrides: list[str] | None = None) -> SupportConfig:
    """Read a support recipe (YAML) with `section.key=value` overrides; an error names the file."""
    raw = read_recipe(Path(path))[0] if path is not None else {}
    try:
        return parse_support_config(apply_overrides(raw or {}, overrides or []))
    except LmadaptError as error:
        if path is not None and (error.where is None or not error.where.startswith(str(path))):
            error.where = f"{path}: {error.where}" if error.where else str(path)
            error.args = (error.render(),)
        raise


def support_keys(prefix: str | None = None) -> list[ConfigKey]:
    """Every support config key (dotted) with its type, default and help."""
    keys = section_keys(SupportConfig, "", skip=tuple(SECTIONS))
    for name, cls in SECTIONS.items():
        keys += section_keys(cls, f"{name}.")
    if prefix:
        keys = [key for key in keys if key.key == prefix or key.key.startswith(prefix.rstrip(".") + ".")]
    return keys


def _share(value: float | None, key: str, *, low_open: bool = True) -> None:
    if value is not None and not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise LmadaptError(f"{key} must lie in (0, 1], got {value}", where=key, fix="e.g. 0.95")


def check_support_config(config: SupportConfig) -> None:
    if not config.history.path and not config.templates.path:
        raise LmadaptError(
            "the bot has nothing to answer from: neither history.path nor templates.path is set",
            where="history.path",
            fix="set history.path to a file of past questions and answers (and/or templates.path)",
        )
    if not config.history.path:
        raise LmadaptError(
            "templates alone give no questions to learn the intents from",
            where="history.path",
            fix="set history.path to a file of past questions (with their intents)",
        )
    if config.intent.backend not in BACKENDS:
        raise LmadaptError(
            f"intent.backend '{config.intent.backend}' is not an inference backend",
            where="intent.backend",
            fix=did_you_mean(config.intent.backend, BACKENDS),
        )
    if config.policy.scope_score not in SCOPE_SCORES:
        raise LmadaptError(
            f"policy.scope_score '{config.policy.scope_score}' is not one of {', '.join(SCOPE_SCORES)}",
            where="policy.scope_score",
            fix=did_you_mean(config.policy.scope_score, SCOPE_SCORES),
        )
    if config.retrieval.index not in INDEX_KINDS:
        raise LmadaptError(
            f"unknown index '{config.retrieval.index}'",
            where="retrieval.index",
            fix=did_you_mean(config.retrieval.index, INDEX_KINDS),
        )
    if config.retrieval.index == "qdrant" and not (config.retrieval.qdrant_url or config.retrieval.qdrant_path):
        raise LmadaptError(
            "index=qdrant needs a Qdrant server or a local folder",
            where="retrieval.index",
            fix="set retrieval.qdrant_url (e.g. http://127.0.0.1:6333) or retrieval.qdrant_path",
        )
    if config.retrieval.top_k < 1:
        raise LmadaptError("retrieval.top_k must be at least 1", where="retrieval.top_k", fix="e.g. 5")
    _share(config.policy.target_accuracy, "policy.target_accuracy")
    _share(config.policy.target_oos_recall, "policy.target_oos_recall")
    _share(config.retrieval.lexical_weight, "retrieval.lexical_weight", low_open=False)
    if not 0.0 < config.history.calibration_share < 0.5:
        raise LmadaptError(
            f"history.calibration_share must lie between 0 and 0.5, got {config.history.calibration_share}",
            where="history.calibration_share",
            fix="e.g. 0.1",
        )
    if config.history.questions_per_intent is not None and config.history.questions_per_intent < 1:
        raise LmadaptError(
            "history.questions_per_intent must be at least 1", where="history.questions_per_intent", fix="e.g. 3"
        )
    if config.policy.max_failures < 0:
        raise LmadaptError("policy.max_failures must be 0 or more", where="policy.max_failures", fix="e.g. 2")
