"""Read CSV, TSV, JSONL, Parquet, saved HF datasets, hub datasets and built-in data into one table shape."""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmadapt.errors import LmadaptError

FORMATS_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Table:
    """Rows read from one source, and how to point a user at a row."""

    frame: pd.DataFrame  # indexed 0..n-1
    source: str
    lines: list[int] | None = None  # the file line each row starts on; None where lines mean nothing

    def where_rows(self, rows: list[int], limit: int = 5) -> str:
        shown = [str(self.lines[r] if self.lines is not None else r + 1) for r in rows[:limit]]
        more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
        kind = "line" if self.lines is not None else "row"
        return f"{self.source}, {kind}{'s' if len(rows) > 1 else ''} {', '.join(shown)}{more}"


def detect_format(source: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("hf:"):
        return "hf"
    path = Path(source)
    if path.is_dir():
        return "hf"
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in FORMATS_BY_SUFFIX:
            return FORMATS_BY_SUFFIX[suffix]
    raise LmadaptError(
        f"cannot tell the format of '{source}' from its name",
        fix="use a .csv, .tsv, .jsonl or .parquet file, or set data.format",
    )


def _decoded_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise LmadaptError(
            f"the file is not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start})",
            where=f"{path}, line {line}",
            fix="re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`",
        ) from None


def _record_lines(text: str, sep: str) -> tuple[list[int], tuple[int, int, int] | None]:
    """The line each record starts on (a quoted field may span lines), and the first ragged record
    as (line, fields, expected) if one has another field count than the header."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = next(reader, [])
    starts, ragged, previous_end = [], None, reader.line_num
    for record in reader:
        if record:  # pandas skips blank lines too
            starts.append(previous_end + 1)
            if ragged is None and len(record) != len(header):
                ragged = (previous_end + 1, len(record), len(header))
        previous_end = reader.line_num
    return starts, ragged


def _read_delimited(path: Path, sep: str) -> Table:
    text = _decoded_text(path)
    kind = "TSV" if sep == "\t" else "CSV"
    fix = "quote fields that contain the separator, or check that every row has the header's columns"
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops data) when every row has an extra field; that is an error here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""], index_col=False
            )
    except pd.errors.EmptyDataError:
        raise LmadaptError("the file is empty", where=str(path), fix="add a header line and rows") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        _, ragged = _record_lines(text, sep)
        if ragged:
            line, fields, expected = ragged
            where, detail = f"{path}, line {line}", f"expected {expected} fields, saw {fields}"
        else:
            found = re.search(r"line (\d+)", str(error))
            where = f"{path}, line {found.group(1)}" if found else str(path)
            detail = re.sub(r"^Error tokenizing data\. C error: ", "", str(error)).strip()
        raise LmadaptError(f"malformed {kind} ({detail})", where=where, fix=fix) from None
    starts, _ = _record_lines(text, sep)
    return Table(frame, str(path), starts if len(starts) == len(frame) else None)


def _read_jsonl(path: Path) -> Table:
    text = _decoded_text(path)
    records = []
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LmadaptError(
                f"not valid JSON ({error.msg}, column {error.colno})",
                where=f"{path}, line {number}",
                fix="each line of a JSONL file must be one JSON object",
            ) from None
        if not isinstance(record, dict):
            raise LmadaptError("expected a JSON object", where=f"{path}, line {number}")
        records.append(record)
        lines.append(number)
    if not records:
        raise LmadaptError("the file has no records", where=str(path))
    return Table(pd.DataFrame.from_records(records), str(path), lines)


def _read_parquet(path: Path) -> Table:
    try:
        frame = pd.read_parquet(path).reset_index(drop=True)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise LmadaptError(f"cannot read Parquet ({error})", where=str(path)) from None
    return Table(frame, str(path))


def _read_hf(source: str) -> Table:
    import datasets

    name = source.removeprefix("hf:")
    split = None
    if ":" in name and not Path(name).exists():
        name, split = name.rsplit(":", 1)
    try:
        if Path(name).is_dir():
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, split=split)
    except FileNotFoundError as error:
        raise LmadaptError(f"no dataset found ({error})", where=source) from None
    except Exception as error:
        raise LmadaptError(
            f"cannot load the dataset ({type(error).__name__}: {error})",
            where=source,
            fix="pass a folder written by Dataset.save_to_disk, or 'hf:<hub id>:<split>' when online",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = split or ("train" if "train" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise LmadaptError(f"the dataset has no split '{split}' (it has {', '.join(loaded)})", where=source)
        loaded = loaded[split]
    frame = loaded.to_pandas()
    # ClassLabel columns hold ids; users name their labels, so use the names.
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):
            frame[column] = [feature.int2str(int(v)) for v in frame[column]]
    return Table(frame, source)


def read_table(source: str | Path, fmt: str = "auto") -> Table:
    """Read a data source into a Table, with clear errors for missing or malformed files."""
    source = str(source)
    fmt = detect_format(source, fmt)
    if fmt == "builtin":
        from lmadapt.data.builtin import load_builtin

        return load_builtin(source.removeprefix("builtin:"))
    if fmt == "hf":
        return _read_hf(source)
    path = Path(source)
    if not path.is_file():
        raise LmadaptError(
            f"data file not found: {path}", fix="check the path (relative paths start at the current folder)"
        )
    readers = {
        "csv": lambda: _read_delimited(path, ","),
        "tsv": lambda: _read_delimited(path, "\t"),
        "jsonl": lambda: _read_jsonl(path),
        "parquet": lambda: _read_parquet(path),
    }
    table = readers[fmt]()
    if table.frame.empty:
        raise LmadaptError("the file has a header but no rows", where=str(path))
    return table
