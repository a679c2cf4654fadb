"""The recommender folder and `lmadapt recommend`: train writes a folder (atomic, manifest, no overwrite) whose model
loads with the same scores and nothing refitted or re-encoded; items added by text are recommendable at once and
survive a reload; bad input exits 2 with what, where and how to fix it.

The data: test_recommend_text's synthetic users who each like items of one taste, as files with named columns; the
text model reads them with its tiny random BERT."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import lmadapt
from lmadapt.apps.recommend.config import MODEL_KINDS, load_recommend_config, settings_keys
from lmadapt.apps.recommend.data import implicit_feedback
from lmadapt.apps.recommend.recommender import (
    add_items,
    load_data,
    load_recommender,
    open_recommender,
    train_recommender,
)
from lmadapt.apps.recommend.storage import build_settings, load_settings, save_settings
from lmadapt.apps.recommend.text import TextConfig
from lmadapt.config import option
from lmadapt.errors import LmadaptError
from tests.unit.test_cli import run_cli
from tests.unit.test_recommend_text import synthetic, tiny_bert  # noqa: F401 (tiny_bert: a fixture)

COLLABORATIVE = ["popularity", "itemknn", "ease", "bpr", "als"]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """The synthetic interactions (ratings 5, and a 2 that is no like) and the items' texts, as CSV files."""
    folder = tmp_path_factory.mktemp("recommend-data")
    train, catalog = synthetic()
    ratings = train.assign(rating=5.0).rename(columns={"time": "timestamp"})[["user", "item", "rating", "timestamp"]]
    disliked = ratings.iloc[:1].assign(item=catalog.ids[-1], rating=2.0, timestamp=5000)
    ratings = pd.concat([ratings, disliked], ignore_index=True)
    ratings.to_csv(folder / "ratings.csv", index=False)
    items = folder / "items.csv"
    items.write_text(
        "item,title\n" + "".join(f"{i},{t}\n" for i, t in zip(catalog.ids, catalog.texts)), encoding="utf-8"
    )
    return {"interactions": folder / "ratings.csv", "items": items}


def recipe(folder: Path, data_files, model: str, **settings) -> Path:
    """A recipe file for `model` on the data files; `settings` are dotted keys (text.epochs=...)."""
    raw: dict = {
        "name": f"synthetic-{model}",
        "output_dir": str(folder / "recommenders"),
        "model": model,
        "data": {"interactions": str(data_files["interactions"]), "items": str(data_files["items"])},
        "evaluation": {"split": "temporal_loo", "ks": [1, 5]},
    }
    for key, value in settings.items():
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def text_settings(tiny_bert) -> dict:  # noqa: F811
    return {
        "text.backbone": str(tiny_bert),
        "text.history_length": 3,
        "text.epochs": 1,
        "text.max_pairs": 32,  # two steps: these tests need an adapted encoder folder, not a good one
        "text.batch_size": 16,
        "text.learning_rate": 5e-3,
        "text.max_length": 32,
        "text.popularity_weight": 0.0,  # cosine alone: an item with another's text is its nearest neighbour
        "evaluation.at_train": False,
    }


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, data_files, tiny_bert) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("recommend-text")
    config = load_recommend_config(recipe(folder, data_files, "text", **text_settings(tiny_bert)))
    return train_recommender(config, progress=lambda _: None)


@pytest.fixture(scope="module")
def ease_folder(tmp_path_factory, data_files) -> Path:
    folder = tmp_path_factory.mktemp("recommend-ease")
    return train_recommender(load_recommend_config(recipe(folder, data_files, "ease")), progress=lambda _: None)


def fitted_on_all(config):
    """The recipe's model fitted in memory on all the liked interactions, as train fits it."""
    data = load_data(config.data)
    return config.make_model().fit(implicit_feedback(data.interactions, 4.0), data.catalog())


@pytest.mark.parametrize("model", COLLABORATIVE)
def test_a_saved_collaborative_model_loads_with_the_same_scores(model, tmp_path, data_files):
    if model in ("bpr", "als"):
        pytest.importorskip("implicit")
    settings = {f"{model}.iterations": 3, f"{model}.threads": 1} if model in ("bpr", "als") else {}
    config = load_recommend_config(recipe(tmp_path, data_files, model, **{"evaluation.at_train": False, **settings}))
    folder = train_recommender(config, progress=lambda _: None)
    loaded = load_recommender(folder)
    users = ["u0", "u7", "stranger"]
    expected = fitted_on_all(config)
    np.testing.assert_array_equal(loaded.score(users), expected.score(users))
    assert loaded.recommend("u3", 5) == expected.recommend("u3", 5)
    assert loaded.catalog.ids == expected.catalog.ids and loaded.catalog.texts == expected.catalog.texts
    assert type(loaded) is type(MODEL_KINDS[model].make(config.settings))

    liked = [item for item in expected.state.seen[expected.state.users.index["u3"]].indices]
    history = [expected.catalog.ids[i] for i in liked]
    if model in ("bpr", "als"):
        with pytest.raises(LmadaptError, match=f"the {model} model cannot score a history it did not train on"):
            loaded.recommend_for_history(history)
    else:  # a visitor with u3's items gets u3's recommendations: the model reads a user from their items alone
        found, wanted = loaded.recommend_for_history(history, k=5), expected.recommend("u3", 5)
        assert [item for item, _ in found] == [item for item, _ in wanted]
        np.testing.assert_allclose([score for _, score in found], [score for _, score in wanted], rtol=1e-6)
    with pytest.raises(LmadaptError, match=f"the {model} model reads no text"):
        loaded.recommend_for_history(text="great films")


