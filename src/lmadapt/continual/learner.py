"""Learning a stream of experiences with one method, measuring forgetting after each; comparing methods.

Each method's final model is a run folder (predict, evaluate and serve read it) that also holds what
the method needs to go on learning: the stream so far, the replay memory, the EWC anchor and Fisher.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import CONTINUAL_METHODS, ContinualConfig, RunConfig
from lmadapt.continual.memory import MEMORY_FILE, ReplayMemory
from lmadapt.continual.stream import Experience, build_stream, joined, source_name
from lmadapt.data.labels import LabelMap
from lmadapt.data.prepare import PreparedData, prepare_data
from lmadapt.data.split import concat_splits, split_from_rows, split_rows
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.evaluation.continual import stream_metrics
from lmadapt.evaluation.plots import plot_accuracy_matrix, plot_stream_comparison
from lmadapt.inference.ood import OodDetector
from lmadapt.inference.predictor import Predictor
from lmadapt.models.classifier import grow_head
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.language import require_readable
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.recipe import load_config
from lmadapt.runs import load_run, write_text_atomic
from lmadapt.strategies import get_strategy
from lmadapt.training.defaults import with_derived_defaults
from lmadapt.training.engine import count_parameters, evaluate_splits, fit, peak_rss_mb, save_run, to_dataset
from lmadapt.training.losses import diagonal_fisher, distillation_loss, ewc_penalty
from lmadapt.training.ood import fit_detector

STREAM_FILE = "stream.json"
EWC_FILE = "ewc.safetensors"
COMPARISON = "continual"


@dataclass
class StreamResult:
    """One method on one stream: the accuracy matrix (row i: after learning experience i) and its metrics."""

    method: str
    experiences: list[str]
    matrix: list[list[float]] = field(default_factory=list)
    initial: list[float] | None = None  # the untrained model's accuracy on each experience
    steps: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    path: Path | None = None

    def to_json(self) -> dict:
        raw = dataclasses.asdict(self)
        raw["path"] = str(self.path) if self.path else None
        return raw


@dataclass
class LearnerState:
    """What a method carries from one experience to the next."""

    labels: list[str] = field(default_factory=list)
    memory: ReplayMemory | None = None
    anchor: dict | None = None  # EWC: the weights after the last experience
    fisher: dict | None = None  # EWC: their accumulated Fisher information
    teacher: torch.nn.Module | None = None  # LwF: a frozen copy of the model after the last experience


def accuracy_on(predictor, experience: Experience) -> float:
    """Share of the experience's test rows whose label is predicted (a label the model lacks counts as wrong)."""
    predicted = predictor.decide(predictor.scores(experience.test.texts, experience.test.pairs))
    return statistics.fmean(p == t for p, t in zip(predicted, experience.test.labels))


def evaluate_stream(model, tokenizer, labels: LabelMap, stream: list[Experience], config: RunConfig) -> list[float]:
    predictor = Predictor(model, tokenizer, labels, config.model.max_length, config.train.eval_batch_size)
    return [round(accuracy_on(predictor, experience), 6) for experience in stream]


def _single_examples(tokenizer, split, labels: LabelMap, config: RunConfig, device):
    """One collated example at a time (EWC's Fisher needs each example's own gradient)."""
    from transformers import DataCollatorWithPadding

    rows = list(range(len(split)))
    random.Random(config.seed).shuffle(rows)
    sample = split.take(sorted(rows[: config.continual.fisher_samples]))
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    for row in to_dataset(tokenizer, sample, labels, config.model.max_length):
        yield {key: value.to(device) for key, value in collate([row]).items()}


def consolidate(model, tokenizer, experience: Experience, labels: LabelMap, config: RunConfig, state: LearnerState):
    """Online EWC (Schwarz et al. 2018): the new experience's Fisher added to the decayed old one; the
    anchor moves to the weights just learned."""
    names = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    device = next(model.parameters()).device
    fisher = diagonal_fisher(model, _single_examples(tokenizer, experience.train, labels, config, device), names)
    for name, old in (state.fisher or {}).items():
        if name in fisher:
            fisher[name][: old.shape[0]] += config.continual.ewc_decay * old  # a grown head's old rows come first
    state.fisher = fisher
    state.anchor = {name: p.detach().clone() for name, p in model.named_parameters() if name in names}


