"""`python -m training ...`: the training CLI."""

from training.cli import app

app(prog_name="python -m training")
