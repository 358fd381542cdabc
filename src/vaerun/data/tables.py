"""Tabular data: a numeric CSV file, standardised, with its missing cells kept as NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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

    def _finite(self, table) -> np.ndarray:
        """The values as float64; an infinite one, or one beyond float32's range, is refused: standardised,
        it would turn its whole column into NaN, which reads as missing."""
        array = table.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            rows, columns = np.nonzero(~(np.abs(array) <= np.finfo(np.float32).max) & ~np.isnan(array))
        if len(rows):
            raise ConfigError(
                f"data.source.path: {self.path.name} holds {len(rows)} infinite or too large values (the "
                f"first in column {table.columns[columns[0]]}, row {rows[0] + 1} after the header: "
                f"{array[rows[0], columns[0]]}); leave a cell empty for a missing value"
            )
        return array

    def load(self) -> Splits:
        table = self._table()
        if self.label_column is not None:
            column = table.pop(self.label_column)
            # integer labels stay as they are (data.normal_class names them); others become 0, 1, ... in order
            codes = column if column.dtype.kind in "iu" else column.astype("category").cat.codes
            labels = torch.tensor(codes.to_numpy(dtype=np.int64))
        else:
            labels = torch.zeros(len(table), dtype=torch.int64)
        text = [str(c) for c in table.columns if table[c].dtype.kind not in "biuf"]
        if text:
            raise ConfigError(
                f"data.source.path: columns {', '.join(text)} of {self.path.name} are not numeric"
            )
        values = torch.tensor(self._finite(table).astype(np.float32)).reshape(len(table), 1, 1, -1)
        sizes = [round(self.test_fraction * len(table)), round(self.val_fraction * len(table))]
        test, val, train = split_off(values, labels.long(), sizes, self.split_seed)
        mean = torch.nanmean(train.images, dim=0)
        std = torch.nanmean((train.images - mean).square(), dim=0).sqrt()
        std = torch.where(std > 0, std, 1.0)  # a constant column stays 0, not NaN
        standardised = [Split((split.images - mean) / std, split.labels) for split in (train, val, test)]
        return Splits(*standardised, source=f"csv:{self.path.name}")