def test_train_writes_a_verified_folder_with_its_recipe_metrics_and_interactions(ease_folder, tmp_path, data_files):
    names = {str(p.relative_to(ease_folder)) for p in ease_folder.rglob("*") if p.is_file()}
    assert {"config.yaml", "recommender.json", "metrics.json", "interactions.csv", "manifest.json"} <= names
    assert {"model/settings.json", "model/items.jsonl", "model/seen.npz", "model/weights.npy"} <= names
    manifest = json.loads((ease_folder / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert not list(ease_folder.parent.glob(".*"))  # no staging folder left behind

    config = yaml.safe_load((ease_folder / "config.yaml").read_text())
    assert config["model"] == "ease" and config["ease"] == {"l2": 400.0} and "text" not in config
    metrics = json.loads((ease_folder / "metrics.json").read_text())
    assert metrics["split"]["kind"] == "temporal_loo" and metrics["ks"] == [1, 5]
    assert 0 < metrics["metrics"]["hr_at_5"] <= 1 and metrics["metrics"]["users"] == 48
    record = json.loads((ease_folder / "recommender.json").read_text())
    assert record["users"] == 48 and record["interactions"] == 48 * 5  # the rating of 2 is no like
    assert record["items"] == 64

    changed = tmp_path / "changed"
    shutil.copytree(ease_folder, changed)
    (changed / "model" / "weights.npy").write_bytes(b"changed")
    with pytest.raises(LmadaptError, match="file changed since the run was written: model/weights.npy"):
        open_recommender(changed)


def test_the_text_model_loads_without_refitting_or_encoding(text_folder, monkeypatch):
    saved = open_recommender(text_folder)
    assert (text_folder / "model" / "encoder" / "encoder.json").is_file()  # the adapted encoder travels with it
    config = load_recommend_config(text_folder / "config.yaml")
    monkeypatch.setattr(lmadapt, "encoder", lambda *a, **k: pytest.fail("the loaded model encoded something"))
    scores = saved.model.score(["u0", "u9"])
    again = load_recommender(text_folder)
    np.testing.assert_array_equal(again.score(["u0", "u9"]), scores)
    assert again.recommend("u0", 3) == saved.model.recommend("u0", 3)
    assert config.model == "text" and config.settings.history_length == 3


def test_train_refuses_to_overwrite_and_an_interrupted_train_leaves_nothing(
    ease_folder, data_files, tmp_path, monkeypatch, capsys
):
    path = recipe(tmp_path, data_files, "ease", **{"evaluation.at_train": False})
    target = tmp_path / "out"
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "train", path, "--output", target)
    assert code == 0 and f"recommender folder: {target}" in out
    before = (target / "manifest.json").read_bytes()
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "train", path, "--output", target)
    assert code == 2 and "recommender folder already exists" in err and "--overwrite" in err
    assert (target / "manifest.json").read_bytes() == before

    from lmadapt.apps.recommend.models import EASE

    def broken_save(self, folder):
        (Path(folder) / "half").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(EASE, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train_recommender(load_recommend_config(path), tmp_path / "fresh", progress=lambda _: None)
    with pytest.raises(OSError, match="disk full"):
        train_recommender(load_recommend_config(path), target, overwrite=True, progress=lambda _: None)
    assert not (tmp_path / "fresh").exists()
    assert (target / "manifest.json").read_bytes() == before  # the old folder stays whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_items_added_by_text_are_recommendable_at_once_and_survive_reload(text_folder, tmp_path, monkeypatch, capsys):
    before = open_recommender(text_folder)
    old_scores = before.model.score(["u0", "u5"])
    twin_of = "i2-3"  # the new item has this item's text: the nearest of all items to it
    text = before.catalog.texts[before.catalog.index[twin_of]]
    new_items = tmp_path / "new.jsonl"
    new_items.write_text(json.dumps({"id": "new-1", "text": text.removesuffix(".")}) + "\n", encoding="utf-8")

    code, out, err = run_cli(monkeypatch, capsys, "recommend", "add-items", text_folder, new_items)
    assert code == 0, err
    assert "added 1 items" in out and "65 items in all" in out

    after = open_recommender(text_folder)  # a fresh load: the manifest verified, the item kept
    assert after.record["added_items"] == 1 and after.catalog.ids[-1] == "new-1"
    assert after.similar(twin_of, k=1)[0]["item"] == "new-1"
    assert after.model.score(["u2"], ["new-1"]).shape == (1, 1)
    np.testing.assert_array_equal(after.model.score(["u0", "u5"])[:, :-1], old_scores)  # nothing saved lost

    code, out, err = run_cli(monkeypatch, capsys, "recommend", "--similar-to", twin_of, "--from", text_folder, "--k", 1)
    assert code == 0 and "new-1" in out

    code, _, err = run_cli(monkeypatch, capsys, "recommend", "add-items", text_folder, new_items)
    assert code == 2 and "item 'new-1' is already in the catalogue" in err
    assert open_recommender(text_folder).record["added_items"] == 1


def test_a_collaborative_recommender_refuses_new_items_and_stays_as_it_was(ease_folder, tmp_path, monkeypatch, capsys):
    new_items = tmp_path / "new.csv"
    new_items.write_text("id,text\nnew-1,great film\n", encoding="utf-8")
    before = (ease_folder / "manifest.json").read_bytes()
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "add-items", ease_folder, new_items)
    assert code == 2
    assert "the ease model cannot take new items" in err and "model=text" in err
    assert (ease_folder / "manifest.json").read_bytes() == before
    with pytest.raises(LmadaptError, match="cannot take new items"):
        add_items(ease_folder, ["x"], ["a film"])


