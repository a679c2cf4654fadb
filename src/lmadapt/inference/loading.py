"""A run's predictor on the chosen inference path. Reads a run folder through what any run object offers (its
path, checked config, labels and the torch predictor it already holds), so this layer knows nothing of runs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lmadapt.data.labels import LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.inference.artifacts import load_input_tokenizer, load_model_and_reader
from lmadapt.inference.engines import (
    OPENVINO,
    TORCH,
    TORCH_BF16,
    OnnxEngine,
    OpenVinoEngine,
    TorchEngine,
    onnx_file,
    resolve_backend,
)
from lmadapt.inference.guard import TextGuard
from lmadapt.inference.ood import OodDetector
from lmadapt.inference.predictor import Predictor, threads_per_worker
from lmadapt.models.shared import cast_keeping_shared


def load_torch_predictor(folder: Path, config, labels: LabelMap, max_length: int, guard: TextGuard) -> Predictor:
    """The run's model in PyTorch float32, on the shared copy of its backbone's frozen weights."""
    model, reader = load_model_and_reader(folder / "model", config, labels, share_backbone=True)
    tokenizer = reader or load_input_tokenizer(folder / "model", config)
    return Predictor(model, tokenizer, labels, max_length, guard=guard, ood=OodDetector.load(folder))


def load_predictor(
    folder: Path,
    config,
    labels: LabelMap,
    max_length: int,
    signed: Callable[[str], bool],
    fastest: Callable[[], str],
    torch_predictor: Callable[[], Predictor],
    guard: TextGuard,
    backend: str = "auto",
    workers: int = 1,
    batch_size: int = 64,
    engine_workers: int = 0,
) -> Predictor:
    """A predictor on the chosen inference path (`auto`: `fastest()`, the fastest path measured here, see
    `resolve_backend`); `signed(file)` says whether the run's manifest lists an exported graph; `torch_predictor()`
    the float32 predictor already loaded; `guard` the run's text guard, which `predict` applies. `workers` batches run at once, each on its share of the cores (the share of `engine_workers`
    concurrent callers instead, when the caller runs batches at once itself, as the service does)."""
    chosen = resolve_backend(folder, backend, signed, fastest)
    # The torch predictor (loaded once per run) already holds the detector; other paths read it here.
    ood = torch_predictor().ood if chosen == TORCH else OodDetector.load(folder)
    engine, tokenizer = _engine(chosen, folder, config, labels, torch_predictor, max(1, engine_workers or workers))
    if ood is not None and ood.needs_features and not engine.has_features:
        if backend != "auto":
            raise LmadaptError(
                f"this run's out-of-scope score ({ood.method}) reads the classifier's features, which its {chosen} "
                "graph does not give (exported by an older lmadapt)",
                where=str(folder),
                fix=f"export the run again (lmadapt export {folder} --format onnx), or use --backend torch",
            )
        loaded = torch_predictor()
        engine, tokenizer = loaded.engine, loaded.tokenizer
    return Predictor(
        engine, tokenizer, labels, max_length, batch_size=batch_size, workers=workers, guard=guard, ood=ood
    )


def _engine(chosen: str, folder: Path, config, labels: LabelMap, torch_predictor, concurrent: int):
    """(engine, tokenizer) of the inference path `chosen`; `concurrent` calls share the cores."""
    if chosen == TORCH:
        loaded = torch_predictor()
        return loaded.engine, loaded.tokenizer
    if chosen == TORCH_BF16:  # a model of its own, on the shared bf16 copy of its backbone
        model, reader = load_model_and_reader(folder / "model", config, labels, share_backbone=True)
        engine = TorchEngine(cast_keeping_shared(model, torch.bfloat16), TORCH_BF16)
        return engine, reader or load_input_tokenizer(folder / "model", config)
    graph = folder / onnx_file(chosen)  # an exported graph
    if chosen == OPENVINO:
        engine = OpenVinoEngine(graph, streams=concurrent)
    else:
        engine = OnnxEngine(graph, chosen, threads=threads_per_worker(concurrent))
    return engine, load_input_tokenizer(folder / "model", config)
