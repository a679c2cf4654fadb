import pandas as pd
import pytest

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def sst2_sample(tmp_path_factory) -> dict:
    """A few hundred real SST-2 rows (seeded), written as train/validation/test CSVs."""
    folder = SHARED_DATA / "sst2"
    if not folder.is_dir():
        pytest.fail(f"shared data not found at {folder}; set LMADAPT_SHARED_DATA to the shared/data folder")
    target = tmp_path_factory.mktemp("sst2")
    train = pd.read_csv(folder / "train.csv")
    train = train[train["text"].str.split().str.len() >= 4].drop_duplicates("text").sample(n=800, random_state=0)
    parts = {
        "train": train,
        "validation": pd.read_csv(folder / "validation.csv").sample(n=200, random_state=0),
        "test": pd.read_csv(folder / "test.csv").sample(n=300, random_state=0),
    }
    paths = {}
    for name, frame in parts.items():
        paths[name] = target / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths
