"""CSV files: numeric feature columns chosen by name or index, and an optional label column.

Blank lines are skipped.  Feature values must be finite and within float32's
range.  Labels that are all whole numbers from 0 are used as they are (``3``,
``03`` and ``3.0`` alike; ``K`` = largest + 1, at most ``MAX_CLASSES``); any other
labels (names, negative or fractional numbers) are numbered in sorted order, with
the originals in ``meta["classes"]``, again at most ``MAX_CLASSES`` of them.  An empty label cell is an error, like an empty feature
cell.  Every error names the file, the line and the column.

The file is read as a stream: each row's features go straight into a packed
array of doubles and its label into the index of its text among the distinct
ones, so reading takes a few times the memory of the float32 data it yields,
not that of a Python object per cell.
"""

from __future__ import annotations

import csv
import itertools
import math
import warnings
from array import array
from pathlib import Path
from typing import Annotated, Iterator, Sequence, Union

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext, ComponentType, SpecWarning, Splits, hookimpl
from compose_gen.core import MAX_CLASSES
from compose_gen.registry import suggest
from compose_gen_plugins.datasets.arrays import require_file
from compose_gen_plugins.datasets.base import DatasetParams, DataSpace, file_error, make_splits, split_fields
from compose_gen_plugins.datasets.limits import BEYOND_FLOAT32, FLOAT32_ROUNDS_TO_INF, too_many_classes

__all__ = ["compose_gen_types"]

ColumnRef = Union[str, Annotated[int, Field(ge=0)]]


class CsvParams(DatasetParams):
    path: Path = Field(..., description="the CSV file, UTF-8 text; blank lines are skipped")
    columns: list[ColumnRef] | None = Field(
        None, min_length=1, description="feature columns by header name or 0-based index; default: all but the label"
    )
    label: ColumnRef | None = Field(None, description="the label column (name or 0-based index), if any")
    header: bool = Field(True, description="whether the first non-blank line holds the column names")
    delimiter: str = Field(",", min_length=1, max_length=1, description="the single character separating fields")


Row = tuple[int, list[str]]  # (number of its first line, fields)


def _read_rows(path: Path, delimiter: str) -> Iterator[Row]:
    """The file's non-blank rows, one at a time, their fields stripped."""
    require_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            ended = 0  # the line the last record ended on: a quoted field may span lines, and a row is named by its first
            for fields in reader:
                start, ended = ended + 1, reader.line_num
                if any(value.strip() for value in fields):
                    yield start, [value.strip() for value in fields]
    except UnicodeDecodeError as error:
        raise file_error(path, f"is not UTF-8 text ({_undecodable(path) or error})") from None
    except csv.Error as error:
        raise file_error(path, f"line {reader.line_num}: {error}") from None
    except OSError as error:
        raise file_error(path, f"cannot be read ({error})") from None


def _undecodable(path: Path) -> str | None:
    """Where the first bytes that are not UTF-8 lie, by line and byte in it: the decoder's own position counts from the
    start of the chunk it was decoding, which names no place in a file of more than one chunk."""
    with path.open("rb") as handle:
        for line, text in enumerate(handle, 1):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {line}, byte {error.start + 1}: {text[error.start : error.end]!r}, {error.reason}"
    return None


def _column(ref: ColumnRef, names: list[str], p: CsvParams) -> int:
    if isinstance(ref, int):
        if ref >= len(names):
            raise file_error(p.path, f"column index {ref} is out of range; the file has {len(names)} columns")
        return ref
    if not p.header:
        raise file_error(p.path, f"column {ref!r} is named but header is false; use 0-based indices")
    if names.count(ref) != 1:
        problem = "appears more than once in the header" if ref in names else f"is not a column{suggest(ref, names)}"
        other = next((d for d in ",;\t|" if d != p.delimiter and len(names) == 1 and d in names[0]), None)
        if other is not None and ref in names[0].split(other):  # the whole header read as one column
            problem = f"is not a column: the header is one column, {names[0]!r}; are the fields separated by {other!r}? set delimiter: {other!r}"
        raise file_error(p.path, f"column {ref!r} {problem}; columns are {names}")
    return names.index(ref)


