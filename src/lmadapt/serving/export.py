"""Export a run's classifier to ONNX (optionally int8-quantized), checked against the PyTorch model.

The graph goes into the run folder (`onnx/model.onnx`, `onnx/model.int8.onnx`, `onnx/export.json`)
and into its manifest, so `predict` and `serve` find it and a changed file is caught on load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import normalize

from lmadapt.data.labels import MULTI_LABEL
from lmadapt.errors import LmadaptError
from lmadapt.inference.engines import (
    FEATURES,
    LOGITS,
    ONNX,
    ONNX_FILES,
    ONNX_FOLDER,
    ONNX_INT8,
    OnnxEngine,
    TorchEngine,
    onnx_file,
)
from lmadapt.inference.guard import checked_texts
from lmadapt.inference.predictor import Predictor
from lmadapt.inference.scores import scores_from_logits
from lmadapt.models.classifier import classification_head
from lmadapt.models.peft_models import adapter_folds
from lmadapt.runs import Run, manifest_entry, update_manifest, write_file_atomic

# Largest allowed difference of any class probability between the export and the PyTorch model, and the
# least share of labels that must agree: float32 graphs agree to rounding; dynamic int8 quantization
# moves a borderline text's probabilities by up to ~0.5 (MiniLM on SST-2: max 0.48, labels agree on
# 98.9% of validation, accuracy +0.2 points), so for int8 the labels are what is held to account.
DEFAULT_TOLERANCE = {ONNX: 1e-3, ONNX_INT8: 0.5}
DEFAULT_MIN_AGREEMENT = {ONNX: 0.99, ONNX_INT8: 0.97}
PARITY_TEXTS = 512
CALIBRATION_TEXTS = 128
REPORT = "export.json"


class ClassifierOutputs(torch.nn.Module):
    """The classifier with positional token inputs, as the exporter traces it: its outputs are the logits and, given
    the classification `head` (one that reads one vector a text), that vector as `features` (what the out-of-scope
    scores and the support bot's retrieval read)."""

    def __init__(self, model, input_names: list[str], head=None):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.head = head

    def forward(self, *inputs):
        seen = {}
        hook = None
        if self.head is not None:
            hook = self.head.register_forward_pre_hook(lambda _module, args: seen.update(features=args[0]))
        try:
            logits = self.model(**dict(zip(self.input_names, inputs))).logits
        finally:
            if hook is not None:
                hook.remove()
        return (logits, seen["features"]) if self.head is not None else logits


def feature_head(model, num_labels: int, sample: dict):
    """The classification head whose input is one vector a text (exported as `features`), or None (a head that reads
    every token, or a model scoring labels another way)."""
    try:
        TorchEngine(model).with_features({name: value.numpy() for name, value in sample.items()}, num_labels)
    except LmadaptError:
        return None
    return classification_head(model, num_labels)


def exportable_model(run: Run):
    """The run's classifier as one plain module: a foldable adapter (LoRA, IA3) is merged into its backbone."""
    model = run.load_model(share_backbone=False)
    if adapter_folds(run.path / "model"):
        model = model.merge_and_unload()
    return model.float().eval()


def trace_to_onnx(model, tokenizer, num_labels: int, target: Path) -> tuple[list[str], list[str]]:
    """Write the graph; returns its output names (logits, and features where the head reads one vector a text) and
    its input names."""
    sample = tokenizer(
        ["a short example", "a somewhat longer example sentence to trace"], padding=True, return_tensors="pt"
    )
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    head = feature_head(model, num_labels, {name: sample[name] for name in names})
    outputs = [LOGITS] + ([FEATURES] if head is not None else [])
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names} | {output: {0: "batch"} for output in outputs}
    try:
        with warnings.catch_warnings():  # the tracer's notes on Python-level branches it fixes: not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ClassifierOutputs(model, names, head),
                tuple(sample[name] for name in names),
                str(target),
                input_names=names,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
    except Exception as error:  # the tracer's errors name the operation it could not express
        raise LmadaptError(
            f"this model does not export to ONNX: {type(error).__name__}: {str(error).splitlines()[0][:300]}",
            fix="serve the run with --backend torch (length-sorted batches, inference mode)",
        ) from None
    return outputs, names


