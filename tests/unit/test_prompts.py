"""Templates, verbalizers and the causal-LM label scorer: validation, truncation, and the scores
checked against a direct computation of the label words' log-probabilities."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.models.label_scoring import VerbalizedLM
from lmadapt.prompts import PromptTokenizer, Template, Verbalizer
from tests.conftest import tiny_overrides

WHERE = "strategy.template"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "the template is empty"),
        ("Sentiment: {label}", "no {text} slot"),
        ("{txt} {label}", "unknown slot '{txt}'"),
        ("{text} {text} {label}", "'{text}' appears more than once"),
        ("{text}", "no {label} slot"),
        ("It was {label}. {text}", "text after the {label} slot"),
        ("{text} {label", "does not parse"),
    ],
)
def test_template_errors_say_what_is_wrong(source, message):
    with pytest.raises(
        LmadaptError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")
    ) as caught:
        Template.parse(source, WHERE, needs_label=True)
    assert caught.value.where == WHERE


def test_template_keeps_the_space_before_the_label_for_the_words():
    template = Template.parse("Review: {text}\nSentiment: {label}", WHERE, needs_label=True)
    assert template.prompt == "Review: {text}\nSentiment:" and template.label_prefix == " "
    assert template.fill("fine {not a slot}") == "Review: fine {not a slot}\nSentiment:"
    assert Template.parse("{text} / {text_pair}: {label}", WHERE, needs_label=True).has_pair


def test_verbalizer_checks_labels_words_and_encoding(tiny_bert):
    labels = ["negative", "positive"]
    with pytest.raises(LmadaptError, match="names label 'neutral', which the data does not have"):
        Verbalizer.build({"neutral": ["so-so"], "negative": ["bad"], "positive": ["good"]}, labels, "v")
    with pytest.raises(LmadaptError, match="label 'positive' has no words"):
        Verbalizer.build({"negative": ["awful"]}, labels, "v")
    with pytest.raises(LmadaptError, match="label 'negative' has an empty word"):
        Verbalizer.build({"negative": ["awful", " "], "positive": ["great"]}, labels, "v")
    assert Verbalizer.build(None, ["card_arrival", "refund"], "v").words == {
        "card_arrival": ["card arrival"],
        "refund": ["refund"],
    }
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    chinese = Verbalizer.build({"negative": ["差评"], "positive": ["great"]}, labels, "v")
    with pytest.raises(LmadaptError, match="cannot encode the word '差评' of label 'negative'"):
        chinese.token_ids(tokenizer, " ", "v")
    ids = Verbalizer.build({"negative": ["awful", "dull and boring"], "positive": ["great"]}, labels, "v")
    encoded = ids.token_ids(tokenizer, " ", "v")
    assert [len(words) for words in encoded] == [2, 1] and len(encoded[0][1]) == 3  # a multi-token phrase


def test_prompt_tokenizer_truncates_the_text_never_the_template(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    reader = PromptTokenizer(tokenizer, Template.parse("the {text} ending {label}", WHERE, needs_label=True))
    long_text = " ".join(["great film"] * 40)
    ids = reader([long_text, "dull"], truncation=True, max_length=24)["input_ids"]
    suffix = tokenizer("ending", add_special_tokens=False)["input_ids"]
    assert len(ids[0]) <= 24 and ids[0][-1 - len(suffix) : -1] == suffix  # [SEP] closes the sequence
    assert ids[1] == tokenizer("the dull ending")["input_ids"]
    with pytest.raises(LmadaptError, match="leaving no room for the text"):
        reader(["dull"], truncation=True, max_length=6)


def direct_word_log_prob(lm, prompt_ids: list[int], word: list[int]) -> float:
    """log P(word | prompt) from one plain forward pass over prompt + word, no cache, no padding."""
    ids = torch.tensor([prompt_ids + word])
    with torch.no_grad():
        log_probs = lm(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(log_probs[len(prompt_ids) - 1 + i, token]) for i, token in enumerate(word))


def test_scorer_matches_a_direct_computation_of_the_label_words_log_probabilities(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    words = [[[21], [22, 23, 5]], [[14, 29]]]  # label 0: a one-token and a three-token word; label 1: two tokens
    model = VerbalizedLM(lm, words, normalize_length=False).eval()
    texts = ["the film was great", "a dull and boring plot that goes on", "quite"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        scored = model.word_log_probs(encoded["input_ids"], encoded["attention_mask"])
        labels = model(**encoded).logits
    for row, text in enumerate(texts):
        prompt = tokenizer(text)["input_ids"]
        direct = [direct_word_log_prob(lm, prompt, word) for label in words for word in label]
        torch.testing.assert_close(scored[row], torch.tensor(direct), rtol=0, atol=1e-4)
        mean_probability = torch.tensor(direct[:2]).exp().mean().log(), torch.tensor(direct[2])
        expected = torch.stack(mean_probability).log_softmax(-1)
        torch.testing.assert_close(labels[row], expected, rtol=0, atol=1e-4)
    # A shared start (in-context demonstrations) read once from its cache scores as if it were written out.
    prefix = [2, 21, 22, 3, 14, 7]
    prefixed = VerbalizedLM(lm, words, normalize_length=False, prefix_ids=prefix).eval()
    with torch.no_grad():
        first = prefixed.word_log_probs(encoded["input_ids"], encoded["attention_mask"])
        again = prefixed.word_log_probs(encoded["input_ids"][1:], encoded["attention_mask"][1:])  # cache reused
    for row, text in enumerate(texts):
        prompt = prefix + tokenizer(text)["input_ids"]
        direct = [direct_word_log_prob(lm, prompt, word) for label in words for word in label]
        torch.testing.assert_close(first[row], torch.tensor(direct), rtol=0, atol=1e-4)
    torch.testing.assert_close(again, first[1:], rtol=0, atol=1e-5)
    normalized = VerbalizedLM(lm, words).eval()
    with torch.no_grad():
        per_token = normalized.word_log_probs(encoded["input_ids"], encoded["attention_mask"])
    torch.testing.assert_close(per_token, scored / torch.tensor([1.0, 3.0, 2.0]), rtol=0, atol=1e-5)


def test_calibration_makes_content_free_inputs_uniform(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    model = VerbalizedLM(AutoModelForCausalLM.from_pretrained(tiny_llama), [[[21]], [[14], [29]]]).eval()
    content_free = tokenizer(["N/A", "", "[MASK]"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**content_free).logits.softmax(-1).mean(0)
        model.calibrate(content_free)
        after = model(**content_free).logits.softmax(-1)
    assert not torch.allclose(before, torch.full((2,), 0.5), atol=1e-3)
    # Dividing by the mean content-free distribution centres the content-free inputs on the uniform one.
    torch.testing.assert_close(after.log().mean(0).softmax(-1), torch.full((2,), 0.5), rtol=0, atol=0.05)


def test_zeroshot_lm_writes_a_run_that_loads_and_predicts_the_same(tiny_llama, sentiment_files, tmp_path):
    settings = tiny_overrides(tiny_llama, sentiment_files, tmp_path / "runs", "zero")
    settings += ["strategy.name=zeroshot_lm", "strategy.template=Review: {text} Verdict: {label}"]
    settings += ["strategy.verbalizer={negative: [awful, dull], positive: [great, superb moving]}"]
    run = lmadapt.train(lmadapt.load_config(None, settings))
    assert run.metrics["training"]["trained"] is False and run.metrics["parameters"]["trainable"] == 0
    assert run.metrics["artifact_mb"] < 0.1  # the run keeps the backbone's name, not its weights
    assert run.config["model"]["backbone"] == str(tiny_llama)
    texts = ["the film was great", "dull and tedious"]
    fresh = lmadapt.load(run.path)
    tokenizer = fresh.load_tokenizer()
    assert isinstance(tokenizer, PromptTokenizer) and tokenizer.prompts(texts[:1], None, None) == [
        "Review: the film was great Verdict:"
    ]
    predictions = fresh.predict(texts)
    assert [p["label"] for p in predictions] == [max(p["scores"], key=p["scores"].get) for p in predictions]
    assert abs(sum(predictions[0]["scores"].values()) - 1.0) < 1e-5


def test_prompt_strategy_defaults_to_a_causal_lm_and_refuses_an_encoder(tiny_bert, sentiment_files, tmp_path):
    assert lmadapt.load_config(None, ["strategy.name=zeroshot_lm"]).model.backbone == "smollm2"
    assert lmadapt.load_config(None, ["strategy.name=lora"]).model.backbone == "minilm"
    settings = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "enc") + ["strategy.name=zeroshot_lm"]
    with pytest.raises(LmadaptError, match="reads a causal LM's words"):
        lmadapt.train(lmadapt.load_config(None, settings))
    with pytest.raises(LmadaptError, match="no {label} slot"):
        lmadapt.load_config(None, ["strategy.name=zeroshot_lm", "strategy.template='{text}'"])
    with pytest.raises(LmadaptError, match="(?s)expected text, got.*put the value in quotes"):
        lmadapt.load_config(None, ["strategy.name=zeroshot_lm", "strategy.template={text}"])
    quoted_needless = lmadapt.load_config(None, ["strategy.name=zeroshot_lm", "strategy.template={text} {label}"])
    assert quoted_needless.strategy.template == "{text} {label}"  # not YAML, so taken as the text it is


def test_zeroshot_embed_scores_cosine_similarity_to_the_label_descriptions(tiny_bert, sentiment_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    descriptions = {"negative": ["awful", "dull boring"], "positive": ["great"]}
    settings = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "embed")
    settings += ["strategy.name=zeroshot_embed", "strategy.temperature=0.1"]
    settings += ["strategy.descriptions={negative: [awful, dull boring], positive: [great]}"]
    run = lmadapt.train(lmadapt.load_config(None, settings))
    assert run.metrics["training"]["trained"] is False and run.metrics["artifact_mb"] < 0.1
    texts = ["the film was great", "a dull and boring plot"]
    encoder = SentenceTransformer(str(tiny_bert), device="cpu")
    labels = torch.stack(
        [encoder.encode(d, convert_to_tensor=True, normalize_embeddings=True).mean(0) for d in descriptions.values()]
    )
    embedded = encoder.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    direct = embedded @ torch.nn.functional.normalize(labels, dim=-1).T / 0.1
    torch.testing.assert_close(torch.tensor(lmadapt.load(run.path).predictor.logits(texts)), direct, rtol=0, atol=1e-4)
    with pytest.raises(LmadaptError, match="no {label} slot"):
        lmadapt.load_config(None, ["strategy.name=zeroshot_embed", "strategy.description_template=a text"])


def test_scorer_state_dict_stores_tied_weights_once(tiny_llama, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    def tied_lm():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_llama, tie_word_embeddings=True))

    lm = tied_lm()
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()
    model = VerbalizedLM(lm, [[[21]], [[14]]])
    state = model.state_dict()
    assert ("lm.lm_head.weight" in state) != ("lm.model.embed_tokens.weight" in state)
    save_file(state, str(tmp_path / "checkpoint.safetensors"))  # the Trainer's checkpoint format
    fresh = VerbalizedLM(tied_lm(), [[[21]], [[14]]])
    with torch.no_grad():
        fresh.lm.model.embed_tokens.weight.zero_()
    fresh.load_state_dict(load_file(str(tmp_path / "checkpoint.safetensors")), strict=False)
    torch.testing.assert_close(fresh.lm.lm_head.weight, lm.lm_head.weight)
