"""Checkpoint contents: exact round trips of arrays, scalars, JSON and pandas, and refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.checkpoint_format import MAGIC, read_checkpoint
from daemon.error_handling.config import CheckpointConfig
from daemon.error_handling.errors import CheckpointLoadError, CheckpointSaveError

pytestmark = pytest.mark.timeout(30)


def _manager(tmp_path: Path) -> CheckpointManager:
    return CheckpointManager("job1", tmp_path, config=CheckpointConfig())


def _round_trip(tmp_path: Path, state: dict[str, Any]) -> dict[str, Any]:
    manager = _manager(tmp_path)
    manager.save_checkpoint(state, "c1")
    return manager.load_checkpoint("c1")


def _raw_bytes(array: np.ndarray) -> np.ndarray:
    """The array's memory in storage order, as uint8 (NaN payloads included)."""
    return array.ravel(order="K").view(np.uint8)


def _nan_with_payload(payload: int) -> np.ndarray:
    bits = np.array([0x7FF8000000000000 | payload, 0xFFF0000000000001], dtype="<u8")
    return bits.view("<f8")


ARRAYS = {
    "float64_nan_payloads": _nan_with_payload(0x1234),
    "float32": np.linspace(-1, 1, 7, dtype=np.float32),
    "float16": np.array([np.inf, -0.0, 65504], dtype=np.float16),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "int64_2d": np.arange(82 * 300, dtype=np.int64).reshape(82, 300),
    "bool": np.array([[True, False], [False, True]]),
    "complex128": np.array([1 + 2j, np.nan - 1j]),
    "big_endian": np.arange(5, dtype=">i4"),
    "datetime64": np.array(["2024-01-01T12:00", "NaT"], dtype="M8[ns]"),
    "timedelta64": np.array([1, -5], dtype="m8[s]"),
    "unicode": np.array(["ab", "€ß", ""]),
    "zero_d": np.array(3.25),
    "empty": np.empty((0, 3)),
    "empty_3d": np.zeros((2, 0, 4), dtype=np.int16),
    "fortran": np.asfortranarray(np.random.default_rng(1).standard_normal((5, 7))),
}


@pytest.mark.parametrize("key", sorted(ARRAYS))
def test_arrays_round_trip_bit_identical(tmp_path: Path, key: str) -> None:
    # Given an array of some dtype, shape and memory order
    original = ARRAYS[key]
    # When it is saved and loaded
    loaded = _round_trip(tmp_path, {"value": original})["value"]
    # Then dtype, shape, order and every byte are the same, and the copy is writable
    assert type(loaded) is np.ndarray
    assert loaded.dtype == original.dtype
    assert loaded.shape == original.shape
    assert loaded.flags.c_contiguous == original.flags.c_contiguous
    assert loaded.flags.f_contiguous == original.flags.f_contiguous
    assert np.array_equal(_raw_bytes(loaded), _raw_bytes(original))
    assert loaded.flags.writeable


def test_non_contiguous_array_is_stored_by_value(tmp_path: Path) -> None:
    base = np.arange(60.0).reshape(6, 10)
    view = base[::2, 1::3]
    loaded = _round_trip(tmp_path, {"view": view})["view"]
    assert loaded.flags.c_contiguous
    assert np.array_equal(loaded, view)


def test_numpy_scalars_keep_type_and_bits(tmp_path: Path) -> None:
    nan = _nan_with_payload(0xBEEF)[0]
    state = {"nan": nan, "i": np.int64(-7), "u": np.uint8(200), "b": np.bool_(True)}
    loaded = _round_trip(tmp_path, state)
    for key, value in state.items():
        assert type(loaded[key]) is type(value)
        assert np.asarray(loaded[key]).tobytes() == np.asarray(value).tobytes()


def test_nested_json_tuples_and_reserved_key(tmp_path: Path) -> None:
    # Given JSON values nested deeply, a tuple, unicode, big ints, and a user dict that
    # happens to use the format's own tag key
    state = {
        "algorithm": "GA",
        "generation": 120,
        "big": 2**80,
        "ratio": 0.1,
        "flags": [True, False, None],
        "history": [{"gen": i, "best": i * 0.5, "names": ["a", "ü"]} for i in range(50)],
        "pair": (1, [2, (3, "x")]),
        "$type": "user value",
        "nested": {"$type": {"$type": "deep"}, "items": []},
        "special": [float("inf"), float("-inf")],
    }
    loaded = _round_trip(tmp_path, state)
    assert loaded == state
    assert type(loaded["pair"]) is tuple and type(loaded["pair"][1][1]) is tuple
    assert np.isnan(_round_trip(tmp_path, {"x": float("nan")})["x"])


def test_dataframe_round_trip_with_dtypes_and_index(tmp_path: Path) -> None:
    # Given a frame with numeric, bool, string, datetime, tz-aware and nullable columns
    frame = pd.DataFrame(
        {
            "f": [1.5, np.nan, 3.0],
            "i": np.array([1, 2, 3], dtype=np.int32),
            "b": [True, False, True],
            "s": ["a", None, "ç"],
            "d": pd.to_datetime(["2024-01-01", "NaT", "2024-03-01"]),
            "tz": pd.date_range("2024-01-01", periods=3, tz="Europe/Berlin"),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "nb": pd.array([True, None, False], dtype="boolean"),
            "f2": [4.0, 5.0, 6.0],
        },
        index=pd.Index(["x", "y", "z"], name="key"),
    )
    # When it is saved and loaded
    loaded = _round_trip(tmp_path, {"frame": frame})["frame"]
    # Then columns, index, values and dtypes are equal
    pd.testing.assert_frame_equal(loaded, frame, check_exact=True)
    assert list(loaded.dtypes) == list(frame.dtypes)
    assert loaded.index.name == "key"


