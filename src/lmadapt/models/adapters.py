"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), which peft does not implement.

A small down-projection, a non-linearity and an up-projection, added residually to the output of a
block's output projection: after the attention block and after the feed-forward block (Houlsby),
or after the feed-forward block only (Pfeiffer). The up-projection starts at zero, so an adapted
model starts out computing exactly what the backbone computed.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from lmadapt.errors import LmadaptError

PLACEMENTS = ("houlsby", "pfeiffer")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}

# Per architecture: the output projections of the attention and of the feed-forward block, whose
# outputs are added to the residual stream. Regexes over module names.
BLOCK_OUTPUTS: dict[str, dict[str, str]] = {
    **{
        model_type: {"attention": r"attention\.output\.dense$", "feed_forward": r"layer\.\d+\.output\.dense$"}
        for model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "mpnet")
    },
    "distilbert": {"attention": r"attention\.out_lin$", "feed_forward": r"ffn\.lin2$"},
    **{
        model_type: {"attention": r"self_attn\.o_proj$", "feed_forward": r"mlp\.down_proj$"}
        for model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo")
    },
}


class BottleneckAdapter(nn.Module):
    def __init__(self, width: int, bottleneck: int, activation: str, dropout: float):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.activation(self.down(hidden))))


class AdaptedLinear(nn.Module):
    """A frozen linear layer whose output passes through a residual bottleneck adapter."""

    def __init__(self, base: nn.Linear, adapter: BottleneckAdapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.base(inputs)
        return hidden + self.adapter(hidden)


def target_patterns(model_type: str, placement: str, target_modules: list[str] | None) -> list[str]:
    if target_modules:
        return list(target_modules)
    if model_type not in BLOCK_OUTPUTS:
        raise LmadaptError(
            f"no default adapter placement for '{model_type}' models",
            where="strategy.target_modules",
            fix="list regexes of the block output projections, e.g. "
            "strategy.target_modules=['attention\\.output\\.dense$'] (known: " + ", ".join(sorted(BLOCK_OUTPUTS)) + ")",
        )
    blocks = BLOCK_OUTPUTS[model_type]
    return [blocks["attention"], blocks["feed_forward"]] if placement == "houlsby" else [blocks["feed_forward"]]


def add_bottleneck_adapters(
    model: nn.Module,
    patterns: list[str],
    reduction_factor: int,
    activation: str = "relu",
    dropout: float = 0.0,
) -> list[str]:
    """Wrap every linear layer whose name matches a pattern; returns the names wrapped."""
    compiled = [re.compile(p) for p in patterns]
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(p.search(name) for p in compiled)
    ]
    if not found:
        raise LmadaptError(
            f"no linear layer matches the adapter targets {patterns}",
            where="strategy.target_modules",
            fix="check the module names with `print(model)`; targets are regexes over them",
        )
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        width = module.out_features
        adapter = BottleneckAdapter(width, max(1, width // reduction_factor), activation, dropout)
        adapter.to(module.weight.device)
        setattr(model.get_submodule(parent_name), child, AdaptedLinear(module, adapter))
    return [name for name, _ in found]
