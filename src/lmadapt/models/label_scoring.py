"""Classification by a causal LM's own words: each label scores the log-probability of its words
after the prompt (length-normalised, averaged over the label's words), optionally calibrated.

One forward pass reads the prompts; the label words' later tokens then run on its key/value cache,
so a label's multi-token words cost a few tokens each, not another pass over the prompt.
Contextual calibration (Zhao et al. 2021): the label distribution the model gives content-free
inputs ("N/A", "", ...) is its bias; dividing it out makes the scores comparable.

`load_verbalized_lm` builds one from a strategy's template and verbalizer options (`VerbalizedLmConfig`,
which the prompt strategies share).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.modeling_outputs import SequenceClassifierOutput

from lmadapt.config import option
from lmadapt.errors import LmadaptError
from lmadapt.models.classifier import explained_load_errors, is_causal_lm, load_tokenizer
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.prompts import PromptTokenizer, Template, Verbalizer

CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")
ROWS_PER_PASS = 512  # prompt rows x label words scored together (bounds the vocabulary-wide logits)
PREFIX_CACHE_BYTES = 1 << 30  # the shared prefix's cache, repeated per row, stays under this


def cache_keyword(lm) -> str:
    """The name the LM's forward takes its key/value cache by: transformers renamed `past_key_values` to
    `cache` (the old name is deprecated, to go in 5.40); older 5.x releases know only the old one."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def cache_of(output):
    """The key/value cache of a forward pass's output, under either name."""
    found = getattr(output, "cache", None)
    return found if found is not None else output.past_key_values