def extra_loss(continual: ContinualConfig, state: LearnerState):
    """The term the method adds to the training loss, or None."""
    if continual.method == "ewc" and state.anchor is not None:
        anchor, fisher = state.anchor, state.fisher
        return lambda model, inputs, outputs: ewc_penalty(model, anchor, fisher, continual.ewc_lambda)
    if continual.method == "lwf" and state.teacher is not None:
        teacher = state.teacher

        def distill(model, inputs, outputs):
            with torch.no_grad():
                taught = teacher(**{key: value for key, value in inputs.items() if key != "labels"}).logits
            return continual.lwf_alpha * distillation_loss(outputs.logits, taught, continual.lwf_temperature)

        return distill
    return None


def require_method(name: str, option: str) -> None:
    """An unknown method is named with the option the user gave it in, not the config key it sets."""
    if name not in CONTINUAL_METHODS:
        raise LmadaptError(
            f"unknown continual method '{name}'", where=option, fix=did_you_mean(name, CONTINUAL_METHODS)
        )


def _check_learnable(config: RunConfig, updating: bool = False) -> None:
    strategy = get_strategy(config.strategy_name)
    if not strategy.uses_trainer or strategy.artifact is TRAINED_TENSORS:
        raise LmadaptError(
            f"continual learning trains a classifier with a linear head step by step; strategy '{strategy.name}' "
            "does not",
            where="strategy.name",
            fix="use full or lora",
        )
    if config.ood.method != "none" and not updating:
        raise LmadaptError(
            f"a stream of experiences does not fit out-of-scope detection (ood.method={config.ood.method}): each "
            "step's classes differ",
            where="ood.method",
            fix="set ood.method=none for `lmadapt continual`; `lmadapt update` refits a run's detector",
        )


def learn_stream(
    config: RunConfig, stream: list[Experience], method: str, output: Path, progress=print
) -> StreamResult:
    """Learn the stream with `method` and write the final model's run folder to output/<method>."""
    from transformers import set_seed

    started = time.perf_counter()
    config = dataclasses.replace(config, continual=dataclasses.replace(config.continual, method=method))
    continual = config.continual
    _check_learnable(config)
    strategy = get_strategy(config.strategy_name)
    set_seed(config.seed)
    backbone = strategy.backbone_path(config)
    if backbone is not None:
        require_readable(
            backbone, config.model, [t for e in stream for t in e.train.texts], "the stream's training texts"
        )
    steps = [joined(stream, "all experiences")] if method == "joint" else stream
    memory = ReplayMemory(continual.memory_size, continual.memory_policy, config.seed) if method == "replay" else None
    learning = Learning(config, stream, LearnerState(memory=memory), StreamResult(method, [e.name for e in stream]))
    first = LabelMap(steps[0].labels)
    context = StrategyContext(backbone, config.model, first, steps[0].train.texts)
    learning.prepared = strategy.prepare(context, config.strategy)
    learning.result.initial = evaluate_stream(
        learning.prepared.model, learning.prepared.tokenizer, first, stream, config
    )
    for step in steps:
        learning.learn(step, output / f".{method}.partial", progress)
    learning.save(output / method, started)
    return learning.result