def _float(text: str) -> float:
    """``text`` as a number as CSV files write them: Python's float syntax in ASCII without its digit separators, since no
    spreadsheet or pandas reads ``1_000`` or fullwidth ``１０`` as a number (``float`` does, and ``１０`` would join class 10)."""
    if "_" in text or not text.isascii():
        raise ValueError(f"not an ASCII number without separators: {text!r}")
    return float(text)


def _number(text: str, line: int, column: str, path: Path) -> float:
    """A feature cell's value, finite in float32."""
    try:
        value = _float(text)
    except ValueError:
        raise file_error(path, f"line {line}, column {column!r}: non-numeric value {text!r}") from None
    if not math.isfinite(value):
        raise file_error(path, f"line {line}, column {column!r}: non-finite value {text!r}")
    if abs(value) >= FLOAT32_ROUNDS_TO_INF:
        raise file_error(path, f"line {line}, column {column!r}: {text} is {BEYOND_FLOAT32}")
    return value


class _LabelColumn:
    """A label column read row by row: each distinct text once, with the line it first appears on, and each row as the
    index of its text."""

    def __init__(self) -> None:
        self.code_of: dict[str, int] = {}  # in the order the texts first appear
        self.first_lines: list[int] = []
        self.codes = array("q")

    def add(self, text: str, line: int) -> None:
        code = self.code_of.setdefault(text, len(self.code_of))
        if code == len(self.first_lines):
            self.first_lines.append(line)
        self.codes.append(code)


def _read_table(
    rows: Iterator[Row], names: list[str], columns: list[int], label: int | None, path: Path
) -> tuple[Tensor, _LabelColumn | None]:
    """The ``columns`` of every row as float64 ``(N, len(columns))`` and the ``label`` column; each row checked to have a
    field per column name as it is read."""
    values, labels, count = array("d"), (None if label is None else _LabelColumn()), 0
    for line, fields in rows:
        if len(fields) != len(names):
            raise file_error(path, f"line {line} has {len(fields)} fields; expected {len(names)}")
        values.extend(_number(fields[i], line, names[i], path) for i in columns)
        if labels is not None:
            if not fields[label]:
                raise file_error(path, f"line {line}, column {names[label]!r}: empty label; every row needs one")
            labels.add(fields[label], line)
        count += 1
    if not count:
        raise file_error(path, "has no data rows")
    return torch.from_numpy(np.frombuffer(values, dtype=np.float64)).reshape(count, len(columns)), labels


def _labels(column: _LabelColumn, name: str, path: Path) -> tuple[Tensor, int, list[str] | None]:
    """Labels as indices, the class count, and the class names when they were renumbered."""
    classes, count, names = _classes(list(column.code_of), column.first_lines, name, path)
    return torch.tensor(classes)[torch.from_numpy(np.frombuffer(column.codes, dtype=np.int64))], count, names


def _classes(texts: list[str], first_lines: list[int], name: str, path: Path) -> tuple[list[int], int, list[str] | None]:
    """The class of each of the distinct label ``texts`` (first on ``first_lines``), the class count, and the class names
    when they were renumbered."""
    indices = _whole_numbers(texts)
    if indices is not None:  # 1, 01 and 1.0 are one class
        return _class_indices(indices, first_lines, name, path)

    def key(text: str) -> tuple[int, float, str]:
        """A class: a number by its value, however written (-1 and -1.0), first and in order; a name (or nan, which
        orders nothing) by its text, after."""
        try:
            value = _float(text)
        except ValueError:
            return (1, 0.0, text)
        return (0, value, "") if math.isfinite(value) else (1, 0.0, text)

    spellings: dict[tuple[int, float, str], list[str]] = {}
    for text in sorted(set(texts)):
        spellings.setdefault(key(text), []).append(text)
    keys = sorted(spellings)
    problem = too_many_classes(len(keys) - 1)
    if problem is not None:
        raise file_error(path, f"column {name!r} holds {len(keys)} different labels, more than the {MAX_CLASSES} classes supported "
                               "(is it a column of features rather than of classes?)")
    index = {text: i for i, k in enumerate(keys) for text in spellings[k]}
    def name_of(k: tuple[int, float, str]) -> str:
        """A class's name: a number as it is usually written (3, not 03 or 3.0) where the file writes it so."""
        usual = f"{k[1]:g}" if k[0] == 0 else None
        return usual if usual in spellings[k] else spellings[k][0]

    return [index[text] for text in texts], len(keys), [name_of(k) for k in keys]


