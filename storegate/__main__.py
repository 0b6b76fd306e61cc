"""``python -m storegate``: the same as the ``storegate`` command."""

from storegate.cli import run

run()
