"""A classifier over pooled backbone states (mean, first token, or last token).

Sentence encoders such as all-MiniLM-L6-v2 are trained to be read by mean pooling; BERT's [CLS]
pooler is a weak feature for a frozen backbone, and so, measured on SST-2, is SmolLM2's last token
(54% against 71% for mean pooling with a frozen backbone and 400 training rows).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from lmadapt.models.loss import classification_loss

POOLINGS = ("mean", "cls", "last")


class PooledClassifierConfig(PretrainedConfig):
    model_type = "lmadapt-pooled"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(self, backbone_config=None, pooling: str = "mean", classifier_dropout: float = 0.1, **kwargs):
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        if backbone_config is not None:
            # PretrainedConfig hands its attention implementation down to sub-configs, and an unset one
            # (None) makes the backbone drop its padding mask: outputs would depend on batch padding.
            kwargs.setdefault("attn_implementation", backbone_config._attn_implementation)
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    def get_text_config(self, decoder=None, encoder=None):
        """The backbone's: what reads the text (peft sizes soft prompts and prefixes from it)."""
        return self.backbone_config.get_text_config(decoder=decoder, encoder=encoder)


class PooledForSequenceClassification(PreTrainedModel):
    config_class = PooledClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    # Attention runs inside the backbone, with the implementation the backbone was loaded with.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: PooledClassifierConfig, backbone=None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if getattr(self.backbone, "pooler", None) is not None:
            # This head pools the states itself: BERT's pooler would sit unused (and, for an encoder saved
            # without it, freshly random), yet be counted, saved and adapted by LoRA's all-linear.
            self.backbone.pooler = None
        hidden = config.backbone_config.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, config.num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            return states[:, 0]
        if self.config.pooling == "last":
            # Index of the last real token in each row (works for left or right padding).
            positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
            last = (positions * mask).argmax(dim=1)
            return states[torch.arange(states.shape[0], device=states.device), last]
        weights = mask[:, :, None].to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        past_key_values=None,
        labels=None,
        num_items_in_batch=None,
        **_unused,
    ):
        # Prompt tuning hands in embeddings (its soft prompt first); prefix tuning hands in past keys and
        # values, and a mask that covers the prefix as well as the text.
        inputs = {"input_ids": input_ids, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if past_key_values is not None:
            inputs["past_key_values"] = past_key_values
        states = self.backbone(**inputs).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        text_mask = attention_mask[:, -states.shape[1] :]  # the states of the text, not of a prefix
        logits = self.classifier(self.dropout(self.pool(states, text_mask)))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.config.problem_type, num_items_in_batch=num_items_in_batch)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(PooledClassifierConfig.model_type, PooledClassifierConfig)
AutoModelForSequenceClassification.register(PooledClassifierConfig, PooledForSequenceClassification)
