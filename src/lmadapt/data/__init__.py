"""Data: loading, validation, cleaning, splits and label maps."""

from lmadapt.data.labels import MULTI_LABEL, SINGLE_LABEL, LabelMap
from lmadapt.data.loading import read_table
from lmadapt.data.prepare import PreparedData, load_split, prepare_data
from lmadapt.data.split import Split
from lmadapt.data.table import Table

__all__ = [
    "MULTI_LABEL",
    "SINGLE_LABEL",
    "LabelMap",
    "PreparedData",
    "Split",
    "Table",
    "load_split",
    "prepare_data",
    "read_table",
]
