"""`python -m wodsync` runs the command line."""

from wodsync.cli import run

run()
