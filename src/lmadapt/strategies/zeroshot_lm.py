"""`zeroshot_lm`: a causal LM scores each label's words after the filled template; no training."""

from __future__ import annotations

from lmadapt.models.label_scoring import VerbalizedLmConfig, load_verbalized_lm, template_tokenizer
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.strategies.base import Strategy, no_training

STRATEGY = Strategy(
    name="zeroshot_lm",
    summary="no training: a causal LM scores each label's words after the prompt (template + verbalizer)",
    config_class=VerbalizedLmConfig,
    default_learning_rate=0.0,
    prepare=load_verbalized_lm,
    artifact=TRAINED_TENSORS,
    own_training=no_training,
    default_backbone="smollm2",
    input_tokenizer=template_tokenizer,
)
