"""The training engine: one path for every strategy, on transformers' Trainer (Accelerate underneath).

Dynamic padding, length-grouped batches, warm-up and decay, early stopping on validation macro-F1
with the best checkpoint restored, gradient accumulation, a checkpoint each epoch and resume,
seeded determinism, bf16 autocast where the hardware has it, and class-weighted loss when asked.
The same call runs unchanged under `accelerate launch --multi_gpu --num_processes N` (DDP, over
gloo on a CPU-only machine); only the main process writes the run folder.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path

import torch
import yaml

from lmadapt.config import RunConfig
from lmadapt.data.labels import MULTI_LABEL, LabelMap
from lmadapt.data.prepare import PreparedData, prepare_data
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.abstention import abstention_report, plot_abstention, read_split
from lmadapt.evaluation.metrics import classification_metrics, trainer_metrics, tune_threshold
from lmadapt.evaluation.plots import plot_training_curves, write_metric_plots
from lmadapt.inference.artifacts import save_model
from lmadapt.inference.predictor import Predictor, encode
from lmadapt.models.classifier import new_head_parameter_names
from lmadapt.models.contract import StrategyContext
from lmadapt.models.language import require_readable
from lmadapt.runs import Run, folder_bytes, load_run, workspace_folder, write_run_folder
from lmadapt.strategies import Strategy, get_strategy
from lmadapt.training.defaults import warmup_ratio, with_derived_defaults
from lmadapt.training.losses import class_weighted_loss
from lmadapt.training.ood import fit_detector, ood_methods
from lmadapt.training.progress import EpochLines

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Rank 0 (or a single process), known before the Trainer sets up distributed state."""
    return int(os.environ.get("RANK", "0")) == 0


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def use_bf16(config: RunConfig, strategy: Strategy) -> bool:
    if config.train.precision == "bf16":
        return True
    # bf16 autocast is for pretrained transformer backbones; the from-scratch LSTM keeps float32.
    return config.train.precision == "auto" and strategy.uses_backbone and bf16_supported()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_parameters(model) -> dict:
    # peft keeps an untrained copy of the head beside the trained one; it is not part of the model.
    counted = [p for name, p in model.named_parameters() if ".original_module." not in name]
    total = sum(p.numel() for p in counted)
    trainable = sum(p.numel() for p in counted if p.requires_grad)
    return {
        "trainable": trainable,
        "total": total,
        "trainable_pct": round(100.0 * trainable / max(total, 1), 4),
    }


def to_dataset(tokenizer, split: Split, labels: LabelMap, max_length: int) -> list[dict]:
    """Tokenised rows with their labels, as a list the Trainer indexes (and measures for length-grouped
    batches). Not a datasets.Dataset: its fingerprinting pickles the Arrow table with dill, which fails
    on Python 3.12 with datasets 5.2 and pyarrow 26 (seen on a GPU machine), and gains nothing here."""
    encoded = encode(tokenizer, split.texts, split.pairs, max_length)
    targets = labels.encode(split.labels).tolist()
    return [{**{key: encoded[key][i] for key in encoded}, "labels": targets[i]} for i in range(len(targets))]


