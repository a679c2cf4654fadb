"""Score data of any size on a Ray cluster: `lmadapt predict RUN --input DATA --output FOLDER --ray ADDRESS`.

The input (a file, a folder or a glob of Parquet/CSV/TSV/JSONL files, all of one format) is read with Ray Data, in
file order, and cut into parts: each file in blocks of `part_rows` rows, so a part is the same rows on every run. A
pool of actors, one per CPU (or per GPU where the cluster has them), each holding the run's predictor on its fastest
path, scores the rows as `lmadapt predict` scores a file (lmadapt.serving.batch.scored_frame). The run folder
travels once through Ray's object store (ray.put), not through a shared filesystem, and is unpacked once per node
(kept under the node's temp folder, named by the run's checksum, for the next prediction of the same run); the
input is read by Ray Data's tasks on any node (so it must lie on a filesystem every node sees under the same
path), and this process writes each finished part into the output folder (on this machine) as
part-NNNNN.parquet (written to a temporary name, then renamed). _predictions.json records the run, the input and
the parts: a rerun writes the parts not written yet (reading and scoring again only the files they are in), and an
output folder of another run, input or settings is refused.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

from lmadapt.cluster import cluster_resources, connect, unwrap
from lmadapt.data.loading import FORMATS_BY_SUFFIX
from lmadapt.data.prepare import extract_split
from lmadapt.data.table import Table
from lmadapt.errors import LmadaptError
from lmadapt.runs import Run, check_output_path, load_run, write_file_atomic, write_text_atomic
from lmadapt.serving.batch import scored_frame

MANIFEST = "_predictions.json"  # "_": Parquet readers of the folder skip it
PART_ROWS = 100_000
READABLE = ("parquet", "csv", "tsv", "jsonl")


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def input_files(source: str) -> list[Path]:
    """The files of `source` (a file, a folder, or a glob), sorted, each in a format Ray Data reads."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and FORMATS_BY_SUFFIX.get(p.suffix.lower()))
    elif glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    elif path.is_file():
        files = [path]
    else:
        raise LmadaptError("no such file or folder", where=f"--input {source}", fix="check the path")
    if not files:
        raise LmadaptError(
            "no data files found", where=f"--input {source}", fix="name a file, a folder or a glob of .parquet files"
        )
    for file in files:
        if FORMATS_BY_SUFFIX.get(file.suffix.lower()) not in READABLE:
            raise LmadaptError(
                f"cannot tell the format of '{file.name}'",
                where=f"--input {source}",
                fix="give files ending in .parquet, .csv, .tsv or .jsonl (or a glob that picks only those)",
            )
    formats = sorted({FORMATS_BY_SUFFIX[file.suffix.lower()] for file in files})
    if len(formats) > 1:
        raise LmadaptError(
            f"the input mixes formats ({', '.join(formats)})",
            where=f"--input {source}",
            fix="give files of one format, e.g. a glob such as data/*.parquet",
        )
    return [file.resolve() for file in files]


def read_files(files: list[Path]):
    """One Ray Dataset of the files (all of one format), in their order. Ray Data's read tasks run on any node: the
    files must be where every node sees them (a shared filesystem; Ray deprecates local:// reads on the driver's)."""
    import ray.data

    paths = [str(file) for file in files]
    fmt = FORMATS_BY_SUFFIX[files[0].suffix.lower()]
    if fmt == "parquet":
        return ray.data.read_parquet(paths)
    if fmt == "jsonl":  # pyarrow's JSON reader (lines=True reads with pandas): Arrow blocks, as the other formats
        return ray.data.read_json(paths)
    import pyarrow.csv

    options = pyarrow.csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
    return ray.data.read_csv(paths, parse_options=options)


def run_fingerprint(run: Run) -> str:
    """The run's manifest (the checksum of every file) names its content; its path alone would not."""
    return hashlib.sha256((run.path / "manifest.json").read_bytes()).hexdigest()


def identity(run: Run, files: list[Path], settings: dict) -> dict:
    """What the output folder's predictions are of: the run, each input file as it was, and the settings."""
    return {
        "run": str(run.path.resolve()),
        "run_sha256": run_fingerprint(run),
        "inputs": [{"file": str(f), "bytes": f.stat().st_size, "modified_ns": f.stat().st_mtime_ns} for f in files],
        **settings,
    }


