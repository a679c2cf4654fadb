"""Micro-batching: concurrent requests for one model share one forward pass.

A request waits at most `max_wait_s` for others to join it, and a batch holds at most `max_batch`
texts (a request is never split, and one larger than `max_batch` runs alone). While a batch runs,
new requests queue up, so under load batches fill by themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass


@dataclass
class Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Gathers requests for one model into batches and runs them one at a time on `executor`."""

    def __init__(
        self,
        predict: Callable[[list[str]], list],
        executor: Executor,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self.predict_batch = predict
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.carried: Pending | None = None  # a request that did not fit the last batch: it opens the next
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def predict(self, texts: list[str]) -> list:
        """The results for `texts`, computed in a batch with whatever other requests arrive meanwhile."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(texts, future))
        return await future

    async def _next_batch(self) -> list[Pending]:
        loop = asyncio.get_running_loop()
        first, self.carried = self.carried or await self.queue.get(), None
        batch, size = [first], len(first.texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            remaining = deadline - loop.time()
            try:
                item = (
                    self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
                )
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if size + len(item.texts) > self.max_batch:
                self.carried = item
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def _serve(self) -> None:
        while True:
            batch = [item for item in await self._next_batch() if not item.future.done()]  # drop timed-out ones
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[Pending]) -> None:
        """One forward pass for the batch; if it fails, each request alone, so one bad request fails only itself."""
        loop = asyncio.get_running_loop()
        texts = [text for item in batch for text in item.texts]
        try:
            self.on_batch(len(texts))
            results = await loop.run_in_executor(self.executor, self.predict_batch, texts)
        except Exception as error:
            if len(batch) > 1:
                for item in batch:
                    await self._run([item])
            elif not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(results[start : start + len(item.texts)])
            start += len(item.texts)
