"""Data: synthetic raw data, preparation into tile stores, torch datasets over them."""

from .prepare import PREPARERS, prepare
from .preparers.common import PREPARED_DATASETS, RAW_DIR_OF, TASK_OF
from .store import TileDataset
from .synthetic import generate, generate_all

__all__ = [
    "PREPARED_DATASETS",
    "PREPARERS",
    "RAW_DIR_OF",
    "TASK_OF",
    "TileDataset",
    "generate",
    "generate_all",
    "prepare",
]
