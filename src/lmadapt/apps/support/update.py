"""Learning from the queue (`lmadapt support update`): the intents people corrected (feedback) and named when they
resolved a handed-off conversation become training rows; the intent run learns them by continual learning (replay
by default, so it keeps what it knew), and a new version of the bot is written beside the old one, re-embedded and
calibrated again on the same calibration messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import lmadapt
from lmadapt.apps.support.bot import (
    INTENT_FOLDER,
    MESSAGES_FILE,
    Messages,
    assemble,
    intent_data_settings,
    labelled_rows,
    load_bot,
    write_jsonl,
)
from lmadapt.apps.support.store import ConversationStore
from lmadapt.errors import LmadaptError
from lmadapt.runs import write_run_folder

LEARNT_FILE = "learnt.jsonl"  # the rows this version learnt, with where each came from


def default_store_url(folder: Path, name: str) -> str:
    """The SQLite file beside the bot's folders, shared by its versions."""
    return f"sqlite:///{(folder.parent / f'{name}-conversations.sqlite').resolve()}"


def update_bot(
    folder: str | Path,
    *,
    store_url: str | None = None,
    name: str | None = None,
    method: str = "replay",
    overwrite: bool = False,
    progress=print,
) -> Path:
    """A new bot version whose intent run has learnt the store's corrections and resolved handoffs; returns its
    folder (default: <name>-v<version+1> beside the old one, which is untouched)."""
    folder = Path(folder)
    bot = load_bot(folder)
    with ConversationStore(store_url or default_store_url(folder, bot.name)) as store:
        rows = store.training_rows()
    if not rows:
        raise LmadaptError(
            "the store holds no corrected intents and no resolved handoffs to learn from",
            where=store_url or default_store_url(folder, bot.name),
            fix="send feedback with corrected_intent, or resolve handed-off conversations with their intent "
            "(POST /v1/conversations/{id}/resolve), then update again",
        )
    final = folder.parent / (name or f"{bot.name}-v{bot.version + 1}")
    if final.resolve() == folder.resolve():
        raise LmadaptError("the new version would replace the bot it starts from", where="--name", fix="choose another")
    if final.exists() and not overwrite:
        raise LmadaptError(f"bot folder already exists: {final}", fix="choose another --name, or pass --overwrite")

    def fill(staging: Path) -> None:
        learnt = staging / LEARNT_FILE
        data = bot.run.data_config()  # the columns the run reads (a reused run may name them otherwise)
        columns = (data.text_column, data.label_column)
        write_jsonl(learnt, ({columns[0]: r["text"], columns[1]: r["intent"], "source": r["source"]} for r in rows))
        # The update is measured (and its out-of-scope threshold refitted) on the in-scope calibration messages.
        messages = Messages.load(folder / MESSAGES_FILE)
        check = staging / ".calibration-in-scope.jsonl"
        in_scope = [i for i, intent in enumerate(messages.intents) if intent is not None]
        texts, intents = [messages.texts[i] for i in in_scope], [messages.intents[i] for i in in_scope]
        write_jsonl(check, labelled_rows(texts, intents, *columns))
        # The run is updated from a copy inside the new version: continual learning writes its result beside it.
        start = staging / ".previous-intent"
        shutil.copytree(bot.run.path, start)
        for kept in ("intent_data", "encoder"):
            if (folder / kept).is_dir():
                shutil.copytree(folder / kept, staging / kept)
        progress(f"learning {len(rows)} rows from the queue ({method})")
        lmadapt.update(
            start,
            str(learnt),
            method=method,
            name=INTENT_FOLDER,
            overrides=[*intent_data_settings(staging), "data.format=auto"],  # each file by its extension
            progress=progress,
            validation=str(check),
            test=str(check),
        )
        shutil.rmtree(start)
        check.unlink()
        sources = {source: sum(row["source"] == source for row in rows) for source in ("feedback", "handoff")}
        lineage = {"version": bot.version + 1, "parent": folder.name, "learnt": {"rows": len(rows), **sources}}
        assemble(staging, bot.config, bot.knowledge, messages, lineage, progress)

    write_run_folder(final, fill, overwrite)
    return final
