"""Rows read from one source, and how to point a user at a row."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


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
