"""Sequence-classification models on any HF backbone, encoder or causal LM."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from lmadapt.config import ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import StrategyContext
from lmadapt.models.pooled import PooledClassifierConfig, PooledForSequenceClassification
from lmadapt.models.shared import share_backbone


@contextmanager
def explained_load_errors(path: Path, model: ModelConfig):
    """transformers' loading errors (no tokenizer, unknown architecture, remote code) as our error."""
    try:
        yield
    except (OSError, ValueError, KeyError) as error:
        raise LmadaptError(
            f"cannot load the backbone from {path} ({type(error).__name__}: {str(error).splitlines()[0][:300]})",
            where=f"model.backbone={model.backbone}",
            fix="point it at a complete HF model folder (config, weights, tokenizer); set "
            "model.trust_remote_code=true only for a model whose code you trust",
        ) from None


def load_tokenizer(path: Path, model: ModelConfig):
    from transformers import AutoTokenizer

    with explained_load_errors(path, model):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padding with EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if is_causal_lm(path):
        # The last position then holds the last real token, which decoder classifiers read; this holds
        # even when prompt tuning feeds embeddings, where the model cannot find the padding itself.
        tokenizer.padding_side = "left"
        tokenizer.init_kwargs["padding_side"] = "left"  # so that the run's saved tokenizer keeps it
    return tokenizer


def is_causal_lm(path: Path) -> bool:
    import json

    config = path / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)


def load_classifier(context: StrategyContext):
    """The context's backbone with a fresh classification head for its labels, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    path, model, labels = context.backbone_path, context.model, context.labels
    tokenizer = load_tokenizer(path, model)
    with explained_load_errors(path, model):
        classifier, loading = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=labels.id2label,
            label2id=labels.label2id,
            problem_type=labels.problem_type,
            trust_remote_code=model.trust_remote_code,
            output_loading_info=True,
        )
    if any(".pooler." in name or name.startswith("pooler.") for name in loading["missing_keys"]):
        # An encoder saved without its pooler (e5-multilingual): BERT's classifier would read it through a
        # freshly initialised dense layer; mean pooling reads what such sentence encoders are trained to give.
        return load_pooled_classifier(context, "mean")
    if classifier.config.pad_token_id is None:
        classifier.config.pad_token_id = tokenizer.pad_token_id
    return _maybe_shared(classifier, context), tokenizer


def _maybe_shared(classifier, context: StrategyContext):
    if context.share_backbone:
        share_backbone(classifier, str(Path(context.backbone_path).resolve()))
    return classifier


def load_pooled_classifier(context: StrategyContext, pooling: str):
    """The context's backbone read by `pooling` (mean, cls or last) with a linear head."""
    from transformers import AutoModel

    path, model, labels = context.backbone_path, context.model, context.labels
    tokenizer = load_tokenizer(path, model)
    with explained_load_errors(path, model):
        backbone = AutoModel.from_pretrained(path, trust_remote_code=model.trust_remote_code)
    config = PooledClassifierConfig(
        backbone_config=backbone.config,
        pooling=pooling,
        num_labels=len(labels),
        id2label=labels.id2label,
        label2id=labels.label2id,
        problem_type=labels.problem_type,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _maybe_shared(PooledForSequenceClassification(config, backbone=backbone), context), tokenizer


def new_head_parameter_names(model) -> set[str]:
    """The freshly initialised head of a classifier, also inside a peft model (its modules_to_save)."""
    names = [name for name, _ in model.named_parameters()]
    saved = {name for name in names if ".modules_to_save." in name}
    return saved or set(head_parameter_names(model))


def classification_head(model, num_labels: int):
    """The layer that gives a classifier its logits: the last linear layer with one output per label (inside a peft
    model, the copy it trains, not the original it keeps aside). Its input is the classifier's view of a text."""
    from torch import nn

    heads = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_labels and ".original_module" not in name
    ]
    if not heads:
        raise LmadaptError(
            "this run's model has no linear classification head (it scores labels another way)",
            fix="embed with an encoder run (full, head, lora, adapter, ...) or a backbone",
        )
    return heads[-1]


def head_parameter_names(model) -> list[str]:
    """Parameters outside the pretrained backbone: the classification head."""
    prefix = model.base_model_prefix
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")]


def train_only(model, trainable: set[str]) -> None:
    """Freeze every parameter but the named ones."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)


def grow_head(model, labels) -> None:
    """Widen a classifier's output layer to `labels` (a LabelMap whose first labels are the model's own):
    the old labels keep their ids and weights, new ones start as a fresh head would."""
    import torch
    from torch import nn

    config = model.config
    old, new = config.num_labels, len(labels)
    if new == old:
        return
    modules = {name.rsplit(".", 1)[0] for name in new_head_parameter_names(model) if "." in name}
    # peft keeps the head's untrained original beside the trained copy; it must fit the labels too.
    modules |= {
        name.split(".modules_to_save.")[0] + ".original_module" for name in modules if ".modules_to_save." in name
    }
    grown = 0
    for name in sorted(modules):
        owner = model.get_submodule(name)
        if not isinstance(owner, nn.Linear) or owner.out_features != old:
            continue
        wider = nn.Linear(owner.in_features, new, bias=owner.bias is not None)
        wider.to(device=owner.weight.device, dtype=owner.weight.dtype)
        with torch.no_grad():
            wider.weight.normal_(0.0, getattr(config, "initializer_range", 0.02))
            wider.weight[:old] = owner.weight
            if owner.bias is not None:
                wider.bias.zero_()
                wider.bias[:old] = owner.bias
        for mine, theirs in zip(wider.parameters(), owner.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, wider)
        grown += 1
    if not grown:
        raise LmadaptError(
            f"cannot find the {old}-way output layer of this {type(model).__name__} to add labels to",
            fix="use a strategy whose head is a linear layer (full, lora, head)",
        )
    config.id2label, config.label2id = labels.id2label, labels.label2id
    config.num_labels = new
    for module in model.modules():
        if "num_labels" in vars(module):
            module.num_labels = new
