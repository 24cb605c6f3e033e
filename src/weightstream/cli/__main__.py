"""``python -m weightstream.cli``: the command line, as the ``weightstream`` script runs it."""

from weightstream.cli import main

main()