def int8_graphs(source: Path, calibration: list[dict[str, np.ndarray]]) -> dict[str, Path]:
    """The float32 graph at `source` quantized to int8 both ways, beside it: `dynamic` (activations quantized
    batch by batch) and `static` (their ranges calibrated once on `calibration`, the run's own validation batches).
    Which keeps accuracy better depends on the model and the CPU, so export measures both."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(calibration)

        def get_next(self):
            return next(self.left, None)

    prepared = source.with_name("prepared-" + source.name)
    built = {"dynamic": source.with_name("dynamic-" + source.name), "static": source.with_name("static-" + source.name)}
    try:
        # Shapes inferred and the graph optimised first, as onnxruntime advises; per-channel weights halve the
        # probability drift of per-tensor ones (DESIGN.md 8). Weights in 7 bits (reduce_range): on x86 CPUs
        # without VNNI (AVX2 only, or AVX-512 without VNNI) onnxruntime's u8 x s8 products saturate at 8 bits; seen
        # on an AVX2 EPYC, where the support bot's out-of-scope recall fell from above 0.9 to 0.85. The export may
        # be read on another CPU than the one it was made on, so it is made safe for all.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        common = {"weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": True}
        quantize_dynamic(str(prepared), str(built["dynamic"]), **common)
        # Only the matrix products: quantized softmax, layer norm and GELU inputs cost accuracy and save little.
        quantize_static(
            str(prepared),
            str(built["static"]),
            Batches(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QUInt8,
            **common,
        )
    except Exception as error:  # onnxruntime's own errors: name them, no traceback
        raise LmadaptError(
            f"int8 quantization failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}",
            fix="export without --quantize (float32), or serve with --backend torch-bf16",
        ) from None
    finally:
        prepared.unlink(missing_ok=True)
    return built


def calibration_batches(run: Run, tokenizer, input_names: list[str]) -> list[dict[str, np.ndarray]]:
    """The run's validation texts (else its training texts, else its test texts or fixed sentences), tokenized in
    batches as served."""
    rows = run.own_rows(CALIBRATION_TEXTS, sources=("validation", "train"))
    texts = sorted(rows.texts if rows is not None else run.own_texts(CALIBRATION_TEXTS), key=len)
    batches = []
    for start in range(0, len(texts), 16):
        encoded = tokenizer(
            texts[start : start + 16], padding=True, truncation=True, max_length=run.max_length, return_tensors="np"
        )
        batches.append({name: encoded[name].astype(np.int64) for name in input_names})
    return batches


@dataclass
class ParityRows:
    """What an export is checked on: the run's texts, the PyTorch model's readings of them (scores, and features
    where the graph gives them), and the true labels' class indices where the rows have them (else None)."""

    texts: list[str]
    reference: dict
    gold: np.ndarray | None  # -1 for a label the run never learned

    def accuracy(self, scores: np.ndarray) -> float | None:
        if self.gold is None:
            return None
        known = self.gold >= 0
        return float(np.mean(scores.argmax(axis=1)[known] == self.gold[known]))


def parity_rows(run: Run, torch_predictor: Predictor, with_features: bool) -> ParityRows:
    """Up to PARITY_TEXTS of the run's test rows (else validation rows, else fixed sentences), with their labels
    where they have them and the task has one label a text."""
    rows = run.own_rows(PARITY_TEXTS, with_labels=True)
    gold = None
    if rows is not None and run.labels.task != MULTI_LABEL:
        # rows of a label the run never learned (out-of-scope ones) are compared by agreement only
        index = run.labels.label2id
        gold = np.array([index.get(label, -1) for label in rows.labels], dtype=np.int64)
        gold = gold if (gold >= 0).any() else None
    texts = rows.texts if rows is not None else run.own_texts(PARITY_TEXTS)
    return ParityRows(texts, readings(torch_predictor, texts, with_features), gold)


def readings(predictor: Predictor, texts: list[str], with_features: bool) -> dict:
    """The predictor's class probabilities of `texts`, and its features where asked, from one pass over them."""
    if not with_features:
        return {LOGITS: predictor.scores(texts)}
    logits, features = predictor.logits_and_features(checked_texts(texts))
    return {LOGITS: scores_from_logits(logits, predictor.labels.task), FEATURES: features}


def parity(run: Run, tokenizer, rows: ParityRows, path: Path, backend: str) -> dict:
    """How far the exported graph's probabilities, labels and features are from the PyTorch model's on the rows,
    and its accuracy against theirs where the rows have labels."""
    exported = Predictor(OnnxEngine(path, backend), tokenizer, run.labels, run.max_length)
    read = readings(exported, rows.texts, exported.engine.has_features)
    expected, found = rows.reference[LOGITS], read[LOGITS]
    difference = np.abs(found - expected)
    checked = {
        "max_probability_difference": float(difference.max()),
        "mean_probability_difference": float(difference.mean()),
        "label_agreement": float((found.argmax(axis=1) == expected.argmax(axis=1)).mean()),
        "texts_checked": len(rows.texts),
        "bytes": path.stat().st_size,
    }
    if rows.gold is not None:  # in points: the accuracy the graph gains (or loses) against PyTorch float32's
        accuracy, reference = rows.accuracy(found), rows.accuracy(expected)
        checked |= {"accuracy": accuracy, "accuracy_delta": round(100 * (accuracy - reference), 2)}
    if FEATURES in read:  # how closely the features follow: cosine similarity, text by text
        similarity = np.sum(normalize(read[FEATURES]) * normalize(rows.reference[FEATURES]), axis=1, dtype=np.float64)
        checked |= {"min_feature_cosine": float(similarity.min()), "mean_feature_cosine": float(similarity.mean())}
    return checked


def within(checked: dict, limit: float, agreement: float) -> bool:
    return checked["max_probability_difference"] <= limit and checked["label_agreement"] >= agreement


