"""The language guard: a backbone whose tokenizer cannot read the texts stops training with a clear error."""

import random

import pandas as pd
import pytest
from transformers import AutoTokenizer

import lmadapt
from lmadapt.data.scripts import script_mix
from lmadapt.errors import LmadaptError
from lmadapt.models.language import unknown_token_share, warn_if_pretrained_on_other_scripts
from tests.conftest import sentiment_rows, tiny_overrides, write_recipe, write_three_splits
from tests.unit.test_cli import run_cli

CHINESE = ["这部电影很好看", "质量太差了，不推荐", "物流很快，包装完好", "客服态度非常差"]


def chinese_rows(n: int) -> pd.DataFrame:
    """The synthetic sentiment rows with a Chinese review in front: most tokens are Chinese characters."""
    frame = sentiment_rows(n)
    frame["text"] = [CHINESE[i % len(CHINESE)] * 3 + " " + text for i, text in enumerate(frame["text"])]
    return frame


def test_script_mix_counts_letters_by_writing_system():
    mix = script_mix(["质量不错 but slow", "１２３ ！"])
    assert mix == {"latin": round(7 / 11, 4), "han": round(4 / 11, 4)}
    assert script_mix(["123 !!"]) == {}


def test_unknown_share_of_an_english_word_piece_vocabulary(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert unknown_token_share(tokenizer, ["the film was great", "dull plot"]) == 0.0
    assert unknown_token_share(tokenizer, CHINESE) == 1.0
    assert unknown_token_share(tokenizer, ["great 好"]) == 0.5


def test_training_stops_on_texts_the_backbone_cannot_read(tiny_bert, tmp_path):
    files = write_three_splits(tmp_path, chinese_rows(360))
    config = lmadapt.load_config(None, tiny_overrides(tiny_bert, files, tmp_path / "runs"))
    with pytest.raises(LmadaptError) as error:
        lmadapt.train(config)
    message = error.value.render()
    assert "of their tokens are unknown to its tokenizer" in message and "han" in message
    assert "model.backbone=e5-multilingual" in message
    assert not (tmp_path / "runs").exists()  # nothing written
    # Turned off, the same run trains.
    overrides = tiny_overrides(tiny_bert, files, tmp_path / "runs", **{"model.max_unknown_share": 1, "train.epochs": 1})
    assert lmadapt.train(lmadapt.load_config(None, overrides)).metrics["test"]["accuracy"] >= 0.0


def test_the_guard_in_the_cli_and_in_data_inspect(tiny_bert, tmp_path, monkeypatch, capsys):
    files = write_three_splits(tmp_path, chinese_rows(360))
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_overrides(tiny_bert, files, tmp_path / "runs"))
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe)
    assert code == 2 and "cannot read these texts" in err and "Traceback" not in err
    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", files["train"], "--backbone", tiny_bert)
    flat = " ".join(out.split())
    assert code == 0 and "letters by script: " in flat and "han " in flat
    assert f"unknown tokens for {tiny_bert}: " in flat


def test_max_unknown_share_must_be_a_share(tmp_path):
    with pytest.raises(LmadaptError, match="model.max_unknown_share must lie in"):
        lmadapt.load_config(None, ["data.train=x.csv", "model.max_unknown_share=2"])


def test_scratch_reads_chinese_a_character_a_word():
    from lmadapt.models.lstm import fit_word_tokenizer

    tokenizer = fit_word_tokenizer(["质量不错，很好 Great film!", "质量太差 bad film"], 100, 1)
    assert tokenizer.tokenize("质量不错 GREAT film") == ["质", "量", "不", "错", "great", "film"]


