"""Prompts: templates that put a text into words, and verbalizers that name each label in words."""

from lmadapt.prompts.template import PromptTokenizer, Template
from lmadapt.prompts.verbalizer import Verbalizer

__all__ = ["PromptTokenizer", "Template", "Verbalizer"]