def _check_columns(ds, file: Path, columns: list[str]) -> None:
    names = ds.schema().names
    for column in columns:
        if column not in names:
            raise LmadaptError(
                f"no column '{column}' (columns: {', '.join(names)})",
                where=str(file),
                fix="name the text column with --text-column",
            )


def plan_parts(files: list[Path], part_rows: int, columns: list[str]) -> list[dict]:
    """The parts: each file's rows in blocks of `part_rows`, numbered in file order."""
    parts = []
    for index, file in enumerate(files):
        ds = read_files([file])
        _check_columns(ds, file, columns)
        rows = ds.count()
        for start in range(0, rows, part_rows):
            parts.append(
                {"part": part_name(len(parts)), "file": index, "start": start, "stop": min(rows, start + part_rows)}
            )
    return parts


def _existing_plan(output: Path, wanted: dict) -> list[dict] | None:
    """The parts of an earlier prediction into `output` of the same run, input and settings; None for a new
    folder. Any other folder with files in it is refused: its files are not ours to mix with."""
    manifest = output / MANIFEST
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("identity") == wanted:
            return saved["parts"]
        changed = sorted(k for k in wanted if saved.get("identity", {}).get(k) != wanted[k])
        raise LmadaptError(
            f"the output folder holds predictions of another run, input or settings ({', '.join(changed)} differ)",
            where=str(manifest),
            fix="name a new --output folder, or delete this one to start over",
        )
    if output.is_dir() and any(output.iterdir()):
        raise LmadaptError(
            f"the output folder is not empty and has no {MANIFEST}",
            where=str(output),
            fix="name a new or empty --output folder",
        )
    return None


