"""``python -m launcher``: the same as the ``storegate`` command (the demo and tests start children this way)."""

from launcher.cli import run

run()
