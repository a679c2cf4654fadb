"""Every parameter-efficient strategy on the packaged MiniLM (and LoRA on SmolLM2), on real SST-2 rows."""

import pytest

from tests.integration.test_packaged_models import train

# strategy -> (options, lowest acceptable test accuracy on 300 SST-2 sentences; chance is 0.5).
# Measured here at the strategies' default learning rates: lora 0.83, adapter 0.83, ia3 0.81,
# bitfit 0.75, prefix 0.75. prompt_tuning is not here: on these 600 training rows it is on a knife
# edge (0.60 on one machine; 0.507 on another at the same commit, 0.61 in bf16 and 0.51 in fp32 at
# lr 0.1), so it could not tell a broken strategy from bad luck. Its real-data figures are in the
# PEFT benchmark (SST-2 79.36 on 20k rows, Banking77 89.94); tests/unit/test_peft.py covers its mechanics.
CASES = {
    "lora": ({"train.epochs": 3}, 0.78),
    "adapter": ({"train.epochs": 3}, 0.78),
    "ia3": ({"train.epochs": 4}, 0.76),
    "bitfit": ({"train.epochs": 3}, 0.7),
    "prefix": ({"train.epochs": 4}, 0.7),
}


@pytest.mark.parametrize("strategy", list(CASES))
def test_strategy_on_minilm_beats_chance_clearly(strategy, sst2_sample, tmp_path):
    options, floor = CASES[strategy]
    run = train(sst2_sample, tmp_path, strategy, **{"strategy.name": strategy, **options})
    assert run.metrics["test"]["accuracy"] >= floor, run.metrics["test"]
    assert run.metrics["parameters"]["trainable_pct"] < 5
    assert run.metrics["artifact_mb"] < 0.05 * 87  # the full MiniLM run folder's model/ is 87 MB


def test_lora_classifies_with_the_causal_smollm2(sst2_sample, tmp_path):
    run = train(
        sst2_sample,
        tmp_path,
        "smol-lora",
        **{
            "model.backbone": "smollm2",
            "strategy.name": "lora",
            "train.epochs": 2,
            "data.max_train_rows": 400,
        },
    )
    assert run.metrics["test"]["accuracy"] >= 0.6, run.metrics["test"]
    assert run.metrics["parameters"]["trainable_pct"] < 2
