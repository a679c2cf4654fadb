"""Which writing systems texts are in (han, latin, kana, ...): read from the letters alone, no tokenizer."""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from collections.abc import Sequence

SAMPLE_TEXTS = 500

# Letters by writing system; "han" covers Chinese characters (also Japanese kanji).
SCRIPT_RANGES = (
    ("han", ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))),
    ("kana", ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))),
    ("hangul", ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF))),
    ("latin", ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF), (0xFF21, 0xFF5A))),
    ("cyrillic", ((0x400, 0x52F),)),
    ("greek", ((0x370, 0x3FF),)),
    ("arabic", ((0x600, 0x6FF), (0x750, 0x77F))),
    ("hebrew", ((0x590, 0x5FF),)),
    ("devanagari", ((0x900, 0x97F),)),
    ("thai", ((0xE00, 0xE7F),)),
)


def script_of(character: str) -> str:
    codepoint = ord(character)
    for script, ranges in SCRIPT_RANGES:
        if any(low <= codepoint <= high for low, high in ranges):
            return script
    return "other"


def script_mix(texts: Sequence[str]) -> dict[str, float]:
    """Share of letters per writing system (han, latin, kana, ...), largest first; digits, spaces and
    punctuation are not counted."""
    counts = Counter(script_of(c) for text in texts for c in text if unicodedata.category(c).startswith("L"))
    total = sum(counts.values())
    return {script: round(count / total, 4) for script, count in counts.most_common()} if total else {}


def sample_texts(texts: Sequence[str], size: int = SAMPLE_TEXTS, seed: int = 0) -> list[str]:
    texts = list(texts)
    return texts if len(texts) <= size else random.Random(seed).sample(texts, size)