def test_recommend_user_and_description_on_the_command_line(text_folder, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "u0", "--from", text_folder, "--k", 3)
    assert code == 0 and "top 3 for user u0" in out
    expected = [item for item, _ in load_recommender(text_folder).recommend("u0", 3)]
    assert all(item in out for item in expected)
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "show", "--text", "great wonderful", "--from", text_folder)
    assert code == 0 and "for the description" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "nobody", "--from", "{folder}"], "user 'nobody' has no interactions"),
        (["recommend", "u0", "--similar-to", "i0-1", "--from", "{folder}"], "give one of USER_ID, --similar-to"),
        (["recommend", "--from", "{folder}"], "give one of USER_ID, --similar-to ITEM or --text"),
        (["recommend", "--text", "great films", "--from", "{folder}"], "the ease model reads no text"),
        (["recommend", "--similar-to", "nope", "--from", "{folder}"], "item 'nope' is not in the catalogue"),
        (["recommend", "u0", "--from", "{data}"], "not a recommender folder (no recommender.json)"),
        (["recommend", "evaluate", "{folder}", "--set", "ease.l2=3"], "--set, --seed, --report and more targets"),
        (["recommend", "evaluate", "{folder}", "--seed", "1"], "evaluate its recipe: lmadapt recommend evaluate"),
        (["recommend", "evaluate", "{folder}", "--report", "{missing}"], "--set, --seed, --report and more targets"),
        (["recommend", "trian", "recipe.yaml"], "no command 'trian': did you mean 'train'?"),
        (["recommend", "evaluate", "{folder}", "--output", "{data}"], "--output is an existing folder"),
        (["recommend", "add-items", "{folder}", "{missing}"], "not found"),
    ],
)
def test_command_line_errors_exit_2_with_what_and_how(args, message, ease_folder, tmp_path, monkeypatch, capsys):
    values = {"folder": ease_folder, "data": tmp_path, "missing": tmp_path / "missing.csv"}
    code, out, err = run_cli(monkeypatch, capsys, *[arg.format(**values) for arg in args])
    assert code == 2, out + err
    assert message in err and "Traceback" not in err


def test_bad_recipes_are_refused_naming_the_file_and_the_key(tmp_path, data_files, monkeypatch, capsys):
    path = recipe(tmp_path, data_files, "ease", **{"ease.l3": 1})
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "train", path)
    assert code == 2 and f"{path}: ease.l3: unknown config key 'ease.l3'" in err and "did you mean 'l2'" in err
    good = recipe(tmp_path, data_files, "itemknn")
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "evaluate", good, "--set", "model=txt")
    assert code == 2 and "unknown model 'txt'" in err and "did you mean 'text'" in err
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "train", good, "--set", "data.item_column=film")
    assert code == 2 and "no item column 'film'" in err and "set item_column" in err
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "train", good, "--set", "data.implicit_threshold=9")
    assert code == 2 and "no interaction has a rating of at least 9.0" in err and "data.implicit_threshold" in err
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "recommend",
        "train",
        good,
        "--set",
        "text.index=nope",
        "--set",
        "model=text",
    )
    assert code == 2 and "unknown index kind 'nope'" in err and "text.index" in err


