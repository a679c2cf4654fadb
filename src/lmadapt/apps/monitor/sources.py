"""Where items come from, in batches with the position after each (stored with the batch, so a restart resumes
there): a file read once (CSV, JSONL, Parquet, through the data layer), a growing CSV or JSONL file followed as
lines are appended, and JSON lines on stdin. A line that is not a record is passed on as Unreadable, to be rejected
with its reason like any bad item."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from lmadapt.data.loading import detect_format, read_table
from lmadapt.errors import LmadaptError

FOLLOWED = ("csv", "jsonl")  # formats appended to line by line


@dataclass
class Unreadable:
    """A line that is not a record, and why."""

    raw: str
    reason: str


Batch = tuple[list, str]  # records (dicts or Unreadable) and the position after them


def file_batches(path: Path, fmt: str, batch_size: int, start: str | None) -> Iterator[Batch]:
    """A file read once. JSON lines line by line from byte `start` on (a line that is not a record is passed on as
    Unreadable: one bad line must not refuse the file); CSV and Parquet through the data layer from row `start`
    on. Positions: the byte offset, or the next row's index."""
    if detect_format(str(path), fmt) == "jsonl":
        offset = int(start or 0)
        while True:
            records, offset = _new_lines(path, offset, batch_size, None, last_line_done=True)
            if not records:
                return
            yield records, str(offset)
    frame = read_table(path, fmt).frame
    first = int(start or 0)
    for begin in range(first, len(frame), batch_size):
        chunk = frame.iloc[begin : begin + batch_size]
        yield chunk.to_dict("records"), str(begin + len(chunk))


def followed_batches(
    path: Path, fmt: str, batch_size: int, start: str | None, poll_s: float, stop: Callable[[], bool]
) -> Iterator[Batch]:
    """A CSV or JSONL file read as lines are appended, from byte `start` on, until `stop()`; positions are byte
    offsets after the last whole line read (a line still being written waits for its newline)."""
    fmt = detect_format(str(path), fmt)
    if fmt not in FOLLOWED:
        raise LmadaptError(
            f"a {fmt} file cannot be followed: only CSV and JSONL files grow line by line",
            where=str(path),
            fix="read it once (without --follow), or write the stream as JSON lines",
        )
    offset = int(start or 0)
    header = _csv_header(path) if fmt == "csv" else None
    if header is not None and offset == 0:
        offset = len(header[1])
    while True:
        records, offset_after = _new_lines(path, offset, batch_size, header[0] if header else None)
        if records:
            offset = offset_after
            yield records, str(offset)
        elif stop():
            return
        else:
            time.sleep(poll_s)


def _csv_header(path: Path) -> tuple[list[str], bytes] | None:
    """The CSV's column names and the header line's bytes (None while the file has no whole first line)."""
    with open(path, "rb") as handle:
        line = handle.readline()
    if not line.endswith(b"\n"):
        raise LmadaptError("the CSV file has no header line yet", where=str(path), fix="write the header first")
    return next(csv.reader([line.decode("utf-8-sig")])), line


def _new_lines(
    path: Path, offset: int, limit: int, columns: list[str] | None, last_line_done: bool = False
) -> tuple[list, int]:
    """Up to `limit` records from the lines after byte `offset`, and the offset after them. A last line without its
    newline is still being written, unless `last_line_done` (a file read once)."""
    records = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        while len(records) < limit:
            line = handle.readline()
            if not line or (not line.endswith(b"\n") and not last_line_done):
                break
            offset += len(line)
            if line.strip():
                records.append(_record(line.decode("utf-8", errors="replace"), columns))
    return records, offset


def _record(line: str, columns: list[str] | None):
    """One line as a record: a JSON object, or a CSV row under `columns`."""
    if columns is not None:
        values = next(csv.reader(io.StringIO(line)), [])
        if len(values) != len(columns):
            return Unreadable(line.rstrip("\n"), f"a CSV row of {len(values)} fields under {len(columns)} columns")
        return dict(zip(columns, values))
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return Unreadable(line.rstrip("\n"), f"not JSON: {error.msg} at character {error.pos}")
    return record if isinstance(record, dict) else Unreadable(line.rstrip("\n"), "not a JSON object")


def stream_batches(stream: TextIO, batch_size: int, wait_s: float = 1.0) -> Iterator[Batch]:
    """JSON lines from a stream (stdin) until it ends; positions are line counts. Items read are passed on once a
    batch is full, or when the stream has been quiet for `wait_s` (a live feed's items do not wait for a batch)."""
    try:
        lines = _quiet_or_lines(stream.fileno(), wait_s)
    except (AttributeError, OSError, io.UnsupportedOperation):
        lines = iter(stream)  # an in-memory stream: everything is there already
    records, count = [], 0
    for line in lines:
        if line is not None:
            count += 1
            if line.strip():
                records.append(_record(line, None))
        if records and (line is None or len(records) >= batch_size):
            yield records, str(count)
            records = []
    if records:
        yield records, str(count)


def _quiet_or_lines(fd: int, wait_s: float) -> Iterator[str | None]:
    """The lines read from a file descriptor as they come, and None whenever it has been quiet for `wait_s`."""
    pending = b""
    while True:
        if not select.select([fd], [], [], wait_s)[0]:
            yield None
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if pending:
                yield pending.decode("utf-8", errors="replace")
            return
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace") + "\n"
