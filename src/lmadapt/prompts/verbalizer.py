"""Verbalizers: the words (or phrases, in any language, of any number of tokens) that name each label."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.errors import LmadaptError


@dataclass(frozen=True)
class Verbalizer:
    """Label -> its words, in the label map's order."""

    words: dict[str, list[str]]

    @classmethod
    def build(cls, raw: dict[str, list[str]] | None, labels: list[str], where: str) -> Verbalizer:
        """From the config's mapping; with none, each label is its own word (underscores read as spaces)."""
        if not raw:
            return cls({label: [label.replace("_", " ")] for label in labels})
        unknown = [key for key in raw if key not in labels]
        if unknown:
            raise LmadaptError(
                f"the verbalizer names label '{unknown[0]}', which the data does not have",
                where=where,
                fix=f"use the data's labels: {', '.join(labels)}",
            )
        missing = [label for label in labels if not raw.get(label)]
        if missing:
            raise LmadaptError(
                f"label '{missing[0]}' has no words in the verbalizer",
                where=where,
                fix=f"give every label at least one word, e.g. {missing[0]}: [{missing[0].replace('_', ' ')}]",
            )
        words = {}
        for label in labels:
            entries = raw[label] if isinstance(raw[label], list) else [raw[label]]
            cleaned = [str(word).strip() for word in entries]
            if not all(cleaned):
                raise LmadaptError(f"label '{label}' has an empty word", where=f"{where}.{label}")
            words[label] = cleaned
        return cls(words)

    def token_ids(self, tokenizer, prefix: str, where: str) -> list[list[list[int]]]:
        """Each label's words as token ids, as they follow the prompt (`prefix` is the whitespace before them)."""
        unknown_id = tokenizer.unk_token_id
        encoded = []
        for label, words in self.words.items():
            label_ids = []
            for word in words:
                ids = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
                if not ids or (unknown_id is not None and unknown_id in ids):
                    raise LmadaptError(
                        f"the tokenizer cannot encode the word {word!r} of label '{label}' "
                        f"(it becomes {tokenizer.convert_ids_to_tokens(ids)})",
                        where=where,
                        fix="choose words in the model's language and script, or a backbone that reads them",
                    )
                label_ids.append(ids)
            encoded.append(label_ids)
        return encoded
