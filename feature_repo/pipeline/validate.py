"""Validate the source tables before anything reaches Feast or Redis.

Row rules run through pandera on one Parquet row group at a time, so memory stays
bounded on a million users. Rules that span the whole table (duplicate keys) run in
DuckDB straight on the file, at the same time. The result is a report a person can act on: which table,
which column, which rule, how many rows, a few examples.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors

from feature_repo.pipeline.marker import MARKER, clear_mark, fingerprint, is_marked_valid, mark_valid
from feature_repo.tables import COLUMNS, TABLES

__all__ = [
    "MARKER",
    "Failure",
    "Report",
    "clear_mark",
    "fingerprint",
    "is_marked_valid",
    "mark_valid",
    "validate_dir",
    "validate_table",
]

USER_ID = r"^u\d{7}$"
# Text columns stay Arrow strings in pandas: pandera's null, type and regex checks then run
# vectorized in Arrow instead of once per Python object (the bulk of validating 5M rows).
TEXT = pd.StringDtype("pyarrow")
_TEXT_TYPES = dict.fromkeys((pyarrow.string(), pyarrow.large_string(), pyarrow.string_view()), TEXT)


def _ts_checks() -> list[pa.Check]:
    return [
        pa.Check.greater_than_or_equal_to(pd.Timestamp("2000-01-01", tz="UTC"), error="before 2000-01-01"),
        pa.Check(
            lambda s: s <= pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1),
            error="more than a day in the future",
        ),
    ]


def _count(lo: int = 0, hi: int | None = None) -> pa.Column:
    checks = [pa.Check.ge(lo)] + ([pa.Check.le(hi)] if hi is not None else [])
    return pa.Column("int64", checks=checks, nullable=False)


def _minutes(hi: float) -> pa.Column:
    return pa.Column("float64", checks=[pa.Check.in_range(0.0, hi)], nullable=False)


def _base_columns(created: bool = True) -> dict[str, pa.Column]:
    cols = {
        "user_id": pa.Column(TEXT, checks=pa.Check.str_matches(USER_ID), nullable=False),
        "event_timestamp": pa.Column("datetime64[us, UTC]", checks=_ts_checks(), nullable=False),
    }
    if created:
        cols["created"] = pa.Column("datetime64[us, UTC]", checks=_ts_checks(), nullable=False)
    return cols


_CREATED_AFTER_EVENT = pa.Check(
    lambda df: df["created"] >= df["event_timestamp"], error="created earlier than event_timestamp"
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "users": pa.DataFrameSchema(
        {
            **_base_columns(),
            "is_paid": pa.Column("int64", checks=pa.Check.isin([0, 1]), nullable=False),
            "country": pa.Column(TEXT, checks=pa.Check.str_matches(r"^[A-Z]{2}$"), nullable=False),
            "acquisition_source": pa.Column(
                TEXT, checks=pa.Check.isin(["organic", "paid_ads", "referral", "partner"]), nullable=False
            ),
        },
        checks=[_CREATED_AFTER_EVENT],
        strict=True,
    ),
    "activity": pa.DataFrameSchema(
        {
            **_base_columns(),
            "logins_7d": _count(),
            "video_minutes_7d": _minutes(7 * 24 * 60),
            "quiz_attempts_7d": _count(),
            "active_days_7d": _count(0, 7),
            "days_since_last_login": _count(0, 365),
            "logins_30d": _count(),
            "video_minutes_30d": _minutes(30 * 24 * 60),
            "quiz_attempts_30d": _count(),
            "active_days_30d": _count(0, 30),
            "courses_enrolled": _count(),
            "tenure_days": _count(),
        },
        checks=[
            _CREATED_AFTER_EVENT,
            pa.Check(lambda df: df["logins_7d"] <= df["logins_30d"], error="logins_7d > logins_30d"),
            pa.Check(
                lambda df: df["active_days_7d"] <= df["active_days_30d"], error="active_days_7d > active_days_30d"
            ),
        ],
        strict=True,
    ),
    "billing": pa.DataFrameSchema(
        {
            **_base_columns(),
            "successful_payments_90d": _count(0, 4),
            "failed_payments_90d": _count(0, 4),
            "support_tickets_30d": _count(0, 30),
        },
        checks=[_CREATED_AFTER_EVENT],
        strict=True,
    ),
    "labels": pa.DataFrameSchema(
        {**_base_columns(created=False), "churned": pa.Column("int64", checks=pa.Check.isin([0, 1]), nullable=False)},
        strict=True,
    ),
}
# Tables whose (user_id, event_timestamp) must be unique. Feast breaks ties by `created`,
# so an exact duplicate key *and* created time would make the online value arbitrary.
UNIQUE_KEYS: dict[str, list[str]] = {
    "users": ["user_id", "event_timestamp", "created"],
    "activity": ["user_id", "event_timestamp", "created"],
    "billing": ["user_id", "event_timestamp", "created"],
    "labels": ["user_id", "event_timestamp"],
}


@dataclass
class Failure:
    """One broken rule in one table."""

    table: str
    column: str
    rule: str
    rows: int
    examples: list[str] = field(default_factory=list)


@dataclass
class Report:
    """All failures across the tables; empty means valid."""

    failures: list[Failure] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def _schema_failures(table: str, errors: SchemaErrors) -> list[Failure]:
    cases = errors.failure_cases.copy()
    # Row-level checks (comparing columns) come back once per column: report them once,
    # counting the rows that broke them.
    wide = cases["schema_context"] == "DataFrameSchema"
    cases.loc[wide, "column"] = "(row)"
    out = []
    for (column, check), grp in cases.groupby(["column", "check"], dropna=False, sort=True):
        col = "(table)" if pd.isna(column) else str(column)
        rows = grp["index"].nunique() if col == "(row)" else len(grp)
        idx = sorted(grp["index"].dropna().unique().tolist())[:3]
        examples = [] if col == "(row)" else [str(v) for v in grp["failure_case"].head(3)]
        if idx:
            examples.append(f"row indices {idx}")
        out.append(Failure(table, col, str(check), int(rows), examples))
    return out


def _merge(failures: list[Failure]) -> list[Failure]:
    merged: dict[tuple[str, str, str], Failure] = {}
    for f in failures:
        key = (f.table, f.column, f.rule)
        if key in merged:
            merged[key].rows += f.rows
            merged[key].examples = (merged[key].examples + f.examples)[:4]
        else:
            merged[key] = f
    return list(merged.values())


def validate_table(path: Path, table: str) -> tuple[int, list[Failure]]:
    """Validate one Parquet file: row rules per row group, key uniqueness on the whole file."""
    if not path.exists():
        return 0, [Failure(table, "(file)", "exists", 0, [f"{path} not found; run `make data`"])]
    failures: list[Failure] = []
    pf = pq.ParquetFile(path)
    missing = set(COLUMNS[table]) - set(pf.schema_arrow.names)
    if missing:
        return pf.metadata.num_rows, [
            Failure(
                table,
                ", ".join(sorted(missing)),
                "column present",
                pf.metadata.num_rows,
                [f"file has columns: {', '.join(pf.schema_arrow.names)}"],
            )
        ]
    # The key check spans the whole file and runs in DuckDB, which releases the GIL: it runs in a
    # thread while pandera checks the row groups here.
    with ThreadPoolExecutor(max_workers=1) as pool:
        duplicates = pool.submit(_duplicate_keys, path, table)
        offset = 0
        for rg in range(pf.num_row_groups):
            df = pf.read_row_group(rg).to_pandas(types_mapper=_TEXT_TYPES.get)
            df.index = pd.RangeIndex(offset, offset + len(df))
            offset += len(df)
            try:
                SCHEMAS[table].validate(df, lazy=True)
            except SchemaErrors as e:
                failures.extend(_schema_failures(table, e))
        failures.extend(duplicates.result())
    return offset, _merge(failures)


def _duplicate_keys(path: Path, table: str) -> list[Failure]:
    """Rows sharing a key that must be unique, counted over the whole file."""
    keys = UNIQUE_KEYS[table]
    cols = ", ".join(keys)
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # no progress lines in the CLI's output
        # The path is ours (settings), not user input to a web endpoint; DuckDB reads it directly.
        # The table name and columns are ours, never user input; the path is a parameter.
        dup = con.execute(
            f"SELECT {cols}, count(*) AS n FROM read_parquet(?) GROUP BY ALL HAVING n > 1 ORDER BY n DESC",  # noqa: S608  # nosec B608
            [str(path)],
        ).df()
    if not len(dup):
        return []
    examples = [", ".join(str(r[k]) for k in keys) for _, r in dup.head(3).iterrows()]
    return [Failure(table, "+".join(keys), "unique key", int(dup["n"].sum()), examples)]


def validate_dir(data_dir: Path) -> Report:
    """Validate every source table in ``data_dir``."""
    report = Report()
    for table in TABLES:
        n, fails = validate_table(data_dir / f"{table}.parquet", table)
        report.rows[table] = n
        report.failures.extend(fails)
    return report
