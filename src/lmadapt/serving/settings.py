"""The REST service's limits and batching: one dataclass the API and `lmadapt serve`'s options share."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

API_KEY_ENV = "LMADAPT_API_KEY"  # where `lmadapt serve` reads the key when --api-key is not given
MIN_PORT, MAX_PORT = 1, 65_535  # TCP ports; uvicorn takes 0 as "any free port", never what a user means


@dataclass
class ServiceSettings:
    """Limits and batching of the service; every field is a `lmadapt serve` option."""

    api_key: str | None = field(default=None, metadata={"help": "Key every request must carry; None: no auth."})
    max_texts: int = field(default=256, metadata={"help": "Most texts in one request (else 422)."})
    max_chars: int = field(default=10_000, metadata={"help": "Most characters in one text (else 422)."})
    max_body_bytes: int = field(default=1_048_576, metadata={"help": "Largest request body in bytes (else 413)."})
    timeout_s: float = field(default=30.0, metadata={"help": "Seconds a prediction may take (else 504)."})
    max_batch: int = field(
        default=32,
        metadata={"help": "Most texts in one forward pass (those of the most similar lengths, from any requests)."},
    )
    max_wait_ms: float = field(
        default=5.0, metadata={"help": "How long a free worker waits for a fuller forward pass."}
    )
    max_delay_ms: float = field(
        default=200.0,
        metadata={"help": "A text waiting this long goes in the next pass, whatever its length."},
    )
    workers: int = field(default=0, metadata={"help": "Forward passes run at once, one core each; 0: one per core."})
    backend: str = field(
        default="auto",
        metadata={"help": "Inference backend: auto (the fastest here), torch, torch-bf16, onnx, onnx-int8, openvino."},
    )


def setting_help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(ServiceSettings) if f.name == name)
