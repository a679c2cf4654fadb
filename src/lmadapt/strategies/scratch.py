"""`scratch`: a word-level BiLSTM trained from random initialisation. It shows what pretraining buys.

Words are split at spaces and punctuation; Chinese characters are a word each."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.lstm import LstmClassifierConfig, LstmForSequenceClassification, fit_word_tokenizer
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, FloatRange, trainer_space


@dataclass
class ScratchConfig:
    vocab_size: int = option(20000, "Most frequent training words kept in the vocabulary.")
    min_frequency: int = option(2, "Words seen fewer times than this map to [UNK].")
    embedding_dim: int = option(128, "Word embedding size.")
    hidden_size: int = option(128, "LSTM hidden size per direction.")
    num_layers: int = option(1, "Stacked LSTM layers.")
    bidirectional: bool = option(True, "Read the text in both directions.")
    dropout: float = option(0.3, "Dropout on embeddings and before the head.")


def prepare(context: StrategyContext, config: ScratchConfig) -> PreparedModel:
    tokenizer = fit_word_tokenizer(context.train_texts, config.vocab_size, config.min_frequency)
    labels = context.labels
    model_config = LstmClassifierConfig(
        vocab_size=len(tokenizer),
        embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        dropout=config.dropout,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=labels.id2label,
        label2id=labels.label2id,
        problem_type=labels.problem_type,
    )
    return PreparedModel(LstmForSequenceClassification(model_config), tokenizer)


STRATEGY = Strategy(
    name="scratch",
    summary="word-level BiLSTM from random initialisation (the no-pretraining baseline)",
    config_class=ScratchConfig,
    default_learning_rate=2e-3,
    prepare=prepare,
    default_backbone=None,  # a word vocabulary fitted on the training texts; no pretrained model
    search_space={
        **trainer_space((2e-4, 1e-2)),
        "strategy.dropout": FloatRange(0.0, 0.5),
        "strategy.hidden_size": Choice((64, 128, 256)),
    },
)
