"""The model pool: the runs a service serves, each with its micro-batcher, looked up by name.

`ModelPool.predict(name, texts)` is what every route predicts through, the service's own and an
application's: it checks the texts against the service's limits and the model's language guard, shares
forward passes with concurrent requests, times out, counts, and hands the results to the pool's
prediction hooks. `ModelPool.serving()` runs the batchers for the app's lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from lmadapt.errors import LmadaptError
from lmadapt.inference.engines import check_backend
from lmadapt.inference.predictor import torch_threads, worker_count
from lmadapt.runs import Run
from lmadapt.serving.batching import MicroBatcher, character_lengths
from lmadapt.serving.errors import ApiError
from lmadapt.serving.metrics import Metrics
from lmadapt.serving.settings import ServiceSettings

PredictionHook = Callable[[str, list[str], list[dict]], list[dict] | None]
"""Called with (model name, texts, results) after each prediction; a list it returns replaces the results."""
Reader = Callable[[list[str]], list]
"""An application's batched work on texts (texts -> one result per text, e.g. a bot's reading of messages)."""


class ModelInfo(BaseModel):
    name: str
    strategy: str
    backbone: str | None
    task: str
    labels: list[str]
    backend: str
    test_accuracy: float | None = None
    ood_method: str | None = Field(None, description="How the model scores a text as out of scope (none: never).")
    abstain_label: str | None = Field(None, description="The label the model answers for a text out of its scope.")


@dataclass
class ServedModel:
    name: str
    run: Run
    predictor: Any
    batcher: MicroBatcher | None = None

    def info(self) -> ModelInfo:
        config = self.run.run_config
        return ModelInfo(
            name=self.name,
            strategy=config.strategy_name,
            backbone=config.model.backbone,
            task=self.run.labels.task,
            labels=list(self.run.labels.labels),
            backend=self.predictor.engine.name,
            test_accuracy=self.run.metrics.get("test", {}).get("accuracy"),
            ood_method=self.predictor.ood.method if self.predictor.ood else None,
            abstain_label=self.predictor.ood.abstain_label if self.predictor.ood else None,
        )


def best_label_answer(result: dict) -> dict:
    """A result as it reads without abstention: its best label, even where the model abstained."""
    if not result.get("abstained"):
        return result
    answered = {key: value for key, value in result.items() if key != "reason"}
    return answered | {"label": max(result["scores"], key=result["scores"].get), "abstained": False}


def check_texts(texts: list[str], settings: ServiceSettings) -> None:
    """The texts of one request within the service's limits, each a non-empty Unicode text, else an ApiError."""
    if not texts:
        raise ApiError(422, "no_texts", "texts is empty", fix="send at least one text")
    if len(texts) > settings.max_texts:
        raise ApiError(
            422,
            "too_many_texts",
            f"{len(texts)} texts in one request; the limit is {settings.max_texts}",
            fix="split the texts over several requests",
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise ApiError(422, "empty_text", f"text {i} is empty", fix="send non-empty texts")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800": no tokenizer reads it
            raise ApiError(
                422, "invalid_text", f"text {i} is not valid Unicode (a lone surrogate)", fix="send UTF-8 text"
            ) from None
        if len(text) > settings.max_chars:
            raise ApiError(
                422,
                "text_too_long",
                f"text {i} has {len(text)} characters; the limit is {settings.max_chars}",
                fix="shorten or split the text",
            )


class ModelPool:
    """One predictor per run on the service's backend, named by the run folder (loaded now, so a bad run
    fails before the server starts); `hooks` post-process or observe every prediction, in order. An application's
    `readers` (name -> Reader) are micro-batched beside the models, on the same forward-pass slots and limits."""

    def __init__(
        self,
        runs: Sequence[Run],
        settings: ServiceSettings,
        metrics: Metrics,
        readers: Mapping[str, Reader] | None = None,
    ):
        check_backend(settings.backend)
        self.settings, self.metrics = settings, metrics
        self.workers = worker_count(settings.workers)
        self.hooks: list[PredictionHook] = []
        self.readers = dict(readers or {})
        self.reader_batchers: dict[str, MicroBatcher] = {}
        self.models: dict[str, ServedModel] = {}
        for run in runs:
            if run.name in self.models:
                raise LmadaptError(
                    f"two runs are both named '{run.name}'", fix="serve runs whose folders have different names"
                )
            # The batcher runs `workers` passes at once; each is one engine call on its share of the cores.
            predictor = run.inference(
                settings.backend, workers=1, batch_size=settings.max_batch, engine_workers=self.workers
            )
            run.check_reads([])  # loads the language guard's tokenizer now, not on the first request
            self.models[run.name] = ServedModel(run.name, run, predictor)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The batchers run for the block: `workers` forward passes at once (of any model), each on its own
        cores, so PyTorch must not spread one pass over all of them."""
        with (
            torch_threads(self.workers),
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lmadapt-pass") as executor,
        ):
            for served in self.models.values():
                predictor = served.predictor
                served.batcher = self._batcher(served.name, predictor.predict, executor, predictor.token_counts)
            for name, reader in self.readers.items():
                self.reader_batchers[name] = self._batcher(name, reader, executor)
            batchers = [served.batcher for served in self.models.values()] + list(self.reader_batchers.values())
            for batcher in batchers:
                batcher.start()
            yield
            for batcher in batchers:
                await batcher.stop()

    def _batcher(self, name: str, work: Reader, executor, measure=character_lengths) -> MicroBatcher:
        """The micro-batcher of `work`; `measure` gives texts' lengths (a model's: in its tokens)."""
        return MicroBatcher(
            work,
            executor,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.max_wait_ms / 1000,
            max_delay_s=self.settings.max_delay_ms / 1000,
            slots=self.workers,
            on_batch=self.metrics.batch_size.labels(name).observe,
            measure=measure,
        )

    def choose(self, name: str | None) -> ServedModel:
        """The model named `name`, or the only one served for None, else an ApiError."""
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(
                422,
                "model_required",
                "several models are served: name one",
                fix=f"set model to one of {sorted(self.models)}",
            )
        if name not in self.models:
            raise ApiError(
                404,
                "unknown_model",
                f"no model named '{name}'",
                fix=f"use one of {sorted(self.models)} (GET /v1/models)",
            )
        return self.models[name]

    def stopped(self) -> list[str]:
        """The models (and readers) whose batcher does not run."""
        batchers = {name: served.batcher for name, served in self.models.items()}
        batchers |= {name: self.reader_batchers.get(name) for name in self.readers}
        return [name for name, batcher in batchers.items() if batcher is None or not batcher.running]

    async def predict(self, name: str | None, texts: list[str], abstain: bool = True) -> list[dict]:
        """A label (multi-label: labels) and per-label scores for each text, from the model `name` (None: the
        only one); concurrent calls share forward passes. A model with out-of-scope detection also says whether it
        `abstained` and its `ood_score`; `abstain=False` answers the best label always. A refusal is an ApiError."""
        served = self.choose(name)
        check_texts(texts, self.settings)
        try:
            served.run.check_reads(texts, where="texts")
        except LmadaptError as error:
            raise ApiError(422, "unreadable_texts", error.what, fix=error.fix) from None
        results = await self._in_time(served.batcher.predict(texts))
        if not abstain:
            results = [best_label_answer(result) for result in results]
        for result in results:
            if result.get("abstained"):
                self.metrics.abstentions.labels(served.name, result["reason"]).inc()
        for hook in self.hooks:
            changed = hook(served.name, texts, results)
            if changed is not None:
                results = changed
        self.metrics.texts.labels(served.name).inc(len(results))
        return results

    async def read(self, name: str, texts: list[str]) -> list:
        """The application reader `name`'s results for `texts` (checked against the service's limits), in passes
        shared with concurrent calls; a refusal or a timeout is an ApiError."""
        check_texts(texts, self.settings)
        return await self._in_time(self.reader_batchers[name].predict(texts))

    async def _in_time(self, waiting) -> list:
        try:
            return await asyncio.wait_for(waiting, self.settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"the prediction took longer than {self.settings.timeout_s:g} s",
                fix="send fewer texts per request, or retry when the service is less busy",
            ) from None
