"""A split: texts (and optional text pairs) with their labels, and where each row came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmadapt.data.table import Table


@dataclass
class Split:
    """Texts (and optional text pairs) with their labels, remembering where each row came from."""

    texts: list[str]
    labels: list
    pairs: list[str] | None = None
    rows: list[int] = field(default_factory=list)
    source: Table | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, positions) -> Split:
        positions = list(positions)
        return Split(
            texts=[self.texts[i] for i in positions],
            labels=[self.labels[i] for i in positions],
            pairs=[self.pairs[i] for i in positions] if self.pairs is not None else None,
            rows=[self.rows[i] for i in positions],
            source=self.source,
        )

    def rows_of(self, labels) -> list[int]:
        """Positions of the rows whose (single) label is one of `labels`."""
        wanted = set(labels)
        return [i for i, label in enumerate(self.labels) if label in wanted]

    def drop(self, positions) -> Split:
        """The split without the rows at `positions`, the others in their order."""
        dropped = set(positions)
        return self.take(i for i in range(len(self)) if i not in dropped)

    def where(self, positions: list[int]) -> str:
        rows = [self.rows[i] for i in positions]
        return self.source.where_rows(rows) if self.source else f"rows {rows[:5]}"


def split_rows(split: Split) -> list[dict]:
    """The split as plain rows ({"text", "pair", "label"}), for JSON files."""
    pairs = split.pairs or [None] * len(split)
    return [{"text": t, "pair": p, "label": label} for t, p, label in zip(split.texts, pairs, split.labels)]


def split_from_rows(rows: list[dict]) -> Split:
    """A split from rows as `split_rows` writes them."""
    pairs = [row["pair"] for row in rows]
    return Split(
        texts=[row["text"] for row in rows],
        labels=[row["label"] for row in rows],
        pairs=pairs if any(p is not None for p in pairs) else None,
        rows=list(range(len(rows))),
    )


def concat_splits(splits: list[Split]) -> Split:
    """The rows of several splits, one after the other (pairs kept when any split has them)."""
    has_pairs = any(split.pairs is not None for split in splits)
    return Split(
        texts=[text for split in splits for text in split.texts],
        labels=[label for split in splits for label in split.labels],
        pairs=[p for s in splits for p in (s.pairs or [""] * len(s))] if has_pairs else None,
        rows=list(range(sum(len(split) for split in splits))),
    )
