"""Inference engines: what turns one padded batch of token ids into logits (and, `with_features`, the classifier's
features: the input of its classification head, one vector a text).

- `torch`: the PyTorch model, inference mode (fp32, or bf16 weights with `torch-bf16`).
- `onnx`, `onnx-int8`: ONNX Runtime on the graph `lmadapt export` wrote into the run folder.
- `openvino`: OpenVINO on the exported float32 graph (in bf16 on a CPU with AMX, OpenVINO's default there).

Every engine is thread-safe for concurrent calls, so a Predictor can run batches on several threads
(each engine thread on one core: on a small CPU this beats one batch on all cores, DESIGN.md 8). An exported graph
gives the features where `lmadapt export` wrote them as its second output, `features`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.models.classifier import classification_head

TORCH, TORCH_BF16, ONNX, ONNX_INT8, OPENVINO, AUTO = "torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "auto"
BACKENDS = (AUTO, TORCH, TORCH_BF16, ONNX, ONNX_INT8, OPENVINO)
ONNX_FOLDER = "onnx"
ONNX_FILES = {ONNX: "model.onnx", ONNX_INT8: "model.int8.onnx", OPENVINO: "model.onnx"}  # the graph each runs
LOGITS, FEATURES = "logits", "features"  # an exported graph's outputs


def no_features_in(path: Path) -> LmadaptError:
    return LmadaptError(
        "this exported graph has no `features` output (exported by an older lmadapt, or its head reads every token)",
        where=str(path),
        fix="export the run again (lmadapt export RUN --format onnx), or use --backend torch",
    )


class TorchEngine:
    """A PyTorch classifier on CPU or GPU; its logits as float32 numpy."""

    has_features = True

    def __init__(self, model, name: str = TORCH):
        self.model = model
        self.name = name
        self._seen = threading.local()  # batches may run on several threads; each reads its own features

    @property
    def input_names(self) -> list[str] | None:
        return None  # the model takes whatever the tokenizer gives

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            inputs = {key: torch.from_numpy(value).to(device) for key, value in batch.items()}
            return self.model(**inputs).logits.float().cpu().numpy()

    def with_features(self, batch: dict[str, np.ndarray], num_labels: int) -> tuple[np.ndarray, np.ndarray]:
        """The logits and the input of the classification head (the last linear layer with `num_labels` outputs)."""
        head = classification_head(self.model, num_labels)
        hook = head.register_forward_pre_hook(lambda _module, args: setattr(self._seen, "features", args[0]))
        try:
            logits = self(batch)
        finally:
            hook.remove()
        features = self._seen.features
        if features.dim() != 2:
            raise LmadaptError(
                "this run's head reads every token, not one vector a text: it has no text features",
                fix="embed with an encoder run (full, head, lora, adapter, ...) or a backbone",
            )
        return logits, features.detach().float().cpu().numpy()


def unloadable(runtime: str, error: Exception, path: Path, fix: str) -> LmadaptError:
    return LmadaptError(
        f"{runtime} cannot load this graph: {str(error).splitlines()[0][:300]}", where=str(path), fix=fix
    )


class OnnxEngine:
    """An exported classifier on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, name: str = ONNX, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # e.g. a graph from a newer opset than this onnxruntime reads
            raise unloadable(
                "ONNX Runtime", error, path, "export the run again with this lmadapt, or pick --backend torch"
            ) from None
        self.name = name
        self.path = path
        self.input_names = [item.name for item in self.session.get_inputs()]
        self.has_features = FEATURES in {item.name for item in self.session.get_outputs()}

    def _run(self, batch: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        feed = {name: batch[name].astype(np.int64, copy=False) for name in self.input_names}
        return [array.astype(np.float32, copy=False) for array in self.session.run(outputs, feed)]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(batch, [LOGITS])[0]

    def with_features(self, batch: dict[str, np.ndarray], num_labels: int | None = None) -> tuple[np.ndarray, ...]:
        if not self.has_features:
            raise no_features_in(self.path)
        return tuple(self._run(batch, [LOGITS, FEATURES]))


class OpenVinoEngine:
    """An exported classifier on OpenVINO's CPU plugin, `streams` batches at once (each on its share of the
    cores). OpenVINO computes in bf16 where the CPU has AMX: measured faster than torch-bf16 here
    (bench/RESULTS.md, serving), with the same precision."""

    def __init__(self, path: Path, streams: int = 1):
        import openvino

        options = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(os.cpu_count() or 1),
        }
        try:
            self.compiled = openvino.Core().compile_model(str(path), "CPU", options)
        except Exception as error:  # e.g. an operator this OpenVINO does not convert
            raise unloadable("OpenVINO", error, path, "pick --backend torch-bf16 or onnx") from None
        self.name = OPENVINO
        self.path = path
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.outputs = {name: port for port in self.compiled.outputs for name in port.get_names()}
        self.has_features = FEATURES in self.outputs
        self.idle = queue.SimpleQueue()  # infer requests not in use: one per concurrent call, made as needed
        # OpenVINO's first inference in a process initializes statics that take the GIL: two threads making it at
        # once deadlocked (the service's two passes, once in a load test). So it is made here, on one thread.
        self._run(
            {name: (np.ones if name == "attention_mask" else np.zeros)((1, 1), np.int64) for name in self.input_names},
            [LOGITS],
        )

    def _run(self, batch: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        try:
            request = self.idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            feed = {name: batch[name].astype(np.int64, copy=False) for name in self.input_names}
            found = request.infer(feed)
            return [np.array(found[self.outputs[name]], dtype=np.float32) for name in outputs]
        finally:
            self.idle.put(request)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(batch, [LOGITS])[0]

    def with_features(self, batch: dict[str, np.ndarray], num_labels: int | None = None) -> tuple[np.ndarray, ...]:
        if not self.has_features:
            raise no_features_in(self.path)
        return tuple(self._run(batch, [LOGITS, FEATURES]))


ENGINES = (TorchEngine, OnnxEngine, OpenVinoEngine)


def onnx_file(backend: str) -> str:
    """The graph's path inside a run folder, as its manifest lists it."""
    return f"{ONNX_FOLDER}/{ONNX_FILES[backend]}"


def has_export(run_path: Path, backend: str, signed: Callable[[str], bool]) -> bool:
    """The run holds this graph and `signed` says its manifest lists it (an interrupted export leaves unsigned
    files)."""
    return (run_path / onnx_file(backend)).is_file() and signed(onnx_file(backend))


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise LmadaptError(f"unknown inference backend '{backend}'", fix=did_you_mean(backend, BACKENDS))
    return backend


def openvino_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("openvino") is not None


def resolve_backend(run_path: Path, backend: str, signed: Callable[[str], bool], fastest: Callable[[], str]) -> str:
    """The backend to use; `auto`: PyTorch on a GPU, else `fastest()`, the fastest of the run's paths as measured on
    this CPU (lmadapt.inference.choice)."""
    check_backend(backend)
    if backend == AUTO:
        return TORCH if torch.cuda.is_available() else fastest()
    if backend in ONNX_FILES and not has_export(run_path, backend, signed):
        quantize = " --quantize int8" if backend == ONNX_INT8 else ""
        raise LmadaptError(
            f"this run has no {backend} export",
            where=str(run_path),
            fix=f"run `lmadapt export {run_path} --format onnx{quantize}` first, or pick --backend torch",
        )
    return backend
