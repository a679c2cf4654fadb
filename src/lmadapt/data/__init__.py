"""Data: loading, validation, cleaning, splits and label maps."""

from lmadapt.data.labels import MULTI_LABEL, SINGLE_LABEL, LabelMap
from lmadapt.data.loading import Table, read_table
from lmadapt.data.prepare import PreparedData, Split, load_split, prepare_data

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
