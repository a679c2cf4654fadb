"""Training: the engine on transformers' Trainer, and the losses it may use."""

from lmadapt.training.engine import train

__all__ = ["train"]
