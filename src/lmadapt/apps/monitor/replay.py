"""Replay a timestamped history through the whole pipeline (ingest -> store -> detect -> alert): at `speed` times
real time (the gaps between item times, divided by speed, are waited), or as fast as it goes. It resumes where an
interrupted replay of the same file stopped, like any file source."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from lmadapt.apps.monitor.config import MonitorConfig
from lmadapt.apps.monitor.pipeline import IngestReport, Monitor, parse_time
from lmadapt.apps.monitor.store import MonitorStore
from lmadapt.data.loading import read_table
from lmadapt.errors import LmadaptError


def replay(
    config: MonitorConfig,
    stream: str | Path,
    *,
    speed: float | None = None,
    progress: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestReport:
    """Feed the file's items in time order (items whose time cannot be read go first, to be rejected); `speed`
    None: as fast as possible, else that many times real time."""
    from lmadapt.apps.monitor.alerts import AlertDispatcher, receivers_from

    if speed is not None and speed <= 0:
        raise LmadaptError(f"speed must be above 0, got {speed:g}", where="--speed", fix="e.g. 60, or leave it out")
    path = Path(stream)
    records = read_table(path, config.input.format).frame.to_dict("records")
    zone = ZoneInfo(config.input.timezone)
    times = [_time_or_none(record.get(config.input.time_field), zone) for record in records]
    order = sorted(range(len(records)), key=lambda i: (times[i] is not None, times[i] or 0))
    name = f"replay:{path.resolve()}"
    total = IngestReport()
    with MonitorStore(config.store_url) as store:
        monitor = Monitor(config, store)
        dispatcher = AlertDispatcher(receivers_from(config.alerts), config.alerts, store.record_delivery)
        monitor.dispatch = dispatcher.submit
        start = int(store.position(name) or 0)
        if start:
            progress(f"resuming the replay of {path} at item {start}")
        first_time = next((times[i] for i in order[start:] if times[i] is not None), None)

        def due_after(i: int) -> float:
            """Seconds after the replay began when item i is due (unreadable times: at once)."""
            return 0.0 if times[i] is None else (times[i] - first_time).total_seconds() / speed

        began = time.monotonic()
        try:
            position = start
            while position < len(order):
                if speed is None:
                    batch = order[position : position + config.ingest.batch_size]
                else:  # wait for the next item, then take every item due by now (up to a batch)
                    wait = due_after(order[position]) - (time.monotonic() - began)
                    if wait > 0:
                        sleep(wait)
                    now = time.monotonic() - began
                    end = position + 1
                    while (
                        end < len(order) and end - position < config.ingest.batch_size and due_after(order[end]) <= now
                    ):
                        end += 1
                    batch = order[position:end]
                position += len(batch)
                total.add(monitor.ingest([records[i] for i in batch], name, str(position)))
                progress(
                    f"{position}/{len(order)} items: {total.stored} stored, {total.rejected} rejected, "
                    f"{len(total.alerts)} alerts"
                )
        finally:
            dispatcher.close(timeout=config.alerts.timeout_s * (config.alerts.retries + 1))
    return total


def _time_or_none(value, zone):
    try:
        return parse_time(value, zone)
    except ValueError:
        return None
