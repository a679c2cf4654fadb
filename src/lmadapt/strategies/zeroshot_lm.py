"""`zeroshot_lm`: a causal LM scores each label's words after the filled template; no training."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.strategies.base import Strategy


@dataclass
class ZeroshotLmConfig:
    template: str = option(
        "Text: {text}\nLabel: {label}",
        "The prompt: {text} (and {text_pair}) where the input goes, {label} at the end where the label "
        "words go, e.g. 'Review: {text}\\nSentiment: {label}'. The text is truncated to fit model.max_length, "
        "never the template.",
    )
    verbalizer: dict[str, list[str]] | None = option(
        None,
        "Label -> the words (or phrases, any language, any number of tokens) that name it, e.g. "
        "{positive: [great, good], negative: [terrible, bad]}; empty: each label's own name.",
    )
    calibrate: bool = option(
        True,
        "Contextual calibration: divide out the label distribution the model gives content-free inputs "
        "('N/A', '', '[MASK]'), which removes its bias towards some label words.",
    )
    normalize_length: bool = option(
        True, "Score a word by its mean log-probability per token, so longer words are not penalised."
    )

    def __post_init__(self) -> None:
        from lmadapt.prompts import Template

        Template.parse(self.template, "strategy.template", needs_label=True)


def input_tokenizer(tokenizer, config, folder=None):
    """The backbone's tokenizer, writing each text into the config's template first."""
    from lmadapt.prompts import PromptTokenizer, Template

    return PromptTokenizer(tokenizer, Template.parse(config.template, "strategy.template", needs_label=True))


def load_verbalized_lm(context: StrategyContext, config, prefix: str | None = None, reader=None) -> PreparedModel:
    """The context's causal LM read through the config's template and verbalizer, calibrated if asked.

    `prefix`: text every prompt starts with (read once, cached); `reader(tokenizer, template)`: the
    tokenizer wrapper, when it is not the plain template filler.
    """
    from transformers import AutoModelForCausalLM

    from lmadapt.models.classifier import explained_load_errors, is_causal_lm, load_tokenizer
    from lmadapt.models.label_scoring import CONTENT_FREE_TEXTS, VerbalizedLM
    from lmadapt.prompts import PromptTokenizer, Template, Verbalizer

    template = Template.parse(config.template, "strategy.template", needs_label=True)
    verbalizer = Verbalizer.build(config.verbalizer, context.labels.labels, "strategy.verbalizer")
    path, model_config = context.backbone_path, context.model
    if not is_causal_lm(path):
        raise LmadaptError(
            f"this strategy reads a causal LM's words, and {model_config.backbone} is not one",
            where="model.backbone",
            fix="use a causal LM, e.g. model.backbone=smollm2 (or leave it empty for the strategy's default)",
        )
    tokenizer = load_tokenizer(path, model_config)
    word_ids = verbalizer.token_ids(tokenizer, template.label_prefix, "strategy.verbalizer")
    prefix_ids = tokenizer(prefix)["input_ids"] if prefix else None
    with explained_load_errors(path, model_config):
        lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
    context_size = getattr(lm.config, "max_position_embeddings", None)
    needed = len(prefix_ids or []) + model_config.max_length + max(len(ids) for words in word_ids for ids in words)
    if context_size and needed > context_size:
        raise LmadaptError(
            f"the prompts need up to {needed} tokens ({len(prefix_ids or [])} of demonstrations), more than the "
            f"model's context of {context_size}",
            where="strategy.demonstrations",
            fix="use fewer demonstrations (strategy.demonstrations or data.shots_per_class), or a lower model.max_length",
        )
    lm.requires_grad_(False)
    model = VerbalizedLM(lm, word_ids, normalize_length=config.normalize_length, prefix_ids=prefix_ids).eval()
    reader = reader(tokenizer, template) if reader else PromptTokenizer(tokenizer, template)
    if config.calibrate:
        empty = [""] * len(CONTENT_FREE_TEXTS) if template.has_pair else None
        model.calibrate(
            reader(
                list(CONTENT_FREE_TEXTS), empty, max_length=model_config.max_length, padding=True, return_tensors="pt"
            )
        )
    return PreparedModel(model, reader)


STRATEGY = Strategy(
    name="zeroshot_lm",
    summary="no training: a causal LM scores each label's words after the prompt (template + verbalizer)",
    config_class=ZeroshotLmConfig,
    default_learning_rate=0.0,
    prepare=load_verbalized_lm,
    artifact="delta",
    trains=False,
    default_backbone="smollm2",
    input_tokenizer=input_tokenizer,
)
