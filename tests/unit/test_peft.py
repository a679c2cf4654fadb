"""Parameter-efficient strategies, peft style: one table of (strategy, options) through the same checks.

Each case trains on a tiny random-weight BERT and must: lower its training loss; change exactly
the parameters the strategy means to train (and nothing in the frozen backbone); reload from its
run folder to the very logits the trained model gave; keep its artifact small; and, where the
adapter folds into the backbone, merge to a standalone model with the same outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.inference.predictor import Predictor
from tests.conftest import tiny_overrides

TEXTS = ["the film was great", "a dull and boring plot", "really quite superb music", "lifeless 7", "and the"]


def _is_head(name: str) -> bool:
    return "classifier" in name


# strategy, extra options, which parameter names may train
CASES = [
    ("lora", {}, lambda n: "lora_" in n or _is_head(n)),
    ("lora", {"strategy.target_modules": "query,value", "strategy.r": 2}, lambda n: "lora_" in n or _is_head(n)),
    ("adapter", {}, lambda n: ".adapter." in n or "LayerNorm" in n or _is_head(n)),
    (
        "adapter",
        {"strategy.placement": "pfeiffer", "strategy.train_layer_norms": False},
        lambda n: ".adapter." in n or _is_head(n),
    ),
    ("prefix", {"strategy.num_virtual_tokens": 4}, lambda n: "prompt_encoder" in n or _is_head(n)),
    ("prompt_tuning", {"strategy.num_virtual_tokens": 4}, lambda n: "prompt_encoder" in n or _is_head(n)),
    ("ia3", {}, lambda n: "ia3_l" in n or _is_head(n)),
    ("bitfit", {}, lambda n: n.endswith(".bias") or _is_head(n)),
]
IDS = ["lora", "lora-qv-r2", "adapter-houlsby", "adapter-pfeiffer", "prefix", "prompt_tuning", "ia3", "bitfit"]


class Snapshot(TrainerCallback):
    """Keeps the weights before training and the trained model itself (after the best checkpoint is restored)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: p.detach().clone() for name, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


def train_case(tuned_tiny_bert, files, out, strategy, options, name):
    from lmadapt.training.engine import train

    overrides = tiny_overrides(
        tuned_tiny_bert,
        files,
        out,
        name,
        **{"strategy.name": strategy, "train.epochs": 3, "train.learning_rate": 1e-2, **options},
    )
    snapshot = Snapshot()
    run = train(lmadapt.load_config(None, overrides), callbacks=[snapshot])
    return run, snapshot