def _warn_of_a_row_index(x: Tensor, columns: list[int], names: list[str], p: CsvParams) -> None:
    """Say when a feature column without a name (pandas writes its index so, as ``""``) counts 0, 1, 2, ... row by row."""
    for position, column in enumerate(columns):
        if p.header and names[column].strip() in ("", "Unnamed: 0"):
            counting = torch.arange(len(x), dtype=x.dtype)
            if torch.equal(x[:, position], counting) or torch.equal(x[:, position], counting + 1):
                warnings.warn(
                    SpecWarning(
                        f"{p.path}: column {column} has no name and counts the rows ({int(x[0, position])}, "
                        f"{int(x[1, position]) if len(x) > 1 else ''}, ...): a row index (pandas' to_csv writes one) is read "
                        "as a feature; list the feature columns with columns:, or write the file with index=False"
                    ),
                    stacklevel=3,
                )


def _is_number(text: str) -> bool:
    try:
        _float(text)
    except ValueError:
        return False
    return True


def _whole_numbers(texts: list[str]) -> list[int] | None:
    """The labels as class indices when every one is a whole number from 0 (``3``, ``03``, ``3.0``), else None."""
    indices = []
    for text in texts:
        try:
            value = _float(text)
        except ValueError:
            return None
        if not (value >= 0 and value.is_integer()):
            return None
        indices.append(int(value))
    return indices


def _class_indices(labels: list[int], lines: Sequence[int], name: str, path: Path) -> tuple[list[int], int, None]:
    """Non-negative integer labels used as they are: ``K`` = largest + 1, at most ``MAX_CLASSES``; ``lines`` are where
    each first appears."""
    largest = max(labels)
    problem = too_many_classes(largest)
    if problem is not None:
        line = lines[labels.index(largest)]
        raise file_error(path, f"line {line}, column {name!r}: {problem}")
    return labels, largest + 1, None


def build_csv(p: CsvParams, ctx: BuildContext | None = None) -> Splits:
    """Numeric columns of a CSV file as ``x``, an optional label column as ``y``; seeded split."""
    rows = _read_rows(p.path, p.delimiter)
    first = next(rows, None)
    if first is None:
        raise file_error(p.path, "has no data rows")
    if p.header:
        names = first[1]
        if all(_is_number(name) for name in names):
            warnings.warn(
                SpecWarning(
                    f"{p.path}: line 1 ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) is read as the column names, "
                    "as header: true says, but it holds only numbers: if it is a row of data, set header: false"
                ),
                stacklevel=2,
            )
    else:
        names = [str(i) for i in range(len(first[1]))]
        rows = itertools.chain([first], rows)
    label = None if p.label is None else _column(p.label, names, p)
    if p.columns is None:
        columns = [i for i in range(len(names)) if i != label]
    else:
        columns = [_column(ref, names, p) for ref in p.columns]
    twice = sorted({names[i] for i in columns if columns.count(i) > 1})
    if twice:  # x would hold a feature twice: a density of such data is degenerate, its NLL unbounded below
        raise file_error(p.path, f"columns lists {', '.join(map(repr, twice))} more than once (by name or by index)")
    if label in columns:
        raise file_error(p.path, f"the label column {names[label]!r} is also a feature column")
    if not columns:
        raise file_error(p.path, "has no feature columns besides the label")
    x, labels = _read_table(rows, names, columns, label, p.path)
    columns_of: dict[str, Tensor] = {"x": x}
    _warn_of_a_row_index(x, columns, names, p)
    space = DataSpace(meta={"columns": [names[i] for i in columns]})
    if labels is not None:
        columns_of["y"], space.num_classes, classes = _labels(labels, names[label], p.path)
        if classes is not None:
            space.meta["classes"] = classes
    train, test = split_fields(columns_of, p)
    return make_splits(p, train, test, space)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("csv", "dataset", CsvParams, build_csv)]