def test_evaluate_prints_the_table_and_writes_json(tmp_path, data_files, ease_folder, monkeypatch, capsys):
    output = tmp_path / "report.json"
    path = recipe(tmp_path, data_files, "popularity")
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "evaluate", path, "--output", output)
    assert code == 0 and "NDCG" in out and "MRR" in out and "coverage" in out
    report = json.loads(output.read_text())
    assert report["model"] == "popularity" and report["split"]["kind"] == "temporal_loo"
    assert {"ndcg_at_5", "recall_at_5", "precision_at_5", "map_at_5", "hr_at_5", "coverage_at_5", "mrr"} <= set(
        report["metrics"]
    )
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "evaluate", ease_folder)
    saved = json.loads((ease_folder / "metrics.json").read_text())["metrics"]
    assert code == 0 and f"{saved['ndcg_at_5']:.4f}" in out


def test_evaluate_compares_recipes_over_seeds_with_intervals_and_writes_the_report(
    tmp_path, data_files, monkeypatch, capsys
):
    recipes = [recipe(tmp_path, data_files, model) for model in ("popularity", "ease")]
    seeds = ["--seed", "1", "--seed", "2", "--seed", "3"]
    code, out, err = run_cli(monkeypatch, capsys, "recommend", "evaluate", *recipes, *seeds, "--report", tmp_path / "r")
    assert code == 0, err
    assert "| synthetic-popularity | 3 | t over seeds |" in out and "| synthetic-ease | 3 | t over seeds |" in out
    assert "NDCG@5" in out  # the recipes measure k 1 and 5: the table reads at 5
    document = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {row["model"]: row for row in document["models"]}
    assert rows["synthetic-ease"]["seeds"] == 3 and len(rows["synthetic-ease"]["ndcg_at_5_ci"]) == 2
    low, high = rows["synthetic-ease"]["ndcg_at_5_ci"]
    assert low <= rows["synthetic-ease"]["ndcg_at_5"] <= high
    assert (tmp_path / "r" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "synthetic-ease" in (tmp_path / "r" / "report.md").read_text()
    # one seed: the interval is a bootstrap over the users
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "evaluate", *recipes, "--seed", "1")
    assert code == 0 and "| synthetic-ease | 1 | bootstrap over users |" in out
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "evaluate", recipes[0], recipes[0])
    assert code == 2 and "two recipes are named 'synthetic-popularity'" in err


def test_keys_list_every_models_settings(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "keys")
    assert code == 0
    for key in ("data.implicit_threshold", "evaluation.split", "ease.l2", "text.backbone", "bpr.factors"):
        assert key in out
    assert "ease.weights" not in out and "ease.state" not in out  # what fit fills in is no setting
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", "keys", "text")
    assert code == 0 and "text.popularity_weight" in out and "ease.l2" not in out


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["show"], ["add-items"], ["serve"], ["keys"]])
def test_every_recommend_command_has_help_with_an_example(monkeypatch, capsys, command):
    code, out, _ = run_cli(monkeypatch, capsys, "recommend", *command, "--help")
    assert code == 0 and "Usage: lmadapt recommend" in out and "Example" in out


@dataclass
class NestedSettings:
    """Settings that hold another model's (as the hybrid's hold the text model's)."""

    text: TextConfig = field(default_factory=TextConfig, metadata={"help": "The text model's settings."})
    seed: int = option(1, "A seed.")


def test_nested_model_settings_parse_list_their_keys_and_round_trip(tmp_path):
    settings = build_settings(NestedSettings, {"text": {"epochs": 0}, "seed": 3}, "hybrid")
    assert settings.text.epochs == 0 and settings.text.backbone == "minilm" and settings.seed == 3
    save_settings(settings, tmp_path)
    assert load_settings(NestedSettings, tmp_path) == settings
    keys = {key.key: key.default for key in settings_keys(NestedSettings, "hybrid.")}
    assert keys["hybrid.seed"] == 1 and keys["hybrid.text.epochs"] == 1.0 and "hybrid.text" not in keys
    with pytest.raises(LmadaptError, match="hybrid.text.epoch: unknown config key 'hybrid.text.epoch'") as error:
        build_settings(NestedSettings, {"text": {"epoch": 0}}, "hybrid")
    assert "did you mean 'epochs'" in str(error.value)


def test_train_refuses_a_model_it_could_not_save_before_fitting(tmp_path, data_files, monkeypatch, capsys):
    path = recipe(tmp_path, data_files, "hybrid", **{"hybrid.learner": "gradient_boosting"})
    code, _, err = run_cli(monkeypatch, capsys, "recommend", "train", path)
    assert code == 2 and "a gradient_boosting ranker cannot be saved" in err and "evaluating" not in err
    assert not (tmp_path / "recommenders").exists()
