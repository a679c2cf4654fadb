"""lmadapt.adapt_encoder: a sentence encoder fine-tuned on (query, positive) pairs with in-batch negatives, written
as an encoder folder that lmadapt.encoder loads."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import lmadapt
from lmadapt.errors import LmadaptError

from ..conftest import FILLER, NEGATIVE, POSITIVE

TINY = {"epochs": 6, "batch_size": 16, "learning_rate": 5e-3, "max_length": 32}


def topic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Query i names POSITIVE[t]; its positive names NEGATIVE[t]: a pairing of words only the pairs teach."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        topic = i % len(POSITIVE)
        query = " ".join([POSITIVE[topic], *rng.sample(FILLER, 3)])
        positive = " ".join([NEGATIVE[topic], *rng.sample(FILLER, 3)])
        pairs.append((query, positive))
    return pairs


def pairing_margin(embed, seed: int) -> float:
    """Mean cosine of matching (query, positive) texts minus that of mismatched ones, on fresh texts."""
    pairs = topic_pairs(64, seed)
    queries = embed([q for q, _ in pairs])
    positives = embed([p for _, p in pairs])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    positives /= np.linalg.norm(positives, axis=1, keepdims=True)
    similarity = queries @ positives.T
    topics = np.arange(len(pairs)) % len(POSITIVE)
    same = topics[:, None] == topics[None, :]
    return float(similarity[same].mean() - similarity[~same].mean())


def test_adapting_on_pairs_pulls_the_pairs_together_and_round_trips(tiny_bert, tmp_path):
    before = pairing_margin(lmadapt.encoder(str(tiny_bert)), seed=9)
    folder = lmadapt.adapt_encoder(topic_pairs(160, seed=1), tmp_path / "enc", backbone=str(tiny_bert), **TINY)

    assert folder == tmp_path / "enc"
    assert {"manifest.json", "encoder.json", "modules.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    record = json.loads((folder / "encoder.json").read_text())
    assert record["training"]["pairs"] == 160 and record["max_length"] == 32
    assert record["training"]["last_loss"] < record["training"]["first_loss"]

    embed = lmadapt.encoder(folder)
    after = pairing_margin(embed, seed=9)
    print(f"pairing margin before {before:.3f}, after {after:.3f}")
    assert after > before + 0.3, (before, after)  # matching texts now clearly nearer than the others
    assert embed(["great film"]).shape == (1, 32)
    assert embed.model.max_seq_length == 32 and lmadapt.encoder(folder, max_length=8).model.max_seq_length == 8

    # The same pairs, settings and seed give the same encoder.
    again = lmadapt.adapt_encoder(topic_pairs(160, seed=1), tmp_path / "again", backbone=str(tiny_bert), **TINY)
    texts = ["great the film", "awful plot music"]
    np.testing.assert_allclose(lmadapt.encoder(again)(texts), embed(texts), atol=1e-5)


def test_an_encoder_folder_adapts_further_and_a_changed_file_is_refused(tiny_bert, tmp_path):
    first = lmadapt.adapt_encoder(topic_pairs(32, 1), tmp_path / "one", backbone=str(tiny_bert), **TINY)
    second = lmadapt.adapt_encoder(topic_pairs(32, 2), tmp_path / "two", backbone=str(first), **TINY)
    assert lmadapt.encoder(second)(["great"]).shape == (1, 32)

    (first / "encoder.json").write_text(
        (first / "encoder.json").read_text().replace('"max_length": 32', '"max_length": 31')
    )
    with pytest.raises(LmadaptError, match="encoder.json.*hash mismatch"):
        lmadapt.encoder(first)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ("great film", "pairs must be a list of \\(query, positive\\) texts"),
        ([("great film", "awful plot"), ("dull story",)], "pair 2 is not a \\(query, positive\\) pair"),
        ([("great film", "awful plot"), ("dull story", "  ")], "pair 2: its positive is empty"),
        ([("great film", "awful plot")], "1 pair\\(s\\): in-batch negatives need at least 2"),
    ],
)
def test_bad_pairs_are_refused_with_what_is_wrong(tiny_bert, tmp_path, pairs, message):
    with pytest.raises(LmadaptError, match=message):
        lmadapt.adapt_encoder(pairs, tmp_path / "enc", backbone=str(tiny_bert), **TINY)
    assert not (tmp_path / "enc").exists()


def test_texts_the_backbone_cannot_read_are_refused_before_training_and_after(tiny_bert, tmp_path):
    chinese = [("这部电影非常精彩", "我很喜欢这个故事"), ("演员的表演很好", "音乐也很动人")] * 8
    with pytest.raises(LmadaptError, match="cannot read these texts: 100% of their tokens are unknown") as error:
        lmadapt.adapt_encoder(chinese, tmp_path / "enc", backbone=str(tiny_bert), **TINY)
    assert "backbone=e5-multilingual" in str(error.value)
    assert list(tmp_path.iterdir()) == []

    folder = lmadapt.adapt_encoder(topic_pairs(32, 1), tmp_path / "enc", backbone=str(tiny_bert), **TINY)
    with pytest.raises(LmadaptError, match="cannot read these texts"):
        lmadapt.encoder(folder)(["这部电影非常精彩，我很喜欢这个故事"])
    with pytest.raises(LmadaptError, match="text 2 of 2 is empty"):
        lmadapt.encoder(folder)(["great", ""])


def test_bad_settings_and_an_existing_output_are_refused(tiny_bert, tmp_path):
    pairs = topic_pairs(8, 1)
    with pytest.raises(LmadaptError, match="batch_size must be a whole number of 2 or more, got 1"):
        lmadapt.adapt_encoder(pairs, tmp_path / "enc", backbone=str(tiny_bert), batch_size=1)
    with pytest.raises(LmadaptError, match="epochs must be a number above 0"):
        lmadapt.adapt_encoder(pairs, tmp_path / "enc", backbone=str(tiny_bert), epochs=0)
    with pytest.raises(LmadaptError, match="model 'no-such-model' not found"):
        lmadapt.adapt_encoder(pairs, tmp_path / "enc", backbone="no-such-model")
    (tmp_path / "enc").mkdir()
    with pytest.raises(LmadaptError, match="the output folder already exists"):
        lmadapt.adapt_encoder(pairs, tmp_path / "enc", backbone=str(tiny_bert))
