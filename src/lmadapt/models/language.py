"""Can a backbone read these texts? Their script mix, and the share of tokens its tokenizer does not know.

An English WordPiece vocabulary maps most Chinese characters to [UNK]: a model trained on such input
learns from a handful of known tokens and fails without a word. The guard measures the unknown share
on a sample before training, and on the texts sent to a trained run before predicting, and stops with a
clear error above a limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lmadapt.data.scripts import sample_texts, script_mix
from lmadapt.errors import LmadaptError
from lmadapt.models.classifier import load_tokenizer
from lmadapt.models.packaged import PACKAGED_MODELS

log = logging.getLogger(__name__)

# Fewer tokens say little about a language: "great 👍" is half unknown to MiniLM.
MIN_TOKENS_TO_JUDGE = 16

# Which packaged backbone to suggest for texts mostly in a script the backbone cannot read.
MULTILINGUAL_BACKBONE = "e5-multilingual"


def unknown_token_counts(tokenizer, texts: Sequence[str]) -> tuple[int, int]:
    """How many of the texts' tokens (specials aside) the tokenizer maps to its unknown token, and of how
    many; none for byte-level tokenizers, which have no unknown token."""
    unknown = tokenizer.unk_token_id
    if unknown is None or not texts:
        return 0, 0
    # Truncated at the model's own limit: the share is of what the model would read.
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True)["input_ids"]
    ids = [i for row in encoded for i in row]
    return sum(i == unknown for i in ids), len(ids)


def unknown_token_share(tokenizer, texts: Sequence[str]) -> float:
    """Share of the texts' tokens that the tokenizer does not know (0 for none)."""
    unknown, total = unknown_token_counts(tokenizer, texts)
    return unknown / total if total else 0.0


def check_backbone_reads(
    tokenizer,
    texts: Sequence[str],
    backbone: str,
    limit: float,
    where: str,
    predicting: bool = False,
    setting: str = "model.backbone",
) -> float:
    """The unknown-token share on a sample of `texts`; an error naming it when it exceeds `limit` (judged
    on MIN_TOKENS_TO_JUDGE tokens or more). `predicting`: the texts go to a trained run, not to training;
    `setting`: the config key that chose this model, for the suggestion."""
    sample = sample_texts(texts)
    unknown, total = unknown_token_counts(tokenizer, sample)
    share = unknown / total if total else 0.0
    if share > limit and total >= MIN_TOKENS_TO_JUDGE:
        scripts = script_mix(sample)
        mix = ", ".join(f"{name} {100 * part:.0f}%" for name, part in list(scripts.items())[:3])
        suggestion = (
            MULTILINGUAL_BACKBONE if backbone != MULTILINGUAL_BACKBONE else "a backbone trained on this language"
        )
        if predicting:
            outcome = "its predictions for them would mean nothing"
            fix = (
                f"predict with a run trained on a backbone that reads the language (train one with --set "
                f"{setting}={suggestion}); or train with a higher model.max_unknown_share to predict anyway"
            )
        else:
            outcome = "it would learn next to nothing"
            fix = (
                f"use a backbone that reads the language, e.g. --set {setting}={suggestion} (multilingual, "
                "covers Chinese); or raise model.max_unknown_share to go on anyway"
            )
        raise LmadaptError(
            f"backbone '{backbone}' cannot read these texts: {100 * share:.0f}% of their tokens are unknown to its "
            f"tokenizer (limit {100 * limit:.0f}%; letters by script: {mix or 'none'}), so {outcome}",
            where=where,
            fix=fix,
        )
    return share


def require_readable(
    backbone_path, model, texts: Sequence[str], where: str, setting: str = "model.backbone"
) -> float | None:
    """The language guard for a backbone folder and its ModelConfig (None when switched off)."""
    if model.max_unknown_share >= 1.0:
        return None
    name = model.backbone or str(backbone_path)
    tokenizer = load_tokenizer(backbone_path, model)
    share = check_backbone_reads(tokenizer, texts, name, model.max_unknown_share, where, setting=setting)
    warn_if_pretrained_on_other_scripts(name, texts)
    return share


def warn_if_pretrained_on_other_scripts(backbone: str, texts: Sequence[str]) -> str | None:
    """A warning (logged and returned) when most of the texts' letters are of a writing system the packaged
    `backbone` was not pretrained on. Its tokenizer may still know every token (SmolLM2's byte-level one
    does, so the unknown share is 0), yet the model has read next to none of such text: zero-shot SmolLM2
    on Chinese reviews scores at chance."""
    packaged = PACKAGED_MODELS.get(backbone)
    mix = script_mix(sample_texts(texts))
    main, share = next(iter(mix.items()), ("other", 0.0))
    if packaged is None or not packaged.scripts or main in (*packaged.scripts, "other") or share < 0.5:
        return None
    message = (
        f"backbone '{backbone}' was pretrained on {packaged.languages} text, and {100 * share:.0f}% of these texts' "
        f"letters are {main}: expect little from it; a backbone pretrained on their language reads them "
        f"(for encoder strategies: model.backbone={MULTILINGUAL_BACKBONE})"
    )
    log.warning(message)
    return message
