"""NumPy and CSV files written into tmp_path: reading, column selection, and errors naming the file."""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compose_gen import SpecWarning
from compose_gen_plugins.datasets import DatasetError
from compose_gen_plugins.datasets.base import PipelineParams, make_splits

X = np.arange(40, dtype=np.float32).reshape(10, 4)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def all_x(splits) -> torch.Tensor:
    return torch.cat([splits.train.fields["x"], splits.test.fields["x"]])


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    return x[x[:, 0].argsort()]


def test_npz_keys_labels_and_image_shape(build, tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, images=X, labels=Y)
    splits = build("npz", path=str(path), x_key="images", y_key="labels", image_shape=[1, 2, 2], pixel_max=40)
    assert len(splits.train) == 8 and len(splits.test) == 2 and splits.train.num_classes == 3
    torch.testing.assert_close(sorted_rows(all_x(splits)), torch.as_tensor(X))
    train = splits.train.fields
    torch.testing.assert_close(train["y"], torch.as_tensor(Y)[(train["x"][:, 0] / 4).long()])
    assert splits.test.to_display(splits.test.fields["x"]).shape == (2, 1, 2, 2)


def test_npy_with_label_file_and_one_feature(build, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X[:, 0])
    np.save(tmp_path / "y.npy", Y)
    splits = build("npy", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"), test_fraction=0.5)
    assert splits.train.fields["x"].shape == (5, 1) and splits.train.num_classes == 3
    assert splits.train.image_shape is None


def built_quietly(build, type_name: str, **params):
    """``build(type_name, **params)``, failing on any SpecWarning: the remedy a warning names must silence it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        return build(type_name, **params)


def test_images_brighter_than_pixel_max_are_warned_of(build, tmp_path: Path) -> None:
    """8-bit pixels read with the default pixel_max 1 would show nearly every pixel as white, silently."""
    np.save(tmp_path / "x.npy", np.arange(2 * 4, dtype=np.uint8).reshape(2, 1, 2, 2) * 30)
    with pytest.warns(SpecWarning, match=rf"{tmp_path / 'x.npy'}: values reach 210, above pixel_max 1, the value shown as white"):
        build("npy", path=str(tmp_path / "x.npy"), image_shape=[1, 2, 2], test_fraction=0.5)
    built_quietly(build, "npy", path=str(tmp_path / "x.npy"), image_shape=[1, 2, 2], pixel_max=255, test_fraction=0.5)
    built_quietly(build, "npy", path=str(tmp_path / "x.npy"), test_fraction=0.5)  # not images: nothing is drawn as pixels


def test_pixel_max_without_image_shape_leaves_to_display_in_data_units(build, tmp_path: Path) -> None:
    """pixel_max says how a pixel shows; points that are no images were divided by it, so saved samples came out at 1/10."""
    np.save(tmp_path / "x.npy", X)
    splits = build("npy", path=str(tmp_path / "x.npy"), pixel_max=10, transforms=["standardise"])
    shown = splits.train.to_display(splits.train.fields["x"])
    rows = (shown[:, 0] / 4).round().long()  # row i of X holds 4i .. 4i + 3: its first value names the row shown
    torch.testing.assert_close(shown, torch.as_tensor(X)[rows], rtol=1e-5, atol=1e-4)


def test_features_that_float32_rounds_onto_a_few_values_are_warned_of(build, tmp_path: Path) -> None:
    """1e5 + 0.1·moons: 4000 distinct float64 values, 42 in float32; the only warning blamed the data for lying on a grid."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(400, 2))
    np.save(tmp_path / "offset.npy", 1e5 + 0.1 * points)
    with pytest.warns(SpecWarning, match=r"x: feature 0 spans 99999.*and float32, in which examples are kept, rounds its values by up to 0.00\d+: .*add the standardise transform \(computed in float64\); 1 more feature\(s\) alike"):
        build("npy", path=str(tmp_path / "offset.npy"), test_fraction=0.5)
    built_quietly(build, "npy", path=str(tmp_path / "offset.npy"), transforms=["standardise"], test_fraction=0.5)
    np.save(tmp_path / "wide.npy", 1e3 + 10 * points)  # float32 moves it by 3e-5 in a spread of 60
    built_quietly(build, "npy", path=str(tmp_path / "wide.npy"), test_fraction=0.5)
    np.save(tmp_path / "whole.npy", 100000.0 + np.arange(400.0).reshape(200, 2) % 10)  # whole numbers: float32 holds them exactly
    built_quietly(build, "npy", path=str(tmp_path / "whole.npy"), test_fraction=0.5)
    np.save(tmp_path / "single.npy", (1e5 + 0.1 * points).astype(np.float32))  # lost in the file already: nothing to warn of here
    built_quietly(build, "npy", path=str(tmp_path / "single.npy"), test_fraction=0.5)


def _huge_npy_header() -> bytes:
    """A .npy file whose header declares 3·10¹² float64 values (24 TB) and holds 8 bytes, which NumPy would allocate."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (3 * 10**12,)})
    return buffer.getvalue() + bytes(8)


def _write_member(path: Path, name: str, data: bytes, mode: str = "w") -> None:
    with zipfile.ZipFile(path, mode) as archive:
        archive.writestr(name, data)


def _npy_header(version: tuple[int, int]) -> bytes:
    """A .npy header of 3 float64 values with any version number, even one NumPy does not read."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (3,)})
    return np.lib.format.magic(*version) + buffer.getvalue()[8:]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_the_member_checked_is_the_one_numpy_reads(build, tmp_path: Path) -> None:
    """NumPy reads a member named exactly as the key before one named key + '.npy'."""
    lying, honest = tmp_path / "lying.npz", tmp_path / "honest.npz"
    for path, exact, suffixed in [(lying, _huge_npy_header(), _npy(X)), (honest, _npy(X), _huge_npy_header())]:
        _write_member(path, "x", exact)
        _write_member(path, "x.npy", suffixed, "a")
    with pytest.raises(DatasetError, match="array 'x' declares 3000000000000 float64 values"):
        build("npz", path=str(lying))
    assert build("npz", path=str(honest)).train.fields["x"].shape[1:] == X.shape[1:]


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_packed_beyond_deflate_s_ratio_load(method: int, build, tmp_path: Path) -> None:
    """bzip2 packs a million zeros 100 000 to 1, far past deflate's limit: no lie for all that."""
    path = tmp_path / "zeros.npz"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("x.npy", _npy(np.zeros((100_000, 10), np.float32)))
    assert build("npz", path=str(path)).train.fields["x"].shape[1:] == (10,)


def test_a_member_whose_stated_size_is_forged_is_bounded_by_its_packed_bytes(build, tmp_path: Path) -> None:
    path = tmp_path / "forged.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**29,)})  # 4 GiB
    _write_member(path, "x.npy", header.getvalue() + bytes(64))
    raw = bytearray(path.read_bytes())
    central = raw.rindex(b"PK\x01\x02")  # the central directory's entry: its sizes packed at offset 20, unpacked at 24
    raw[central + 24 : central + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(raw)
    with pytest.raises(DatasetError, match=r"array 'x' declares 536870912 float64 values \(4,294,967,296 bytes\).* holds 64 bytes"):
        build("npz", path=str(path))
    raw[central + 20 : central + 24] = (0xFFFFFFF0).to_bytes(4, "little")  # both forged: the archive's own size bounds them
    path.write_bytes(raw)
    # Python 3.12 and 3.11.8 refuse such a member themselves, as reaching past the central directory ("Overlapped entries")
    with pytest.raises(DatasetError, match=r"array 'x' (declares 536870912 float64 values|is unreadable \(Overlapped entries)"):
        build("npz", path=str(path))


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("make", "params", "message"),
    [
        (lambda p: write_npz(p, x=X), {"x_key": "images"}, r"has no array 'images'; it has \['x'\]"),
        (lambda p: write_npz(p, x=np.array([{"a": 1}, 2], dtype=object)), {}, "unreadable.*allow_pickle"),
        (lambda p: p.write_bytes(pickle.dumps({"x": X})), {}, "not a readable .npz file"),
        (lambda p: p.write_bytes(write_npz(p, x=X).read_bytes()[:100]), {}, "not a readable .npz file"),
        (lambda p: write_npz(p, x=np.array(["a", "b"])), {}, "dtype <U1; expected numbers"),
        (lambda p: write_npz(p, x=np.array([[1.0], [np.nan]])), {}, r"x\[1, 0\] = nan: not a finite number"),
        (lambda p: write_npz(p, x=X, y=-Y), {"y_key": "y"}, r"y\[1\] = -1: labels must be non-negative integers"),
        (lambda p: write_npz(p, x=X, y=np.where(Y == 2, np.inf, Y)), {"y_key": "y"}, r"y\[2\] = inf: labels must be"),
        (lambda p: write_npz(p, x=X, y=Y + 0.5), {"y_key": "y"}, r"y\[0\] = 0.5: labels must be non-negative integers"),
        (lambda p: write_npz(p, x=X[:1, :0]), {}, r"x has shape \(1, 0\), no values"),
        (lambda p: write_npz(p, x=X, y=Y[:5]), {"y_key": "y"}, r"the y array has shape \(5,\); expected \(10,\)"),
        (lambda p: np.save(p.with_suffix(".npy"), X) or p.with_suffix(".npy").rename(p), {}, "is a .npy array"),
        (lambda p: None, {}, "no such file"),
        (lambda p: write_npz(p, x=X) and p.write_bytes(_huge_npy_header()), {}, r"declares 3000000000000 float64 values .* holds 8 bytes"),
        (lambda p: _write_member(p, "x.npy", _huge_npy_header()), {}, r"^\S+bad\.npz: array 'x' declares 3000000000000 float64 values .* holds 8 bytes"),
        (lambda p: _write_member(p, "x.npy", _npy_header((9, 9)) + bytes(8)), {}, r"array 'x' is unreadable \(we only support format version"),
    ],
)
def test_malformed_npz_names_the_file(build, tmp_path: Path, make, params: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(DatasetError, match=message) as error:
        build("npz", path=str(path), **params)
    assert str(error.value).startswith(str(path))


def test_truncated_npy_names_the_file(build, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, X)
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(DatasetError, match=f"{path}: declares 40 float32 values .* holds 22 bytes of data: the file is cut short"):
        build("npy", path=str(path))


def test_an_npy_holding_more_than_its_header_declares_is_refused_not_read_in_part(build, tmp_path: Path) -> None:
    """np.save called three times on one handle writes three arrays; np.load reads the first alone."""
    path = tmp_path / "x.npy"
    with path.open("wb") as handle:
        for _ in range(3):
            np.save(handle, X)
    with pytest.raises(DatasetError, match=f"{path}: declares 40 float32 values .* more follows the array"):
        build("npy", path=str(path))


CSV = "a,b,label,c\n1,2,cat,3\n4,5,dog,6\n\n7,8,cat,9\n10,11,dog,12\n13,14,cat,15\n"


def test_csv_columns_by_name_and_index_with_named_classes(build, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    splits = build("csv", path=str(path), columns=["c", 0], label="label", test_fraction=0.4)
    x = sorted_rows(all_x(splits))
    torch.testing.assert_close(x, torch.tensor([[3.0, 1], [6, 4], [9, 7], [12, 10], [15, 13]]))
    assert splits.train.meta["classes"] == ["cat", "dog"] and splits.train.num_classes == 2
    assert splits.train.meta["columns"] == ["c", "a"]
    labels = torch.cat([splits.train.fields["y"], splits.test.fields["y"]])
    rows = {int(row[1]): int(label) for row, label in zip(all_x(splits), labels, strict=True)}
    assert rows == {1: 0, 4: 1, 7: 0, 10: 1, 13: 0}


def test_csv_default_columns_no_header_and_delimiter(build, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0.5;1;2\n1.5;0;3\n2.5;1;4\n3.5;0;5\n")
    splits = build("csv", path=str(path), header=False, delimiter=";", label=1, test_fraction=0.25)
    assert splits.train.fields["x"].shape == (3, 2) and splits.train.num_classes == 2
    assert "classes" not in splits.train.meta
    torch.testing.assert_close(sorted_rows(all_x(splits)), torch.tensor([[0.5, 2], [1.5, 3], [2.5, 4], [3.5, 5]]))


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("a,b\n1,2\n3,x\n", {}, r"line 3, column 'b': non-numeric value 'x'"),
        ("a,b\n1,2\n3\n", {}, "line 3 has 1 fields; expected 2"),
        ("a,b\n1,2\n3,nan\n", {}, "line 3, column 'b': non-finite value 'nan'"),
        ("a,b\n1,2\n3,1_000\n", {}, "line 3, column 'b': non-numeric value '1_000'"),  # Python's float() reads 1000
        ("a,b\n1,2\n3,１０\n", {}, "line 3, column 'b': non-numeric value '１０'"),  # fullwidth digits: float() reads 10
        ("a,b\n1,2\n", {"columns": ["aa"]}, "column 'aa' is not a column; did you mean 'a'"),
        ("a;b\n1;2\n", {"label": "b"}, "column 'b' is not a column: the header is one column, 'a;b'; are the fields separated by ';'"),
        ("a,a\n1,2\n", {"columns": ["a"]}, "appears more than once"),
        ("a,b,c\n1,2,3\n", {"delimiter": ";", "label": "c"}, "the header is one column, 'a,b,c'; are the fields separated by ','"),
        ("a,b\n1,2\n", {"columns": ["a", 0]}, "columns lists 'a' more than once"),
        ("a,b\n1,2\n", {"columns": [5]}, "column index 5 is out of range; the file has 2 columns"),
        ("1,2\n3,4\n", {"header": False, "label": "b"}, "named but header is false"),
        ("a,b\n1,2\n", {"label": "b", "columns": ["a", "b"]}, "label column 'b' is also a feature column"),
        ("a,b\n", {}, "has no data rows"),
        ("", {}, "has no data rows"),
    ],
)
def test_malformed_csv_names_file_line_and_column(build, tmp_path: Path, text: str, params: dict, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as error:
        build("csv", path=str(path), **params)
    assert str(error.value).startswith(str(path))


def test_csv_that_is_not_text(build, tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x82")
    with pytest.raises(DatasetError, match="is not UTF-8 text"):
        build("csv", path=str(path))


def test_csv_row_with_a_field_over_two_lines_is_named_by_its_first(build, tmp_path: Path) -> None:
    """The reader's line number is where a record ends: the row starting on line 3 was called line 4."""
    path = tmp_path / "multiline.csv"
    path.write_text('a,b\n1,2\n3,"4\nx"\n5,6\n')
    with pytest.raises(DatasetError, match=r"line 3, column 'b': non-numeric value '4\\nx'"):
        build("csv", path=str(path))


def test_csv_that_is_not_utf8_names_the_line(build, tmp_path: Path) -> None:
    """A Latin-1 byte deep in the file: the decoder's position (6953) counted from its chunk, naming no place in the file."""
    lines = ["a,b", *(f"{i},{2 * i}" for i in range(3000))]
    lines[2500] = "2499,caf\xe9"
    path = tmp_path / "latin1.csv"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DatasetError, match=re.escape(r"is not UTF-8 text (line 2501, byte 9: b'\xe9', invalid continuation byte)")):
        build("csv", path=str(path))


def test_bad_file_params_are_validation_errors(build, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        build("csv", path=str(tmp_path / "t.csv"), delimiter=";;")
    with pytest.raises(ValidationError):
        build("npz", path=str(tmp_path / "t.npz"), image_shape=[1, 0, 2])


# --- values float32 cannot hold, labels that are not class indices, corrupt members: errors say what and where

BEYOND_FLOAT32 = r"beyond float32's range \(±3.4e\+38\)"


def test_csv_value_beyond_float32_names_line_and_column(build, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,b\n1,2\n3,4\n1e39,2\n")
    with pytest.raises(DatasetError, match=rf"^{path}: line 4, column 'a': 1e39 is {BEYOND_FLOAT32}"):
        build("csv", path=str(path))


def test_csv_values_at_float32_s_edge_are_read_as_float32_rounds_them(build, tmp_path: Path) -> None:
    """A value that rounds to float32's largest number is kept (as that number); the first that rounds to inf is refused."""
    edge = 2.0**128 - 2.0**103  # halfway between float32's largest number and 2**128: rounds to inf
    below = math.nextafter(edge, 0.0)
    path = tmp_path / "edge.csv"
    path.write_text(f"a\n{below!r}\n{-below!r}\n1\n2\n")
    x = all_x(build("csv", path=str(path), test_fraction=0.25)).flatten()
    assert sorted(x.tolist()) == [-torch.finfo(torch.float32).max, 1.0, 2.0, torch.finfo(torch.float32).max]
    path.write_text(f"a\n1\n{-edge!r}\n")
    with pytest.raises(DatasetError, match=rf"^{path}: line 3, column 'a': {re.escape(repr(-edge))} is {BEYOND_FLOAT32}"):
        build("csv", path=str(path))


def test_npy_value_beyond_float32_names_the_index(build, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1.0, 2.0], [3.0, -1e39], [5.0, 6.0]]))
    with pytest.raises(DatasetError, match=rf"^{path}: x\[1, 1\] = -1e\+39: {BEYOND_FLOAT32}"):
        build("npy", path=str(path))


def test_transform_that_overflows_float32_names_the_step(build, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, X)
    transforms = ["standardise", {"type": "scale", "a": 1e300}]
    with pytest.raises(DatasetError, match=rf"^transforms\[1\]: makes a value -?[\d.]+e\+\d+, {BEYOND_FLOAT32}"):
        build("npy", path=str(path), transforms=transforms)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([0, 1, 2**63, 1, 0, 1, 0, 1, 0, 1], np.uint64), r"y.npy: labels\[2\]: labels go up to 9223372036854775808"),
        (np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 10_000]), r"y.npy: labels\[9\]: labels go up to 10000, which would make 10001"),
        (np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, np.inf], np.float32), r"y.npy: labels\[9\] = inf: labels must be"),
    ],
    ids=["uint64-beyond-int64", "too-many-classes", "float-inf"],
)
def test_npy_labels_must_be_class_indices(build, tmp_path: Path, labels: np.ndarray, message: str) -> None:
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", labels)
    with pytest.raises(DatasetError, match=message):
        build("npy", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"))


def test_npy_labels_up_to_the_class_bound_are_kept(build, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.array([0, 9_999] * 5, np.uint64))
    splits = build("npy", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"))
    assert splits.train.num_classes == 10_000 and splits.train.fields["y"].dtype == torch.int64


def test_a_csv_row_index_read_as_a_feature_is_warned_of(build, tmp_path: Path) -> None:
    """pandas' to_csv writes its index as a first column without a name, which became a feature counting the rows."""
    path = tmp_path / "t.csv"
    path.write_text(",a,b\n0,0.5,2\n1,0.25,3\n2,0.75,1\n3,0.1,0\n")
    with pytest.warns(SpecWarning, match=r"column 0 has no name and counts the rows \(0, 1, \.\.\.\): a row index"):
        build("csv", path=str(path), test_fraction=0.25)
    splits = built_quietly(build, "csv", path=str(path), columns=["a", "b"], test_fraction=0.25)
    assert splits.train.fields["x"].shape[1] == 2


def test_a_csv_first_line_of_numbers_read_as_column_names_is_warned_of(build, tmp_path: Path) -> None:
    """header: true (the default) on a file without a header quietly dropped its first row of data."""
    path = tmp_path / "t.csv"
    path.write_text("1.5,2,3\n4,5,6\n7,8,9\n10,11,12\n")
    with pytest.warns(SpecWarning, match=r"line 1 \(1\.5, 2, 3\) is read as the column names, as header: true says, but it holds only numbers"):
        build("csv", path=str(path), test_fraction=0.34)
    splits = built_quietly(build, "csv", path=str(path), header=False, test_fraction=0.25)
    assert len(splits.train) + len(splits.test) == 4


def test_csv_whole_number_labels_are_one_class_however_written(build, tmp_path: Path) -> None:
    """1, 01 and 1.0 are class 1; read as texts they made three classes, and the class count was off."""
    path = tmp_path / "labels.csv"
    path.write_text("a,l\n1,0\n2,1\n3,01\n4,1.0\n5,2\n6,2.0\n")
    splits = build("csv", path=str(path), label="l", test_fraction=0.5)
    rows = torch.cat([splits.train.fields["x"][:, 0], splits.test.fields["x"][:, 0]])
    labels = torch.cat([splits.train.fields["y"], splits.test.fields["y"]])
    assert splits.train.num_classes == 3 and "classes" not in splits.train.meta
    assert dict(zip(rows.tolist(), labels.tolist(), strict=True)) == {1.0: 0, 2.0: 1, 3.0: 1, 4.0: 1, 5.0: 2, 6.0: 2}
    path.write_text("a,l\n1,10\n2,1_0\n")
    assert build("csv", path=str(path), label="l", test_fraction=0.5).train.meta["classes"] == ["10", "1_0"], "not one class"


def test_csv_labels_that_need_renumbering_are_one_class_per_number_and_in_an_order_that_never_changes(build, tmp_path: Path) -> None:
    """-1 and -1.0 made two classes once a label was negative or a name; and a label 'nan' (which orders nothing)
    made the class numbering depend on the order of a set, so on PYTHONHASHSEED: one file, other labels in each process."""
    import os
    import subprocess
    import sys

    path = tmp_path / "labels.csv"
    path.write_text("a,l\n1,-1\n2,-1.0\n3,3\n4,3.0\n5,cat\n6,nan\n7,03\n8,0.5\n")
    splits = build("csv", path=str(path), label="l", test_fraction=0.5)
    assert splits.train.meta["classes"] == ["-1", "0.5", "3", "cat", "nan"]
    rows = torch.cat([splits.train.fields["x"][:, 0], splits.test.fields["x"][:, 0]])
    labels = torch.cat([splits.train.fields["y"], splits.test.fields["y"]])
    assert dict(zip(rows.tolist(), labels.tolist(), strict=True)) == {1.0: 0, 2.0: 0, 3.0: 2, 4.0: 2, 5.0: 3, 6.0: 4, 7.0: 2, 8.0: 1}
    read = (
        "import sys; from compose_gen_plugins.datasets.tables import build_csv, CsvParams; "
        f"print(build_csv(CsvParams(path={str(path)!r}, label='l')).train.meta['classes'])"
    )
    seen = {subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(seen) == 1 and "nan" in seen.pop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,l\n1,0\n2,1\n3,99999999999\n", "line 4, column 'l': labels go up to 99999999999, which would make"),
        ("a,l\n1,0\n2,\n3,1\n", "line 3, column 'l': empty label"),
        ("a,l\n" + "".join(f"{i},{i / 7:.6f}\n" for i in range(10_001)), "column 'l' holds 10001 different labels, more than the 10000"),
    ],
    ids=["huge-label", "empty-label", "a-column-of-features"],
)
def test_csv_labels_name_line_and_column(build, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=f"^{path}: {message}"):
        build("csv", path=str(path), label="l")


def test_npz_with_corrupt_compressed_member_names_file_and_array(build, tmp_path: Path) -> None:
    path = tmp_path / "z.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((100, 10)))
    content = bytearray(path.read_bytes())
    content[60:90] = bytes(30)
    path.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match=rf"^{path}: array 'x' is unreadable \(Error -3 while decompressing"):
        build("npz", path=str(path))