def _archive(folder: Path) -> bytes:
    """The run folder as one uncompressed tar (its weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def node_run_folder(fingerprint: str) -> Path:
    """Where this node keeps the run of this fingerprint (`run_fingerprint`) unpacked."""
    return Path(tempfile.gettempdir()) / "lmadapt-ray-runs" / fingerprint[:16]


def unpacked_run(archive, run_name: str, fingerprint: str) -> Path:
    """The run folder unpacked on this node, once for every actor and every prediction of the same run: under the
    temp folder, named by the run's fingerprint, unpacked beside it and renamed into place (an actor that loses the
    race to another uses the winner's). `archive`: the object reference of the run's tar, wrapped in a list so that
    Ray fetches it here, once per node, instead of inlining it."""
    import ray

    folder = node_run_folder(fingerprint)
    if not folder.is_dir():
        folder.parent.mkdir(exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        with tarfile.open(fileobj=io.BytesIO(ray.get(archive[0])), mode="r") as tar:
            tar.extractall(partial, filter="data")
        try:
            partial.rename(folder)
        except OSError:  # another actor of this node renamed its copy first
            shutil.rmtree(partial, ignore_errors=True)
    return folder / run_name


class _Scorer:
    """One actor of the pool: the run unpacked from the object store once, its predictor, and the scoring of batches."""

    def __init__(
        self, archive, run_name: str, fingerprint: str, backend: str, batch_size: int, overrides: dict, abstain, where
    ):
        self.run = load_run(unpacked_run(archive, run_name, fingerprint))
        self.predictor = self.run.inference(backend, workers=1, batch_size=batch_size)
        self.config = self.run.data_config(**overrides)
        self.abstain, self.where = abstain, where

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        table = Table(frame=batch.reset_index(drop=True), source=self.where)
        split = extract_split(table, self.config, with_labels=False)
        return scored_frame(self.run, split, self.predictor, self.abstain, where=self.where)


def predict_on_ray(
    run: Run,
    source: str,
    output: str | Path,
    address: str | None = None,
    *,
    text_column: str | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    abstain: bool = True,
    part_rows: int = PART_ROWS,
    actors: int = 0,
) -> dict:
    """Score `source` into the folder `output` on the Ray cluster at `address` (see the module's notes);
    `actors`: predictors at once, 0 for one per CPU of the cluster (one per GPU where it has GPUs). Returns the
    rows and parts written now and the parts finished before."""
    output = Path(output)
    check_output_path(output, folder=True, example="scored", option="--output")
    files = input_files(source)
    config = run.data_config(text_column=text_column)
    overrides = {"text_column": text_column, "format": "auto"}
    settings = {"text_column": config.text_column, "backend": backend, "abstain": abstain, "part_rows": part_rows}
    wanted = identity(run, files, settings)
    parts = _existing_plan(output, wanted)
    connect(address)
    import ray
    import ray.data  # its import sets its loggers' levels: quieted after it

    # Ray Data logs every execution (and, without a terminal, its progress) at INFO; its progress bars stay.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # parts are rows in file order
    context.print_on_execution_start = False
    columns = [c for c in (config.text_column, config.text_pair_column) if c]
    if parts is None:
        parts = plan_parts(files, part_rows, columns)
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output / MANIFEST, json.dumps({"identity": wanted, "parts": parts}, indent=2) + "\n")
    pending = [part for part in parts if not (output / part["part"]).is_file()]
    report = {"rows": 0, "parts": len(pending), "parts_before": len(parts) - len(pending), "output": str(output)}
    if not pending:
        return report
    # Files with a part to write are read whole, in order; the rows of their parts written before are scored
    # again and dropped: a rerun repeats at most the rest of a file.
    reread = sorted({part["file"] for part in pending})
    walked = [part for part in parts if part["file"] in reread]
    resources = cluster_resources()
    gpus = 1 if resources["gpus"] else 0
    actors = actors or int(resources["gpus"] or resources["cpus"]) or 1
    # Read whole before the predictors start (into the object store, spilled to disk when large): a read task
    # waiting for a CPU the predictors hold would wait forever on a node of one CPU. Blocks of one scoring call's
    # rows each spread a few large files over every actor.
    scored = (
        read_files([files[i] for i in reread])
        .repartition(target_num_rows_per_block=batch_size * 16)
        .materialize()
        .map_batches(
            _Scorer,
            fn_constructor_kwargs={
                "archive": [ray.put(_archive(run.path))],
                "run_name": run.path.name,
                "fingerprint": wanted["run_sha256"],
                "backend": backend,
                "batch_size": batch_size,
                "overrides": overrides,
                "abstain": abstain,
                "where": f"--input {source}",
            },
            batch_format="pandas",
            batch_size=batch_size * 16,
            # Every actor started at once where the CPUs are free (the pool may run with fewer when they are not),
            # each holding at most two blocks, so that none queues work while another idles.
            compute=ray.data.ActorPoolStrategy(
                min_size=1, max_size=actors, initial_size=actors, max_tasks_in_flight_per_actor=2
            ),
            num_cpus=0 if gpus else 1,
            num_gpus=gpus,
        )
    )
    try:
        batches = scored.iter_batches(batch_format="pandas", batch_size=None)
        report["rows"] = _write_parts(batches, walked, [part["part"] for part in pending], output)
    except Exception as error:
        raised = unwrap(error)
        if raised is error:
            raise
        raise raised from None
    return report


def _write_parts(batches, walked: list[dict], pending: list[str], output: Path) -> int:
    """Cut the scored rows, which arrive in file order, into the `walked` parts; write each pending one once it
    is whole."""
    queue = list(walked)
    held: list[pd.DataFrame] = []
    held_rows = written = 0
    for batch in batches:
        while len(batch):
            size = queue[0]["stop"] - queue[0]["start"]
            held.append(batch.iloc[: size - held_rows])
            batch = batch.iloc[size - held_rows :]
            held_rows += len(held[-1])
            if held_rows == size:
                name = queue.pop(0)["part"]
                if name in pending:
                    frame = pd.concat(held, ignore_index=True)
                    write_file_atomic(
                        output / name, lambda partial, frame=frame: frame.to_parquet(partial, index=False)
                    )
                    written += len(frame)
                held, held_rows = [], 0
    if queue:
        raise RuntimeError(f"the scored rows ended before {queue[0]['part']} was whole")
    return written
