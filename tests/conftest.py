"""Shared fixtures: tiny random-weight models built in the test, and small learnable data sets."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LMADAPT_SHARED_DATA", REPO.parent / "shared" / "data"))

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "delightful", "charming", "excellent"]
NEGATIVE = ["awful", "dull", "boring", "terrible", "clumsy", "tedious", "lifeless", "dreadful"]
FILLER = ["the", "film", "was", "a", "story", "acting", "plot", "really", "and", "quite", "music", "ending"]


def sentiment_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Short texts whose sentiment word decides the label: learnable in a few epochs by a tiny model."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path_factory.getbasetemp() / "lmadapt-home"))


def save_random_model(model_class, config, tokenizer, folder: Path) -> Path:
    """A model folder with seeded random weights and the tokenizer."""
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_splits(folder: Path, parts: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """One CSV per split; returns their paths by split name."""
    paths = {}
    for name, part in parts.items():
        paths[name] = folder / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


def save_tiny_bert(words: list[str], folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-piece vocabulary of `words` (plus digits, letters and
    punctuation)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [str(d) for d in range(10)] + [f"##{d}" for d in range(10)] + list("abcdefghijklmnopqrstuvwxyz.,!?")
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return save_random_model(BertModel, config, tokenizer, folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """save_tiny_bert with the test words."""
    return save_tiny_bert([*POSITIVE, *NEGATIVE, *FILLER], tmp_path_factory.mktemp("tiny-bert"))


def save_tiny_llama(tokenizer, folder: Path, context: int = 128) -> Path:
    """A 2-layer, 32-wide Llama causal LM with random weights (grouped-query attention, no biases) that
    reads `tokenizer`'s ids, with a context of `context` tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=max(tokenizer.get_vocab().values()) + 1,  # ids may have a gap: a word and a letter alike
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        pad_token_id=tokenizer.pad_token_id,
    )
    return save_random_model(LlamaForCausalLM, config, tokenizer, folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_bert) -> Path:
    """The tiny Llama on the tiny BERT's word-piece vocabulary."""
    from transformers import AutoTokenizer

    return save_tiny_llama(AutoTokenizer.from_pretrained(tiny_bert), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tuned_tiny_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT after full fine-tuning on the synthetic sentiment rows, saved as a bare backbone.

    A stand-in for a pretrained model: its features already carry the task, as a real pretrained
    backbone's carry language, so strategies that keep the backbone frozen can learn on top of it.
    """
    import lmadapt

    work = tmp_path_factory.mktemp("tuned-tiny-bert")
    files = write_splits(work, {"train": sentiment_rows(240, seed=1), "validation": sentiment_rows(60, seed=2)})
    files["test"] = files["validation"]
    run = lmadapt.train(lmadapt.load_config(None, tiny_overrides(tiny_bert, files, work / "runs", "pretrain")))
    folder = work / "backbone"
    run.load_model().base_model.save_pretrained(folder)
    run.load_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def poolerless_bert(tuned_tiny_bert, tmp_path_factory) -> Path:
    """The tuned tiny BERT saved without its pooler, as sentence encoders such as e5 are."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("poolerless-bert")
    BertModel.from_pretrained(tuned_tiny_bert, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tuned_tiny_bert).save_pretrained(folder)
    return folder


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, Path]:
    """train/validation/test CSVs of learnable synthetic sentiment."""
    return write_three_splits(tmp_path, sentiment_rows(360))


def write_three_splits(folder: Path, frame: pd.DataFrame) -> dict[str, Path]:
    """The first 240 rows for training, the next 60 for validation, the last 60 for test."""
    return write_splits(folder, {"train": frame[:240], "validation": frame[240:300], "test": frame[300:]})


def tiny_overrides(model: Path, files: dict[str, Path], out: Path, name: str = "tiny", **extra) -> list[str]:
    """Config overrides for a fast run of a tiny model on the synthetic files."""
    values = {
        "name": name,
        "output_dir": str(out),
        "model.backbone": str(model),
        "model.max_length": 32,
        "data.train": str(files["train"]),
        "data.validation": str(files["validation"]),
        "data.test": str(files["test"]),
        "train.epochs": 10,
        "train.batch_size": 16,
        "train.learning_rate": 2e-3,
        "train.early_stopping_patience": None,
        "train.logging_steps": 5,
        "train.precision": "fp32",
        **extra,
    }
    return [f"{k}={'null' if v is None else v}" for k, v in values.items()]


def write_recipe(path: Path, overrides: list[str]) -> Path:
    """A YAML recipe holding the same settings as a list of `a.b=c` overrides."""
    import yaml

    from lmadapt.config import apply_overrides

    path.write_text(yaml.safe_dump(apply_overrides({}, overrides)), encoding="utf-8")
    return path


POSTGRESQL_INSTALL = "apt-get install postgresql (Debian/Ubuntu), or set LMADAPT_TEST_POSTGRESQL_URL to a server's URL"


UNAVAILABLE_SKIPPED: dict[str, None] = {}  # why tests of an absent dependency were skipped, each reason once


def skip_unavailable(message: str, required_env: str):
    """Skip, saying why and how to get what is missing; fail instead where the variable `required_env` is 1 (CI)."""
    UNAVAILABLE_SKIPPED[message] = None
    if os.environ.get(required_env) == "1":
        pytest.fail(message)
    pytest.skip(message)


def _postgresql_unavailable(reason: str):
    skip_unavailable(
        f"PostgreSQL tests not run: {reason}. Install: {POSTGRESQL_INSTALL}", "LMADAPT_TEST_POSTGRESQL_REQUIRED"
    )


