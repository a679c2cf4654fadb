"""The run folder: the artifact everything after training reads. Written atomically, verified on load.

runs/<name>/
  model/            HF-loadable model and tokenizer (safetensors)
  labels.json       id <-> label in training order (and the multi-label threshold)
  config.yaml       the fully resolved config that produced it
  metrics.json      validation/test metrics, timings, parameters, peak memory
  confusion.png     test confusion matrix (per-label F1 for multi-label), training_curves.png
  train_log.jsonl   one line per logging step
  manifest.json     every file with sha256 and size; library versions
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from lmadapt.config import DataConfig, build_dataclass
from lmadapt.data.labels import LabelMap
from lmadapt.data.prepare import load_split
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError
from lmadapt.inference.artifacts import load_input_tokenizer, load_model
from lmadapt.inference.choice import (
    SAMPLE_TEXTS,
    SPEED_RECORD,
    candidate_paths,
    cpu_description,
    measure_paths,
    read_record,
    recorded_fastest,
    same_machine,
    with_measurement,
)
from lmadapt.inference.guard import TextGuard, run_text_guard
from lmadapt.inference.loading import load_predictor, load_torch_predictor
from lmadapt.inference.predictor import Predictor
from lmadapt.recipe import parse_config
from lmadapt.version import __version__

MANIFEST = "manifest.json"
# Sentences of varied length and tone, for checks on a run whose own data is not at hand.
FALLBACK_SENTENCES = [
    "A gripping, beautifully shot film with a heart.",
    "Dull, overlong and badly acted.",
    "I want to change the PIN on my card.",
    "The quarterly results beat expectations and the shares rose sharply.",
    "not bad at all",
    "It was fine, I guess, though the second half dragged on far too long for my taste.",
    "Why was my transfer declined?",
    "an utterly forgettable sequel",
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"lmadapt": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "files": {str(p.relative_to(folder)): manifest_entry(p) for p in files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def manifest_entry(file: Path) -> dict:
    return {"sha256": _sha256(file), "bytes": file.stat().st_size}


def update_manifest(folder: Path, entries: dict[str, dict | None]) -> None:
    """Sign (entry) or unlist (None) files of a finished, verified run folder; other entries stay as they were."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for name, entry in entries.items():
        if entry is None:
            manifest["files"].pop(name, None)
        else:
            manifest["files"][name] = entry
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def manifest_lists(folder: Path, name: str) -> bool:
    path = folder / MANIFEST
    return path.is_file() and name in json.loads(path.read_text(encoding="utf-8")).get("files", {})


