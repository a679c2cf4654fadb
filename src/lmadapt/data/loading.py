"""Read CSV, TSV, JSONL, Parquet, saved HF datasets, hub datasets and built-in data into one table shape."""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from lmadapt.data.builtin import load_builtin
from lmadapt.data.table import Table
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

# The csv module refuses fields over 128 KiB by default, yet a text may be longer (tokenisation truncates it).
# 2**31 - 1 fits the C long that holds the limit on every platform (sys.maxsize overflows it on Windows).
CSV_FIELD_LIMIT = 2**31 - 1


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


def _refuse_repeated_columns(columns: list[str], where: str, fix: str) -> None:
    repeated = [name for name, count in Counter(columns).items() if count > 1]
    if repeated:
        raise LmadaptError(
            f"column name(s) {', '.join(repr(name) for name in repeated)} appear more than once", where=where, fix=fix
        )


def _record_lines(text: str, sep: str) -> tuple[list[str], list[int], tuple[int, int, int] | None]:
    """The header, the line each record starts on (a quoted field may span lines), and the first ragged
    record as (line, fields, expected) if one has another field count than the header."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = next(reader, [])
    starts, ragged, previous_end = [], None, reader.line_num
    for record in reader:
        if record:  # pandas skips blank lines too
            starts.append(previous_end + 1)
            if ragged is None and len(record) != len(header):
                ragged = (previous_end + 1, len(record), len(header))
        previous_end = reader.line_num
    return header, starts, ragged


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
        _, _, ragged = _record_lines(text, sep)
        if ragged:
            line, fields, expected = ragged
            where, detail = f"{path}, line {line}", f"expected {expected} fields, saw {fields}"
        else:
            found = re.search(r"line (\d+)", str(error))
            where = f"{path}, line {found.group(1)}" if found else str(path)
            detail = re.sub(r"^Error tokenizing data\. C error: ", "", str(error)).strip()
        raise LmadaptError(f"malformed {kind} ({detail})", where=where, fix=fix) from None
    header, starts, _ = _record_lines(text, sep)
    # pandas would silently rename a second 'text' column 'text.1'.
    _refuse_repeated_columns(
        header, f"{path}, line 1", "rename the repeated column(s) in the header (line 1) so that each name appears once"
    )
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
            raise LmadaptError(
                f"expected a JSON object, found {json.dumps(record, ensure_ascii=False)[:40]}",
                where=f"{path}, line {number}",
                fix='write one object per line, e.g. {"text": "...", "label": "..."}; a file holding one JSON array '
                "converts with `jq -c '.[]' in.json > out.jsonl`",
            )
        records.append(record)
        lines.append(number)
    if not records:
        raise LmadaptError(
            "the file has no records (it is empty or holds only blank lines)",
            where=str(path),
            fix='write one JSON object per line, e.g. {"text": "...", "label": "..."}',
        )
    return Table(pd.DataFrame.from_records(records), str(path), lines)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    def unreadable(error: Exception) -> LmadaptError:
        return LmadaptError(
            f"cannot read Parquet ({error})",
            where=str(path),
            fix="check that the file is whole and is Parquet (write it again, e.g. with pandas' DataFrame.to_parquet)",
        )

    try:  # pyarrow raises several types for a bad file
        columns = pq.read_schema(path).names
    except Exception as error:
        raise unreadable(error) from None
    # pyarrow refuses to read these with a message about "FieldRef" matches.
    _refuse_repeated_columns(
        columns, str(path), "write the file again with a name of its own for each column (pyarrow's rename_columns)"
    )
    try:
        frame = pd.read_parquet(path).reset_index(drop=True)
    except Exception as error:
        raise unreadable(error) from None
    return Table(frame, str(path))


def _require_saved_dataset(folder: Path) -> None:
    """A folder is read as a dataset saved by `save_to_disk`; say so plainly when it holds none."""
    from datasets import config

    markers = (config.DATASETDICT_JSON_FILENAME, config.DATASET_STATE_JSON_FILENAME)
    if any((folder / marker).is_file() for marker in markers):
        return
    data_files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in FORMATS_BY_SUFFIX)
    shown = f"; it holds {', '.join(data_files[:3])}{' ...' if len(data_files) > 3 else ''}" if data_files else ""
    raise LmadaptError(
        f"this is a folder that holds no saved dataset (no {' or '.join(markers)}){shown}",
        where=str(folder),
        fix="pass a data file (.csv, .tsv, .jsonl or .parquet), or a folder written by Dataset.save_to_disk",
    )


def _read_hf(source: str) -> Table:
    import datasets

    name = source.removeprefix("hf:")
    split = None
    if ":" in name and not Path(name).exists():
        name, split = name.rsplit(":", 1)
    if Path(name).is_dir():
        _require_saved_dataset(Path(name))
    try:
        if Path(name).is_dir():
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, split=split)
    except FileNotFoundError as error:
        raise LmadaptError(
            f"no dataset found ({error})",
            where=source,
            fix="check the path, or the hub id; a hub dataset needs a connection the first time it is read",
        ) from None
    except Exception as error:
        raise LmadaptError(
            f"cannot load the dataset ({type(error).__name__}: {error})",
            where=source,
            fix="pass a folder written by Dataset.save_to_disk, or 'hf:<hub id>:<split>' when online",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = split or ("train" if "train" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise LmadaptError(
                f"the dataset has no split '{split}' (it has {', '.join(loaded)})",
                where=source,
                fix=f"name one of its splits after the last ':', e.g. 'hf:{name}:{next(iter(loaded))}'",
            )
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
    if not len(table.frame):
        raise LmadaptError(
            f"the file has {'a header' if fmt in ('csv', 'tsv') else 'columns'} but no rows",
            where=str(path),
            fix="add the rows of data, one per text, or check that this is the file you meant",
        )
    return table
