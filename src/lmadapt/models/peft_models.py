"""The peft side of parameter-efficient strategies: wrap a classifier, reload an adapter folder.

One compatibility shim lives here: transformers 5 renamed the models' `past_key_values` argument
to `cache` (still accepting the old name), and peft 0.21's prefix tuning looks for the old name in
the forward signature before passing the prefix as past keys/values. `accept_past_key_values`
restores the name in the signature; the model itself is unchanged.
"""

from __future__ import annotations

from pathlib import Path

from lmadapt.errors import LmadaptError
from lmadapt.models.classifier import load_classifier, load_pooled_classifier
from lmadapt.models.contract import PreparedModel


def accept_past_key_values(model):
    """Let peft's prefix tuning hand its prefix to a transformers-5 model (see the module docstring)."""
    original = model.forward

    def forward(input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, past_key_values=None, **kwargs):
        return original(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            past_key_values=past_key_values,
            **kwargs,
        )

    model.forward = forward
    return model


def _needs_past_key_values(peft_config) -> bool:
    from peft import PeftType

    return peft_config.peft_type == PeftType.PREFIX_TUNING


def _size_prompts_by_the_text_model(model, peft_config) -> None:
    """peft reads the sizes of soft prompts and prefixes from the top config; in lmadapt's pooled
    classifier they are the backbone's, which the classifier's config gives as its text config."""
    if not peft_config.is_prompt_learning:
        return
    text = model.config.get_text_config()
    peft_config.num_layers = peft_config.num_layers or text.num_hidden_layers
    peft_config.token_dim = peft_config.token_dim or text.hidden_size
    peft_config.num_attention_heads = peft_config.num_attention_heads or text.num_attention_heads


def wrap_with_peft(model, peft_config):
    """The classifier with a fresh peft adapter; only the adapter and the head train."""
    from peft import get_peft_model

    _size_prompts_by_the_text_model(model, peft_config)
    if _needs_past_key_values(peft_config):
        accept_past_key_values(model)
    try:
        wrapped = get_peft_model(model, peft_config)
    except ValueError as error:
        raise LmadaptError(
            f"peft cannot adapt this backbone: {str(error).splitlines()[0][:300]}",
            where="strategy",
            fix="set strategy.target_modules to module names of this backbone (see `print(model)`)",
        ) from None
    # peft casts each adapter's input to the adapter's fp32; under bf16 autocast that is a copy per
    # adapted layer, kept for the backward pass. Autocast casts by itself: measured on SST-2, leaving it
    # to autocast trains 15% faster in less memory, with the same result.
    for module in wrapped.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
    return wrapped


def load_peft_adapter(base_model, folder: Path, trainable: bool = False):
    """A trained peft adapter folder (head included) on its freshly loaded backbone classifier; with
    `trainable`, the adapter and head train on (continual learning)."""
    from peft import PeftConfig, PeftModel

    if _needs_past_key_values(PeftConfig.from_pretrained(folder)):
        accept_past_key_values(base_model)
    return PeftModel.from_pretrained(base_model, folder, is_trainable=trainable)


def adapter_folds(folder: Path) -> bool:
    """Whether `folder` holds a peft adapter that folds into its backbone's weights (`merge_and_unload`: LoRA,
    IA3); prompt learning (prefix, prompt tuning) adds virtual tokens, which no weight can absorb."""
    from peft import PeftConfig

    if not (Path(folder) / "adapter_config.json").is_file():
        return False
    return not PeftConfig.from_pretrained(folder).is_prompt_learning


def peft_base_classifier(context, config):
    """The classifier a peft strategy adapts: the backbone's own (BERT's pooler, a causal LM's last
    token), or, where the strategy config asks for `pooling`, lmadapt's pooled classifier."""
    pooling = getattr(config, "pooling", "native")
    return load_classifier(context) if pooling == "native" else load_pooled_classifier(context, pooling)


def peft_prepare(build_peft_config):
    """A strategy's `prepare` from its `build_peft_config(strategy_config, context)`: the backbone
    classifier wrapped with a fresh peft adapter, ready to train."""

    def prepare(context, config):
        model, tokenizer = peft_base_classifier(context, config)
        return PreparedModel(wrap_with_peft(model, build_peft_config(config, context)), tokenizer)

    return prepare
