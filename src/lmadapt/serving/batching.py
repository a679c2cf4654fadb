"""Micro-batching: concurrent requests for one model share forward passes, and the cores never wait for HTTP.

Texts, not requests, are the unit: every text of every waiting request joins one pool. Each of
`slots` forward-pass slots (one per core group) takes, when it is free, the oldest waiting text and the
waiting texts nearest to it in length, at most `max_batch` of them. So a pass holds texts of similar
length (little padding, as in offline length-sorted prediction), the oldest text always goes next
(no starvation), a large request is spread over all slots, and while one slot's pass runs the others
take what arrived meanwhile. A request is answered once all its texts are scored. A free slot waits
at most `max_wait_s` (from the oldest text's arrival) for a fuller pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field


@dataclass
class Request:
    texts: list[str]
    future: asyncio.Future
    results: list = field(default_factory=list)
    left: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.texts)
        self.left = len(self.texts)


@dataclass
class Text:
    request: Request
    position: int
    arrived: float

    @property
    def text(self) -> str:
        return self.request.texts[self.position]


def nearest_in_length(waiting: list[Text], size: int) -> list[Text]:
    """The oldest waiting text and the `size` - 1 others whose lengths lie closest around it."""
    if len(waiting) <= size:
        return list(waiting)
    oldest = waiting[0]
    by_length = sorted(waiting, key=lambda item: len(item.text))
    lengths = [len(item.text) for item in by_length]
    at = by_length.index(oldest)
    starts = range(max(0, at - size + 1), min(at, len(by_length) - size) + 1)
    start = min(starts, key=lambda s: lengths[s + size - 1] - lengths[s])
    return by_length[start : start + size]


class MicroBatcher:
    """Runs `predict` (texts -> one result per text) on `executor` for the texts of concurrent requests."""

    def __init__(
        self,
        predict: Callable[[list[str]], list],
        executor: Executor,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        slots: int = 1,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self.predict_batch = predict
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.slots = slots
        self.on_batch = on_batch
        self.waiting: list[Text] = []  # in arrival order
        self.arrived = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._serve()) for _ in range(self.slots)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return bool(self.tasks) and not any(task.done() for task in self.tasks)

    async def predict(self, texts: list[str]) -> list:
        """The results for `texts`, computed in passes shared with whatever other requests arrive meanwhile."""
        loop = asyncio.get_running_loop()
        request = Request(texts, loop.create_future())
        now = loop.time()
        self.waiting.extend(Text(request, i, now) for i in range(len(texts)))
        self.arrived.set()
        return await request.future

    async def _wait_for_pass(self) -> None:
        """Until texts wait and either a full pass waits or the oldest text has waited `max_wait_s`."""
        loop = asyncio.get_running_loop()
        while True:
            self.waiting = [item for item in self.waiting if not item.request.future.done()]  # timed out: dropped
            if not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            remaining = self.waiting[0].arrived + self.max_wait_s - loop.time()
            if len(self.waiting) >= self.max_batch or remaining <= 0:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _serve(self) -> None:
        while True:
            await self._wait_for_pass()
            chosen = nearest_in_length(self.waiting, self.max_batch)
            taken = {id(item) for item in chosen}
            self.waiting = [item for item in self.waiting if id(item) not in taken]
            await self._run(chosen)

    async def _run(self, items: list[Text]) -> None:
        """One forward pass; if it fails, each request's texts alone, so a bad request fails only itself."""
        loop = asyncio.get_running_loop()
        try:
            self.on_batch(len(items))
            results = await loop.run_in_executor(self.executor, self.predict_batch, [item.text for item in items])
        except Exception as error:
            requests = list({id(item.request): item.request for item in items}.values())
            if len(requests) > 1:
                for request in requests:
                    await self._run([item for item in items if item.request is request])
            elif not requests[0].future.done():
                requests[0].future.set_exception(error)
            return
        for item, result in zip(items, results):
            request = item.request
            request.results[item.position] = result
            request.left -= 1
            if request.left == 0 and not request.future.done():
                request.future.set_result(request.results)
