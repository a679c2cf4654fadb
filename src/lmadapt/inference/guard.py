"""The one guard every prediction passes before a model reads its texts: each text a non-empty string, and the
texts in a language the run's backbone can read (the language guard, lmadapt.models.language)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmadapt.config import RunConfig
from lmadapt.errors import LmadaptError
from lmadapt.inference.artifacts import load_saved_tokenizer
from lmadapt.models.language import check_backbone_reads
from lmadapt.strategies import get_strategy


def checked_texts(texts: Sequence[str] | str) -> list[str]:
    """`texts` as a list (one string: a list of one), refused if any is empty or not a string."""
    if isinstance(texts, str):
        texts = [texts]
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise LmadaptError(
            f"text {empty[0] + 1} of {len(texts)} is empty or not a string", fix="pass non-empty strings"
        )
    return list(texts)


class TextGuard:
    """A run's guard: `guard(texts, where)` returns the checked texts or raises an LmadaptError naming `where`;
    `unknown_share(texts, where)` is the language guard alone (None where it is off)."""

    def __init__(self, tokenizer, config: RunConfig):
        self.tokenizer = tokenizer  # None: the language guard is off
        self.model = config.model

    def unknown_share(self, texts: Sequence[str], where: str = "the texts to predict") -> float | None:
        if self.tokenizer is None:
            return None
        model = self.model
        return check_backbone_reads(
            self.tokenizer, texts, model.backbone, model.max_unknown_share, where, predicting=True
        )

    def __call__(self, texts: Sequence[str] | str, where: str = "the texts to predict") -> list[str]:
        texts = checked_texts(texts)
        self.unknown_share(texts, where)
        return texts


def run_text_guard(folder: Path, config: RunConfig) -> TextGuard:
    """The guard of the run in `folder`: the language guard reads the backbone's tokenizer as saved with the model;
    it is off for runs trained with it off and for runs without a pretrained backbone (scratch reads words of its
    own vocabulary)."""
    off = config.model.max_unknown_share >= 1.0 or not get_strategy(config.strategy_name).uses_backbone
    return TextGuard(None if off else load_saved_tokenizer(folder / "model", config), config)
