"""`adapter`: bottleneck adapters after the attention and feed-forward blocks (Houlsby) or after the feed-forward block only (Pfeiffer)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmadapt.config import option, require_choice, require_positive
from lmadapt.models.adapters import ACTIVATIONS, PLACEMENTS, add_bottleneck_adapters, target_patterns
from lmadapt.models.classifier import head_parameter_names, load_classifier, train_only
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, trainer_space


@dataclass
class AdapterStrategyConfig:
    placement: str = option(
        "houlsby",
        "houlsby: an adapter after the attention block and after the feed-forward block of every layer; "
        "pfeiffer: after the feed-forward block only (half the adapters, about as good).",
    )
    reduction_factor: int = option(16, "Bottleneck width = hidden size / reduction_factor (16 gives 24 on MiniLM).")
    activation: str = option("relu", "Non-linearity inside the bottleneck: relu, gelu, silu, tanh.")
    dropout: float = option(0.0, "Dropout inside the bottleneck.")
    train_layer_norms: bool = option(True, "Also train the backbone's layer norms, as Houlsby et al. do.")
    target_modules: list[str] | None = option(
        None,
        "Regexes of the block output projections that get an adapter; default: known per architecture "
        "(BERT-like and Llama-like models).",
    )

    def __post_init__(self) -> None:
        require_choice("strategy.placement", self.placement, PLACEMENTS)
        require_choice("strategy.activation", self.activation, tuple(ACTIVATIONS))
        require_positive(self.reduction_factor, "strategy.reduction_factor")


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def prepare(context: StrategyContext, config: AdapterStrategyConfig) -> PreparedModel:
    model, tokenizer = load_classifier(context)
    # The architecture that holds the blocks: the backbone's, also inside lmadapt's pooled classifier.
    patterns = target_patterns(model.config.get_text_config().model_type, config.placement, config.target_modules)
    add_bottleneck_adapters(model, patterns, config.reduction_factor, config.activation, config.dropout)
    trainable = set(head_parameter_names(model))
    trainable |= {name for name, _ in model.named_parameters() if ".adapter." in name}
    if config.train_layer_norms:
        norms = [name for name, module in model.named_modules() if is_norm(module)]
        trainable |= {f"{norm}.{p}" for norm in norms for p, _ in model.get_submodule(norm).named_parameters()}
    train_only(model, trainable)
    return PreparedModel(model, tokenizer)


STRATEGY = Strategy(
    name="adapter",
    summary="bottleneck adapters after each attention and feed-forward block (Houlsby or Pfeiffer), and a new head",
    config_class=AdapterStrategyConfig,
    default_learning_rate=3e-3,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    search_space={
        **trainer_space((3e-4, 3e-2), head_rate=True),
        "strategy.reduction_factor": Choice((8, 16, 32, 64)),
        "strategy.placement": Choice(("houlsby", "pfeiffer")),
    },
)
