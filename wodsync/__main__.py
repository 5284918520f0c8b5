"""`python -m wodsync` runs the command line."""

from wodsync.cli import main

main()