@dataclass
class Learning:
    """A model part-way along a stream: it learns the next experience, and is saved as a run folder."""

    config: RunConfig
    stream: list[Experience]  # every experience it is evaluated on (those learnt, and the one being learnt)
    state: LearnerState
    result: StreamResult
    prepared: Any = None  # PreparedModel: the model and its tokenizer
    history: list[dict] = field(default_factory=list)
    ood: OodDetector | None = None  # an updated run's detector, refitted on what the model has become

    @property
    def labels(self) -> LabelMap:
        return LabelMap(list(self.state.labels))

    def learn(self, experience: Experience, workspace: Path, progress) -> None:
        config, state, method = self.config, self.state, self.config.continual.method
        state.labels += [label for label in experience.labels if label not in state.labels]
        grow_head(self.prepared.model, self.labels)
        train = experience.train
        if state.memory is not None and state.memory.examples:
            train = concat_splits([train, state.memory.split()])
        data = PreparedData(train, experience.validation, experience.test, self.labels, report={})
        number = len(self.result.steps) + 1
        progress(f"{method}: {experience.name} (step {number}), {len(train)} training rows")
        strategy = get_strategy(config.strategy_name)
        step_config, derived = with_derived_defaults(config, strategy, len(self.labels), len(train))
        model, log, training = fit(
            dataclasses.replace(step_config, name=f"{config.name}-{method}-{number}"),
            strategy,
            data,
            self.prepared.model,
            self.prepared.tokenizer,
            workspace,
            resume=False,
            overwrite=True,
            main=True,
            callbacks=(),
            extra_loss=extra_loss(config.continual, state),
        )
        shutil.rmtree(workspace, ignore_errors=True)
        self.prepared.model = model
        self.history += [{**entry, "experience": number} for entry in log]
        if state.memory is not None:
            state.memory.add(experience.train)
        if method == "ewc":
            consolidate(model, self.prepared.tokenizer, experience, self.labels, config, state)
        if method == "lwf":
            state.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.result.matrix.append(evaluate_stream(model, self.prepared.tokenizer, self.labels, self.stream, config))
        steps = {"experience": experience.name, "rows": len(train), "labels": len(self.labels), **training}
        steps["derived"] = derived
        self.result.steps.append(steps)

    def save(self, final: Path, started: float, *, overwrite: bool = True) -> None:
        """The run folder: the model, metrics over every experience, the stream so far and the method's state."""
        config, result, state, labels = self.config, self.result, self.state, self.labels
        result.metrics = stream_metrics(result.matrix, result.initial)
        result.path = final
        everything = joined(self.stream, "all experiences")
        model, tokenizer = self.prepared.model, self.prepared.tokenizer
        predictor = Predictor(model, tokenizer, labels, config.model.max_length, config.train.eval_batch_size)
        final_data = PreparedData(everything.train, everything.validation, everything.test, labels, report={})
        detector = self.refit_detector(predictor) if self.ood is not None else None
        metrics = {
            "strategy": config.strategy_name,
            "backbone": config.model.backbone,
            "task": labels.task,
            **evaluate_splits(predictor, final_data),
            "continual": {
                "method": result.method,
                **result.metrics,
                "matrix": result.matrix,
                "initial": result.initial,
            },
            **({"ood": {"validation": detector.calibration}} if detector is not None else {}),
            "parameters": count_parameters(model),
            "training": {
                "runtime_s": round(sum(step.get("runtime_s", 0.0) for step in result.steps), 2),
                "steps": result.steps,
            },
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }

        def extra(folder: Path) -> None:
            stream_record = result.to_json() | {"path": None, "tests": [split_rows(e.test) for e in self.stream]}
            (folder / STREAM_FILE).write_text(json.dumps(stream_record, ensure_ascii=False) + "\n", encoding="utf-8")
            names, title = result.experiences, f"{config.name}: {result.method}"
            plot_accuracy_matrix(result.matrix, names, folder / "accuracy_matrix.png", title)
            for i in range(len(result.matrix)):
                step = folder / "steps" / str(i + 1)
                step.mkdir(parents=True)
                # After step i the experiences learnt are the first i + 1 (joint learns them all at once).
                seen = len(names) if result.method == "joint" else i + 1
                initial = result.initial[:seen] if result.initial else None
                so_far = stream_metrics([row[:seen] for row in result.matrix[: i + 1]], initial)
                step_metrics = {**result.steps[i], "accuracy": dict(zip(names, result.matrix[i])), **so_far}
                (step / "metrics.json").write_text(json.dumps(step_metrics, indent=2) + "\n", encoding="utf-8")
                plot_accuracy_matrix(
                    result.matrix[: i + 1], names, step / "accuracy_matrix.png", f"{title}, step {i + 1}"
                )
            if state.memory is not None:
                state.memory.save(folder)
            if detector is not None:
                detector.save(folder)
            if state.anchor is not None:
                from safetensors.torch import save_file

                tensors = {f"anchor.{k}": v for k, v in state.anchor.items()}
                tensors |= {f"fisher.{k}": v for k, v in state.fisher.items()}
                save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(folder / EWC_FILE))

        strategy = get_strategy(config.strategy_name)
        backbone = strategy.backbone_path(config)
        save_run(
            final,
            config,
            strategy,
            backbone,
            self.prepared,
            labels,
            metrics,
            self.history,
            overwrite=overwrite,
            extra=extra,
        )

    def refit_detector(self, predictor: Predictor) -> OodDetector:
        """The run's out-of-scope method fitted again: its statistics on the newest rows and the replay memory, its
        threshold on the newest validation rows; the out-of-scope labels it knew stay out of scope."""
        newest = self.stream[-1]
        train = newest.train
        if self.state.memory is not None and self.state.memory.examples:
            train = concat_splits([train, self.state.memory.split()])
        data = PreparedData(train, newest.validation, newest.test, self.labels, report={})
        ood = dataclasses.replace(self.config.ood, method=self.ood.method)
        detector = fit_detector(predictor, data, dataclasses.replace(self.config, ood=ood), (self.ood.method,))
        detector.out_of_scope_labels = list(self.ood.out_of_scope_labels)
        return detector