@pytest.mark.parametrize(("strategy", "options", "may_train"), CASES, ids=IDS)
def test_strategy_trains_saves_small_and_reloads_exactly(
    strategy, options, may_train, tuned_tiny_bert, sentiment_files, tmp_path
):
    run, snapshot = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", strategy, options, "case")

    log = [json.loads(line) for line in (run.path / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert losses[-1] < losses[0], losses

    after = dict(snapshot.model.named_parameters())
    changed = {n for n, before in snapshot.before.items() if not torch.equal(before, after[n].detach())}
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert changed, "training changed nothing"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert all(may_train(n) for n in trainable), sorted(n for n in trainable if not may_train(n))[:5]
    assert any(not _is_head(n) for n in changed), "only the head trained"
    parameters = run.metrics["parameters"]
    assert parameters["trainable"] == sum(after[n].numel() for n in trainable if ".original_module." not in n)
    assert 0 < parameters["trainable_pct"] < 50

    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    trained = Predictor(snapshot.model, tokenizer, run.labels, run.max_length).logits(TEXTS)
    reloaded = lmadapt.load(run.path).predictor.logits(TEXTS)
    np.testing.assert_allclose(reloaded, trained, rtol=0, atol=1e-6)

    # Only the trained tensors are stored (fp32, plus the safetensors header), not the backbone.
    weights = [p for p in (run.path / "model").iterdir() if p.suffix == ".safetensors"]
    assert len(weights) == 1 and weights[0].name in ("adapter_model.safetensors", "delta.safetensors")
    assert weights[0].stat().st_size <= 4 * parameters["trainable"] + 16_384
    assert run.metrics["artifact_mb"] > 0


# The same strategies on a causal LM through its sequence-classification head (Llama: the `score`
# layer reads the last token, so inputs are padded on the left).
LLAMA_CASES = [
    ("lora", lambda n: "lora_" in n or "score" in n),
    ("adapter", lambda n: ".adapter." in n or "norm" in n or "score" in n),
    ("prefix", lambda n: "prompt_encoder" in n or "score" in n),
    ("prompt_tuning", lambda n: "prompt_encoder" in n or "score" in n),
    ("ia3", lambda n: "ia3_l" in n or "classifier" in n),  # a head on the mean of the states (its default pooling)
    ("bitfit", lambda n: n.endswith(".bias") or "score" in n),
]


@pytest.mark.parametrize(("strategy", "may_train"), LLAMA_CASES, ids=[c[0] for c in LLAMA_CASES])
def test_strategy_adapts_a_causal_lm_classifier(strategy, may_train, tiny_llama, sentiment_files, tmp_path):
    options = {"strategy.num_virtual_tokens": 4} if strategy in ("prefix", "prompt_tuning") else {}
    run, snapshot = train_case(
        tiny_llama, sentiment_files, tmp_path / "runs", strategy, {"train.epochs": 1, **options}, "llama"
    )
    tokenizer = run.load_tokenizer()
    assert tokenizer.padding_side == "left"
    after = dict(snapshot.model.named_parameters())
    changed = {n for n, before in snapshot.before.items() if not torch.equal(before, after[n].detach())}
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert changed and changed <= trainable and all(may_train(n) for n in trainable)
    assert any("score" not in n for n in changed), "only the head trained"
    trained = Predictor(snapshot.model, tokenizer, run.labels, run.max_length).logits(TEXTS)
    np.testing.assert_allclose(lmadapt.load(run.path).predictor.logits(TEXTS), trained, rtol=0, atol=1e-6)
    # A text scores the same alone as in a padded batch: the classifier reads the last real token.
    # Not so for prefix and prompt tuning: left padding moves the text relative to the virtual tokens' positions.
    if strategy not in ("prefix", "prompt_tuning"):
        alone = Predictor(snapshot.model, tokenizer, run.labels, run.max_length).logits(TEXTS[:1])
        np.testing.assert_allclose(alone, trained[:1], atol=1e-4)


@pytest.mark.parametrize("strategy", ["prefix", "prompt_tuning", "lora", "adapter", "ia3"])
def test_strategy_adapts_an_encoder_saved_without_its_pooler(strategy, poolerless_bert, sentiment_files, tmp_path):
    """Such an encoder (e5-multilingual is one) is read by lmadapt's mean-pooled classifier: prompt tuning
    hands it embeddings, prefix tuning past keys and values with a mask longer than the text."""
    from lmadapt.models.pooled import PooledForSequenceClassification

    options = {"strategy.num_virtual_tokens": 4} if strategy in ("prefix", "prompt_tuning") else {}
    run, snapshot = train_case(poolerless_bert, sentiment_files, tmp_path / "runs", strategy, options, "bare")
    base = snapshot.model.get_base_model() if strategy != "adapter" else snapshot.model  # adapter: lmadapt's own
    assert isinstance(base, PooledForSequenceClassification)
    after = dict(snapshot.model.named_parameters())
    changed = {n for n, before in snapshot.before.items() if not torch.equal(before, after[n].detach())}
    assert any(not _is_head(n) for n in changed), "only the head trained"
    assert run.metrics["test"]["accuracy"] >= 0.8, run.metrics["test"]
    trained = Predictor(snapshot.model, run.load_tokenizer(), run.labels, run.max_length).logits(TEXTS)
    np.testing.assert_allclose(lmadapt.load(run.path).predictor.logits(TEXTS), trained, rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["lora", "ia3", "prefix", "prompt_tuning"])
def test_peft_adapters_load_with_plain_peft(strategy, tuned_tiny_bert, sentiment_files, tmp_path):
    from peft import PeftModel

    from lmadapt.models.peft_models import accept_past_key_values, adapter_folds

    # IA3 on the model's own head: its default head reads mean-pooled states through lmadapt's class.
    options = {"train.epochs": 1, **({"strategy.pooling": "native"} if strategy == "ia3" else {})}
    run, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", strategy, options, f"plain-{strategy}")
    base = AutoModelForSequenceClassification.from_pretrained(tuned_tiny_bert, num_labels=2)
    if strategy == "prefix":
        accept_past_key_values(base)  # peft 0.21 + transformers 5: see lmadapt.models.peft_models
    model = PeftModel.from_pretrained(base, run.path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    with torch.no_grad():
        plain = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    np.testing.assert_allclose(plain, lmadapt.load(run.path).predictor.scores(TEXTS), atol=1e-5)
    # merge and export fold an adapter by what its saved peft config is: weights (LoRA, IA3), not virtual tokens
    assert adapter_folds(run.path / "model") == (strategy in ("lora", "ia3"))


@pytest.mark.parametrize("strategy", ["lora", "ia3"])
def test_merge_writes_a_standalone_model_with_the_same_outputs(strategy, tuned_tiny_bert, sentiment_files, tmp_path):
    run, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", strategy, {"train.epochs": 1}, "to-merge")
    report = lmadapt.merge(run.path, tmp_path / "merged")
    assert report["max_abs_logit_difference"] <= 1e-4 and report["texts_checked"] == 60  # the run's test file
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        plain = merged(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(plain, lmadapt.load(run.path).predictor.logits(TEXTS), atol=1e-4)

    with pytest.raises(LmadaptError, match="logits differ by up to"):
        lmadapt.merge(run.path, tmp_path / "strict", tolerance=-1.0)
    assert not (tmp_path / "strict").exists()
    with pytest.raises(LmadaptError, match="already exists"):
        lmadapt.merge(run.path, tmp_path / "merged")


def test_merge_refuses_strategies_without_a_foldable_adapter(tuned_tiny_bert, sentiment_files, tmp_path):
    run, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "bitfit", {"train.epochs": 1}, "bitfit")
    with pytest.raises(LmadaptError, match="(?s)'bitfit' run has no adapter.*lora or ia3"):
        lmadapt.merge(run.path, tmp_path / "merged")


def test_runs_on_one_backbone_share_its_weights_in_memory(tuned_tiny_bert, sentiment_files, tmp_path):
    first, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "head", {"train.epochs": 1}, "a")
    second, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "bitfit", {"train.epochs": 1}, "b")
    third, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "adapter", {"train.epochs": 1}, "c")
    models = [lmadapt.load(run.path).predictor.model for run in (first, second, third)]

    def storage(model, suffix):
        found = [p for n, p in model.named_parameters() if n.endswith(suffix)]
        assert len(found) == 1, suffix
        return found[0].data_ptr()

    embedding = "word_embeddings.weight"
    assert storage(models[0], embedding) == storage(models[1], embedding) == storage(models[2], embedding)
    query = "layer.0.attention.self.query.weight"
    assert storage(models[0], query) == storage(models[1], query) == storage(models[2], query)
    fourth, _ = train_case(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "lora", {"train.epochs": 1}, "d")
    lora = lmadapt.load(fourth.path).predictor.model
    assert storage(lora, "layer.0.attention.self.query.base_layer.weight") == storage(models[0], query)
    # Each run still answers with its own adapter and head, exactly as when loaded alone.
    for run, model in zip((first, second, third, fourth), [*models, lora]):
        alone = run.load_model(share_backbone=False)
        tokenizer = run.load_tokenizer()
        np.testing.assert_allclose(
            Predictor(model, tokenizer, run.labels, run.max_length).logits(TEXTS),
            Predictor(alone, tokenizer, run.labels, run.max_length).logits(TEXTS),
            atol=1e-6,
        )
    # BitFit's own biases are its own, not the shared backbone's.
    bias = "layer.0.attention.self.query.bias"
    assert storage(models[1], bias) != storage(models[2], bias)
    # On bf16 they share one bf16 copy, and each still answers as its own run cast alone.
    halves = [lmadapt.load(run.path).inference("torch-bf16").model for run in (first, second, fourth)]
    assert (
        storage(halves[0], query)
        == storage(halves[1], query)
        == storage(halves[2], "layer.0.attention.self.query.base_layer.weight")
    )
    assert storage(halves[0], query) != storage(models[0], query)
    assert storage(halves[1], bias) != storage(halves[0], bias)
    for run, half in zip((first, second, fourth), halves):
        assert all(p.dtype == torch.bfloat16 for p in half.parameters())
        alone = run.load_model(share_backbone=False).to(torch.bfloat16)
        tokenizer = run.load_tokenizer()
        np.testing.assert_allclose(
            Predictor(half, tokenizer, run.labels, run.max_length).logits(TEXTS),
            Predictor(alone, tokenizer, run.labels, run.max_length).logits(TEXTS),
            atol=1e-6,
        )


