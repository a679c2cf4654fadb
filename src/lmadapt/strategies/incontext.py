"""`incontext`: labelled demonstrations in the causal LM's prompt, then the label words scored as in
`zeroshot_lm`; no training. Demonstrations come from the (k-shot) training data: at random (one
seeded, class-balanced set shared by every input, read once and cached), or by embedding similarity
to each input (the most similar last, as KATE and LM-BFF do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lmadapt.config import ModelConfig, option, require_choice, require_positive
from lmadapt.data.labels import LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.label_scoring import VerbalizedLmConfig, load_verbalized_lm
from lmadapt.models.language import require_readable
from lmadapt.models.resolve import resolve_backbone
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.prompts import PromptTokenizer, Template, Verbalizer
from lmadapt.strategies.base import Strategy, no_training

DEMONSTRATIONS_FILE = "demonstrations.json"
SELECTIONS = ("random", "similar")


@dataclass
class IncontextConfig(VerbalizedLmConfig):
    selection: str = option(
        "random",
        "How each prompt's demonstrations are chosen: random (one seeded, class-balanced set for every "
        "input, read once) or similar (the training examples whose embeddings are closest to the input).",
    )
    demonstrations: int | None = option(
        None,
        "Demonstrations in each prompt; empty: every training example with random selection (use "
        "data.shots_per_class to set k per class), 16 with similar selection.",
    )
    encoder: str = option("minilm", "Sentence encoder that measures similarity, for selection: similar.")
    separator: str = option("\n\n", "Text between demonstrations, and between them and the input.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("strategy.selection", self.selection, SELECTIONS)
        require_positive(self.demonstrations, "strategy.demonstrations")


def _render(template, verbalizer_words: dict[str, list[str]], example: dict) -> str:
    """One demonstration: the filled template followed by the first word of its label."""
    return (
        template.fill(example["text"], example.get("pair"))
        + template.label_prefix
        + verbalizer_words[example["label"]][0]
    )


def balanced_order(examples: list[dict]) -> list[dict]:
    """Round-robin over labels, each label's examples in their (seeded) order: every prefix is balanced."""
    by_label: dict[str, list[dict]] = {}
    for example in examples:
        by_label.setdefault(example["label"], []).append(example)
    queues = list(by_label.values())
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


class SimilarDemonstrations:
    """Per input, the `count` training examples closest in embedding space, most similar last."""

    def __init__(self, pool: list[dict], rendered: list[str], encoder_name: str, count: int, separator: str):
        from sentence_transformers import SentenceTransformer

        self.rendered, self.count, self.separator = rendered, min(count, len(pool)), separator
        self.encoder = SentenceTransformer(str(resolve_backbone(encoder_name)))
        self.pool = self.encoder.encode(
            [e["text"] for e in pool], convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )

    def __call__(self, texts: list[str], pairs) -> list[str]:
        import torch

        queries = self.encoder.encode(texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        nearest = torch.topk(queries @ self.pool.T, self.count, dim=-1).indices.flip(-1)
        return ["".join(self.rendered[i] + self.separator for i in row.tolist()) for row in nearest]


def _pool(context: StrategyContext) -> list[dict]:
    if context.saved_folder is not None:
        return json.loads((context.saved_folder / DEMONSTRATIONS_FILE).read_text(encoding="utf-8"))
    if not context.train_texts:
        raise LmadaptError("in-context learning needs labelled training examples", where="data.train")
    return [{"text": text, "label": str(label)} for text, label in zip(context.train_texts, context.train_labels)]


def _reader_parts(config: IncontextConfig, labels: list[str], pool: list[dict]):
    """(shared prefix text or None, per-input preamble or None) for the config's selection."""
    template = Template.parse(config.template, "strategy.template", needs_label=True)
    words = Verbalizer.build(config.verbalizer, labels, "strategy.verbalizer").words
    if config.selection == "random":
        chosen = balanced_order(pool)[: config.demonstrations or len(pool)]
        return "".join(_render(template, words, e) + config.separator for e in chosen), None
    rendered = [_render(template, words, e) for e in pool]
    return None, SimilarDemonstrations(pool, rendered, config.encoder, config.demonstrations or 16, config.separator)


def _require_encoder_reads(encoder: str, model: ModelConfig, texts: list[str]) -> None:
    """The language guard for the demonstration encoder too: one that cannot read the texts would pick
    demonstrations by their few known tokens."""
    encoder_model = replace(model, backbone=encoder)
    require_readable(resolve_backbone(encoder), encoder_model, texts, "the demonstrations", setting="strategy.encoder")


def input_tokenizer(tokenizer, config: IncontextConfig, folder: Path | None = None):
    template = Template.parse(config.template, "strategy.template", needs_label=True)
    labels = LabelMap.load(folder.parent / "labels.json").labels
    shared, per_input = _reader_parts(config, labels, json.loads((folder / DEMONSTRATIONS_FILE).read_text("utf-8")))
    # A shared prefix lives in the model (its cache is reused); only per-input demonstrations are written here.
    return PromptTokenizer(tokenizer, template, preamble=per_input, add_special_tokens=shared is None)


def prepare(context: StrategyContext, config: IncontextConfig) -> PreparedModel:
    pool = _pool(context)
    if config.selection == "similar" and context.saved_folder is None:
        _require_encoder_reads(config.encoder, context.model, [e["text"] for e in pool])
    shared, per_input = _reader_parts(config, context.labels.labels, pool)

    def reader(tokenizer, template):
        return PromptTokenizer(tokenizer, template, preamble=per_input, add_special_tokens=shared is None)

    prepared = load_verbalized_lm(context, config, prefix=shared, reader=reader)
    prepared.files[DEMONSTRATIONS_FILE] = json.dumps(pool, ensure_ascii=False, indent=1)
    return prepared


STRATEGY = Strategy(
    name="incontext",
    summary="no training: k labelled demonstrations per class in a causal LM's prompt (random or most similar)",
    config_class=IncontextConfig,
    default_learning_rate=0.0,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    own_training=no_training,
    default_backbone="smollm2",
    input_tokenizer=input_tokenizer,
)
