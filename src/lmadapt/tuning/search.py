"""`lmadapt tune`: a hyperparameter search with Optuna over the strategy's search space, then one final run.

- Space: the one declared beside the strategy (lmadapt.strategies.space); each trial's values apply to the config
  as `--set` overrides. A strategy that does not train has none and is refused.
- Sampler: TPE, seeded from the config's seed (plus the number of trials already in the study, so a resumed search
  does not draw its first trials again). The first trial is the recipe a user gets without a search: the config's
  values, with what it leaves empty derived from the data (lmadapt.training.defaults), brought inside the space.
- Pruner: Hyperband over epochs. Every trial reports its validation macro-F1 after each epoch; Hyperband runs
  successive halving in several brackets with different minimum epochs, so a slow starter is not always cut after
  the first. Epochs are the fidelity Optuna prunes on natively (intermediate values by step); halving over data
  size would mean a new training per size, which Optuna has no pruner for. Large data is handled up front instead:
  when the training split has more rows than `subset_above`, trials train on a seeded, stratified subset of
  `subset_rows` (data.max_train_rows), and only the final run reads all rows.
- Objective: validation macro-F1; the test split is never read for the search.
- Storage: SQLite, study.db in the output folder: running the same command again resumes the study with a new
  budget. The study keeps the config it started with; another config in the same folder is refused.
- Budget: the whole command's. A trial starts only while the time left covers a trial and the final training, both
  estimated from the trials' measured times (the final from the completed trials', scaled to all rows); a
  running trial is not cut short.
- Disk: each trial trains into its own scratch folder, deleted once its figures are read (run_trial).
- Ray (`ray=ADDRESS`): the trials run as Ray tasks, several at once, with Optuna's ask-and-tell interface here: a
  trial is asked (and its values drawn) here, trained by a task (`trial_on_ray`) and told its outcome here. A task
  reports its epochs and asks whether to stop through the study itself, which it opens by its SQLite URL (Optuna's
  way for several processes): the output folder, and the data, must lie where every node sees them under the same
  path (a cluster on one machine, or a shared filesystem). The final run trains here.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lmadapt.cluster import check_ray_options
from lmadapt.config import RunConfig, require_positive
from lmadapt.data.prepare import prepare_data
from lmadapt.errors import LmadaptError
from lmadapt.runs import Run, load_run, write_text_atomic
from lmadapt.strategies import get_strategy
from lmadapt.strategies.space import Choice, Dimension, FloatRange, IntRange, SearchSpace
from lmadapt.training.defaults import warmup_ratio, with_derived_defaults
from lmadapt.training.engine import first_difference, train
from lmadapt.tuning import SUBSET_ABOVE, SUBSET_ROWS
from lmadapt.tuning.report import value_text, write_plots, write_report, write_trials_csv
from lmadapt.tuning.trial import EpochReports, run_trial, trial_config

STUDY_DB = "study.db"
STUDY_NAME = "lmadapt-tune"
BEST_YAML = "best.yaml"
SCRATCH = ".trials"  # each trial's run folder while it trains
CONFIG_ATTR = "config"  # the study's user attribute that keeps the config the search started with
# A trial that raises one of these (out of memory at a large batch, say) is a failed trial; the search goes on.
FAILED_TRIAL = (RuntimeError,)


@dataclass
class TuneResult:
    """What a search found: its folder, the trials by state, the best trial's values and score, the final run."""

    folder: Path
    completed: int
    pruned: int
    failed: int
    best_value: float
    best_params: dict[str, Any]
    run: Run


def search_space(config: RunConfig, override: SearchSpace | None = None) -> SearchSpace:
    """The space to search: `override`, or the one declared beside the config's strategy."""
    strategy = get_strategy(config.strategy_name)
    space = override if override is not None else strategy.search_space
    if not space:
        raise LmadaptError(
            f"strategy '{strategy.name}' has nothing to tune: it does not train",
            where="strategy.name",
            fix="tune a strategy that trains, e.g. lora, head or full (`lmadapt strategies` lists what each searches)",
        )
    return space


def _values(dimension: Dimension) -> tuple:
    """The values of a dimension that bound what a trial can give (its ends, or every option)."""
    return dimension.options if isinstance(dimension, Choice) else (dimension.low, dimension.high)