def verify_manifest(folder: Path) -> None:
    """Every file the manifest lists is there, with its size and hash."""
    path = folder / MANIFEST
    if not path.is_file():
        raise LmadaptError(
            "not a finished run folder (no manifest.json)",
            where=str(folder),
            fix="pass a folder that `lmadapt train` wrote; an interrupted run can be continued with --resume",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise LmadaptError(
            "manifest.json is unreadable", where=str(folder), fix="restore the run folder or retrain"
        ) from None
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            raise LmadaptError(
                f"file listed in the manifest is missing: {name}",
                where=str(folder),
                fix="retrain or restore the run folder",
            )
        if file.stat().st_size != expected["bytes"] or _sha256(file) != expected["sha256"]:
            raise LmadaptError(
                f"file changed since the run was written: {name} (hash mismatch)",
                where=str(folder),
                fix="restore the original file or retrain",
            )


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a sibling file, then rename it over `path`: readers never see half a file."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_file_atomic(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def check_output_path(path: Path, *, folder: bool, example: str, option: str = "--output") -> None:
    """Refuse, before any work is done, an output that could not be written there: a folder where a file is
    written (or a file where a folder is), or one whose folders cannot be created. `example`: a name to suggest;
    `option`: the command-line option the path came from."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        suggestion = path.parent / example if folder else path / example
        raise LmadaptError(
            f"{option} is an existing {other}, where a {kind} is written",
            where=str(path),
            fix=f"name a {kind} as {option}, e.g. {option} {suggestion}",
        )
    needed = path if folder else path.parent
    existing = next(p for p in (needed, *needed.parents) if p.exists())
    if not existing.is_dir():
        raise LmadaptError(
            f"{option} lies below {existing}, which is a file, so its folder cannot be created",
            where=str(path),
            fix=f"name a {option} in a folder that exists or can be created",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LmadaptError(
            f"no permission to write in {existing}",
            where=str(path),
            fix=f"name a {option} in a folder you can write to",
        )


def staging_folder(final: Path) -> Path:
    return final.parent / f".{final.name}.staging-{os.getpid()}"


def workspace_folder(final: Path) -> Path:
    """Checkpoints of a run in progress live here until the run folder is complete."""
    return final.parent / f".{final.name}.partial"


def write_run_folder(final: Path, fill: Callable[[Path], None], overwrite: bool) -> None:
    """Fill a staging folder, add the manifest, then move it into place in one rename."""
    if final.exists() and not overwrite:
        raise LmadaptError(f"run folder already exists: {final}", fix="choose another name, or pass --overwrite")

    def fill_and_sign(staging: Path) -> None:
        fill(staging)
        write_manifest(staging)

    replace_folder_atomic(final, fill_and_sign)


def replace_folder_atomic(final: Path, fill: Callable[[Path], None]) -> None:
    """Let `fill` write a staging sibling folder, then move it to `final` in one rename.

    An interrupted write never leaves a folder that looks finished; a folder already at `final` is
    removed only after the new one is in place, and put back if the rename fails.
    """
    staging = staging_folder(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)  # put the previous folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Run:
    """A finished run folder: its labels, config and metrics, and a predictor loaded on first use."""

    def __init__(self, path: Path):
        self.path = path
        self.labels = LabelMap.load(path / "labels.json")
        self.config: dict[str, Any] = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        self.metrics: dict[str, Any] = json.loads((path / "metrics.json").read_text(encoding="utf-8"))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def max_length(self) -> int:
        return int(self.config["model"]["max_length"])

    def data_config(self, **overrides) -> DataConfig:
        """The run's own data settings (columns, task, cleaning), with any given overrides."""
        known = {f.name for f in dataclasses.fields(DataConfig)}
        saved = {k: v for k, v in self.config.get("data", {}).items() if k in known}
        config = build_dataclass(DataConfig, saved, "data")
        return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})

    @cached_property
    def run_config(self):
        return parse_config(self.config)

    def load_model(self, share_backbone: bool = True, trainable: bool = False):
        """The trained classifier, in eval mode; runs on one backbone share its weights unless told not to;
        `trainable` (implies no sharing): to train it further."""
        share = share_backbone and not trainable
        return load_model(self.path / "model", self.run_config, self.labels, share_backbone=share, trainable=trainable)

    def load_tokenizer(self):
        """The tokenizer the model reads through (for prompt strategies: one that writes the prompt first)."""
        return load_input_tokenizer(self.path / "model", self.run_config)

    @cached_property
    def guard(self) -> TextGuard:
        """The guard every prediction passes (see lmadapt.inference.guard): loaded once, on first use."""
        return run_text_guard(self.path, self.run_config)

    def check_reads(self, texts: Sequence[str], where: str = "the texts to predict") -> float | None:
        """The language guard before predicting: the unknown-token share of `texts` for the run's backbone,
        an error above the run's model.max_unknown_share (see lmadapt.models.language); None where it is off."""
        return self.guard.unknown_share(texts, where)

    @cached_property
    def predictor(self) -> Predictor:
        return load_torch_predictor(self.path, self.run_config, self.labels, self.max_length, self.guard)

    def own_rows(
        self, limit: int, with_labels: bool = False, sources: Sequence[str] = ("test", "validation")
    ) -> Split | None:
        """Up to `limit` rows of the run's own data, from the first of `sources` (its data config's files) that
        is readable; None where none is."""
        config = self.data_config()
        for source in filter(None, (getattr(config, name) for name in sources)):
            try:
                split = load_split(source, config, with_labels=with_labels)
            except (LmadaptError, OSError):
                continue
            if len(split):
                return split.take(range(min(limit, len(split))))
        return None

    def own_texts(self, limit: int) -> list[str]:
        """Up to `limit` texts of the run's test or validation data, else FALLBACK_SENTENCES."""
        rows = self.own_rows(limit)
        return rows.texts if rows is not None else FALLBACK_SENTENCES

    def measure_inference(self, keep_other_machines: bool = True) -> dict:
        """Time every inference path this run has here on a sample of its texts (see lmadapt.inference.choice) and
        record it in the run folder (the other machines' measurements kept, or dropped after the paths changed);
        returns this machine's measurement. A read-only run folder is measured, not recorded."""
        cpu = cpu_description()
        paths = candidate_paths(self.path, self._signed, cpu)
        measured = measure_paths(
            lambda path: self.inference(path, workers=cpu["cores"], batch_size=32),
            paths,
            self.own_texts(SAMPLE_TEXTS),
            cpu,
        )
        record = read_record(self.path) if keep_other_machines else {"machines": []}
        try:
            write_text_atomic(self.path / SPEED_RECORD, json.dumps(with_measurement(record, measured), indent=2) + "\n")
        except OSError:  # a read-only run folder: measured again on its next load
            pass
        return measured

    def measurement_here(self) -> dict | None:
        """This machine's recorded measurement of the run's inference paths (see measure_inference), if any."""
        cpu = cpu_description()
        return next((entry for entry in read_record(self.path)["machines"] if same_machine(entry, cpu)), None)

    def fastest_backend(self) -> str:
        """The fastest inference path for this run on this CPU: as recorded, else measured now (once per CPU)."""
        cpu = cpu_description()
        paths = candidate_paths(self.path, self._signed, cpu)
        if len(paths) == 1:
            return paths[0]
        return recorded_fastest(read_record(self.path), cpu, paths) or self.measure_inference()["fastest"]

    def _signed(self, name: str) -> bool:
        return manifest_lists(self.path, name)

    def inference(self, backend: str = "auto", workers: int = 1, batch_size: int = 64, engine_workers: int = 0):
        """A predictor on the chosen inference path (`auto`: see fastest_backend); see
        lmadapt.inference.loading.load_predictor."""
        return load_predictor(
            self.path,
            self.run_config,
            self.labels,
            self.max_length,
            self._signed,
            self.fastest_backend,
            lambda: self.predictor,
            self.guard,
            backend,
            workers=workers,
            batch_size=batch_size,
            engine_workers=engine_workers,
        )

    def predict(
        self,
        texts: Sequence[str] | str,
        pairs: Sequence[str] | None = None,
        progress: bool = False,
        abstain: bool = True,
    ) -> list[dict]:
        """Labels and per-label scores for each text (refused for texts the backbone cannot read); with
        out-of-scope detection, `abstained` and `ood_score` too (see Predictor.predict)."""
        return self.predictor.predict(texts, pairs, progress=progress, abstain=abstain)

    def __repr__(self) -> str:
        test = self.metrics.get("test", {})
        return f"Run({str(self.path)!r}, strategy={self.config['strategy']['name']!r}, test_accuracy={test.get('accuracy')})"


def load_run(path: str | Path) -> Run:
    """Open a run folder after checking its manifest."""
    path = Path(path)
    if not path.is_dir():
        raise LmadaptError(
            f"run folder not found: {path}", fix="pass the folder `lmadapt train` wrote (e.g. runs/<name>)"
        )
    verify_manifest(path)
    return Run(path)
