"""Micro-batching: concurrent requests for one model share forward passes, and the cores never wait for HTTP.

Texts, not requests, are the unit: every text of every waiting request joins one pool. Each of
`slots` forward-pass slots (one per core group) takes, when it is free, at most `max_batch` waiting
texts of the most similar lengths (the tightest length window in the pool), so a pass pads little,
as in offline length-sorted prediction. Lengths are what `measure` says of a request's texts on arrival: for
a model, its tokens (a pass is padded to its longest text in tokens; characters pad a pass by about a
quarter more tokens, simulated on SST-2). A text that has waited `max_delay_s` goes in the next pass,
with the texts nearest its length, so tight packing never starves a text of unusual length. A large
request is spread over all slots, and while one slot's pass runs the others take what arrived
meanwhile. A request is answered once all its texts are scored. A free slot waits at most
`max_wait_s` (from the oldest text's arrival) for a fuller pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field


@dataclass(eq=False)  # compared by identity: two requests may hold the same texts
class Request:
    texts: list[str]
    future: asyncio.Future
    results: list = field(default_factory=list)
    left: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.texts)
        self.left = len(self.texts)


@dataclass(eq=False)
class Text:
    request: Request
    position: int
    arrived: float
    length: int

    @property
    def text(self) -> str:
        return self.request.texts[self.position]


def character_lengths(texts: list[str]) -> list[int]:
    return [len(text) for text in texts]


def next_pass(waiting: list[Text], size: int, overdue: bool) -> list[Text]:
    """At most `size` texts of `waiting` (in arrival order) of similar length: the tightest length window,
    or, when the oldest text is `overdue`, the window around it."""
    if len(waiting) <= size:
        return list(waiting)
    by_length = sorted(waiting, key=lambda item: item.length)
    lengths = [item.length for item in by_length]
    starts = range(len(by_length) - size + 1)
    if overdue:
        at = by_length.index(waiting[0])
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
        max_delay_s: float = 0.2,
        slots: int = 1,
        on_batch: Callable[[int], None] = lambda size: None,
        measure: Callable[[list[str]], list[int]] = character_lengths,
    ):
        self.predict_batch = predict
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_delay_s = max_delay_s
        self.slots = slots
        self.on_batch = on_batch
        self.measure = measure
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
        self.waiting.extend(Text(request, i, now, length) for i, length in enumerate(self.measure(texts)))
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
            overdue = asyncio.get_running_loop().time() - self.waiting[0].arrived >= self.max_delay_s
            chosen = next_pass(self.waiting, self.max_batch, overdue)
            taken = set(chosen)
            self.waiting = [item for item in self.waiting if item not in taken]
            await self._run(chosen)

    async def _run(self, items: list[Text]) -> None:
        """One forward pass; if it fails, each request's texts alone, so a bad request fails only itself."""
        loop = asyncio.get_running_loop()
        try:
            self.on_batch(len(items))
            results = await loop.run_in_executor(self.executor, self.predict_batch, [item.text for item in items])
        except Exception as error:
            requests = list(dict.fromkeys(item.request for item in items))
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
