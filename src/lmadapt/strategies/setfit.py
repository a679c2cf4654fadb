"""`setfit`: contrastive fine-tuning of a sentence encoder on pairs of the (few) training examples,
then a logistic-regression head on its embeddings (Tunstall et al. 2022), through the setfit library.

train.epochs, train.learning_rate (the encoder's), train.batch_size and train.max_steps apply to the
contrastive phase. The trained encoder and head become one classifier module, saved as safetensors
(setfit's own format pickles the head, and nothing is unpickled from a run folder).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from lmadapt.config import option, require_positive
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.models.sentence_encoder import load_sentence_encoder, sentence_embeddings
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, FloatRange, IntRange


@dataclass
class SetfitConfig:
    num_iterations: int = option(
        20,
        "Pairs drawn per training example and epoch (half similar, half dissimilar), as in the SetFit paper; "
        "cost grows linearly with it, not with the square of the examples.",
    )
    head_c: float = option(1.0, "Inverse L2 strength of the logistic-regression head (scikit-learn's C).")

    def __post_init__(self) -> None:
        require_positive(self.num_iterations, "strategy.num_iterations")
        require_positive(self.head_c, "strategy.head_c")


class EncoderWithHead(nn.Module):
    """Logits = a linear head over a sentence-transformers model's embeddings."""

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder
        dimension = encoder.get_sentence_embedding_dimension()
        self.head = nn.Linear(dimension, num_labels, device=encoder.device)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_unused):
        logits = self.head(sentence_embeddings(self.encoder, input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def set_head(self, coef, intercept) -> None:
        """Take a fitted scikit-learn logistic regression: one row per class, or one for two classes."""
        coef, intercept = torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(intercept, dtype=torch.float32)
        if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(w.x + b) = softmax([0, w.x + b])[1]
            coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
        self.head.weight.copy_(coef)
        self.head.bias.copy_(intercept)


def prepare(context: StrategyContext, config: SetfitConfig) -> PreparedModel:
    encoder = load_sentence_encoder(context.backbone_path, context.model)
    return PreparedModel(EncoderWithHead(encoder, len(context.labels)), encoder.tokenizer)


def train_setfit(prepared: PreparedModel, data, run_config) -> dict:
    """Contrastive phase and head with setfit; the result goes into `prepared.model`. Returns training figures."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.linear_model import LogisticRegression

    model, train, config = prepared.model, run_config.train, run_config.strategy
    labels = data.labels.encode(data.train.labels).tolist()
    rows = Dataset.from_dict({"text": data.train.texts, "label": labels})
    setfit_model = SetFitModel(
        model_body=model.encoder,
        model_head=LogisticRegression(C=config.head_c, max_iter=1000),
        normalize_embeddings=False,
    )
    scratch = tempfile.TemporaryDirectory(prefix="lmadapt-setfit-")  # setfit wants a folder; nothing is saved in it
    arguments = TrainingArguments(
        output_dir=scratch.name,
        batch_size=train.batch_size,
        num_epochs=int(max(1, round(train.epochs))),
        max_steps=train.max_steps,
        body_learning_rate=train.learning_rate or STRATEGY.default_learning_rate,
        num_iterations=config.num_iterations,
        max_length=run_config.model.max_length,
        seed=run_config.seed,
        report_to="none",
        save_strategy="no",
        show_progress_bar=True,
    )
    started = time.perf_counter()
    with scratch:
        Trainer(model=setfit_model, args=arguments, train_dataset=rows).train()
    runtime = time.perf_counter() - started
    model.set_head(setfit_model.model_head.coef_, setfit_model.model_head.intercept_)
    model.requires_grad_(True)  # the whole encoder was trained: all of it is the run's to keep
    return {"runtime_s": round(runtime, 2), "examples": len(labels), "pairs_per_example": config.num_iterations}


STRATEGY = Strategy(
    name="setfit",
    summary="few-shot: contrastive fine-tuning of a sentence encoder on pairs, then a logistic-regression head",
    config_class=SetfitConfig,
    default_learning_rate=2e-5,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    own_training=train_setfit,
    search_space={
        # The contrastive phase's keys (see the module's docstring); no warm-up or head rate there.
        "train.learning_rate": FloatRange(5e-6, 1e-4, log=True),
        "train.epochs": IntRange(1, 2),
        "train.batch_size": Choice((8, 16, 32)),
        "strategy.num_iterations": IntRange(5, 40, step=5),
        "strategy.head_c": FloatRange(0.1, 10.0, log=True),
    },
)
