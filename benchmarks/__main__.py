"""`python -m benchmarks` runs the harness."""

from benchmarks.run import app

app()