def check_space(raw: Mapping[str, Any], space: SearchSpace) -> None:
    """Every key of the space is a config key that takes the values the space can give, checked as a trial's
    config is built: a mistake is one error before the first trial, naming the key."""
    for key, dimension in space.items():
        if not isinstance(dimension, (FloatRange, IntRange, Choice)):
            raise LmadaptError(
                f"search space key '{key}' is a {type(dimension).__name__}",
                where=f"search space: {key}",
                fix="give a FloatRange, IntRange or Choice (lmadapt.strategies.space)",
            )
        if not isinstance(dimension, Choice) and dimension.low > dimension.high:
            raise LmadaptError(
                f"search space key '{key}' has low {dimension.low} above high {dimension.high}",
                where=f"search space: {key}",
                fix="swap them",
            )
        for value in _values(dimension):
            try:
                trial_config(raw, {key: value})
            except LmadaptError as error:
                raise LmadaptError(
                    f"search space key '{key}' (value {value!r}): {error.what}",
                    where=f"search space: {key}",
                    fix=error.fix or "give values the config key takes (`lmadapt keys`, `lmadapt strategies`)",
                ) from None


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """A trial's values, drawn by Optuna from each dimension."""
    values = {}
    for key, dimension in space.items():
        if isinstance(dimension, FloatRange):
            values[key] = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
        elif isinstance(dimension, IntRange):
            values[key] = trial.suggest_int(key, dimension.low, dimension.high, step=dimension.step, log=dimension.log)
        else:
            values[key] = trial.suggest_categorical(key, list(dimension.options))
    return values


def _inside(dimension: Dimension, value: Any) -> tuple[bool, Any]:
    """(whether `dimension` can hold a value near `value`, that value): a number clamped into a range; an option
    as it is."""
    if isinstance(dimension, Choice):
        return value in dimension.options, value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False, None
    clamped = min(dimension.high, max(dimension.low, value))
    return True, round(clamped) if isinstance(dimension, IntRange) else float(clamped)


def default_trial(config: RunConfig, space: SearchSpace, classes: int, rows: int) -> dict[str, Any]:
    """The first trial's values: the config's own, with what it leaves empty derived from the data as training
    derives it (lmadapt.training.defaults), each brought inside its dimension; a key with no such value is left
    to the sampler. The search starts from the recipe a user gets without it."""
    strategy = get_strategy(config.strategy_name)
    derived = with_derived_defaults(config, strategy, classes, rows)[0]
    resolved = derived.to_dict()
    resolved["train"]["warmup_ratio"] = warmup_ratio(derived.train, strategy)
    values = {}
    for key, dimension in space.items():
        section, name = key.split(".")
        fits, value = _inside(dimension, (resolved.get(section) or {}).get(name))
        if fits:
            values[key] = value
    return values


def _training_size(config: RunConfig) -> tuple[int, int]:
    """Training rows and classes, read as a run reads the data (a data mistake stops here); the data itself is not
    kept through the search, whose trials read it again."""
    data = prepare_data(config.data, config.seed, ood=config.ood)
    return len(data.train), len(data.labels)


def storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / STUDY_DB).resolve()}"


def pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")


def open_study(folder: Path, config: RunConfig) -> optuna.Study:
    """The study in `folder`/study.db, created or resumed; one started with another config is refused."""
    path = folder / STUDY_DB
    storage = storage_url(folder)
    existing = None
    if path.exists():
        try:
            existing = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        except KeyError:
            raise LmadaptError(
                f"{path} holds no study of lmadapt tune",
                where=str(path),
                fix="choose another --output folder (or move that file away)",
            ) from None
    if existing is not None:
        difference = first_difference(existing.user_attrs.get(CONFIG_ATTR) or {}, config.to_dict())
        if difference:
            raise LmadaptError(
                f"{folder} holds a search of another config: {difference}",
                where=str(path),
                fix="run it with the search's config and --set overrides to resume it, or choose another --output",
            )
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        # Seeded past the trials the study holds: a resumed search draws new values, not its first trials' again.
        sampler=optuna.samplers.TPESampler(seed=config.seed + (len(existing.trials) if existing else 0)),
        pruner=pruner(),
    )
    if existing is None:
        study.set_user_attr(CONFIG_ATTR, config.to_dict())
    return study


def _seconds(trials) -> list[float]:
    return [t.duration.total_seconds() for t in trials if t.duration is not None]


