"""pandas DataFrames and Series inside checkpoints, as array buffers and JSON, without pickle.

A frame is stored by column groups: all columns that share a numpy dtype become one 2-D
buffer (a 25,000-column float frame is one buffer and one write, not 25,000), and each
extension column (string, nullable integer/float/boolean, tz-aware datetime) is stored on
its own. Index and column labels use the same column encodings, so string, numeric and
datetime labels round-trip with their dtypes. Object, categorical, interval and period
columns and MultiIndex labels are refused with the key and column named, because keeping
them exact would need pickle or a lossy conversion.

pandas is imported only when a state holds pandas objects: a state without them never
pays for the import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointLoadError, CheckpointSaveError

if TYPE_CHECKING:
    import pandas as pd

#: Tags of the encoded nodes this module owns.
TAGS = frozenset({"dataframe", "series"})
#: numpy dtype kinds stored as raw column buffers.
NUMPY_KINDS = frozenset("biufcmM")
#: Nullable extension dtypes stored as a values buffer plus a mask buffer.
MASKED_DTYPES = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"}
    | {"Float32", "Float64", "boolean"}
)

AddArray = Callable[[np.ndarray, str], int]
GetArray = Callable[[int], np.ndarray]


def encode(value: Any, path: str, add_array: AddArray) -> dict[str, Any] | None:
    """Encode a DataFrame or Series; return ``None`` for any other value.

    Raises:
        CheckpointSaveError: A column or label dtype cannot be stored exactly.
    """
    pd = sys.modules.get("pandas")
    if pd is None:  # no pandas imported, so value cannot be a pandas object
        return None
    if isinstance(value, pd.DataFrame):
        return _encode_frame(value, path, add_array)
    if isinstance(value, pd.Series):
        return {
            "$type": "series",
            "values": _encode_values(value, f"{path} values", add_array),
            "index": _encode_index(value.index, f"{path} index", add_array),
            "name": _label(value.name, f"{path} name"),
        }
    return None


def decode(node: dict[str, Any], get_array: GetArray) -> Any:
    """Rebuild a DataFrame or Series from its encoded node."""
    import pandas as pd

    index = _decode_index(node["index"], get_array)
    if node["$type"] == "series":
        values = _decode_values(node["values"], get_array)
        return pd.Series(values, index=index, name=node["name"], copy=False)
    return _decode_frame(node, index, get_array)


def _encode_frame(frame: pd.DataFrame, path: str, add_array: AddArray) -> dict[str, Any]:
    blocks = []
    extension = []
    for dtype, positions in _columns_by_dtype(frame):
        if isinstance(dtype, np.dtype) and dtype.kind in NUMPY_KINDS:
            whole = len(positions) == frame.shape[1]
            part = frame if whole else frame.iloc[:, positions]
            block = part.to_numpy(dtype=dtype)  # a view of pandas' own block when it is one
            blocks.append(
                {
                    "positions": add_array(positions, path),
                    "values": add_array(block, f"{path} {dtype} columns"),
                }
            )
            continue
        for position in positions.tolist():
            column = f"{path} column {frame.columns[position]!r}"
            values = _encode_values(frame.iloc[:, position], column, add_array)
            extension.append({"position": position, "values": values})
    return {
        "$type": "dataframe",
        "rows": frame.shape[0],
        "index": _encode_index(frame.index, f"{path} index", add_array),
        "columns": _encode_index(frame.columns, f"{path} columns", add_array),
        "blocks": blocks,
        "extension": extension,
    }


def _columns_by_dtype(frame: pd.DataFrame) -> list[tuple[Any, np.ndarray]]:
    """Column positions grouped by dtype, without a Python loop over 25,000 columns.

    pandas hands out one dtype object per internal block, so grouping by object identity
    is vectorised; groups whose dtypes are equal but not identical are merged after.
    """
    dtypes = frame.dtypes.to_numpy()
    ids = np.fromiter(map(id, dtypes), dtype=np.int64, count=dtypes.size)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    groups: dict[Any, list[np.ndarray]] = {}
    for number, position in enumerate(first.tolist()):
        groups.setdefault(dtypes[position], []).append(np.flatnonzero(inverse == number))
    return [(dtype, np.sort(np.concatenate(parts))) for dtype, parts in groups.items()]


def _decode_frame(node: dict[str, Any], index: pd.Index, get_array: GetArray) -> pd.DataFrame:
    import pandas as pd

    parts: list[pd.DataFrame] = []
    positions: list[np.ndarray] = []
    for block in node["blocks"]:
        where = get_array(block["positions"])
        parts.append(pd.DataFrame(get_array(block["values"]), columns=where, copy=False))
        positions.append(where)
    for column in node["extension"]:
        values = _decode_values(column["values"], get_array)
        parts.append(pd.DataFrame({column["position"]: values}, copy=False))
        positions.append(np.asarray([column["position"]], dtype=np.int64))
    if not parts:
        frame = pd.DataFrame(index=pd.RangeIndex(node["rows"]))
    else:
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
        order = np.argsort(np.concatenate(positions), kind="stable")
        if not np.array_equal(order, np.arange(order.size)):
            frame = frame.iloc[:, order]
    frame.columns = _decode_index(node["columns"], get_array)
    frame.index = index
    return frame


def _encode_values(values: pd.Series | pd.Index, path: str, add_array: AddArray) -> dict[str, Any]:
    """Encode the values of one column or index (numpy-backed or an extension array)."""
    import pandas as pd

    dtype: Any = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in NUMPY_KINDS:
        return {"kind": "numpy", "buffer": add_array(values.to_numpy(), path)}
    array: Any = values.array
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = array.tz_convert("UTC").tz_localize(None).to_numpy()
        return {"kind": "datetime_tz", "tz": str(dtype.tz), "buffer": add_array(utc, path)}
    if isinstance(dtype, pd.StringDtype):
        return {
            "kind": "string",
            "storage": dtype.storage,
            "na": "nan" if dtype.na_value is not pd.NA else "NA",
            "values": array.to_numpy(dtype=object, na_value=None).tolist(),
        }
    if str(dtype) in MASKED_DTYPES:
        filled = array.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        return {
            "kind": "masked",
            "dtype": str(dtype),
            "buffer": add_array(filled, path),
            "mask": add_array(np.asarray(array.isna(), dtype=bool), f"{path} mask"),
        }
    raise CheckpointSaveError(
        f"{path}: pandas dtype {dtype} cannot be stored without pickle; supported are numeric, "
        "bool, datetime, string and nullable numeric/boolean dtypes",
        context={"key": path, "dtype": str(dtype)},
    )


def _decode_values(node: dict[str, Any], get_array: GetArray) -> Any:
    import pandas as pd

    kind = node["kind"]
    if kind == "numpy":
        return get_array(node["buffer"])
    if kind == "datetime_tz":
        utc = pd.DatetimeIndex(get_array(node["buffer"])).tz_localize("UTC")
        return utc.tz_convert(node["tz"]).array
    if kind == "string":
        na_value = np.nan if node["na"] == "nan" else pd.NA
        dtype = pd.StringDtype(storage=node["storage"], na_value=na_value)
        return pd.array(node["values"], dtype=dtype)
    if kind == "masked" and node["dtype"] in MASKED_DTYPES:
        name = node["dtype"]
        array_type: Any = pd.arrays.IntegerArray  # the values' numpy dtype picks Int8..UInt64
        if name == "boolean":
            array_type = pd.arrays.BooleanArray
        elif name.startswith("Float"):
            array_type = pd.arrays.FloatingArray
        return array_type(get_array(node["buffer"]), get_array(node["mask"]))
    raise CheckpointLoadError(f"unknown pandas column encoding {kind!r}")


def _encode_index(index: pd.Index, path: str, add_array: AddArray) -> dict[str, Any]:
    import pandas as pd

    name = _label(index.name, f"{path} name")
    if isinstance(index, pd.MultiIndex):
        raise CheckpointSaveError(
            f"{path}: MultiIndex labels are not supported in checkpoints", context={"key": path}
        )
    if isinstance(index, pd.RangeIndex):
        return {"kind": "range", "range": [index.start, index.stop, index.step], "name": name}
    freq = getattr(index, "freqstr", None)
    values = _encode_values(index, path, add_array)
    return {"kind": "values", "values": values, "name": name, "freq": freq}


def _decode_index(node: dict[str, Any], get_array: GetArray) -> pd.Index:
    import pandas as pd

    if node["kind"] == "range":
        start, stop, step = node["range"]
        return pd.RangeIndex(start, stop, step, name=node["name"])
    index = pd.Index(_decode_values(node["values"], get_array), name=node["name"], copy=False)
    if node.get("freq"):
        index.freq = node["freq"]
    return index


def _label(label: Hashable, path: str) -> Any:
    """A Series/Index name must be a JSON scalar to survive the round trip unchanged."""
    if label is None or type(label) in (str, int, float, bool):
        return label
    raise CheckpointSaveError(
        f"{path}: name {label!r} must be a str, int, float, bool or None",
        context={"key": path},
    )
