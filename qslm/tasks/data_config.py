"""``DataConfig``: which data a built-in task reads and how much of it, for a model folder searched by
task name (``qslm.search("spikegpt-sst2", "sst2", ...)``, ``qslm search``). Sizes left None take the
task's defaults (``qslm.tasks.presets.DEFAULT_SIZES``), so no default is written twice.

    DataConfig(data_files={"validation": "val.csv", "test": "test.csv"}, labels=("neg", "pos"))
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import QslmError


@dataclass(frozen=True)
class DataConfig:
    data_dir: str | None = None  # a preset's folder (default $QSLM_DATA_DIR)
    data_files: Mapping[str, str] | None = None  # a task kind's files by role: validation, test, calibration
    text_column: str | None = None
    label_column: str | None = None
    labels: tuple[str, ...] | None = None  # label names in class order
    calibration_size: int | None = None  # sensitivity calibration: examples or tokens
    validation_size: int | None = None  # candidate checks: examples or words
    quantizer_calibration_size: int | None = None  # what gptq and the codebook fit to
    reported_limit: int | None = None  # report on the first N examples / lines of the test data only

    def __post_init__(self):
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))


def data_config_from(data: DataConfig | None, settings: dict) -> DataConfig:
    """The search's ``DataConfig``: ``data``, or one built from keyword ``settings`` (its field names);
    giving both is an error that names both."""
    if data is not None and not isinstance(data, DataConfig):
        raise QslmError(f"data must be a qslm.DataConfig, got {type(data).__name__}")
    if data is not None and settings:
        key = next(iter(settings))
        raise QslmError(f"data= and {key}= both set the task's data: give {key} in one place, "
                        f"DataConfig(..., {key}=...) or the keyword without data=")
    return data if data is not None else DataConfig(**settings)


DATA_SETTINGS = frozenset(f.name for f in dataclasses.fields(DataConfig))
