"""lmadapt: adapt a pretrained language model to a real task, and put the adapted model to work.

import lmadapt
run = lmadapt.train(lmadapt.load_config("configs/sentiment/minilm_full.yaml"))
lmadapt.load(run.path).predict(["a gripping, beautifully shot film"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmadapt.version import __version__

if TYPE_CHECKING:
    from lmadapt.config import ConfigKey, RunConfig
    from lmadapt.runs import Run


def load_config(path=None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe (or the defaults) with `section.key=value` overrides."""
    from lmadapt.recipe import load_config as _load_config

    return _load_config(path, overrides)


def config_keys(prefix: str | None = None) -> list[ConfigKey]:
    """Every config key (dotted, e.g. train.epochs) with its type, default and help; `prefix` (a section such as
    data, or a key) keeps those under it. Each strategy's own options: `lmadapt strategies`."""
    from lmadapt.recipe import config_keys as _config_keys

    return _config_keys(prefix)


def train(
    config: RunConfig | str,
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Run | None:
    """Adapt a model as the config (object or YAML path) says; returns the finished run."""
    from lmadapt.config import RunConfig as _RunConfig
    from lmadapt.training.engine import train as _train

    if not isinstance(config, _RunConfig):
        config = load_config(config, overrides)
    return _train(config, resume=resume, overwrite=overwrite)


def load(path) -> Run:
    """Open a finished run folder (manifest verified): `.predict(texts)`, `.metrics`, `.labels`."""
    from lmadapt.runs import load_run

    return load_run(path)


def evaluate(run, data: str, **columns):
    """Metrics of a run on a labelled file; see lmadapt.evaluation.report.evaluate_run."""
    from lmadapt.evaluation.report import evaluate_run

    return evaluate_run(load(run) if not hasattr(run, "predictor") else run, data, **columns)


def merge(run, output, *, tolerance: float = 1e-4, overwrite: bool = False) -> dict:
    """Fold a LoRA/IA3 run's adapter into its backbone; see lmadapt.serving.merge.merge_run."""
    from lmadapt.serving.merge import merge_run

    return merge_run(load(run) if not hasattr(run, "predictor") else run, output, tolerance, overwrite)


def learn_continually(config: RunConfig | str, *, overrides: list[str] | None = None, overwrite: bool = False):
    """Learn the config's stream of experiences with each of `continual.methods`; see
    lmadapt.continual.learner.run_continual. Returns one StreamResult per method."""
    from lmadapt.config import RunConfig as _RunConfig
    from lmadapt.continual.learner import run_continual

    if not isinstance(config, _RunConfig):
        config = load_config(config, overrides)
    return run_continual(config, overwrite=overwrite)


def compare_strategies(
    config: RunConfig | str,
    strategies: list[str],
    output,
    limits=None,
    *,
    sort_by: str = "accuracy",
    progress=print,
    settings: dict[str, list[str]] | None = None,
    ray: str | None = None,
    ray_cpus: int | None = None,
):
    """Every strategy in `strategies` on the config's data, split and seed, each in its own process (with `ray`,
    an address as `lmadapt compare --ray` takes it, each in a Ray task of `ray_cpus` CPUs), with `settings`
    ({strategy: ["key=value", ...]}) for single strategies; the leaderboard files go into `output`. Returns the
    rows; see lmadapt.compare.leaderboard.compare."""
    from pathlib import Path

    from lmadapt.compare.leaderboard import compare as _compare
    from lmadapt.config import RunConfig as _RunConfig

    if not isinstance(config, _RunConfig):
        config = load_config(config)
    return _compare(
        config,
        strategies,
        Path(output),
        limits,
        sort_by=sort_by,
        progress=progress,
        settings=settings,
        ray=ray,
        ray_cpus=ray_cpus,
    )


def tune(
    config: RunConfig | str,
    *,
    budget_minutes: float,
    trials: int | None = None,
    output=None,
    overrides: list[str] | None = None,
    subset_above: int | None = None,
    subset_rows: int | None = None,
    search_space=None,
    progress=print,
    ray: str | None = None,
    ray_cpus: int | None = None,
    parallel: int | None = None,
):
    """Hyperparameter search over the strategy's search space (Optuna), then the best values trained on all rows;
    `lmadapt tune` from Python. `search_space` ({dotted key: FloatRange | IntRange | Choice}, see
    lmadapt.strategies.space) replaces the strategy's. With `ray` (local, auto or HOST:PORT) the trials run as Ray
    tasks, `ray_cpus` CPUs each, `parallel` at once. Returns a TuneResult; see lmadapt.tuning.search.tune."""
    from lmadapt.config import RunConfig as _RunConfig
    from lmadapt.tuning import SUBSET_ABOVE, SUBSET_ROWS
    from lmadapt.tuning.search import tune as _tune

    if not isinstance(config, _RunConfig):
        config = load_config(config, overrides)
    return _tune(
        config,
        budget_minutes=budget_minutes,
        trials=trials,
        output=output,
        subset_above=SUBSET_ABOVE if subset_above is None else subset_above,
        subset_rows=SUBSET_ROWS if subset_rows is None else subset_rows,
        space=search_space,
        progress=progress,
        ray=ray,
        ray_cpus=ray_cpus,
        parallel=parallel,
    )


def export(
    run, *, quantize: str | None = None, tolerance: float | None = None, min_agreement: float | None = None
) -> dict:
    """Write the run's ONNX graph (and int8 version) into its folder, checked against PyTorch; see
    lmadapt.serving.export.export_onnx."""
    from lmadapt.serving.export import export_onnx

    return export_onnx(load(run) if not hasattr(run, "predictor") else run, quantize, tolerance, min_agreement)


def predict(
    run, texts, *, pairs=None, backend: str = "auto", batch_size: int = 64, workers: int = 1, abstain: bool = True
) -> list[dict]:
    """Labels and label scores of `texts` (a string or a list) with a run (folder or Run), on the chosen inference
    path as `lmadapt predict` takes it; texts the run's backbone cannot read are refused. A run trained with
    out-of-scope detection also says of each text whether it `abstained` (its label is then the run's abstain
    label, e.g. unknown), and its `ood_score`; `abstain=False` answers the best label always."""
    predictor = _as_run(run).inference(backend, workers=workers, batch_size=batch_size)
    return predictor.predict(texts, pairs, abstain=abstain)


def embed(source, texts, *, batch_size: int = 64):
    """Sentence vectors of `texts` (a numpy array, one row a text); see `encoder`, which loads the model once for many
    calls."""
    return encoder(source, batch_size=batch_size)(texts)


def encoder(source, *, batch_size: int = 64, max_length: int | None = None):
    """A sentence encoder, loaded once: a function from texts to their vectors (a numpy array, one row a text). From an
    encoder folder `adapt_encoder` wrote (manifest verified): the adapted encoder. From a run (folder or Run): the
    adapted classifier's view of each text, the input of its classification head. From a backbone (packaged alias,
    local folder or hub id): its sentence-transformers embedding (mean pooling for a plain encoder). Texts the model
    cannot read are refused, as for predict. `max_length`: where texts are cut, in tokens, for a backbone or an encoder
    folder (None: the folder's own, 128 for a backbone); a run keeps its own."""
    from pathlib import Path

    from lmadapt.training.encoder import is_encoder_folder, load_encoder_folder

    if not hasattr(source, "predictor") and is_encoder_folder(Path(str(source))):
        return load_encoder_folder(source, batch_size=batch_size, max_length=max_length)
    if hasattr(source, "predictor") or (Path(str(source)) / "manifest.json").is_file():
        run = _as_run(source)
        return lambda texts: run.predictor.features(run.guard(texts, "the texts to embed"))
    from lmadapt.config import ModelConfig
    from lmadapt.inference.guard import checked_texts
    from lmadapt.models.language import require_readable
    from lmadapt.models.resolve import resolve_backbone
    from lmadapt.models.sentence_encoder import load_sentence_encoder
    from lmadapt.training.progress import quiet_libraries

    model = ModelConfig(backbone=str(source), **({"max_length": max_length} if max_length else {}))
    path = resolve_backbone(model.backbone)
    with quiet_libraries():
        sentence_encoder = load_sentence_encoder(path, model)

    def embed_texts(texts):
        texts = checked_texts(texts)
        require_readable(path, model, texts, where="the texts to embed")
        return sentence_encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    return embed_texts


def adapt_encoder(
    pairs,
    output,
    *,
    backbone: str = "minilm",
    epochs: float = 1,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    seed: int = 42,
    max_length: int = 128,
    freeze_embeddings: bool | None = None,
    max_unknown_share: float = 0.1,
    overwrite: bool = False,
):
    """Fine-tune a sentence encoder on (query, positive) text pairs with in-batch negatives (each query learns its
    own positive against the other pairs' in its batch) and write it as an encoder folder (atomic, with a manifest)
    at `output`; returns the folder's path, which `encoder` loads. `backbone`: packaged alias (minilm;
    e5-multilingual for other languages), local folder, an encoder folder, or hub id. Texts the backbone cannot read
    are refused. See lmadapt.training.encoder.adapt_encoder."""
    from lmadapt.training.encoder import adapt_encoder as _adapt_encoder

    return _adapt_encoder(
        pairs,
        output,
        backbone=backbone,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        max_length=max_length,
        freeze_embeddings=freeze_embeddings,
        max_unknown_share=max_unknown_share,
        overwrite=overwrite,
    )


def predict_file(
    run,
    source: str,
    output,
    *,
    text_column: str | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    abstain: bool = True,
) -> int:
    """Score every row of a data file into `output` (format from its extension), as `lmadapt predict --input`
    does; returns the rows written. See lmadapt.serving.batch.predict_file."""
    from lmadapt.serving.batch import predict_file as _predict_file

    loaded = _as_run(run)
    predictor = loaded.inference(backend, batch_size=batch_size)
    return _predict_file(loaded, source, output, text_column=text_column, predictor=predictor, abstain=abstain)


def predict_on_ray(
    run,
    source: str,
    output,
    address: str | None = None,
    *,
    text_column: str | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    abstain: bool = True,
    part_rows: int = 100_000,
    actors: int = 0,
) -> dict:
    """Score `source` (a file, folder or glob of Parquet/CSV/TSV/JSONL files) into the folder `output` as Parquet
    parts on the Ray cluster at `address` (None or "local": a Ray of this process; "auto"; or HOST:PORT), as
    `lmadapt predict --input ... --ray ADDRESS` does; resumable by part. Returns the rows and parts written now and
    the parts written before. See lmadapt.serving.ray_batch.predict_on_ray."""
    from lmadapt.serving.ray_batch import predict_on_ray as _predict_on_ray

    return _predict_on_ray(
        _as_run(run),
        source,
        output,
        address,
        text_column=text_column,
        backend=backend,
        batch_size=batch_size,
        abstain=abstain,
        part_rows=part_rows,
        actors=actors,
    )


def update(run, data: str, **options):
    """Learn new data on top of a run into a new run folder, the old untouched (`lmadapt update`); options:
    method, name, overrides, overwrite, progress, validation and test (files that measure the new experience
    instead of shares split off the new data). See lmadapt.continual.learner.update_run."""
    from lmadapt.continual.learner import update_run

    return update_run(run.path if hasattr(run, "predictor") else run, data, **options)


def fewshot(config: RunConfig | str, output, shots: list[int], seeds: int = 5, **options):
    """Accuracy against shots per class over seeds (`lmadapt fewshot`); options: strategies, zero_shot, full,
    split, progress. See lmadapt.compare.fewshot.fewshot_sweep."""
    from pathlib import Path

    from lmadapt.compare.fewshot import fewshot_sweep

    return fewshot_sweep(_as_config(config), Path(output), shots, seeds, **options)


def inspect(source: str, *, against=(), backbones=("minilm",), max_length: int = 128, **data) -> dict:
    """Label counts, lengths, scripts, unknown tokens, duplicates and leaks of a data source (`lmadapt data
    inspect`); `data`: DataConfig keys such as text_column, label_column, task. See lmadapt.models.inspect."""
    from lmadapt.config import DataConfig, build_dataclass, check_data_config
    from lmadapt.models.inspect import inspect_data

    config = build_dataclass(DataConfig, data, "data")
    check_data_config(config)
    backbones = list(backbones)
    return inspect_data(source, config, backbones[0] if backbones else None, list(against), max_length, backbones[1:])


def available_models() -> list:
    """The packaged backbones (`lmadapt models`), installed or not: alias, kind, size, licence, languages.
    Named so because `lmadapt.models` is the backbones' subpackage."""
    from lmadapt.models.packaged import PACKAGED_MODELS

    return list(PACKAGED_MODELS.values())


def available_strategies() -> list:
    """The registered strategies (`lmadapt strategies`): name, summary, config class with every option's help,
    default learning rate. Named so because `lmadapt.strategies` is their subpackage."""
    from lmadapt.strategies import STRATEGIES

    return list(STRATEGIES.values())


def _as_run(run) -> Run:
    return run if hasattr(run, "predictor") else load(run)


def _as_config(config) -> RunConfig:
    from lmadapt.config import RunConfig as _RunConfig

    return config if isinstance(config, _RunConfig) else load_config(config)


def create_app(runs, settings=None, routers=(), readers=None, pages=None):
    """The REST service (a FastAPI app) over run folders, with an application's routers, batched readers and
    pages; see lmadapt.serving.app.create_app."""
    from lmadapt.serving.app import create_app as _create_app

    return _create_app(
        [load(run) if not hasattr(run, "predictor") else run for run in runs], settings, routers, readers, pages
    )


__all__ = [
    "__version__",
    "adapt_encoder",
    "available_models",
    "available_strategies",
    "compare_strategies",
    "config_keys",
    "create_app",
    "embed",
    "encoder",
    "evaluate",
    "export",
    "fewshot",
    "inspect",
    "load",
    "learn_continually",
    "load_config",
    "merge",
    "predict",
    "predict_file",
    "predict_on_ray",
    "train",
    "tune",
    "update",
]
