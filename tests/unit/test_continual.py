"""Continual learning: streams, head growth, replay memory, EWC and LwF losses, metrics, and a real
comparison of replay against naive fine-tuning on a tiny model."""

from __future__ import annotations

import json
import random
from collections import Counter

import pandas as pd
import pytest
import torch

import lmadapt
from lmadapt.errors import LmadaptError
from tests.conftest import FILLER, NEGATIVE, POSITIVE, tiny_overrides, write_three_splits

GROUPS = {"praise": POSITIVE[:4], "delight": POSITIVE[4:], "boredom": NEGATIVE[:4], "disgust": NEGATIVE[4:]}


def four_class_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Texts whose keywords' group decides the label (four labels, balanced); several keywords per text,
    so that a tiny random model tells four groups apart as quickly as two."""
    rng = random.Random(seed)
    names = list(GROUPS)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(FILLER, rng.randint(1, 3)) + rng.sample(GROUPS[label], 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return pd.DataFrame(rows)


@pytest.fixture
def four_class_files(tmp_path):
    return write_three_splits(tmp_path, four_class_rows(360))


def continual_settings(model, files, out, *extra):
    settings = tiny_overrides(model, files, out, "stream", **{"train.epochs": 20})
    return settings + ["continual.class_groups=2", "train.select_best=false", *extra]


def test_class_incremental_stream_splits_labels_into_disjoint_seeded_groups(tiny_bert, four_class_files, tmp_path):
    from lmadapt.continual.stream import build_stream

    config = lmadapt.load_config(None, continual_settings(tiny_bert, four_class_files, tmp_path))
    stream = build_stream(config)
    assert len(stream) == 2
    groups = [set(e.labels) for e in stream]
    assert groups[0].isdisjoint(groups[1]) and groups[0] | groups[1] == set(GROUPS)
    for experience in stream:
        for split in (experience.train, experience.validation, experience.test):
            assert set(split.labels) == set(experience.labels) and len(split) > 0
    assert [e.labels for e in build_stream(config)] == [e.labels for e in stream]  # seed-stable
    other = lmadapt.load_config(None, continual_settings(tiny_bert, four_class_files, tmp_path, "seed=7"))
    assert sum(len(e.train) for e in build_stream(other)) == sum(len(e.train) for e in stream) == 240


def test_domain_incremental_stream_takes_one_source_per_experience(tiny_bert, tmp_path):
    from lmadapt.continual.stream import build_stream
    from tests.conftest import sentiment_rows

    sources = []
    for i in range(3):
        sources.append(tmp_path / f"domain{i}.csv")
        sentiment_rows(100, seed=i).to_csv(sources[-1], index=False)
    settings = tiny_overrides(tiny_bert, {"train": sources[0], "validation": sources[0], "test": sources[0]}, tmp_path)
    settings += [f"continual.experiences={','.join(map(str, sources))}", "data.validation=", "data.test="]
    stream = build_stream(lmadapt.load_config(None, settings))
    assert [e.name for e in stream] == ["domain0.csv", "domain1.csv", "domain2.csv"]
    assert all(set(e.labels) == {"positive", "negative"} for e in stream)
    assert all(len(e.train) == 80 and len(e.validation) == 10 and len(e.test) == 10 for e in stream)


def test_a_stream_needs_valid_settings(tiny_bert, four_class_files, tmp_path):
    from lmadapt.continual.stream import build_stream

    with pytest.raises(LmadaptError, match="not a valid value for continual.method"):
        lmadapt.load_config(None, ["continual.method=rehearsal"])
    with pytest.raises(LmadaptError, match="cannot split 4 labels into 5"):
        build_stream(
            lmadapt.load_config(
                None, continual_settings(tiny_bert, four_class_files, tmp_path, "continual.class_groups=5")
            )
        )
    with pytest.raises(LmadaptError, match="at least two experiences"):
        build_stream(lmadapt.load_config(None, ["continual.experiences=builtin:vader_movies"]))


def test_grown_head_keeps_the_old_labels_ids_and_outputs(tiny_bert):
    from lmadapt.config import ModelConfig
    from lmadapt.data.labels import LabelMap
    from lmadapt.models.classifier import grow_head, load_classifier
    from lmadapt.models.contract import StrategyContext

    context = StrategyContext(tiny_bert, ModelConfig(backbone=str(tiny_bert)), LabelMap(["b", "a"]), [])
    model, tokenizer = load_classifier(context)
    model.eval()
    batch = tokenizer(["the film was great", "dull plot"], return_tensors="pt", padding=True)
    before = model(**batch).logits
    grow_head(model, LabelMap(["b", "a", "c"]))
    after = model(**batch).logits
    assert after.shape == (2, 3) and model.config.num_labels == 3 and model.num_labels == 3
    torch.testing.assert_close(after[:, :2], before)
    assert model.config.id2label == {0: "b", 1: "a", 2: "c"}
    loss = model(**batch, labels=torch.tensor([2, 0])).loss  # the model's own loss sees three classes
    loss.backward()
    assert model.classifier.weight.grad.shape == (3, 32)


def test_grown_head_inside_a_lora_model(tiny_bert):
    from lmadapt.config import ModelConfig
    from lmadapt.data.labels import LabelMap
    from lmadapt.models.classifier import grow_head
    from lmadapt.models.contract import StrategyContext
    from lmadapt.strategies import get_strategy

    strategy = get_strategy("lora")
    context = StrategyContext(tiny_bert, ModelConfig(backbone=str(tiny_bert)), LabelMap(["x", "y"]), [])
    prepared = strategy.prepare(context, strategy.config_class())
    model = prepared.model.eval()
    batch = prepared.tokenizer(["the film was great"], return_tensors="pt")
    before = model(**batch).logits
    grow_head(model, LabelMap(["x", "y", "z", "w"]))
    after = model(**batch).logits
    assert after.shape == (1, 4)
    torch.testing.assert_close(after[:, :2], before)
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad and "lora_" not in name}
    assert trained and all(".modules_to_save." in name and p.shape[0] == 4 for name, p in trained.items())


def _split(labels):
    from lmadapt.data.split import Split

    return Split(texts=[f"text {i}" for i in range(len(labels))], labels=list(labels), rows=list(range(len(labels))))


def test_class_balanced_memory_is_bounded_and_balanced():
    from lmadapt.continual.memory import ReplayMemory

    memory = ReplayMemory(size=30, policy="class_balanced", seed=0)
    memory.add(_split(["a"] * 50 + ["b"] * 5))
    assert len(memory.examples) == 30
    assert Counter(e["label"] for e in memory.examples) == {"a": 25, "b": 5}  # b's unused room goes to a
    kept_a = {e["text"] for e in memory.examples if e["label"] == "a"}
    memory.add(_split(["c"] * 40 + ["d"] * 40))
    counts = Counter(e["label"] for e in memory.examples)
    assert len(memory.examples) == 30 and counts["b"] == 5
    assert max(counts[k] for k in "acd") - min(counts[k] for k in "acd") <= 1
    assert {
        e["text"] for e in memory.examples if e["label"] == "a"
    } <= kept_a  # old rows stay, new ones do not evict them all


def test_reservoir_memory_samples_the_whole_stream_uniformly(tmp_path):
    from lmadapt.continual.memory import ReplayMemory

    memory = ReplayMemory(size=200, policy="reservoir", seed=3)
    memory.add(_split(["old"] * 1000))
    memory.add(_split(["new"] * 1000))
    counts = Counter(e["label"] for e in memory.examples)
    assert len(memory.examples) == 200 and memory.seen == 2000
    assert 70 <= counts["old"] <= 130  # half of a uniform sample, within a generous binomial band
    memory.save(tmp_path)
    assert ReplayMemory.load(tmp_path) == memory


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it():
    from lmadapt.training.losses import ewc_penalty

    model = torch.nn.Linear(3, 2)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) + 0.1 for n, p in model.named_parameters()}
    assert ewc_penalty(model, anchor, fisher, 10.0).item() == 0.0
    with torch.no_grad():
        model.weight += 0.1
    one = ewc_penalty(model, anchor, fisher, 10.0).item()
    with torch.no_grad():
        model.weight += 0.1
    two = ewc_penalty(model, anchor, fisher, 10.0).item()
    assert one > 0 and two == pytest.approx(4 * one, rel=1e-5)
    assert one == pytest.approx(0.5 * 10.0 * (fisher["weight"] * 0.01).sum().item(), rel=1e-5)
    grown = torch.nn.Linear(3, 4)  # a head grown since the anchor: only its old rows are pulled back
    with torch.no_grad():
        grown.weight[:2] = anchor["weight"]
        grown.bias[:2] = anchor["bias"]
    assert ewc_penalty(grown, anchor, fisher, 10.0).item() == 0.0


def test_diagonal_fisher_is_the_mean_squared_per_example_gradient():
    from types import SimpleNamespace

    from lmadapt.training.losses import diagonal_fisher

    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, features):
            return SimpleNamespace(logits=self.linear(features))

    examples = [(torch.randn(1, 4), torch.tensor([i % 3])) for i in range(5)]
    fisher = diagonal_fisher(Model(), ({"features": x, "labels": y} for x, y in examples), {"linear.weight"})
    squares = []
    for x, y in examples:
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(linear(x), y), linear.weight)
        squares.append(grad.pow(2))
    torch.testing.assert_close(fisher["linear.weight"], torch.stack(squares).mean(0))
    assert set(fisher) == {"linear.weight"}


def test_distillation_loss_matches_a_direct_computation():
    from lmadapt.training.losses import distillation_loss

    torch.manual_seed(1)
    student, teacher, temperature = torch.randn(4, 5), torch.randn(4, 3), 2.0
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(student[:, :3] / temperature, -1)
    direct = (p * (p.log() - q.log())).sum(-1).mean() * temperature**2
    torch.testing.assert_close(distillation_loss(student, teacher, temperature), direct)
    assert distillation_loss(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_stream_metrics_from_an_accuracy_matrix():
    from lmadapt.evaluation.continual import stream_metrics

    matrix = [[0.9, 0.1, 0.0], [0.6, 0.8, 0.2], [0.5, 0.7, 0.9]]
    figures = stream_metrics(matrix, initial=[0.3, 0.1, 0.1])
    assert figures["average_accuracy"] == pytest.approx(0.7)
    assert figures["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert figures["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert figures["forward_transfer"] == pytest.approx(((0.1 - 0.1) + (0.2 - 0.1)) / 2)
    assert figures["average_accuracy_by_step"] == pytest.approx([0.9, 0.7, 0.7])
    assert stream_metrics([[0.8, 0.6]])["forgetting"] is None  # joint training: one step, nothing to forget


def test_replay_forgets_less_than_naive_and_runs_are_saved(tiny_bert, four_class_files, tmp_path):
    from lmadapt.continual.learner import run_continual
    from lmadapt.continual.stream import build_stream

    settings = continual_settings(tiny_bert, four_class_files, tmp_path, "continual.methods=naive,replay,ewc,lwf,joint")
    settings += ["continual.memory_size=24"]  # 10% of the 240 training rows
    results = {r.method: r for r in run_continual(lmadapt.load_config(None, settings), progress=lambda _: None)}
    naive, replay, joint = results["naive"].metrics, results["replay"].metrics, results["joint"].metrics
    assert results["naive"].matrix[0][0] > 0.9  # each experience is learnt...
    assert naive["forgetting"] > 0.5  # ...and naive fine-tuning forgets the first (its labels are never predicted)
    assert replay["forgetting"] < naive["forgetting"] - 0.3, (replay, naive)
    assert results["replay"].matrix[1][0] > results["naive"].matrix[1][0] + 0.3  # the first experience, at the end
    assert joint["average_accuracy"] > 0.9 and joint["forgetting"] is None
    out = tmp_path / "stream"
    table = (out / "continual.md").read_text()
    assert all(f"| {m} |" in table for m in results) and (out / "continual.png").stat().st_size > 0
    rows = json.loads((out / "continual.json").read_text())
    assert [r["method"] for r in rows] == ["naive", "replay", "ewc", "lwf", "joint"]
    run = lmadapt.load(out / "replay")
    assert len(run.labels) == 4 and run.labels.labels[:2] == build_stream(lmadapt.load_config(None, settings))[0].labels
    assert run.predict(["the film was " + GROUPS["disgust"][0]])[0]["label"] in GROUPS
    assert run.metrics["continual"]["matrix"] == results["replay"].matrix
    assert len(json.loads((out / "replay" / "memory.json").read_text())["examples"]) == 24
    assert (out / "ewc" / "ewc.safetensors").is_file() and not (out / "naive" / "ewc.safetensors").exists()
    step = json.loads((out / "naive" / "steps" / "2" / "metrics.json").read_text())
    assert (
        step["forgetting"] == pytest.approx(naive["forgetting"])
        and (out / "naive" / "steps" / "2" / "accuracy_matrix.png").is_file()
    )
    again = run_continual(lmadapt.load_config(None, settings), progress=lambda name: pytest.fail(f"relearnt {name}"))
    assert [r.matrix for r in again] == [results[m].matrix for m in results]  # finished methods are read back


def test_continual_refuses_a_strategy_without_a_linear_head(tiny_bert, four_class_files, tmp_path):
    from lmadapt.continual.learner import run_continual

    settings = continual_settings(
        tiny_bert, four_class_files, tmp_path, "strategy.name=setfit", "continual.methods=naive"
    )
    with pytest.raises(LmadaptError, match="use full or lora"):
        run_continual(lmadapt.load_config(None, settings))


@pytest.mark.parametrize("case", ["missing", "ragged", "no label", "a bad experience", "unknown method"])
def test_bad_data_or_method_stops_continual_and_keeps_the_earlier_comparison(
    case, tiny_bert, four_class_files, tmp_path, monkeypatch, capsys
):
    from tests.conftest import write_recipe
    from tests.unit.test_cli import run_cli
    from tests.unit.test_compare import bad_data, snapshot

    cases = bad_data(tmp_path)
    settings, options = continual_settings(tiny_bert, four_class_files, tmp_path), []
    if case == "unknown method":
        options = ["--methods", "naive,rpley"]
        expected = ["--methods: unknown continual method 'rpley'", "fix: did you mean 'replay'?"]
    elif case == "a bad experience":  # the stream is read whole before any method learns
        data, expected = cases["ragged"]
        settings += [f"continual.experiences=[{four_class_files['train']},{data}]"]
    else:
        data, expected = cases[case]
        settings += [f"data.train={data}"]
    recipe = write_recipe(tmp_path / "recipe.yaml", settings)
    output = tmp_path / "stream"
    for name in ("continual.json", "continual.md", "continual.png", "naive/manifest.json"):
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text(f"earlier {name}")
    before = snapshot(tmp_path)

    code, _, err = run_cli(monkeypatch, capsys, "continual", recipe, *options)
    assert code == 2 and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert snapshot(tmp_path) == before


def test_update_refuses_bad_data_and_methods_and_leaves_every_folder_as_it_was(
    tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys
):
    from tests.unit.test_cli import run_cli
    from tests.unit.test_compare import bad_data, snapshot

    settings = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "plain", **{"train.epochs": 1})
    run = lmadapt.train(lmadapt.load_config(None, settings))
    before = snapshot(tmp_path / "runs")
    for data, expected in bad_data(tmp_path).values():
        code, _, err = run_cli(monkeypatch, capsys, "update", run.path, "--data", data)
        assert code == 2 and "Traceback" not in err and all(text in err for text in expected), err
    code, _, err = run_cli(
        monkeypatch, capsys, "update", run.path, "--data", sentiment_files["test"], "--method", "rpley"
    )
    assert code == 2 and "--method: unknown continual method 'rpley'" in err and "did you mean 'replay'?" in err

    # The run's own data (its old experience) moved away since it was trained: said as such, not as the new data.
    moved = tmp_path / "moved.csv"
    sentiment_files["train"].rename(moved)
    code, _, err = run_cli(monkeypatch, capsys, "update", run.path, "--data", sentiment_files["test"])
    assert code == 2 and "the data the run was trained on" in err and "data file not found" in err, err
    assert f"{run.path / 'config.yaml'}, data section" in err and "--set data.train=PATH" in err
    assert snapshot(tmp_path / "runs") == before  # no new run folder, nothing left half-written
    code, _, err = run_cli(
        monkeypatch, capsys, "update", run.path, "--data", sentiment_files["test"], "--set", f"data.train={moved}"
    )
    assert code == 0, err  # the fix the message gives works
    assert snapshot(run.path) == {path: kept for path, kept in before.items() if run.path in path.parents}
    # --validation and --test measure the new experience on those files, not on shares of --data
    data, measured = sentiment_files["test"], sentiment_files["validation"]
    code, _, err = run_cli(
        monkeypatch, capsys, "update", run.path, "--data", data, "--set", f"data.train={moved}", "--name", "measured",
        "--validation", measured, "--test", measured,
    )  # fmt: skip
    assert code == 0, err
    from lmadapt.continual.learner import STREAM_FILE

    tests = json.loads((tmp_path / "runs" / "measured" / STREAM_FILE).read_text())["tests"]
    texts, expected = [row["text"] for row in tests[-1]], set(pd.read_csv(measured)["text"])
    assert set(texts) <= expected and len(texts) >= 0.8 * len(expected)  # (rows the run trained on are left out)


def test_update_learns_new_labels_into_a_new_run_and_leaves_the_old_untouched(tiny_bert, tmp_path, monkeypatch, capsys):
    from lmadapt.continual.learner import update_run
    from tests.unit.test_cli import run_cli

    frame = four_class_rows(720)
    files = write_three_splits(tmp_path, frame[frame.label.isin(["praise", "boredom"])].reset_index(drop=True))
    later = tmp_path / "later.csv"
    frame[frame.label.isin(["delight", "disgust"])].to_csv(later, index=False)
    settings = tiny_overrides(tiny_bert, files, tmp_path / "runs", "base") + ["train.select_best=false"]
    run = lmadapt.train(lmadapt.load_config(None, settings))
    saved = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}

    quiet = {"progress": lambda _: None}
    result = update_run(run.path, str(later), method="replay", overrides=["continual.memory_size=20"], **quiet)
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == saved  # the old run is untouched
    assert result.path == run.path.parent / "base-replay-update" and result.experiences == ["train.csv", "later.csv"]
    updated = lmadapt.load(result.path)
    assert updated.labels.labels[:2] == run.labels.labels and set(updated.labels.labels) == set(GROUPS)
    before, after = result.matrix
    assert before[0] == pytest.approx(run.metrics["test"]["accuracy"]) and before[1] == 0.0  # new labels unknown
    assert after[1] > 0.6 and result.metrics["forgetting"] == pytest.approx(before[0] - after[0])
    memory = json.loads((result.path / "memory.json").read_text())["examples"]
    assert len(memory) == 20 and {e["label"] for e in memory} == set(GROUPS)  # the run's own rows, then the new

    with pytest.raises(LmadaptError, match="keeps no Fisher information"):
        update_run(result.path, str(later), method="ewc", **quiet)
    again = update_run(result.path, str(files["train"]), method="lwf", name="third", **quiet)
    assert [len(row) for row in again.matrix] == [3, 3, 3] and again.matrix[0][2] is None  # never measured
    assert again.matrix[1][:2] == after  # the updated run, re-evaluated on the test rows it keeps
    assert (result.path.parent / "third" / "steps" / "3" / "metrics.json").is_file()

    code, _, err = run_cli(monkeypatch, capsys, "update", run.path, "--data", later, "--method", "joint")
    assert code == 2 and "cannot add data to a run" in err and "Traceback" not in err


def test_update_with_ewc_starts_the_fisher_information_from_a_plain_runs_data(tiny_bert, sentiment_files, tmp_path):
    from safetensors.torch import load_file

    from lmadapt.continual.learner import update_run
    from tests.conftest import sentiment_rows

    run = lmadapt.train(
        lmadapt.load_config(None, tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "plain"))
    )
    later = tmp_path / "later.csv"
    sentiment_rows(100, seed=9).to_csv(later, index=False)
    result = update_run(
        run.path, str(later), method="ewc", overrides=["continual.fisher_samples=16"], progress=lambda _: None
    )
    tensors = load_file(str(result.path / "ewc.safetensors"))
    fisher = {k: v for k, v in tensors.items() if k.startswith("fisher.")}
    assert fisher and all((v >= 0).all() for v in fisher.values()) and any(v.sum() > 0 for v in fisher.values())
    assert set(k.removeprefix("anchor.") for k in tensors if k.startswith("anchor.")) == {k[7:] for k in fisher}
    assert len(result.matrix) == 2 and result.metrics["forward_transfer"] is None


def test_a_lora_model_learns_a_stream_and_its_grown_head_saves_and_loads(tiny_bert, four_class_files, tmp_path):
    from lmadapt.continual.learner import accuracy_on, run_continual
    from lmadapt.continual.stream import build_stream

    lora = ["strategy.name=lora", "continual.methods=naive"]
    settings = continual_settings(tiny_bert, four_class_files, tmp_path, *lora)
    (result,) = run_continual(lmadapt.load_config(None, settings), progress=lambda _: None)
    # Each experience is learnt through the adapter (chance over the four labels: 0.25).
    assert result.matrix[0][0] > 0.7 and result.matrix[1][1] >= 0.5
    run = lmadapt.load(result.path)
    assert len(run.labels) == 4 and (result.path / "model" / "adapter_config.json").is_file()
    stream = build_stream(lmadapt.load_config(None, settings))
    reloaded = [round(accuracy_on(run.predictor, experience), 6) for experience in stream]
    assert reloaded == result.matrix[-1]  # the saved adapter and grown head predict as the trained model did
