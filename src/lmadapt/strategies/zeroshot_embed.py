"""`zeroshot_embed`: a sentence encoder embeds the text and a description of each label; the most
similar label wins (cosine similarity). No training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from lmadapt.config import option, require_positive
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.models.sentence_encoder import load_sentence_encoder, sentence_embeddings
from lmadapt.prompts import PromptTokenizer, Template, Verbalizer
from lmadapt.strategies.base import Strategy, no_training


@dataclass
class ZeroshotEmbedConfig:
    descriptions: dict[str, list[str]] | None = option(
        None,
        "Label -> one or more descriptions (words or sentences, any language), e.g. {positive: ['a glowing "
        "review', great], negative: ['a scathing review', awful]}; their mean embedding stands for the label. "
        "Empty: each label's own name.",
    )
    description_template: str = option(
        "{label}", "Wraps each description before it is embedded, e.g. 'This text is about {label}.'"
    )
    text_template: str = option(
        "{text}", "Wraps each input before it is embedded, e.g. 'query: {text}' for E5-style encoders."
    )
    temperature: float = option(
        0.05, "Softmax temperature over the cosine similarities: scores are similarity / temperature."
    )

    def __post_init__(self) -> None:
        require_positive(self.temperature, "strategy.temperature")
        if "{label}" not in self.description_template:
            raise LmadaptError(
                "strategy.description_template has no {label} slot", fix="write e.g. 'This text is about {label}.'"
            )
        text_template(self)


def text_template(config: ZeroshotEmbedConfig):
    return Template.parse(config.text_template, "strategy.text_template", needs_label=False)


class EmbeddingSimilarityClassifier(nn.Module):
    """Label scores = cosine(text embedding, label embedding) / temperature, from a sentence-transformers body."""

    def __init__(self, encoder, label_embeddings: torch.Tensor, temperature: float):
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature
        self.register_buffer("label_embeddings", nn.functional.normalize(label_embeddings, dim=-1), persistent=False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_unused):
        embedded = nn.functional.normalize(
            sentence_embeddings(self.encoder, input_ids, attention_mask, token_type_ids), dim=-1
        )
        logits = embedded @ self.label_embeddings.T / self.temperature
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def input_tokenizer(tokenizer, config: ZeroshotEmbedConfig, folder=None):
    return PromptTokenizer(tokenizer, text_template(config))


def prepare(context: StrategyContext, config: ZeroshotEmbedConfig) -> PreparedModel:
    verbalizer = Verbalizer.build(config.descriptions, context.labels.labels, "strategy.descriptions")
    encoder = load_sentence_encoder(context.backbone_path, context.model)
    encoder.requires_grad_(False)
    with torch.no_grad():
        label_embeddings = torch.stack(
            [
                encoder.encode(
                    [config.description_template.format(label=d) for d in descriptions],
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                ).mean(0)
                for descriptions in verbalizer.words.values()
            ]
        )
    model = EmbeddingSimilarityClassifier(encoder, label_embeddings, config.temperature).eval()
    # The encoder's own tokenizer, so that texts and descriptions are read alike.
    return PreparedModel(model, input_tokenizer(encoder.tokenizer, config))


STRATEGY = Strategy(
    name="zeroshot_embed",
    summary="no training: the label whose description embeds closest to the text (sentence encoder)",
    config_class=ZeroshotEmbedConfig,
    default_learning_rate=0.0,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    own_training=no_training,
    input_tokenizer=input_tokenizer,
)