class Budget:
    """Stops the study when the time left would not cover another trial and the final training."""

    def __init__(self, seconds: float, final_scale: float):
        self.seconds = seconds
        self.final_scale = final_scale  # all training rows / a trial's
        self.started = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def final_estimate(self, study: optuna.Study) -> float:
        complete = _seconds(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return self.final_scale * sum(complete) / len(complete) if complete else 0.0

    def allows_another(self, study: optuna.Study) -> bool:
        finished = _seconds(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        trial = sum(finished) / len(finished) if finished else 0.0
        return self.left() > trial + self.final_estimate(study)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.allows_another(study):
            study.stop()


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One console line per finished trial: its outcome, the best so far, its seconds and values."""
    seconds = f"{trial.duration.total_seconds():.0f}s" if trial.duration else "-"
    if trial.state == TrialState.COMPLETE:
        outcome = f"validation macro-F1 {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned after epoch {trial.last_step}"
    else:
        outcome = f"failed: {trial.user_attrs.get('error', 'see the log')}"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value) if complete else None
    best_text = f"best {best.value:.4f} (trial {best.number})" if best else "best -"
    values = ", ".join(f"{k}={value_text(v)}" for k, v in trial.params.items())
    return f"trial {trial.number}: {outcome} | {best_text} | {seconds} | {values}"


def evaluate(trial: optuna.Trial, raw: Mapping[str, Any], values: Mapping[str, Any], folder: Path) -> float:
    """A trial's score: `raw` with `values` trained into `folder` (run_trial), its validation macro-F1 reported to
    Optuna after each epoch and optuna.TrialPruned raised when the pruner says so. Its validation accuracy and
    training rows, or the first line of its error, are kept on the trial."""

    def report(value: float, epoch: int) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    try:
        figures = run_trial(raw, values, folder, [EpochReports(report)])
    except FAILED_TRIAL as error:
        trial.set_user_attr("error", str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise
    trial.set_user_attr("validation_accuracy", figures["validation"]["accuracy"])
    trial.set_user_attr("train_rows", figures["train_rows"])
    return figures["score"]


def trial_on_ray(
    storage: str, trial_id: int, raw: Mapping[str, Any], values: Mapping[str, Any], folder: str
) -> tuple[TrialState, float | None]:
    """One trial as a Ray task: the study opened by its storage URL, the trial the driver asked for taken up by its
    id, `evaluate` run on it. Returns the state to tell and the score (None unless complete)."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage, pruner=pruner())
    trial = optuna.trial.Trial(study, trial_id)
    try:
        return TrialState.COMPLETE, evaluate(trial, raw, values, Path(folder))
    except optuna.TrialPruned:
        return TrialState.PRUNED, None
    except FAILED_TRIAL:
        return TrialState.FAIL, None


def search_on_ray(
    study: optuna.Study,
    budget: Budget,
    trials: int | None,
    space: SearchSpace,
    raw: Mapping[str, Any],
    folder: Path,
    progress: Callable[[str], None],
    address: str,
    cpus: int | None = None,
    parallel: int | None = None,
) -> None:
    """The search with each trial a Ray task (`trial_on_ray`, `cpus` CPUs each, default all of a node's, and a
    GPU where the cluster has them), `parallel` at once (default as many as the cluster has room for). A trial is
    asked only while the budget allows another and fewer than `trials` were asked; each is told its outcome as its
    task ends. An error of ours in a trial stops the search with that error, as locally; a worker that dies
    (killed for memory, say) is a failed trial."""
    from lmadapt.cluster import connect, task_resources, unwrap

    ray = connect(address)
    cpus, gpus, slots = task_resources(cpus)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(trial_on_ray)
    slots = parallel or slots
    storage, asked, running = storage_url(folder), 0, {}
    try:
        while True:
            while len(running) < slots and (trials is None or asked < trials) and budget.allows_another(study):
                trial = study.ask()
                values = suggest(trial, space)
                scratch = folder / SCRATCH / f"trial-{trial.number:04d}"
                # The task takes the trial up by its storage id, which Optuna keeps on the trial alone.
                running[task.remote(storage, trial._trial_id, raw, values, str(scratch))] = trial
                asked += 1
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                trial = running.pop(ref)
                try:
                    state, score = ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    study.tell(trial, state=TrialState.FAIL)
                    raise unwrap(error) from None
                except ray.exceptions.RayError as error:
                    trial.set_user_attr("error", str(error).strip().splitlines()[-1][:500])
                    state, score = TrialState.FAIL, None
                progress(trial_line(study, study.tell(trial, score, state=state)))
    finally:  # stopped by an error or an interrupt: the trials still running end, failed
        for ref, trial in running.items():
            ray.cancel(ref, force=True)
            study.tell(trial, state=TrialState.FAIL)


def tune(
    config: RunConfig,
    *,
    budget_minutes: float,
    trials: int | None = None,
    output: Path | None = None,
    subset_above: int = SUBSET_ABOVE,
    subset_rows: int = SUBSET_ROWS,
    space: SearchSpace | None = None,
    progress: Callable[[str], None] = print,
    ray: str | None = None,
    ray_cpus: int | None = None,
    parallel: int | None = None,
) -> TuneResult:
    """Search the strategy's space (or `space`) for the best validation macro-F1 within `budget_minutes` (the whole
    call, final run included) and at most `trials` trials, then train the best values on all training rows. Writes
    study.db, best.yaml, trials.csv, the plots, report.md and the final run folder into `output` (default
    <output_dir>/tune/<name>); `progress` gets one line per trial. With `ray` (an address, see
    lmadapt.cluster.connect) the trials run as Ray tasks (`search_on_ray`: `ray_cpus` CPUs each, `parallel` at
    once); the final run trains here."""
    require_positive(budget_minutes, "--budget-minutes", fix="give e.g. --budget-minutes 30")
    require_positive(trials, "--trials", fix="give e.g. --trials 20")
    require_positive(subset_above, "--subset-above", fix=f"give e.g. --subset-above {SUBSET_ABOVE}")
    require_positive(subset_rows, "--subset-rows", fix=f"give e.g. --subset-rows {SUBSET_ROWS}")
    require_positive(ray_cpus, "--ray-cpus", fix="give e.g. --ray-cpus 4")
    require_positive(parallel, "--parallel", fix="give e.g. --parallel 4")
    check_ray_options(ray, ray_cpus=ray_cpus, parallel=parallel)
    budget = Budget(60 * budget_minutes, final_scale=1.0)
    folder = Path(output) if output is not None else Path(config.output_dir) / "tune" / config.name
    chosen = search_space(config, space)
    base = config.to_dict()
    check_space(base, chosen)

    # The data is read once before anything in the folder changes: a data mistake stops here, and its size decides
    # whether trials train on a subset.
    rows, classes = _training_size(config)
    trial_rows = rows
    trial_raw = dict(base)
    if rows > subset_above and rows > subset_rows:
        trial_raw["data"] = {**base["data"], "max_train_rows": subset_rows}
        budget.final_scale = rows / subset_rows
        trial_rows = subset_rows
        progress(f"{rows} training rows: trials train on a stratified subset of {subset_rows}")

    if ray is not None:  # an unreachable cluster is refused before the folder is touched
        from lmadapt.cluster import connect

        connect(ray)
    scratch = folder / SCRATCH

    def objective(trial: optuna.Trial) -> float:
        return evaluate(trial, trial_raw, suggest(trial, chosen), scratch / f"trial-{trial.number:04d}")

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Optuna's own lines; progress is one line per trial, below
    try:
        study = open_study(folder, config)
        if not study.trials:
            study.enqueue_trial(default_trial(config, chosen, classes, trial_rows))
        if ray is not None:
            search_on_ray(study, budget, trials, chosen, trial_raw, folder, progress, ray, ray_cpus, parallel)
        elif budget.allows_another(study):
            study.optimize(
                objective,
                n_trials=trials,
                timeout=max(budget.left(), 1.0),
                catch=FAILED_TRIAL,
                callbacks=[budget, lambda s, t: progress(trial_line(s, t))],
                gc_after_trial=True,
            )
    finally:
        optuna.logging.set_verbosity(verbosity)
        shutil.rmtree(scratch, ignore_errors=True)
    return finish(study, config, folder, progress)


def finish(study: optuna.Study, config: RunConfig, folder: Path, progress: Callable[[str], None]) -> TuneResult:
    """best.yaml, the final run on all training rows with the best values, trials.csv, the plots and report.md."""
    write_trials_csv(study, folder)
    importances = write_plots(study, folder) if study.get_trials(states=(TrialState.COMPLETE,)) else None
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    if not counts[TrialState.COMPLETE]:
        write_report(study, folder, None, None)
        raise LmadaptError(
            f"no trial completed in {folder} ({counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed)",
            where="--budget-minutes",
            fix="give the search more minutes (it resumes where it stopped), or look at the failed trials' errors",
        )
    best = study.best_trial
    base = config.to_dict()
    write_text_atomic(folder / BEST_YAML, trial_config(base, best.params).to_yaml())
    final_config = trial_config({**base, "output_dir": str(folder)}, best.params)
    final = folder / final_config.name
    if (final / "config.yaml").is_file() and not first_difference(load_run(final).config, final_config.to_dict()):
        run = load_run(final)  # a resumed search that found nothing better: its final run stands
    else:
        progress(f"final run: trial {best.number}'s values on all training rows")
        run = train(final_config, overwrite=True)
    write_report(study, folder, importances, run.metrics)
    return TuneResult(
        folder=folder,
        completed=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        best_value=best.value,
        best_params=dict(best.params),
        run=run,
    )
