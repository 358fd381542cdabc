"""Tabular data: a numeric CSV file, standardised, with its missing cells kept as NaN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaerun.core.checks import ConfigError
from vaerun.core.errors import first_line
from vaerun.data.splits import Split, Splits, split_off


class CSVSource:
    """A numeric CSV file with a header row: one example per row, one feature per column; empty fields are
    missing values. ``label_column`` (optional) is taken out as the labels (integers as they are, other
    values as codes 0, 1, ... in sorted order; without it every label is 0). Rows are shuffled with
    ``split_seed`` and cut into test, val and train by the given fractions; every column is standardised
    with the mean and standard deviation of the training rows' present values. Missing cells stay NaN
    here; the data module gives the model the column mean (0) in their place, and the imputation stage
    scores only cells that were present."""

    name = "csv"

    def __init__(
        self,
        path: str,
        label_column: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.label_column = label_column
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def _table(self):
        import pandas as pd

        if not self.path.is_file():
            raise ConfigError(f"data.source.path: no such file: {self.path}")
        try:
            table = pd.read_csv(self.path)
        except (ValueError, UnicodeDecodeError) as err:
            reason = first_line(err)  # pandas's message ends in a line break
            message = f"data.source.path: {self.path} is not a readable CSV file ({reason})"
            raise ConfigError(message) from None
        if self.label_column is not None and self.label_column not in table.columns:
            raise ConfigError(
                f"data.source.label_column: {self.path.name} has no column {self.label_column!r}; its "
                f"columns are {', '.join(map(str, table.columns))}"
            )
        return table

    def load(self) -> Splits:
        table = self._table()
        if self.label_column is not None:
            column = table.pop(self.label_column)
            # integer labels stay as they are (data.normal_class names them); others become 0, 1, ... in order
            codes = column if column.dtype.kind in "iu" else column.astype("category").cat.codes
            labels = torch.tensor(codes.to_numpy(dtype=np.int64))
        else:
            labels = torch.zeros(len(table), dtype=torch.int64)
        values = numeric_values(table, "data.source.path", self.path.name).astype(np.float32)
        rows = torch.tensor(values).reshape(len(table), 1, 1, -1)
        sizes = [round(self.test_fraction * len(table)), round(self.val_fraction * len(table))]
        test, val, train = split_off(rows, labels.long(), sizes, self.split_seed)
        columns = TableColumns.of_training_rows(tuple(map(str, table.columns)), train.images)
        standardised = [Split(columns.standardised(part.images), part.labels) for part in (train, val, test)]
        return Splits(*standardised, source=f"csv:{self.path.name}", columns=columns)


@dataclass(frozen=True)
class TableColumns:
    """A table's feature columns, with the mean and standard deviation of each over the training rows'
    present values: what turns the table's values into the model's standardised ones, and back."""

    names: tuple[str, ...]
    mean: Tensor  # (1, 1, D)
    std: Tensor  # (1, 1, D), 1 where a column is constant (it stays 0, not NaN)

    @classmethod
    def of_training_rows(cls, names: tuple[str, ...], rows: Tensor) -> TableColumns:
        mean = torch.nanmean(rows, dim=0)
        std = torch.nanmean((rows - mean).square(), dim=0).sqrt()
        return cls(names, mean, torch.where(std > 0, std, 1.0))

    def standardised(self, rows: Tensor) -> Tensor:
        return (rows - self.mean) / self.std

    def in_table_units(self, rows: Tensor) -> Tensor:
        return rows * self.std + self.mean


def numeric_values(table: Any, key: str, name: str) -> np.ndarray:
    """A table's values as float64, NaN where a cell is empty; a column that is not numeric, and an
    infinite value or one beyond float32's range, are refused (ConfigError, starting ``key: name``):
    standardised, an infinite value would turn its whole column into NaN, which reads as missing."""
    text = [str(c) for c in table.columns if table[c].dtype.kind not in "biuf"]
    if text:
        raise ConfigError(f"{key}: columns {', '.join(text)} of {name} are not numeric")
    array = table.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        rows, columns = np.nonzero(~(np.abs(array) <= np.finfo(np.float32).max) & ~np.isnan(array))
    if len(rows):
        first = f"column {table.columns[columns[0]]}, row {rows[0] + 1} after the header"
        raise ConfigError(
            f"{key}: {name} holds {len(rows)} infinite or too large values (the first in {first}: "
            f"{array[rows[0], columns[0]]}); leave a cell empty for a missing value"
        )
    return array