class VerbalizedLM(nn.Module):
    """A causal LM read as a classifier through its verbalizer's token ids (label -> words -> ids)."""

    # Trainer asks this of any model whose restored best checkpoint lacks keys, as a tied LM's does (its
    # output matrix is stored once, as the input embeddings): nothing to drop, the tie holds in memory.
    _keys_to_ignore_on_save = None

    def __init__(
        self, lm, word_ids: list[list[list[int]]], normalize_length: bool = True, prefix_ids: list[int] | None = None
    ):
        super().__init__()
        self.lm = lm
        self.config = lm.config
        flat = [(label, ids) for label, words in enumerate(word_ids) for ids in words]
        longest = max(len(ids) for _, ids in flat)
        self.num_labels = len(word_ids)
        self.normalize_length = normalize_length
        self.register_buffer(
            "words", torch.tensor([ids + [0] * (longest - len(ids)) for _, ids in flat]), persistent=False
        )
        self.register_buffer("word_lengths", torch.tensor([len(ids) for _, ids in flat]), persistent=False)
        self.register_buffer("word_labels", torch.tensor([label for label, _ in flat]), persistent=False)
        self.register_buffer("log_prior", torch.zeros(self.num_labels), persistent=False)
        # A start every prompt shares (in-context demonstrations): read once, its key/value cache reused.
        self.register_buffer("prefix_ids", torch.tensor(prefix_ids or [], dtype=torch.long), persistent=False)
        self._prefix_cache = None
        self._cache_keyword = cache_keyword(lm)

    def _prefix(self, batch: int):
        """The shared start's cache for `batch` rows (recomputed while training, where it carries gradients,
        and after the LM moved to another dtype or device, e.g. cast to bfloat16 for inference)."""
        weights = self.lm.get_input_embeddings().weight
        made_for = (weights.dtype, weights.device)
        if self._prefix_cache is None or self._prefix_cache[0] != made_for or self.training:
            with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
                cache = cache_of(self.lm(input_ids=self.prefix_ids[None], use_cache=True, logits_to_keep=1))
            if self.training:
                cache.batch_repeat_interleave(batch)
                return cache
            self._prefix_cache = (made_for, cache)
        cache = copy.deepcopy(self._prefix_cache[1])
        cache.batch_repeat_interleave(batch)
        return cache

    def _rows_per_pass(self) -> int:
        rows = max(1, ROWS_PER_PASS // len(self.words))
        if len(self.prefix_ids):
            config = self.lm.config
            heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            per_row = len(self.prefix_ids) * config.num_hidden_layers * 2 * heads * head_dim * 4
            rows = min(rows, max(1, PREFIX_CACHE_BYTES // per_row))
        return rows

    def state_dict(self, *args, **kwargs):
        """Each tensor once: causal LMs tie the output layer to the input embeddings, and safetensors (the
        Trainer's checkpoint format) refuses to store one tensor under two names. Loading the kept name
        restores both, since they share memory."""
        state = super().state_dict(*args, **kwargs)
        seen = set()
        for name in list(state):
            tensor = state[name]
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key in seen:
                del state[name]
            seen.add(key)
        return state

    def word_log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, words]: log P(word | prompt) (per token if normalize_length), prompts padded on the left."""
        per_pass = self._rows_per_pass()
        return torch.cat(
            [
                self._word_log_probs(input_ids[start : start + per_pass], attention_mask[start : start + per_pass])
                for start in range(0, len(input_ids), per_pass)
            ]
        )

    def _word_log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, (count, longest) = len(input_ids), self.words.shape
        cache = None
        if len(self.prefix_ids):
            cache = self._prefix(batch)
            prefix_mask = torch.ones(batch, len(self.prefix_ids), dtype=attention_mask.dtype, device=input_ids.device)
            attention_mask = torch.cat([prefix_mask, attention_mask], 1)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            **{self._cache_keyword: cache},
            use_cache=longest > 1 or cache is not None,
            logits_to_keep=1,
        )
        scores = out.logits[:, -1].float().log_softmax(-1)[:, self.words[:, 0]]  # [batch, words]
        if longest > 1:
            cache = cache_of(out)
            cache.batch_repeat_interleave(count)
            follow = self.words[:, :-1].repeat(batch, 1)  # each prompt row followed by every word
            step = torch.arange(1, longest, device=input_ids.device)
            later = (
                self.lm(
                    input_ids=follow,
                    attention_mask=torch.cat(
                        [
                            attention_mask.repeat_interleave(count, 0),
                            torch.ones_like(follow, dtype=attention_mask.dtype),
                        ],
                        1,
                    ),
                    position_ids=positions[:, -1:].repeat_interleave(count, 0) + step,
                    **{self._cache_keyword: cache},
                )
                .logits.float()
                .log_softmax(-1)
            )
            targets = self.words[:, 1:].repeat(batch, 1)
            token_scores = later.gather(-1, targets[..., None]).squeeze(-1)  # [batch * words, longest - 1]
            real = (step[None, :] < self.word_lengths[:, None]).repeat(batch, 1)
            scores = scores + (token_scores * real).sum(-1).view(batch, count)
        if self.normalize_length:
            scores = scores / self.word_lengths
        return scores

    def label_log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, labels]: the log of each label's words' mean probability, before calibration."""
        words = self.word_log_probs(input_ids, attention_mask)
        return torch.stack(
            [
                torch.logsumexp(words[:, self.word_labels == label], -1)
                - math.log(int((self.word_labels == label).sum()))
                for label in range(self.num_labels)
            ],
            -1,
        )

    def forward(self, input_ids=None, attention_mask=None, labels=None, **_unused):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.label_log_probs(input_ids, attention_mask).log_softmax(-1) - self.log_prior
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def calibrate(self, encoded: dict) -> None:
        """Set the prior to the mean label distribution of the content-free prompts in `encoded` (padded, left)."""
        self.log_prior.zero_()
        probabilities = self.label_log_probs(encoded["input_ids"], encoded["attention_mask"]).softmax(-1).mean(0)
        self.log_prior.copy_(probabilities.log())


@dataclass
class VerbalizedLmConfig:
    """The options of a causal LM read as a classifier through a template and a verbalizer."""

    template: str = option(
        "Text: {text}\nLabel: {label}",
        "The prompt: {text} (and {text_pair}) where the input goes, {label} at the end where the label "
        "words go, e.g. 'Review: {text}\\nSentiment: {label}'. The text is truncated to fit model.max_length, "
        "never the template.",
    )
    verbalizer: dict[str, list[str]] | None = option(
        None,
        "Label -> the words (or phrases, any language, any number of tokens) that name it, e.g. "
        "{positive: [great, good], negative: [terrible, bad]}; empty: each label's own name.",
    )
    calibrate: bool = option(
        True,
        "Contextual calibration: divide out the label distribution the model gives content-free inputs "
        "('N/A', '', '[MASK]'), which removes its bias towards some label words.",
    )
    normalize_length: bool = option(
        True, "Score a word by its mean log-probability per token, so longer words are not penalised."
    )

    def __post_init__(self) -> None:
        Template.parse(self.template, "strategy.template", needs_label=True)


def template_tokenizer(tokenizer, config: VerbalizedLmConfig, folder=None):
    """The backbone's tokenizer, writing each text into the config's template first."""
    return PromptTokenizer(tokenizer, Template.parse(config.template, "strategy.template", needs_label=True))


def load_verbalized_lm(
    context: StrategyContext, config: VerbalizedLmConfig, prefix: str | None = None, reader=None
) -> PreparedModel:
    """The context's causal LM read through the config's template and verbalizer, calibrated if asked.

    `prefix`: text every prompt starts with (read once, cached); `reader(tokenizer, template)`: the
    tokenizer wrapper, when it is not the plain template filler.
    """
    template = Template.parse(config.template, "strategy.template", needs_label=True)
    verbalizer = Verbalizer.build(config.verbalizer, context.labels.labels, "strategy.verbalizer")
    path, model_config = context.backbone_path, context.model
    if not is_causal_lm(path):
        raise LmadaptError(
            f"this strategy reads a causal LM's words, and {model_config.backbone} is not one",
            where="model.backbone",
            fix="use a causal LM, e.g. model.backbone=smollm2 (or leave it empty for the strategy's default)",
        )
    tokenizer = load_tokenizer(path, model_config)
    word_ids = verbalizer.token_ids(tokenizer, template.label_prefix, "strategy.verbalizer")
    prefix_ids = tokenizer(prefix)["input_ids"] if prefix else None
    with explained_load_errors(path, model_config):
        lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
    context_size = getattr(lm.config, "max_position_embeddings", None)
    needed = len(prefix_ids or []) + model_config.max_length + max(len(ids) for words in word_ids for ids in words)
    if context_size and needed > context_size:
        raise LmadaptError(
            f"the prompts need up to {needed} tokens ({len(prefix_ids or [])} of demonstrations), more than the "
            f"model's context of {context_size}",
            where="strategy.demonstrations",
            fix="use fewer demonstrations (strategy.demonstrations or data.shots_per_class), or a lower model.max_length",
        )
    lm.requires_grad_(False)
    model = VerbalizedLM(lm, word_ids, normalize_length=config.normalize_length, prefix_ids=prefix_ids).eval()
    reader = reader(tokenizer, template) if reader else PromptTokenizer(tokenizer, template)
    if config.calibrate:
        empty = [""] * len(CONTENT_FREE_TEXTS) if template.has_pair else None
        model.calibrate(
            reader(
                list(CONTENT_FREE_TEXTS), empty, max_length=model_config.max_length, padding=True, return_tensors="pt"
            )
        )
    return PreparedModel(model, reader)