def pytest_terminal_summary(terminalreporter):
    """Why tests of an absent dependency were skipped, shown without -rs: a skip must not read as a pass."""
    for message in UNAVAILABLE_SKIPPED:
        terminalreporter.write_line(message, yellow=True)


def _postgresql_bin() -> Path | None:
    """The folder of initdb and pg_ctl: the newest Debian cluster version's, else the ones on PATH."""
    import shutil

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture(scope="session")
def postgresql_url():
    """A real, throwaway PostgreSQL server on a free loopback port (initdb'd in a temp folder, removed after), as
    `postgresql+psycopg://postgres@127.0.0.1:PORT/lmadapt_test`; or LMADAPT_TEST_POSTGRESQL_URL's server."""
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    if os.environ.get("LMADAPT_TEST_POSTGRESQL_URL"):
        yield os.environ["LMADAPT_TEST_POSTGRESQL_URL"]
        return
    try:
        import psycopg
    except ImportError:
        _postgresql_unavailable("the psycopg driver is missing (pip install 'psycopg[binary]')")
    bin_dir = _postgresql_bin()
    if bin_dir is None:
        _postgresql_unavailable("initdb and pg_ctl not found (looked in /usr/lib/postgresql/*/bin and on PATH)")
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _postgresql_unavailable("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="lmadapt-postgresql-"))  # not pytest's tmp: that is closed to other users
    if as_user:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data, log = folder / "data", folder / "server.log"
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
    try:
        for command in (
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            [bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "30", "-o", options, "start"],
        ):
            done = subprocess.run([*as_user, *map(str, command)], capture_output=True, text=True)
            if done.returncode != 0:
                server_log = log.read_text() if log.exists() else ""
                _postgresql_unavailable(
                    f"{command[0].name} failed: {(done.stderr or done.stdout).strip()} {server_log.strip()}"
                )
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE lmadapt_test")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/lmadapt_test"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgresql_database(postgresql_url):
    """A fresh, empty database on the `postgresql_url` server for one test (dropped after), as a URL. With
    LMADAPT_TEST_POSTGRESQL_URL, its role needs the CREATEDB privilege."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgresql_url).set(drivername="postgresql")
    name = f"lmadapt_{uuid.uuid4().hex[:12]}"
    admin = server.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


SUPPORT_ANSWERS = {"positive": "Glad you liked it!", "negative": "Sorry to hear that."}


def support_history(folder: Path, oos: int = 60) -> dict[str, Path]:
    """A support history: the synthetic sentiment rows as two intents with answers, and `oos` out-of-scope
    questions (strings of letters, intent oos); and a template per intent."""
    frame = sentiment_rows(300)
    rng = random.Random(3)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    outside = [" ".join(rng.sample(letters, 5)) + f" {i}" for i in range(oos)]
    history = pd.DataFrame({"question": [*frame.text, *outside], "intent": [*frame.label, *["oos"] * oos]})
    history["answer"] = [SUPPORT_ANSWERS.get(intent, "") for intent in history.intent]
    history.to_csv(folder / "history.csv", index=False)
    templates = pd.DataFrame({"intent": list(SUPPORT_ANSWERS), "answer": ["Template: glad!", "Template: sorry!"]})
    templates.to_csv(folder / "templates.csv", index=False)
    return {"history": folder / "history.csv", "templates": folder / "templates.csv"}


def support_overrides(backbone: Path, files: dict[str, Path], out: Path, name: str = "bot") -> list[str]:
    """A support recipe's overrides for a tiny bot: its intent run trained in seconds on the tiny backbone."""
    intent = (
        f"[model.backbone={backbone}, model.max_length=32, train.epochs=5, train.batch_size=16, "
        "train.learning_rate=2e-3, train.precision=fp32, train.early_stopping_patience=null]"
    )
    return [
        f"history.path={files['history']}",
        f"templates.path={files['templates']}",
        "history.out_of_scope_label=oos",
        f"output_dir={out}",
        f"name={name}",
        f"intent.settings={intent}",
    ]


@pytest.fixture(scope="session")
def tiny_bot(tuned_tiny_bert, tmp_path_factory) -> Path:
    """A support bot folder built on the tuned tiny BERT (two intents with templates, out-of-scope rows)."""
    from lmadapt.apps.support.bot import build_bot
    from lmadapt.apps.support.config import load_support_config

    work = tmp_path_factory.mktemp("support")
    files = support_history(work)
    return build_bot(load_support_config(None, support_overrides(tuned_tiny_bert, files, work / "bots")))


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster of two nodes of one CPU each on the loopback interface (lmadapt.cluster.local_cluster),
    this process connected to it; its HOST:PORT. Stopped, its processes alone, and this process disconnected after
    the module: later tests fork worker processes, which a live Ray connection's threads can deadlock."""
    from lmadapt.cluster import INSTALL, connect, local_cluster

    try:
        import ray  # noqa: F401
    except ImportError:
        skip_unavailable(f"Ray tests not run: ray is missing. Install: {INSTALL}", "LMADAPT_TEST_RAY_REQUIRED")
    cluster = local_cluster(nodes=2, cpus_per_node=1)
    try:
        address = cluster.__enter__()
    except RuntimeError as error:
        skip_unavailable(f"Ray tests not run: the local cluster did not start: {error}", "LMADAPT_TEST_RAY_REQUIRED")
    try:
        connect(address)
        yield address
    finally:
        cluster.__exit__(None, None, None)
