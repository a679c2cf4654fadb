"""The architecture contract: the lifecycle's layers import one way, down (import-linter's layers contract, set
out in pyproject.toml), function-level imports included. A new upward import fails here, and so in CI."""

from importlinter.cli import lint_imports

from tests.conftest import REPO


def test_layers_import_one_way_down(capsys):
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


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