def closer_first(checked: dict) -> tuple:
    """Order of int8 graphs, best first: label agreement with PyTorch, then mean probability drift. Not accuracy:
    on a few hundred rows it is mostly noise (each changed label a coin toss), and picked static over dynamic on
    SST-2 at -0.2 points on 512 test rows where it lost 2.2 on validation (bench/RESULTS.md, issue 25)."""
    return (-checked["label_agreement"], checked["mean_probability_difference"])


def export_onnx(
    run: Run, quantize: str | None = None, tolerance: float | None = None, min_agreement: float | None = None
) -> dict:
    """Write the run's ONNX graph (and its int8 version with `quantize="int8"`) into the run folder, then measure
    which inference path is fastest here (Run.measure_inference, recorded in the run folder).

    Each graph's class probabilities are compared with the PyTorch model's on the run's test rows (else its
    validation rows or fixed sentences); a graph further off than `tolerance`, or whose labels agree on less than
    `min_agreement` of the texts, is refused and nothing is written (defaults per graph above). For int8 both
    dynamic and static (calibrated on the run's validation rows) quantization are checked and the one closer to
    PyTorch kept (closer_first); the report names it (`quantization`) and gives the other's figures.
    """
    if quantize not in (None, "int8"):
        raise LmadaptError(f"unknown quantization '{quantize}'", fix="pass --quantize int8, or leave it out")
    backends = [ONNX] + ([ONNX_INT8] if quantize else [])
    model = exportable_model(run)
    tokenizer = run.load_tokenizer()
    torch_predictor = Predictor(model, tokenizer, run.labels, run.max_length)
    folder = run.path / ONNX_FOLDER
    report_path = folder / REPORT
    written = [onnx_file(b) for b in backends] + [f"{ONNX_FOLDER}/{REPORT}"]  # as the manifest names them
    reports = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="lmadapt-export-") as scratch:
        built = {ONNX: Path(scratch) / ONNX_FILES[ONNX]}
        outputs, input_names = trace_to_onnx(model, tokenizer, len(run.labels), built[ONNX])
        if len(list(Path(scratch).iterdir())) > 1:  # over 2 GB, the weights go to files beside the graph
            raise LmadaptError(
                "this model is larger than one ONNX file holds (2 GB); lmadapt exports graphs up to that size",
                fix="serve the run with --backend torch or torch-bf16",
            )
        rows = parity_rows(run, torch_predictor, with_features=FEATURES in outputs)
        limits = {
            backend: (
                DEFAULT_TOLERANCE[backend] if tolerance is None else tolerance,
                DEFAULT_MIN_AGREEMENT[backend] if min_agreement is None else min_agreement,
            )
            for backend in backends
        }
        checked = {ONNX: parity(run, tokenizer, rows, built[ONNX], ONNX)}
        if quantize:
            graphs = int8_graphs(built[ONNX], calibration_batches(run, tokenizer, input_names))
            kinds = {kind: parity(run, tokenizer, rows, path, ONNX_INT8) for kind, path in graphs.items()}
            ranked = sorted(
                kinds, key=lambda kind: (not within(kinds[kind], *limits[ONNX_INT8]), closer_first(kinds[kind]))
            )
            built[ONNX_INT8] = graphs[ranked[0]]
            checked[ONNX_INT8] = kinds[ranked[0]] | {
                "quantization": ranked[0],
                "not_kept": {ranked[1]: kinds[ranked[1]]},
            }
        for backend in backends:
            limit, agreement = limits[backend]
            if not within(checked[backend], limit, agreement):
                raise LmadaptError(
                    f"the {backend} graph's probabilities differ by up to "
                    f"{checked[backend]['max_probability_difference']:.3g} from the PyTorch model's (tolerance "
                    f"{limit:g}) and its labels agree on {100 * checked[backend]['label_agreement']:.1f}% of "
                    f"{len(rows.texts)} texts (at least {100 * agreement:g}% needed); nothing was written",
                    where=str(run.path),
                    fix="serve the run with --backend torch, or relax --tolerance / --min-agreement if this drift is acceptable",
                )
            reports[backend] = checked[backend] | {
                "tolerance": limit,
                "min_agreement": agreement,
                "file": onnx_file(backend),
                "outputs": outputs,
            }
        # Unlist the old graphs first, then move the new ones in, then sign them: an interruption leaves
        # at worst unlisted files, which `auto` does not use and loading does not check.
        update_manifest(run.path, {name: None for name in written})
        folder.mkdir(exist_ok=True)
        for backend in backends:
            write_file_atomic(
                folder / ONNX_FILES[backend], lambda partial, b=backend: shutil.copyfile(built[b], partial)
            )
    write_file_atomic(report_path, lambda partial: partial.write_text(json.dumps(reports, indent=2) + "\n"))
    update_manifest(run.path, {name: manifest_entry(run.path / name) for name in written})
    run.measure_inference(keep_other_machines=False)  # the graphs changed: every machine's measurement is stale
    return {backend: reports[backend] for backend in backends}
