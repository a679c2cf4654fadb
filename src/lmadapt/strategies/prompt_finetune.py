"""`prompt_finetune`: prompt-based fine-tuning (PET, Schick & Schütze 2021; LM-BFF, Gao et al. 2021)
of a causal LM on the (few) training examples: the loss is cross-entropy over the label words' scores
after the template, exactly what `zeroshot_lm` predicts with, so training starts from the zero-shot
classifier instead of a random head. LoRA adapters on every linear layer keep it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option, require_positive
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.label_scoring import VerbalizedLmConfig, load_verbalized_lm, template_tokenizer
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, trainer_space


@dataclass
class PromptFinetuneConfig(VerbalizedLmConfig):
    r: int = option(8, "LoRA rank of the updates to the LM's linear layers.")
    alpha: float = option(16.0, "LoRA scale numerator: updates are multiplied by alpha / r.")
    calibrate: bool = option(
        False, "Contextual calibration of the fine-tuned model (rarely needed once the model has seen labels)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.r, "strategy.r")


def prepare(context: StrategyContext, config: PromptFinetuneConfig) -> PreparedModel:
    from peft import LoraConfig, get_peft_model

    prepared = load_verbalized_lm(context, config)
    scorer = prepared.model
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=0.0, target_modules="all-linear")
    scorer.lm = get_peft_model(scorer.lm, lora)  # only the LoRA matrices train; the words' scores are the head
    return prepared


STRATEGY = Strategy(
    name="prompt_finetune",
    summary="few-shot: LoRA fine-tuning of a causal LM through its template and label words (PET / LM-BFF)",
    config_class=PromptFinetuneConfig,
    default_learning_rate=5e-4,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    default_backbone="smollm2",
    input_tokenizer=template_tokenizer,
    search_space={
        **trainer_space((5e-5, 3e-3), batch_sizes=(4, 8, 16)),  # few-shot: a few dozen rows
        "strategy.r": Choice((4, 8, 16)),
        "strategy.alpha": Choice((8.0, 16.0, 32.0)),
    },
)
