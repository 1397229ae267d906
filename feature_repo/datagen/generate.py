"""CLI: write the churn use case's source tables as Parquet, in chunks, deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.progress import Progress

from feature_repo.datagen.simulate import simulate_chunk
from feature_repo.tables import TABLES, arrow_schema

app = typer.Typer(add_completion=False, help=__doc__)


def default_end() -> pd.Timestamp:
    """Midnight UTC today: the data ends now, so online features are fresh."""
    return pd.Timestamp.now(tz="UTC").normalize()


def generate(
    out_dir: Path,
    users: int,
    days: int,
    seed: int,
    end: pd.Timestamp,
    chunk_users: int = 10_000,
    progress: bool = True,
) -> dict[str, int]:
    """Simulate ``users`` users over the ``days`` days ending at ``end``; return row counts.

    Files are written through one ParquetWriter per table, one row group per chunk, so
    peak memory depends on ``chunk_users`` and ``days``, never on ``users``.
    """
    if users < 1 or days < 45:
        raise typer.BadParameter("need users >= 1 and days >= 45 (30-day label horizon)")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = end - pd.Timedelta(days=days)
    tmp = {name: out_dir / f".{name}.parquet.tmp" for name in TABLES}
    writers = {name: pq.ParquetWriter(tmp[name], arrow_schema(name)) for name in TABLES}
    counts = dict.fromkeys(TABLES, 0)
    try:
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task("simulating users", total=users)
            for first in range(0, users, chunk_users):
                n = min(chunk_users, users - first)
                chunk = simulate_chunk(first, n, days, start, seed)
                for name in TABLES:
                    df = getattr(chunk, name)
                    table = pa.Table.from_pandas(df, schema=arrow_schema(name), preserve_index=False)
                    writers[name].write_table(table)
                    counts[name] += len(df)
                bar.advance(task, n)
    finally:
        for w in writers.values():
            w.close()
    # Rename only when every table is complete, so a crash never leaves a half dataset.
    for name in TABLES:
        tmp[name].replace(out_dir / f"{name}.parquet")
    return counts


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path("data"),
    users: Annotated[int, typer.Option(help="Number of users to simulate.", min=1)] = 10_000,
    days: Annotated[int, typer.Option(help="Length of the simulated period in days.", min=45)] = 120,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    end: Annotated[str | None, typer.Option(help="Last day (UTC, YYYY-MM-DD). Default: today.")] = None,
) -> None:
    """Generate users, daily activity snapshots, billing snapshots and churn labels."""
    end_ts = pd.Timestamp(end, tz="UTC").normalize() if end else default_end()
    counts = generate(out, users, days, seed, end_ts)
    for name, n in counts.items():
        typer.echo(f"{name:>9}: {n:>12,} rows -> {out / (name + '.parquet')}")


if __name__ == "__main__":
    app()
