"""The Prometheus series the REST service exports (GET /metrics); an application may add its own to the registry."""

from __future__ import annotations


class Metrics:
    """The Prometheus series the service exports, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmadapt_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lmadapt_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lmadapt_batch_size",
            "Texts per forward pass, by model.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.texts = Counter(
            "lmadapt_predicted_texts", "Texts classified, by model.", ["model"], registry=self.registry
        )
        self.abstentions = Counter(
            "lmadapt_abstentions",
            "Texts answered with the abstain label (out of scope, or ambiguous), by model and reason.",
            ["model", "reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "lmadapt_errors", "Refused or failed requests by error code.", ["code"], registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
