"""Prompt templates: `{text}` (and `{text_pair}`) slots, and a `{label}` slot where a causal LM's
answer goes. A template is data in the run's config; it is checked before any model is loaded.

A `PromptTokenizer` writes each text into the template before tokenising, and truncates the text,
never the template: a prompt cut before its question would make the label words meaningless.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from lmadapt.errors import LmadaptError

SLOTS = ("text", "text_pair", "label")
MIN_TEXT_TOKENS = 8  # a template must leave at least this much room for the text


@dataclass(frozen=True)
class Template:
    """A parsed template. `prompt` is what the model reads (up to the label slot, trailing spaces
    removed); `label_prefix` is the whitespace that stood before `{label}`, which belongs to the
    label words when they are tokenised (" positive", not "positive")."""

    source: str
    prompt: str
    label_prefix: str
    has_pair: bool

    @classmethod
    def parse(cls, source: str, where: str, *, needs_label: bool) -> Template:
        if not isinstance(source, str) or not source.strip():
            raise LmadaptError(
                "the template is empty", where=where, fix="write e.g. 'Review: {text}\\nSentiment: {label}'"
            )
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(source) if name is not None]
        except ValueError as error:
            raise LmadaptError(
                f"the template does not parse ({error})",
                where=where,
                fix="write slots as {text}, {text_pair} and {label}; a literal brace as {{ or }}",
            ) from None
        for name in fields:
            if name not in SLOTS:
                raise LmadaptError(
                    f"unknown slot '{{{name}}}' in the template",
                    where=where,
                    fix="use only {text}, {text_pair} and {label}; a literal brace as {{ or }}",
                )
        for name in SLOTS:
            if fields.count(name) > 1:
                raise LmadaptError(f"the slot '{{{name}}}' appears more than once", where=where)
        if "text" not in fields:
            raise LmadaptError("the template has no {text} slot", where=where, fix="add {text} where the input goes")
        if needs_label and "label" not in fields:
            raise LmadaptError(
                "the template has no {label} slot",
                where=where,
                fix="end it with the slot the label words fill, e.g. 'Sentiment: {label}'",
            )
        if not needs_label and "label" in fields:
            raise LmadaptError("this strategy does not fill a {label} slot", where=where, fix="remove {label}")
        prompt, label_prefix = source, ""
        if "label" in fields:
            before, after = source.split("{label}")
            if after.strip():
                raise LmadaptError(
                    f"text after the {{label}} slot ({after.strip()!r}): a causal LM reads left to right, so "
                    "the label words must come last",
                    where=where,
                    fix="end the template with {label}",
                )
            prompt = before.rstrip()
            label_prefix = before[len(prompt) :]
        return cls(source, prompt, label_prefix, "text_pair" in fields)

    def fill(self, text: str, pair: str | None = None) -> str:
        return self.prompt.format(text=text, text_pair=pair if pair is not None else "")


def fit_two(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Cut two token lists to `budget` tokens together, the longer one first."""
    if len(first) + len(second) <= budget:
        return first, second
    half = budget // 2
    if len(first) <= half:
        return first, second[: budget - len(first)]
    if len(second) <= half:
        return first[: budget - len(second)], second
    return first[:half], second[: budget - half]


class PromptTokenizer:
    """A tokenizer that writes each text into `template` first (after `preamble`, e.g. in-context
    demonstrations). Everything else (padding, saving, special tokens) is the wrapped tokenizer's."""

    def __init__(self, tokenizer, template: Template, preamble=None, add_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.template = template
        # A text before each prompt: fixed, or chosen per input by `preamble(texts, pairs) -> list[str]`.
        self.preamble = preamble
        self.add_special_tokens = add_special_tokens

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _shorten(self, text: str, ids: list[int], keep: int) -> str:
        return text if len(ids) <= keep else self.tokenizer.decode(ids[:keep])

    def prompts(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int | None) -> list[str]:
        if self.template.has_pair and pairs is None:
            raise LmadaptError(
                "the template has a {text_pair} slot but the data has no second text",
                where="strategy.template",
                fix="set data.text_pair_column, or remove {text_pair}",
            )
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        if callable(self.preamble):
            preambles = self.preamble(list(texts), pairs)
        else:
            preambles = [self.preamble or ""] * len(texts)
        if max_length is None:
            return [before + self.template.fill(t, p) for before, t, p in zip(preambles, texts, pairs)]
        # max_length bounds the filled template; a preamble (demonstrations) comes on top of it.
        overhead = len(self.tokenizer(self.template.fill("", ""))["input_ids"])
        budget = max_length - overhead
        if budget < MIN_TEXT_TOKENS:
            raise LmadaptError(
                f"the prompt takes {overhead} of model.max_length={max_length} tokens, leaving no room for the text",
                where="model.max_length",
                fix=f"raise model.max_length to at least {overhead + 64}, or shorten the template",
            )
        filled = []
        for before, text, pair in zip(preambles, texts, pairs):
            ids, pair_ids = self._tokens(text), self._tokens(pair) if pair else []
            keep, keep_pair = fit_two(ids, pair_ids, budget)
            short_pair = self._shorten(pair, pair_ids, len(keep_pair)) if pair else pair
            filled.append(before + self.template.fill(self._shorten(text, ids, len(keep)), short_pair))
        return filled

    def __call__(
        self, texts: Sequence[str], pairs=None, truncation: bool = True, max_length: int | None = None, **kwargs
    ):
        kwargs.setdefault("add_special_tokens", self.add_special_tokens)
        return self.tokenizer(self.prompts(texts, pairs, max_length if truncation else None), **kwargs)
