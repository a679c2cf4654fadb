"""What a support bot knows: the known questions with their answers and intents (from the history), and an answer
template per intent. Read through lmadapt's data layer, so a bad file gets its clear errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmadapt.apps.support.config import HistoryConfig, TemplatesConfig
from lmadapt.config import DataConfig
from lmadapt.data.loading import read_table
from lmadapt.data.prepare import extract_split, split_off
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError

KNOWLEDGE_FILE = "knowledge.jsonl"
TEMPLATES_FILE = "templates.json"


def history_data_config(history: HistoryConfig, *, answers: bool) -> DataConfig:
    return DataConfig(
        format=history.format,
        text_column=history.question_column,
        label_column=history.intent_column,
        text_pair_column=history.answer_column if answers else None,
        drop_empty=True,
        normalize_unicode=True,
    )


def read_history(source: str, history: HistoryConfig, *, answers: bool = True) -> Split:
    """The history's questions (texts), intents (labels) and answers (pairs, "" where a row has none), duplicates
    and empty questions dropped."""
    table = read_table(source, history.format)
    config = history_data_config(history, answers=answers and bool(history.answer_column))
    for key, column in (("question_column", history.question_column), ("answer_column", history.answer_column)):
        if column and column not in table.frame.columns and (key == "question_column" or answers):
            found = ", ".join(map(str, table.frame.columns))
            raise LmadaptError(
                f"column '{column}' not found; the file has columns: {found}",
                where=source,
                fix=f"set history.{key} to one of them (e.g. --set history.{key}=...)",
            )
    split = extract_split(table, config)
    seen: set[str] = set()
    keep = [i for i, text in enumerate(split.texts) if not (text in seen or seen.add(text))]
    return split.take(keep)


def read_templates(templates: TemplatesConfig) -> dict[str, str]:
    """Intent -> answer template; an intent given twice, or an empty answer, is refused."""
    table = read_table(templates.path)
    for key in ("intent_column", "answer_column"):
        column = getattr(templates, key)
        if column not in table.frame.columns:
            raise LmadaptError(
                f"column '{column}' not found; the file has columns: {', '.join(map(str, table.frame.columns))}",
                where=templates.path,
                fix=f"set templates.{key} to one of them",
            )
    found: dict[str, str] = {}
    for row, (intent, answer) in enumerate(
        zip(table.frame[templates.intent_column], table.frame[templates.answer_column])
    ):
        intent, answer = str(intent).strip(), ("" if answer is None else str(answer).strip())
        where = table.where_rows([row])
        if not answer or answer == "nan":
            raise LmadaptError(f"intent '{intent}' has an empty answer", where=where, fix="write its answer")
        if intent in found:
            raise LmadaptError(f"intent '{intent}' has two templates", where=where, fix="keep one answer per intent")
        found[intent] = answer
    return found


@dataclass
class KnowledgeBase:
    """Known questions (one a vector index row), their answers ("" where only the intent's template answers) and
    intents, and the answer template of each intent."""

    questions: list[str]
    answers: list[str]
    intents: list[str | None]
    templates: dict[str, str]

    def __len__(self) -> int:
        return len(self.questions)

    def answer_of(self, entry: int) -> str:
        """A known question's answer, or its intent's template when the history gave none."""
        return self.answers[entry] or self.templates.get(self.intents[entry] or "", "")

    def save(self, folder: Path) -> None:
        with open(folder / KNOWLEDGE_FILE, "w", encoding="utf-8") as out:
            for question, answer, intent in zip(self.questions, self.answers, self.intents):
                out.write(json.dumps({"question": question, "answer": answer, "intent": intent}, ensure_ascii=False))
                out.write("\n")
        (folder / TEMPLATES_FILE).write_text(
            json.dumps(self.templates, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> KnowledgeBase:
        rows = [json.loads(line) for line in (folder / KNOWLEDGE_FILE).read_text(encoding="utf-8").splitlines()]
        templates = json.loads((folder / TEMPLATES_FILE).read_text(encoding="utf-8"))
        return cls([r["question"] for r in rows], [r["answer"] for r in rows], [r["intent"] for r in rows], templates)


def knowledge_base(history: Split, templates: dict[str, str], per_intent: int | None, seed: int) -> KnowledgeBase:
    """The knowledge base from the history's in-scope rows: every question, or `per_intent` seeded ones per intent."""
    positions = np.arange(len(history))
    if per_intent is not None:
        rng = np.random.default_rng(seed)
        by_intent: dict[str | None, list[int]] = {}
        for i, intent in enumerate(history.labels):
            by_intent.setdefault(intent, []).append(i)
        positions = np.sort(
            np.concatenate([rng.permutation(rows)[:per_intent] for rows in by_intent.values()]).astype(int)
        )
    kept = history.take(positions)
    answers = kept.pairs if kept.pairs is not None else [""] * len(kept)
    unanswered = [
        i for i, (answer, intent) in enumerate(zip(answers, kept.labels)) if not answer and intent not in templates
    ]
    if unanswered:
        intent = kept.labels[unanswered[0]]
        raise LmadaptError(
            f"{len(unanswered)} known question(s) have neither an answer nor a template for their intent "
            f"(e.g. {kept.texts[unanswered[0]]!r}, intent {intent!r})",
            where=kept.source.where_rows([kept.rows[i] for i in unanswered]) if kept.source else None,
            fix="give those rows an answer in history.answer_column, or add their intents to templates.path",
        )
    return KnowledgeBase(kept.texts, list(answers), list(kept.labels), templates)


def by_scope(split: Split, out_of_scope_label: str | None) -> tuple[Split, Split]:
    """(in-scope rows, rows of the out-of-scope label)."""
    outside = split.rows_of([out_of_scope_label]) if out_of_scope_label else []
    return split.drop(outside), split.take(outside)


def split_history(
    history: Split, out_of_scope_label: str | None, share: float, seed: int
) -> tuple[Split, Split, Split]:
    """(in-scope training rows, in-scope calibration rows, out-of-scope rows): a seeded stratified share of the
    in-scope rows calibrates."""
    in_scope, out_of_scope = by_scope(history, out_of_scope_label)
    train, calibration = split_off(in_scope, share, seed, "single_label")
    return train, calibration, out_of_scope
