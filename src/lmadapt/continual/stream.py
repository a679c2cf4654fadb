"""Experience streams: class-incremental (one dataset's labels split into disjoint, seeded groups) or
one data source per experience (domain-incremental when the sources share labels)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lmadapt.config import RunConfig
from lmadapt.data.prepare import PreparedData, prepare_data
from lmadapt.data.split import Split, concat_splits
from lmadapt.errors import LmadaptError


@dataclass
class Experience:
    name: str
    train: Split
    validation: Split
    test: Split

    @property
    def labels(self) -> list[str]:
        """This experience's labels, in the order the training rows first show them."""
        return list(dict.fromkeys(self.train.labels))


def _only(split: Split, labels: set[str]) -> Split:
    return split.take([i for i, label in enumerate(split.labels) if label in labels])


def class_groups(labels: list[str], groups: int, seed: int) -> list[list[str]]:
    """Labels shuffled with the seed and dealt into `groups` groups of (nearly) equal size."""
    if groups > len(labels):
        raise LmadaptError(
            f"cannot split {len(labels)} labels into {groups} class-incremental experiences",
            where="continual.class_groups",
            fix=f"use at most {len(labels)} groups",
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    return [sorted((labels[i] for i in part), key=labels.index) for part in np.array_split(order, groups)]


def class_incremental(data: PreparedData, groups: int, seed: int) -> list[Experience]:
    """One experience per label group, each with its labels' training, validation and test rows."""
    return [
        Experience(
            f"classes {i + 1}/{groups}",
            _only(data.train, set(group)),
            _only(data.validation, set(group)),
            _only(data.test, set(group)),
        )
        for i, group in enumerate(class_groups(data.labels.labels, groups, seed))
    ]


def source_name(source: str) -> str:
    return source.removeprefix("builtin:").rsplit("/", 1)[-1]


def build_stream(config: RunConfig) -> list[Experience]:
    """The config's stream: `continual.experiences` (a source each), else data.train split by class."""
    continual = config.continual
    if continual.experiences:
        if len(continual.experiences) < 2:
            raise LmadaptError("a stream needs at least two experiences", where="continual.experiences")
        stream = []
        for source in continual.experiences:
            # Each source is split into train / validation / test like a run's data, with the data section's options.
            data = prepare_data(dataclasses.replace(config.data, train=source, validation=None, test=None), config.seed)
            stream.append(Experience(source_name(source), data.train, data.validation, data.test))
        return stream
    return class_incremental(prepare_data(config.data, config.seed), continual.class_groups, config.seed)


def joined(stream: list[Experience], name: str) -> Experience:
    """All experiences as one (joint training, and the final model's overall metrics)."""
    return Experience(
        name,
        concat_splits([e.train for e in stream]),
        concat_splits([e.validation for e in stream]),
        concat_splits([e.test for e in stream]),
    )