def test_wide_frame_with_interleaved_dtypes_keeps_column_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    columns: dict[str, np.ndarray] = {f"c{i}": rng.standard_normal(4) for i in range(300)}
    columns.update({f"k{i}": np.arange(4) * i for i in range(0, 300, 7)})
    order = sorted(columns, key=lambda c: (int(c[1:]), c[0]))
    frame = pd.DataFrame(columns)[order]
    loaded = _round_trip(tmp_path, {"frame": frame})["frame"]
    pd.testing.assert_frame_equal(loaded, frame, check_exact=True)


def test_series_and_datetime_index_with_frequency(tmp_path: Path) -> None:
    series = pd.Series([1.5, 2.5, 3.5], index=pd.date_range("2024-01-01", periods=3), name="r")
    frame = pd.DataFrame(index=pd.RangeIndex(2, 12, 3, name="row"))
    loaded = _round_trip(tmp_path, {"series": series, "empty": frame})
    pd.testing.assert_series_equal(loaded["series"], series, check_exact=True)
    index = loaded["series"].index
    assert isinstance(index, pd.DatetimeIndex) and index.freqstr == "D"
    pd.testing.assert_frame_equal(loaded["empty"], frame)


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ({"population": np.array([object(), 1], dtype=object)}, "state['population']"),
        ({"a": {"b": [1, {"c": {1, 2}}]}}, "state['a']['b'][1]['c']"),
        ({"a": {1: "x"}}, "state['a']"),
        ({"frame": pd.DataFrame({"o": [object()]})}, "state['frame'] column 'o'"),
        ({"frame": pd.DataFrame({"c": pd.Categorical(["a"])})}, "state['frame'] column 'c'"),
    ],
)
def test_unsupported_values_are_refused_naming_the_key(
    tmp_path: Path, state: dict[str, Any], key: str
) -> None:
    manager = _manager(tmp_path)
    with pytest.raises(CheckpointSaveError) as caught:
        manager.save_checkpoint(state, "c1")
    assert key in str(caught.value)
    assert manager.list_checkpoints() == []
    assert not manager.directory.exists() or not any(manager.directory.iterdir())


def _forge(path: Path, header: bytes, data: bytes = b"") -> None:
    """Write a file laid out like a checkpoint, with a correct trailing digest."""
    head = MAGIC + len(header).to_bytes(8, "little") + header
    body = head + bytes(-len(head) % 64) + data
    path.write_bytes(body + hashlib.sha256(body).digest())


def _buffer(dtype: str, shape: list[int], nbytes: int, **extra: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "order": "C", "offset": 0, "nbytes": nbytes, **extra}


def _header(state: Any, buffers: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    document = {"format": 1, "name": "x", "buffers": buffers or [], "state": state, **extra}
    return json.dumps(document).encode()


ARRAY_REF = {"$type": "ndarray", "buffer": 0}
BAD_TZ_SERIES = {
    "$type": "series",
    "name": None,
    "index": {"kind": "range", "range": [0, 1, 1], "name": None},
    "values": {"kind": "datetime_tz", "tz": "../../etc/passwd", "buffer": 0},
}
FORGED = {
    "object_dtype": (_header({"a": ARRAY_REF}, [_buffer("|O", [1], 8)]), bytes(8)),
    "structured_dtype": (_header({"a": ARRAY_REF}, [_buffer("i4,f8", [1], 12)]), bytes(12)),
    "negative_shape": (_header({"a": ARRAY_REF}, [_buffer("<f8", [-1], -8)]), b""),
    "wrong_nbytes": (_header({"a": ARRAY_REF}, [_buffer("<f8", [2], 8)]), bytes(8)),
    "huge_shape": (_header({"a": ARRAY_REF}, [_buffer("<f8", [10**12], 8 * 10**12)]), b""),
    "buffer_out_of_range": (_header({"a": {"$type": "ndarray", "buffer": 3}}), b""),
    "unknown_tag": (_header({"a": {"$type": "pickle", "data": "gASV"}}), b""),
    "broken_frame": (_header({"a": {"$type": "dataframe"}}), b""),
    "bad_timezone": (_header({"a": BAD_TZ_SERIES}, [_buffer("<M8[ns]", [1], 8)]), bytes(8)),
    "state_not_a_dict": (_header([1, 2]), b""),
    "future_version": (_header({}, format=2), b""),
    "deep_nesting": (
        b'{"format":1,"buffers":[],"state":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"",
    ),
    "not_json": (b"\xff\xfe{", b""),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_files_with_valid_digests_fail_cleanly(tmp_path: Path, case: str) -> None:
    # Given a file with a self-consistent digest but a hostile or broken header
    header, data = FORGED[case]
    _forge(tmp_path / "x.ckpt", header, data)
    # When it is read, Then the only possible error is CheckpointLoadError
    with pytest.raises(CheckpointLoadError):
        read_checkpoint(tmp_path / "x.ckpt")


def test_forge_helper_makes_loadable_files(tmp_path: Path) -> None:
    # The forging helper itself produces valid files, so the failures above are the checks'
    _forge(tmp_path / "x.ckpt", _header({"a": ARRAY_REF}, [_buffer("<f8", [2], 16)]), bytes(16))
    loaded = read_checkpoint(tmp_path / "x.ckpt")
    assert loaded.state is not None and loaded.state["a"].tolist() == [0.0, 0.0]