def _run_so_far(run, config: RunConfig) -> tuple[list[Experience], StreamResult, PreparedData | None]:
    """The experiences a run has learnt (only their test rows are kept) and its record; a run from
    `lmadapt train` is one experience, its own data (returned as well: replay and EWC start from it)."""
    record = run.path / STREAM_FILE
    if record.is_file():
        raw = json.loads(record.read_text(encoding="utf-8"))
        tests = raw.pop("tests")
        result = StreamResult(**{**raw, "path": None})
        empty = split_from_rows([])
        return (
            [Experience(n, empty, empty, split_from_rows(t)) for n, t in zip(result.experiences, tests)],
            result,
            None,
        )
    try:  # with the run's out-of-scope settings, its out-of-scope rows are set apart as when it was trained
        own = prepare_data(config.data, config.seed, ood=config.ood if config.ood.method != "none" else None)
    except LmadaptError as error:
        # Not the new data's problem: say whose data it is (the user may have moved or changed it since).
        raise LmadaptError(
            f"the data the run was trained on (its old experience, which the update is measured on) cannot be "
            f"read: {error.what}",
            where=error.where or f"{run.path / 'config.yaml'}, data section",
            fix="put it back where the run's config says, or give its new place with --set data.train=PATH "
            "(and data.validation / data.test if it had them)",
        ) from None
    name = source_name(config.data.train)
    steps = [{"experience": name, "rows": len(own.train), "labels": len(own.labels), **run.metrics.get("training", {})}]
    return (
        [Experience(name, own.train, own.validation, own.test)],
        StreamResult(config.continual.method, [name], steps=steps),
        own,
    )


def update_run(
    run_path: str | Path,
    data: str,
    *,
    method: str | None = None,
    name: str | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    progress=print,
    validation: str | None = None,
    test: str | None = None,
) -> StreamResult:
    """Learn new data on top of a finished run, into a new run folder beside it; the old one is untouched.

    The new rows may show a single label (the run's others are kept by the method). `validation` and `test` (files
    of the run's labels) measure the new experience instead of shares split off the new data, which a few rows
    (a support queue's corrections) cannot spare.

    The method (`continual.method`, default replay) goes on with what the run folder keeps: its replay
    memory, its EWC anchor and Fisher information, or the run itself as LwF's teacher. A run trained by
    `lmadapt train` starts them from its own training data. Old experiences are evaluated again on their
    test rows, so the new run's accuracy matrix shows what the update made it forget.
    """
    started = time.perf_counter()
    if method:
        require_method(method, "--method")
    run = load_run(run_path)
    config = load_config(
        run.path / "config.yaml", [*(overrides or []), *([f"continual.method={method}"] if method else [])]
    )
    if config.continual is None:
        config = dataclasses.replace(config, continual=ContinualConfig())
    method = config.continual.method
    if method == "joint":
        raise LmadaptError(
            "joint training learns every experience at once; it cannot add data to a run",
            where="--method",
            fix="update with replay, ewc, lwf or naive (or retrain on all the data with `lmadapt train`)",
        )
    _check_learnable(config, updating=True)
    name = name or f"{run.name}-{method}-update"
    final = run.path.parent / name
    if final.resolve() == run.path.resolve():
        raise LmadaptError(
            "the updated run would replace the run it starts from", where="--name", fix="choose another name"
        )
    if final.exists() and not overwrite:
        raise LmadaptError(f"run folder already exists: {final}", fix="choose another --name, or pass --overwrite")
    config = dataclasses.replace(config, name=name)
    new_data = prepare_data(
        dataclasses.replace(config.data, train=data, validation=validation, test=test),
        config.seed,
        known_labels=run.labels.labels,
    )
    detector = run.predictor.ood
    if detector is not None and detector.out_of_scope_labels and detector.ood_class is None:
        new_data = without_labels(new_data, detector.out_of_scope_labels)
    new = Experience(source_name(data), new_data.train, new_data.validation, new_data.test)
    old, result, own = _run_so_far(run, config)
    # A clear error now if the backbone is not available or cannot read the new texts.
    backbone = get_strategy(config.strategy_name).backbone_path(config)
    if backbone is not None:
        require_readable(backbone, config.model, new.train.texts, "the new training texts")
    prepared = PreparedModel(run.load_model(trainable=True), run.load_tokenizer())
    state = LearnerState(labels=list(run.labels.labels))
    if method == "replay":
        if (run.path / MEMORY_FILE).is_file():
            state.memory = ReplayMemory.load(run.path)
        else:
            state.memory = ReplayMemory(config.continual.memory_size, config.continual.memory_policy, config.seed)
            if own is not None:
                state.memory.add(own.train)
    if method == "ewc":
        if (run.path / EWC_FILE).is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(run.path / EWC_FILE))
            state.anchor = {k.removeprefix("anchor."): v for k, v in tensors.items() if k.startswith("anchor.")}
            state.fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
        elif own is not None:
            consolidate(prepared.model, prepared.tokenizer, old[0], run.labels, config, state)
        else:
            raise LmadaptError(
                "this run keeps no Fisher information (it was not learnt with ewc), and its training data is not kept",
                where=str(run.path),
                fix="update it with replay, lwf or naive",
            )
    if method == "lwf":
        state.teacher = copy.deepcopy(prepared.model).eval().requires_grad_(False)
    stream = [*old, new]
    # The row of the run as it is, now also on the new data: the accuracy just before learning it.
    before = evaluate_stream(prepared.model, prepared.tokenizer, run.labels, stream, config)
    result.matrix = [row + [None] for row in result.matrix[:-1]] + [before]
    result.initial = [*result.initial, None] if result.initial else None
    result.method, result.experiences = method, [e.name for e in stream]
    learning = Learning(config, stream, state, result, prepared, ood=detector)
    learning.learn(new, run.path.parent / f".{name}.partial", progress)
    learning.save(final, started, overwrite=overwrite)
    return learning.result