def test_npz_member_that_is_not_npy_names_file_and_array(build, tmp_path: Path) -> None:
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"garbage garbage")
    with pytest.raises(DatasetError, match=rf"^{path}: array 'x' is not a .npy array: its member starts with b'garbage"):
        build("npz", path=str(path))


def test_npz_member_holding_more_than_its_header_declares_is_refused_not_read_in_part(build, tmp_path: Path) -> None:
    """Two arrays written to one member were read as the first alone, as a plain .npy's already was not."""
    path, member = tmp_path / "z.npz", io.BytesIO()
    for _ in range(2):
        np.save(member, X)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    with pytest.raises(DatasetError, match=rf"^{path}: array 'x' declares 40 float32 values .* more follows the array"):
        build("npz", path=str(path))


def test_text_file_is_not_called_a_pickle(build, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_text("hello world")
    with pytest.raises(DatasetError, match=rf"^{path}: not a readable .npy file: it starts with b'hello ', not") as error:
        build("npy", path=str(path))
    assert "pickle" not in str(error.value)


def test_make_splits_refuses_an_empty_half() -> None:
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(DatasetError, match="^empty test split: it has no examples"):
        make_splits(PipelineParams(), {"x": x}, {"x": x[:0]})


def test_channels_last_images_are_refused_with_the_transpose_that_fixes_them(build, tmp_path: Path) -> None:
    """(N, H, W, C) arrays, as Pillow and imageio give them, read as (C, H, W) would scramble every picture."""
    images = np.random.default_rng(0).random((20, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "nhwc.npz", x=images)
    with pytest.raises(DatasetError) as info:
        build("npz", path=str(tmp_path / "nhwc.npz"), image_shape=[3, 8, 8])
    assert str(info.value).startswith(f"{tmp_path / 'nhwc.npz'}: the examples have shape (8, 8, 3), channels last, but image_shape [3, 8, 8]")
    assert "transpose the array to (N, 3, 8, 8)" in str(info.value)
    with pytest.raises(DatasetError, match=r"nhwc.npz: the examples have shape \(8, 8, 3\), 192 values each, but image_shape \[1, 8, 8\] holds 64"):
        build("npz", path=str(tmp_path / "nhwc.npz"), image_shape=[1, 8, 8])
    np.savez(tmp_path / "nchw.npz", x=images.transpose(0, 3, 1, 2))
    assert build("npz", path=str(tmp_path / "nchw.npz"), image_shape=[3, 8, 8]).train.image_shape == (3, 8, 8)


def test_images_whose_own_shape_is_not_image_shape_are_refused_naming_both(build, tmp_path: Path) -> None:
    """(N, 3, 8, 12) read as image_shape [3, 12, 8]: the model would read (3, 8, 12), every picture (3, 12, 8)."""
    np.savez(tmp_path / "swapped.npz", x=np.zeros((20, 3, 8, 12), np.float32))
    with pytest.raises(DatasetError) as info:
        build("npz", path=str(tmp_path / "swapped.npz"), image_shape=[3, 12, 8])
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'swapped.npz'}: the examples have shape (3, 8, 12), but image_shape is [3, 12, 8]")
    assert "set image_shape: [3, 8, 12] if that is their (C, H, W)" in message
    np.save(tmp_path / "wide.npy", np.zeros((20, 2, 3, 8, 2), np.float32))
    with pytest.raises(DatasetError, match=r"wide.npy: the examples have shape \(2, 3, 8, 2\), but image_shape is \[6, 8, 2\]"):
        build("npy", path=str(tmp_path / "wide.npy"), image_shape=[6, 8, 2])
    np.save(tmp_path / "flat.npy", np.zeros((20, 288), np.float32))
    assert build("npy", path=str(tmp_path / "flat.npy"), image_shape=[3, 12, 8]).train.fields["x"].shape[1:] == (288,)


def test_grey_images_saved_without_their_channel_axis_get_it(build, tmp_path: Path) -> None:
    """(N, H, W) with image_shape [1, H, W] is (N, 1, H, W), as the conv networks read it; any other 2-D shape is refused."""
    pixels = np.random.default_rng(0).random((20, 8, 10)).astype(np.float32)
    np.savez(tmp_path / "grey.npz", x=pixels)
    splits = build("npz", path=str(tmp_path / "grey.npz"), image_shape=[1, 8, 10], test_fraction=0.5)
    x = splits.train.fields["x"]
    assert x.shape == (10, 1, 8, 10) and splits.train.image_shape == (1, 8, 10)
    assert sorted_rows(torch.cat([x, splits.test.fields["x"]]).flatten(1)).equal(sorted_rows(torch.as_tensor(pixels).flatten(1)))
    with pytest.raises(DatasetError, match=r"grey.npz: the examples have shape \(8, 10\), but image_shape is \[1, 10, 8\]"):
        build("npz", path=str(tmp_path / "grey.npz"), image_shape=[1, 10, 8])
