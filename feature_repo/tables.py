"""Column types of the source tables, shared by the generator and the validator.

Timestamps are microsecond UTC: DuckDB, behind Feast's offline store, rejects
nanosecond tz-aware columns.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "users": {
        "user_id": pa.string(),
        "event_timestamp": TS,
        "created": TS,
        "is_paid": pa.int64(),
        "country": pa.string(),
        "acquisition_source": pa.string(),
    },
    "activity": {
        "user_id": pa.string(),
        "event_timestamp": TS,
        "created": TS,
        "logins_7d": pa.int64(),
        "video_minutes_7d": pa.float64(),
        "quiz_attempts_7d": pa.int64(),
        "active_days_7d": pa.int64(),
        "days_since_last_login": pa.int64(),
        "logins_30d": pa.int64(),
        "video_minutes_30d": pa.float64(),
        "quiz_attempts_30d": pa.int64(),
        "active_days_30d": pa.int64(),
        "courses_enrolled": pa.int64(),
        "tenure_days": pa.int64(),
    },
    "billing": {
        "user_id": pa.string(),
        "event_timestamp": TS,
        "created": TS,
        "successful_payments_90d": pa.int64(),
        "failed_payments_90d": pa.int64(),
        "support_tickets_30d": pa.int64(),
    },
    "labels": {
        "user_id": pa.string(),
        "event_timestamp": TS,
        "churned": pa.int64(),
    },
}
TABLES = tuple(COLUMNS)


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a table is written with."""
    return pa.schema([pa.field(name, typ, nullable=False) for name, typ in COLUMNS[table].items()])
