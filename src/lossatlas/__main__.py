"""`python -m lossatlas`: the command line."""

from lossatlas.cli import main

main()
