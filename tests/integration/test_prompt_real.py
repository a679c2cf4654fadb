"""Zero- and few-shot strategies with the packaged MiniLM and SmolLM2 on real SST-2 rows: above chance."""

import pytest

from tests.integration.test_packaged_models import train

PROMPT = {
    "strategy.template": '"Review: {text}\\nSentiment: {label}"',
    "strategy.verbalizer": "{negative: [negative], positive: [positive]}",
}
DESCRIPTIONS = "{negative: ['a negative review', 'a bad, boring movie'], positive: ['a positive review', 'a good, enjoyable movie']}"

# strategy -> (options, lowest acceptable test accuracy on 300 SST-2 sentences; chance is 0.5).
# SetFit is tested on real rows with e5-multilingual (test_multilingual.py): here, with MiniLM on 16 shots, it took
# over 6 minutes of CI on a CPU without AVX-512 (0.65 at seed 42); its SST-2 and Banking77 figures are the prompt
# learning benchmark's (bench/results/prompt_learning.json).
CASES = {
    "zeroshot_embed": ({"strategy.descriptions": DESCRIPTIONS}, 0.65),
    "zeroshot_lm": (PROMPT, 0.62),
    "incontext": ({**PROMPT, "data.shots_per_class": 4}, 0.6),
    "prompt_finetune": (
        {
            **PROMPT,
            "data.shots_per_class": 8,
            "train.epochs": 6,
            "train.batch_size": 8,
            "train.select_best": False,
            "train.early_stopping_patience": "",
        },
        0.6,
    ),
}


@pytest.mark.parametrize("strategy", list(CASES))
def test_prompt_strategy_on_real_rows_beats_chance(strategy, sst2_sample, tmp_path):
    options, floor = CASES[strategy]
    run = train(sst2_sample, tmp_path, strategy, **{"strategy.name": strategy, **options})
    assert run.metrics["test"]["accuracy"] >= floor, run.metrics["test"]
