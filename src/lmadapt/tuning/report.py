"""What a search leaves beside its study: trials.csv, the optimisation history and parameter importances as PNGs
(Optuna's own matplotlib plots and importance evaluator), and report.md."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from lmadapt.runs import write_text_atomic  # noqa: E402

TRIALS_CSV = "trials.csv"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
REPORT_MD = "report.md"


def write_trials_csv(study: optuna.Study, folder: Path) -> None:
    """One row per trial: number, state, value, params_<key> ..., seconds."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    if "duration" in frame:
        frame["seconds"] = frame.pop("duration").dt.total_seconds().round(2)
    write_text_atomic(folder / TRIALS_CSV, frame.to_csv(index=False))


def importance_note(study: optuna.Study) -> str | None:
    """Why parameter importances cannot be evaluated yet, or None when they can: they need two finished trials
    whose parameters differ."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"parameter importances need at least 2 completed trials; this study has {len(complete)}"
    if all(trial.params == complete[0].params for trial in complete):
        return "parameter importances need completed trials whose parameters differ; all have the same"
    return None


def _save(axes, path: Path) -> None:
    figure = axes.figure
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_plots(study: optuna.Study, folder: Path) -> dict[str, float] | None:
    """The optimisation history and, where they can be evaluated, the parameter importances (returned)."""
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the plots' API is marked as such
        # Few trials give equal importances, which the table shows; the evaluator's warning would say it again.
        warnings.filterwarnings("ignore", message="Target and region quantiles")
        _save(optuna_plots.plot_optimization_history(study, target_name="validation macro-F1"), folder / HISTORY_PNG)
        if importance_note(study):
            (folder / IMPORTANCES_PNG).unlink(missing_ok=True)  # an earlier call's would no longer match the study
            return None
        importances = optuna.importance.get_param_importances(study)
        _save(optuna_plots.plot_param_importances(study, target_name="validation macro-F1"), folder / IMPORTANCES_PNG)
    return importances


def value_text(value) -> str:
    """A trial's value as the console and report.md show it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def write_report(
    study: optuna.Study, folder: Path, importances: dict[str, float] | None, final_metrics: dict | None
) -> None:
    """report.md: the best trial's values, the trials by state, the importances, and the final run's figures."""
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    lines = ["# Hyperparameter search", ""]
    lines.append(
        f"Trials: {counts[TrialState.COMPLETE]} completed, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed (study.db; one row each in {TRIALS_CSV})."
    )
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        lines += ["", f"Best: trial {best.number}, validation macro-F1 {_percent(best.value)} %.", ""]
        lines += [
            "| key | value |",
            "|---|---|",
            *(f"| {k} | {value_text(v)} |" for k, v in best.params.items()),
        ]
    lines += ["", f"![optimisation history]({HISTORY_PNG})", "", "## Parameter importances", ""]
    if importances is None:
        lines.append(f"Not evaluated: {importance_note(study)}.")
    else:
        lines += ["| key | importance |", "|---|---|", *(f"| {k} | {v:.3f} |" for k, v in importances.items())]
        lines += ["", f"![parameter importances]({IMPORTANCES_PNG})"]
    if final_metrics is not None:
        lines += ["", "## Final run (all training rows, the best values; written as best.yaml)", ""]
        lines += ["| split | accuracy % | macro-F1 % |", "|---|---|---|"]
        for split in ("validation", "test"):
            figures = final_metrics[split]
            lines.append(f"| {split} | {_percent(figures['accuracy'])} | {_percent(figures['macro_f1'])} |")
    write_text_atomic(folder / REPORT_MD, "\n".join(lines) + "\n")