@pytest.fixture(scope="module")
def tiny_chinese_llama(tmp_path_factory):
    """A 2-layer random-weight Llama whose word-piece vocabulary holds Chinese characters, one token each."""
    from transformers import BertTokenizer

    from tests.conftest import save_tiny_llama

    characters = sorted(set("".join(CHINESE) + "差评好很失望评论总体：，"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, "great", "film"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    return save_tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny-zh-llama"))


def test_chinese_verbalizer_words_of_several_tokens_score_as_their_log_probabilities(tiny_chinese_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from lmadapt.models.label_scoring import VerbalizedLM
    from lmadapt.prompts import PromptTokenizer, Template, Verbalizer
    from tests.unit.test_prompts import direct_word_log_prob

    tokenizer = AutoTokenizer.from_pretrained(tiny_chinese_llama, padding_side="left")
    template = Template.parse("评论：{text} 总体：{label}", "strategy.template", needs_label=True)
    verbalizer = Verbalizer.build({"negative": ["差评", "很失望"], "positive": ["好评"]}, ["negative", "positive"], "v")
    words = verbalizer.token_ids(tokenizer, template.label_prefix, "v")
    assert [[len(ids) for ids in label] for label in words] == [[2, 3], [2]]  # a token per character
    assert tokenizer.convert_ids_to_tokens(words[0][1]) == ["很", "失", "望"]
    lm = AutoModelForCausalLM.from_pretrained(tiny_chinese_llama).eval()
    model = VerbalizedLM(lm, words, normalize_length=False).eval()
    reader = PromptTokenizer(tokenizer, template)
    encoded = reader(CHINESE[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        scored = model.word_log_probs(encoded["input_ids"], encoded["attention_mask"])
    for row, text in enumerate(CHINESE[:2]):
        prompt = reader([text])["input_ids"][0]
        direct = [direct_word_log_prob(lm, prompt, ids) for label in words for ids in label]
        torch.testing.assert_close(scored[row], torch.tensor(direct), rtol=0, atol=1e-4)


def test_incontext_stops_when_its_demonstration_encoder_cannot_read_the_texts(tiny_chinese_llama, tiny_bert, tmp_path):
    frame = sentiment_rows(360)
    characters = "".join(CHINESE)  # all read by the Chinese Llama
    frame["text"] = ["".join(random.Random(i).choices(characters, k=12)) for i in range(len(frame))]
    files = write_three_splits(tmp_path, frame)
    settings = {"strategy.name": "incontext", "strategy.selection": "similar", "strategy.template": "'{text}：{label}'"}
    settings["strategy.verbalizer"] = "{negative: [差], positive: [好]}"
    overrides = tiny_overrides(tiny_chinese_llama, files, tmp_path / "runs", **settings)
    with pytest.raises(LmadaptError) as error:
        lmadapt.train(lmadapt.load_config(None, [*overrides, f"strategy.encoder={tiny_bert}"]))
    assert error.value.where == "the demonstrations" and "--set strategy.encoder=e5-multilingual" in error.value.fix
    assert not (tmp_path / "runs").exists()


def test_a_packaged_backbone_pretrained_on_other_letters_is_warned_about():
    warning = warn_if_pretrained_on_other_scripts("smollm2", CHINESE)
    assert warning and "pretrained on English text" in warning and "100% of these texts' letters are han" in warning
    assert warn_if_pretrained_on_other_scripts("e5-multilingual", CHINESE) is None  # it reads them
    assert warn_if_pretrained_on_other_scripts("smollm2", ["a great film", "质量不错 but slow delivery"]) is None
    assert warn_if_pretrained_on_other_scripts("/models/my-chinese-lm", CHINESE) is None  # no known scripts


def test_the_guard_speaks_before_cleaning_can_make_the_data_look_too_small(tiny_bert, tmp_path):
    # Chinese rows that repeat: cleaning would leave too few rows, but the language is the problem to name.
    frame = pd.concat([chinese_rows(4)] * 10)
    files = {"train": tmp_path / "train.csv"}
    frame.to_csv(files["train"], index=False)
    overrides = [
        o
        for o in tiny_overrides(tiny_bert, {**files, "validation": "", "test": ""}, tmp_path / "runs")
        if not o.startswith(("data.validation", "data.test"))
    ]
    with pytest.raises(LmadaptError) as error:
        lmadapt.train(lmadapt.load_config(None, overrides))
    assert "of their tokens are unknown to its tokenizer" in str(error.value), str(error.value)