def without_labels(data: PreparedData, labels: list[str]) -> PreparedData:
    """The data without the rows of `labels` (out-of-scope rows a run's detector is not trained on)."""

    def kept(split):
        return split.drop(split.rows_of(labels))

    return dataclasses.replace(data, train=kept(data.train), validation=kept(data.validation), test=kept(data.test))


def _finished(final: Path) -> StreamResult | None:
    if not (final / "manifest.json").is_file() or not (final / STREAM_FILE).is_file():
        return None
    raw = json.loads((final / STREAM_FILE).read_text(encoding="utf-8"))
    raw.pop("tests", None)
    return StreamResult(**{**raw, "path": final})


def run_continual(config: RunConfig, *, overwrite: bool = False, progress=print) -> list[StreamResult]:
    """Every method on the config's stream, one run folder each under <output_dir>/<name>/, with a
    comparison (continual.json, .md and .png). Finished methods are read back unless `overwrite`."""
    if config.continual is None:
        config = dataclasses.replace(config, continual=ContinualConfig())
    methods = config.continual.methods or list(CONTINUAL_METHODS)
    output = Path(config.output_dir) / config.name
    stream = build_stream(config)
    results = []
    for method in methods:
        done = None if overwrite else _finished(output / method)
        results.append(done or learn_stream(config, stream, method, output, progress))
    rows = [{"method": r.method, **{k: v for k, v in r.metrics.items()}, "path": str(r.path)} for r in results]
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / f"{COMPARISON}.json", json.dumps(rows, indent=2) + "\n")
    write_text_atomic(output / f"{COMPARISON}.md", markdown_table(results) + "\n")
    plot_stream_comparison(rows, output / f"{COMPARISON}.png", f"{config.name}: {len(stream)} experiences")
    return results


def markdown_table(results: list[StreamResult]) -> str:
    def points(value):
        return "-" if value is None else f"{100 * value:.2f}"

    lines = [
        f"Stream: {' -> '.join(results[0].experiences)}",
        "",
        "| method | average accuracy | forgetting | backward transfer | forward transfer | training s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        seconds = sum(step.get("runtime_s", 0.0) for step in r.steps)
        lines.append(
            f"| {r.method} | {points(m['average_accuracy'])} | {points(m['forgetting'])} | "
            f"{points(m['backward_transfer'])} | {points(m['forward_transfer'])} | {seconds:.0f} |"
        )
    return "\n".join(lines)