def first_difference(saved: dict, current: dict, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two nested config dicts, or None when they agree."""
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} (was {a!r}, now {b!r})"
    return None


def _last_checkpoint(workspace: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = workspace / "checkpoints"
    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def _claim_workspace(workspace: Path, config: RunConfig, *, resume: bool, overwrite: bool, main: bool) -> str | None:
    """Set up the folder that holds checkpoints while training; returns the checkpoint to resume from."""
    if resume:
        return _resume_checkpoint(workspace, config)
    if main and workspace.exists():
        if _last_checkpoint(workspace) is not None and not overwrite:
            raise LmadaptError(
                f"an interrupted run named '{config.name}' has checkpoints in {workspace}",
                fix="pass --resume to continue it, or --overwrite to start over",
            )
        shutil.rmtree(workspace)
    if main:
        workspace.mkdir(parents=True, exist_ok=True)
        (workspace / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    return None


def _resume_checkpoint(workspace: Path, config: RunConfig) -> str | None:
    saved_path = workspace / "config.yaml"
    if not saved_path.is_file():
        raise LmadaptError(
            f"nothing to resume: no interrupted run named '{config.name}' in {workspace.parent}",
            fix="drop --resume to start the run",
        )
    difference = first_difference(yaml.safe_load(saved_path.read_text(encoding="utf-8")), config.to_dict())
    if difference:
        raise LmadaptError(
            f"the config differs from the interrupted run's: {difference}",
            where=str(saved_path),
            fix="resume with the same config and overrides, or start over with --overwrite",
        )
    return _last_checkpoint(workspace)


def _training_arguments(config: RunConfig, strategy: Strategy, workspace: Path):
    from transformers import TrainingArguments

    train = config.train
    selects = train.select_best  # config checks: early stopping implies it
    return TrainingArguments(
        output_dir=str(workspace / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate or strategy.default_learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=warmup_ratio(train, strategy),
        lr_scheduler_type=train.lr_scheduler if train.lr_scheduler != "constant" else "constant_with_warmup",
        eval_strategy="epoch" if selects else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=selects,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=train.logging_steps,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        bf16=use_bf16(config, strategy),
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def optimizer_with_head_rate(trainer, head_learning_rate: float):
    """The optimizer the Trainer would build, with the new head in its own group at its own rate."""
    model, args = trainer.model, trainer.args
    head = new_head_parameter_names(model)
    decayed = set(trainer.get_decay_parameter_names(model))
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((name in head, name in decayed), []).append(parameter)
    optimizer_class, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_class(
        [
            {
                "params": parameters,
                "lr": head_learning_rate if is_head else args.learning_rate,
                "weight_decay": args.weight_decay if is_decayed else 0.0,
            }
            for (is_head, is_decayed), parameters in groups.items()
        ],
        **optimizer_kwargs,
    )


def regularized_trainer_class(extra_loss):
    """A Trainer whose training loss also adds `extra_loss(model, inputs, outputs)` (EWC, LwF, ...)."""
    from transformers import Trainer

    class RegularizedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            if model.training:
                loss = loss + extra_loss(model, inputs, outputs)
            return (loss, outputs) if return_outputs else loss

    return RegularizedTrainer


def evaluate_splits(predictor: Predictor, data: PreparedData) -> dict:
    """Validation and test metrics; for multi-label the threshold is tuned on validation first."""
    labels = data.labels
    validation_scores = predictor.scores(data.validation.texts, data.validation.pairs)
    validation_true = labels.encode(data.validation.labels)
    if labels.task == MULTI_LABEL:
        labels.threshold = tune_threshold(validation_true, validation_scores)
    results = {"validation": classification_metrics(validation_true, validation_scores, labels, labels.threshold)}
    test_scores = predictor.scores(data.test.texts, data.test.pairs)
    results["test"] = classification_metrics(labels.encode(data.test.labels), test_scores, labels, labels.threshold)
    return results


def fit(
    config: RunConfig,
    strategy: Strategy,
    data: PreparedData,
    model,
    tokenizer,
    workspace: Path,
    *,
    resume: bool,
    overwrite: bool,
    main: bool,
    callbacks,
    extra_loss=None,
):
    """Train with the Trainer; returns the trained model, the log history and the training figures.

    `extra_loss(model, inputs, outputs)`: a term added to the training loss (continual learning's penalties).
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, ProgressCallback, Trainer

    checkpoint = _claim_workspace(workspace, config, resume=resume, overwrite=overwrite, main=main)
    args = _training_arguments(config, strategy, workspace)
    trainer_callbacks = list(callbacks)
    if config.train.early_stopping_patience:
        trainer_callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    trainer = (regularized_trainer_class(extra_loss) if extra_loss else Trainer)(
        model=model,
        args=args,
        train_dataset=to_dataset(tokenizer, data.train, data.labels, config.model.max_length),
        eval_dataset=to_dataset(tokenizer, data.validation, data.labels, config.model.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        compute_metrics=trainer_metrics(data.labels),
        compute_loss_func=class_weighted_loss(data.labels.class_weights(data.train.labels), data.labels.problem_type)
        if config.train.class_weights
        else None,
        callbacks=trainer_callbacks,
    )
    trainer.remove_callback(ProgressCallback)  # it prints every raw log dict; they go to train_log.jsonl
    trainer.add_callback(EpochLines())
    if config.train.head_learning_rate:
        trainer.optimizer = optimizer_with_head_rate(trainer, config.train.head_learning_rate)
    try:
        outcome = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        if main and _last_checkpoint(workspace) is None:
            shutil.rmtree(workspace, ignore_errors=True)  # nothing worth resuming
        raise
    if not trainer.is_world_process_zero():
        return None, [], {}
    training = {
        "runtime_s": round(outcome.metrics.get("train_runtime", 0.0), 2),
        "samples_per_s": round(outcome.metrics.get("train_samples_per_second", 0.0), 2),
        "epochs": round(trainer.state.epoch or 0.0, 3),
        "steps": trainer.state.global_step,
        "best_checkpoint_metric": trainer.state.best_metric,
        "precision": "bf16" if args.bf16 else "fp32",
        "learning_rate": args.learning_rate,
        "processes": args.world_size,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
    }
    return trainer.model, trainer.state.log_history, training


def readable_check(backbone: Path | None, config: RunConfig):
    """The language guard on the training texts as read (None without a pretrained backbone)."""
    if backbone is None:
        return None
    return lambda texts: require_readable(backbone, config.model, texts, where="the training texts")


def train(config: RunConfig, *, resume: bool = False, overwrite: bool = False, callbacks=()) -> Run | None:
    """Adapt a model as the config says and write its run folder. Returns the run (None off the main process)."""
    from transformers import set_seed

    started = time.perf_counter()
    final = Path(config.output_dir) / config.name
    workspace = workspace_folder(final)
    main = is_main_process()
    if main and final.exists() and not overwrite:
        raise LmadaptError(
            f"run folder already exists: {final}",
            fix="choose another name (--set name=...), or pass --overwrite",
        )

    # Everything the user can get wrong is checked before any folder is touched.
    set_seed(config.seed)
    strategy = get_strategy(config.strategy_name)
    backbone = strategy.backbone_path(config)
    data = prepare_data(config.data, config.seed, check_texts=readable_check(backbone, config), ood=config.ood)
    config, derived = with_derived_defaults(config, strategy, len(data.labels), len(data.train))
    context = StrategyContext(
        backbone, config.model, data.labels, data.train.texts, train_labels=list(data.train.labels)
    )
    prepared = strategy.prepare(context, config.strategy)
    model, tokenizer = prepared.model, prepared.tokenizer
    ood_methods_here = ood_methods(config, model, data) if config.ood.method != "none" else ()
    parameters = count_parameters(model)
    if strategy.uses_trainer:
        model, history, training = fit(
            config,
            strategy,
            data,
            model,
            tokenizer,
            workspace,
            resume=resume,
            overwrite=overwrite,
            main=main,
            callbacks=callbacks,
        )
        if model is None:
            return None
    else:
        history, training = [], strategy.own_training(prepared, data, config)

    prepared.model = model
    predictor = Predictor(model, tokenizer, data.labels, config.model.max_length, config.train.eval_batch_size)
    results = evaluate_splits(predictor, data)
    ood_files = None
    if ood_methods_here:
        predictor.ood = fit_detector(predictor, data, config, ood_methods_here)
        test = read_split(predictor, data.with_out_of_scope("test"), predictor.ood, data.out_of_scope)
        results["ood"] = {"validation": predictor.ood.calibration, "test": abstention_report(test)}

        def ood_files(folder: Path) -> None:
            predictor.ood.save(folder)
            plot_abstention(test, folder, f"{config.name}: test")

    metrics = {
        "strategy": config.strategy_name,
        "backbone": config.model.backbone if strategy.uses_backbone else None,
        "task": data.labels.task,
        **results,
        "parameters": parameters,
        "training": training | {"derived": derived},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "data": data.report,
    }

    save_run(
        final, config, strategy, backbone, prepared, data.labels, metrics, history, overwrite=overwrite, extra=ood_files
    )
    shutil.rmtree(workspace, ignore_errors=True)
    return load_run(final)


def save_run(
    final: Path,
    config: RunConfig,
    strategy: Strategy,
    backbone: Path | None,
    prepared,
    labels: LabelMap,
    metrics: dict,
    history: list[dict],
    *,
    overwrite: bool,
    extra=None,
) -> None:
    """Write the run folder (atomically, with its manifest): the trained `prepared.model` and its files,
    labels, config, metrics and plots; `extra(folder)` adds files of its own."""

    def fill(folder: Path) -> None:
        save_model(prepared.model, prepared.tokenizer, folder / "model", strategy, config.model.backbone, backbone)
        for name, text in prepared.files.items():
            (folder / "model" / name).write_text(text, encoding="utf-8")
        metrics["artifact_mb"] = round(folder_bytes(folder / "model") / 2**20, 3)
        labels.save(folder / "labels.json")
        (folder / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history), encoding="utf-8")
        write_metric_plots(folder, metrics["test"], labels, f"{config.name}: test")
        if history:
            plot_training_curves(history, folder / "training_curves.png", config.name)
        if extra:
            extra(folder)

    write_run_folder(final, fill, overwrite=overwrite)
