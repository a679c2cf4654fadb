"""What training shows on the console: a bar over the steps while on a terminal, and one line per epoch.

The Trainer's own progress callback prints each raw log dict; those go to the run's train_log.jsonl instead.
Where the console is not a terminal (a log file, CI) there is no bar: carriage-return redraws would fill it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from tqdm.auto import tqdm
from transformers import TrainerCallback


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


class EpochLines(TrainerCallback):
    """A step bar on a terminal, and after each epoch one line: the mean training loss since the last line and,
    when validation ran, its accuracy and macro-F1."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.losses: list[float] = []
        self.done_steps = 0

    def _say(self, line: str) -> None:
        tqdm.write(line, file=self.stream)
        self.stream.flush()

    def on_train_begin(self, args, state, control, **kwargs):
        self.done_steps = state.global_step
        if state.is_world_process_zero and self.stream.isatty():
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, file=self.stream, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.done_steps)
        self.done_steps = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def _epoch_line(self, state, extra: str = "") -> None:
        if not state.is_world_process_zero:
            return
        loss = f"training loss {sum(self.losses) / len(self.losses):.4f}" if self.losses else "training loss -"
        total = f"/{state.num_train_epochs}" if state.num_train_epochs else ""
        self._say(f"epoch {round(state.epoch or 0)}{total}: {loss}{extra}")
        self.losses = []

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.eval_strategy == "no":
            self._epoch_line(state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        self._epoch_line(
            state,
            f", validation accuracy {_percent(metrics.get('eval_accuracy'))}, "
            f"macro-F1 {_percent(metrics.get('eval_macro_f1'))}",
        )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def quiet_libraries():
    """transformers' and sentence-transformers' info logs and load bars off for the duration (warnings and errors
    still show), restored after."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    library = logging.getLogger("sentence_transformers")
    level = library.level
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    library.setLevel(logging.WARNING)
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
        library.setLevel(level)
