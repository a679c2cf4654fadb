"""The architecture contract: the lifecycle's layers import one way, down (import-linter's layers contract, set
out in pyproject.toml), function-level imports included. A new upward import fails here, and so in CI."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_layers_import_one_way_down():
    # In its own process: import-linter's logging set-up disables every logger already made (lmadapt's too).
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--config", str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout


def test_the_contract_names_every_subpackage_and_module():
    """A module left out of the layers would be free to import anything: each must have its place."""
    import tomllib

    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    named = {name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}
    package = REPO / "src" / "lmadapt"
    present = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in package.iterdir() if (p / "__init__.py").is_file()
    }
    assert present == named, f"not placed in a layer: {present - named}; no longer there: {named - present}"
