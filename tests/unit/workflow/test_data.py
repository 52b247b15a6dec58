"""Loading strategy CSVs: the real fixtures, every bad-input case with its message, the
metadata rule, periods per year, and a CSV round-trip property."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from daemon.error_handling.errors import DataLoadError, DataValidationError
from daemon.workflow.data import (
    check_portfolio_size,
    infer_periods_per_year,
    is_metadata_column,
    load_strategy_csv,
)
from tests.paths import SAMPLES_DIR

pytestmark = pytest.mark.timeout(60)

def fixture_csv(name: str) -> Path:
    return SAMPLES_DIR / name


def write(tmp_path: Path, text: str, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "Date,Day,A,B\n2024-01-04,Thursday,1.5,-2\n2024-01-11,Thursday,0,3.25\n"


def assert_names(err: pytest.ExceptionInfo, path: Path, column: str | None, row: int | None):
    """The one-line message and the context both name file, column and line."""
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert err.value.context == {"file": str(path), "column": column, "row": row}
    if column is not None:
        assert repr(column) in message
    if row is not None:
        assert f"line {row}" in message


# -- real fixtures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "days", "n"), [("sensex_82x500.csv", 82, 500), ("sensex_82x2500.csv", 82, 2500)]
)
def test_sensex_fixtures_load(name: str, days: int, n: int) -> None:
    path = fixture_csv(name)
    data = load_strategy_csv(path)
    expected = pd.read_csv(path)
    assert data.pnl.shape == (days, n) and data.pnl.dtype == np.float64
    assert data.pnl.flags.c_contiguous
    assert data.names == tuple(expected.columns[2:])
    np.testing.assert_array_equal(data.pnl, expected.iloc[:, 2:].to_numpy())
    assert data.excluded_columns == ("Day",)
    assert data.dates[0] == np.datetime64("2024-01-04") and data.dates.dtype == "datetime64[D]"
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.warnings == ()
    assert infer_periods_per_year(data.dates) == pytest.approx(365.25 / 7)


def test_zones_fixture_excludes_metadata_including_numeric_capital() -> None:
    # Given the zone file: DD-MM-YYYY dates, several rows per date, numeric metadata
    path = fixture_csv("zones_regimes_88x29.csv")
    # When it is loaded
    data = load_strategy_csv(path)
    # Then the 8 metadata columns are excluded and the 20 strategies kept, every row as it is
    assert data.excluded_columns == (
        "start_time",
        "end_time",
        "day",
        "zone",
        "market_regime",
        "Regime_Confidence_%",
        "Market_regime_transition_threshold",
        "capital",
    )
    assert data.names == tuple(f"strategy_{i}" for i in range(1, 21))
    assert data.pnl.shape == (88, 20)
    assert data.dates[0] == data.dates[1] == np.datetime64("2023-01-02")
    raw = pd.read_csv(path)
    np.testing.assert_array_equal(data.pnl, raw.filter(like="strategy_").to_numpy())


# -- dates ----------------------------------------------------------------------------------


def test_dd_mm_yyyy_dates(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A\n31-12-2023,1\n02-01-2024,2\n")
    data = load_strategy_csv(path)
    np.testing.assert_array_equal(
        data.dates, np.array(["2023-12-31", "2024-01-02"], dtype="datetime64[D]")
    )


@pytest.mark.parametrize(
    ("body", "row", "message"),
    [
        ("2024-01-04,1\n2024-13-01,2\n", 3, "unparseable date '2024-13-01'"),
        ("2024-01-04,1\n11-01-2024,2\n", 3, "unparseable date '11-01-2024'"),
        ("Jan 4 2024,1\n2024-01-11,2\n", 2, "unparseable date 'Jan 4 2024'"),
        ("2024-01-11,1\n2024-01-04,2\n", 3, "dates not sorted"),
        ("2024-01-04,1\n,2\n", 3, "blank date"),
    ],
)
def test_bad_dates_name_the_line(tmp_path: Path, body: str, row: int, message: str) -> None:
    path = write(tmp_path, "Date,A\n" + body)
    with pytest.raises(DataValidationError, match=message) as err:
        load_strategy_csv(path)
    assert_names(err, path, "Date", row)


def test_equal_dates_are_allowed(tmp_path: Path) -> None:
    data = load_strategy_csv(write(tmp_path, "Date,A\n2024-01-04,1\n2024-01-04,2\n"))
    assert data.days == 2


# -- bad input ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataLoadError, match="file not found") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, None)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="directory"):
        load_strategy_csv(tmp_path)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataLoadError, match="file is empty") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, None)


@pytest.mark.parametrize(("body", "rows"), [("", 0), ("2024-01-04,Thu,1,2\n", 1)])
def test_fewer_than_two_rows(tmp_path: Path, body: str, rows: int) -> None:
    path = write(tmp_path, "Date,Day,A,B\n" + body)
    with pytest.raises(DataValidationError, match=f"{rows} data row") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, None)


def test_no_date_column(tmp_path: Path) -> None:
    path = write(tmp_path, "When,A\n2024-01-04,1\n2024-01-11,2\n")
    with pytest.raises(DataValidationError, match="no Date column") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, 1)


def test_no_strategy_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,Day,zone,capital\n2024-01-04,Thu,A,100\n2024-01-11,Thu,B,100\n")
    with pytest.raises(DataValidationError, match="no strategy columns") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, None)


def test_non_numeric_cell_names_column_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "Date,Day,A,B\n2024-01-04,Thu,1,2\n2024-01-11,Thu,3,4\n2024-01-18,Thu,5,x7\n"
    )
    with pytest.raises(DataValidationError, match="non-numeric value 'x7'") as err:
        load_strategy_csv(path)
    assert_names(err, path, "B", 4)


def test_text_column_that_is_not_metadata_is_an_error(tmp_path: Path) -> None:
    # A text column is excluded only by name; otherwise the first text cell is reported.
    path = write(tmp_path, "Date,Notes,A\n2024-01-04,calm,1\n2024-01-11,busy,2\n")
    with pytest.raises(DataValidationError, match="exclude_columns") as err:
        load_strategy_csv(path)
    assert_names(err, path, "Notes", 2)
    data = load_strategy_csv(path, exclude_columns=("notes",))
    assert data.names == ("A",) and data.excluded_columns == ("Notes",)


def test_exclusion_list_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,capital,A\n2024-01-04,100,1\n2024-01-11,100,2\n")
    assert load_strategy_csv(path).names == ("A",)
    assert load_strategy_csv(path, exclude_columns=()).names == ("capital", "A")


def test_blank_cell_fails_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A,B\n2024-01-04,1,2\n2024-01-11,,4\n")
    with pytest.raises(DataValidationError, match="blank cell") as err:
        load_strategy_csv(path)
    assert_names(err, path, "A", 3)


def test_blank_cells_as_zero_warn_with_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A,B,C\n2024-01-04,1,NA,3\n2024-01-11,,4,5\n2024-01-18,2,,6\n")
    data = load_strategy_csv(path, nan_policy="zero")
    np.testing.assert_array_equal(data.pnl, [[1, 0, 3], [0, 4, 5], [2, 0, 6]])
    assert data.warnings == ("3 blank cells read as 0 in columns: A (1), B (2)",)


def test_infinite_value_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A,B\n2024-01-04,1,2\n2024-01-11,3,inf\n")
    with pytest.raises(DataValidationError, match="non-finite") as err:
        load_strategy_csv(path)
    assert_names(err, path, "B", 3)


def test_duplicate_names_are_detected_from_the_raw_header(tmp_path: Path) -> None:
    # pandas would silently rename the second "A" to "A.1".
    path = write(tmp_path, "Date,A,B,A\n2024-01-04,1,2,3\n2024-01-11,4,5,6\n")
    with pytest.raises(
        DataValidationError, match=r"duplicate column name \(columns 2 and 4\)"
    ) as err:
        load_strategy_csv(path)
    assert_names(err, path, "A", 1)


def test_names_like_pandas_mangling_are_kept(tmp_path: Path) -> None:
    data = load_strategy_csv(write(tmp_path, "Date,A,A.1\n2024-01-04,1,2\n2024-01-11,3,4\n"))
    assert data.names == ("A", "A.1")


def test_empty_column_name(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A,\n2024-01-04,1,2\n2024-01-11,3,4\n")
    with pytest.raises(DataValidationError, match="column 3 has an empty name") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, 1)


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A,B\n2024-01-04,1,2\n2024-01-11,3,4,5\n")
    with pytest.raises(DataLoadError, match="malformed CSV") as err:
        load_strategy_csv(path)
    assert_names(err, path, None, 3)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("Date,Gewinn \xe4\n2024-01-04,1\n2024-01-11,2\n".encode("latin-1"))
    with pytest.raises(DataLoadError, match="UTF-8") as err:
        load_strategy_csv(path)
    assert err.value.context["file"] == str(path)


def test_blank_lines_do_not_shift_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,A\n2024-01-04,1\n\n2024-01-11,2\n2024-01-18,oops\n\n\n")
    with pytest.raises(DataValidationError) as err:
        load_strategy_csv(path)
    assert_names(err, path, "A", 5)
    ok = write(tmp_path, "Date,A\r\n2024-01-04,1\r\n\r\n2024-01-11,2\r\n\r\n", "crlf.csv")
    assert load_strategy_csv(ok).days == 2


def test_bom_quoted_names_and_integers(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b'\xef\xbb\xbfDate,"SENSEX 930-1030, SL38%",B\n2024-01-04,1,2\n2024-01-11,3,4\n'
    )
    data = load_strategy_csv(path)
    assert data.names == ("SENSEX 930-1030, SL38%", "B")
    assert data.pnl.dtype == np.float64


def test_unknown_nan_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nan_policy"):
        load_strategy_csv(write(tmp_path, GOOD), nan_policy="drop")  # type: ignore[arg-type]


# -- portfolio size ------------------------------------------------------------------------


def test_check_portfolio_size(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    data = load_strategy_csv(path)
    check_portfolio_size(data, 2)
    with pytest.raises(DataValidationError, match="portfolio size 3 exceeds the 2 strategy") as err:
        check_portfolio_size(data, 3)
    assert_names(err, path, None, None)
    with pytest.raises(DataValidationError, match=">= 1"):
        check_portfolio_size(data, 0)


# -- metadata rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "metadata"),
    [
        ("SENSEX 1336-1406 SL71%", False),
        ("SENSEX 1400-1500 SL33%TP62%", False),
        ("Intraday momentum", False),
        ("strategy_1", False),
        ("Day", True),
        ("zone", True),
        ("market_regime", True),
        ("Regime_Confidence_%", True),
        ("Market_regime_transition_threshold", True),
        ("MarketRegime", True),
        ("capital", True),
        ("start_time", True),
        ("End Time", True),
    ],
)
def test_metadata_names(name: str, metadata: bool) -> None:
    assert is_metadata_column(name) is metadata


# -- periods per year ----------------------------------------------------------------------


def _days(start: str, count: int, step: int) -> np.ndarray:
    return np.datetime64(start) + np.arange(count) * step


def test_periods_per_year() -> None:
    weekdays = np.busday_offset("2024-01-01", np.arange(300), roll="forward")
    assert infer_periods_per_year(weekdays) == 252.0
    assert infer_periods_per_year(_days("2024-01-01", 300, 1)) == 365.25  # weekends included
    assert infer_periods_per_year(_days("2024-01-04", 82, 7)) == pytest.approx(52.18, abs=0.01)
    assert infer_periods_per_year(np.repeat(weekdays, 4)) == 4 * 252.0  # 4 zone rows per date
    assert infer_periods_per_year(_days("2000-01-01", 5, 800)) == 1.0  # clamped
    assert infer_periods_per_year(np.repeat(np.datetime64("2024-01-04", "D"), 3)) == 252.0


# -- round trip ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    matrix=arrays(
        np.float64,
        st.tuples(st.integers(2, 12), st.integers(1, 6)),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
    ),
    dd_mm_yyyy=st.booleans(),
)
def test_random_frames_round_trip(
    tmp_path_factory: pytest.TempPathFactory, matrix: np.ndarray, dd_mm_yyyy: bool
) -> None:
    # Given a random numeric frame written as CSV with Python's round-trip float repr
    days = _days("2020-02-27", matrix.shape[0], 3)
    fmt = "%d-%m-%Y" if dd_mm_yyyy else "%Y-%m-%d"
    names = [f"SENSEX {900 + j}-1000 SL{j}%" for j in range(matrix.shape[1])]
    lines = [",".join(["Date", "Day", *names])]
    for day, row in zip(days.astype(object), matrix, strict=True):
        lines.append(",".join([day.strftime(fmt), day.strftime("%A"), *map(repr, row.tolist())]))
    path = tmp_path_factory.mktemp("rt") / "frame.csv"
    path.write_text("\n".join(lines) + "\n")
    # When it is loaded
    data = load_strategy_csv(path)
    # Then the matrix, names and dates come back exactly
    np.testing.assert_array_equal(data.pnl, matrix)
    assert data.names == tuple(names)
    np.testing.assert_array_equal(data.dates, days)