def test_bad_peft_options_are_clear_errors():
    cases = [
        (["strategy.name=lora", "strategy.r=0"], "strategy.r must be positive"),
        (["strategy.name=lora", "strategy.bias=some"], "'some' is not a valid value for strategy.bias"),
        (["strategy.name=adapter", "strategy.placement=middle"], "did you mean 'pfeiffer'|valid: houlsby, pfeiffer"),
        (["strategy.name=prompt_tuning", "strategy.init=text"], "init=text needs init_text"),
        (["strategy.name=lora", "strategy.rank=4"], "unknown config key 'strategy.rank'"),
    ]
    for overrides, message in cases:
        with pytest.raises(LmadaptError, match=message):
            lmadapt.load_config(None, overrides)


def test_adapter_targets_unknown_architecture_ask_for_module_names():
    from lmadapt.models.adapters import target_patterns

    with pytest.raises(LmadaptError, match="(?s)no default adapter placement for 'gpt_neox'.*strategy.target_modules"):
        target_patterns("gpt_neox", "houlsby", None)
    assert target_patterns("gpt_neox", "houlsby", ["dense$"]) == ["dense$"]


def test_head_learning_rate_puts_the_new_head_in_its_own_group(tuned_tiny_bert, sentiment_files, tmp_path):
    from lmadapt.training.engine import train

    class Groups(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            names = {id(p): n for n, p in model.named_parameters()}
            # The scheduler has already scaled "lr" for warm-up; "initial_lr" is each group's peak.
            self.groups = [(g["initial_lr"], {names[id(p)] for p in g["params"]}) for g in optimizer.param_groups]

    groups = Groups()
    overrides = tiny_overrides(
        tuned_tiny_bert,
        sentiment_files,
        tmp_path / "runs",
        "head-lr",
        **{"strategy.name": "lora", "train.epochs": 1, "train.learning_rate": 1e-3, "train.head_learning_rate": 5e-2},
    )
    train(lmadapt.load_config(None, overrides), callbacks=[groups])
    head = {n for lr, names in groups.groups if lr == 5e-2 for n in names}
    rest = {n for lr, names in groups.groups if lr == 1e-3 for n in names}
    assert head and all(".modules_to_save." in n for n in head)
    assert rest and all("lora_" in n for n in rest)
    assert sum(len(names) for _, names in groups.groups) == len(head | rest)


def test_training_errors_of_peft_strategies_say_what_to_change(tuned_tiny_bert, tiny_llama, sentiment_files, tmp_path):
    with pytest.raises(LmadaptError, match="(?s)peft cannot adapt this backbone.*strategy.target_modules"):
        train_case(
            tuned_tiny_bert, sentiment_files, tmp_path / "runs", "lora", {"strategy.target_modules": "nowhere"}, "x"
        )
    with pytest.raises(LmadaptError, match="(?s)no bias terms.*add_missing_biases=true"):
        train_case(
            tiny_llama, sentiment_files, tmp_path / "runs", "bitfit", {"strategy.add_missing_biases": False}, "y"
        )


def test_a_run_whose_backbone_is_gone_says_which_backbone_it_needs(tuned_tiny_bert, sentiment_files, tmp_path):
    import shutil

    backbone = tmp_path / "backbone"
    shutil.copytree(tuned_tiny_bert, backbone)
    run, _ = train_case(backbone, sentiment_files, tmp_path / "runs", "bitfit", {"train.epochs": 1}, "orphan")
    shutil.rmtree(backbone)
    with pytest.raises(LmadaptError, match="(?s)adapts the backbone '.*backbone', which is not available here"):
        lmadapt.load(run.path).predict(["the film was great"])
