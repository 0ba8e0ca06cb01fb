"""How hard the generated tests push: bounded in `make test`, longer under `make fuzz`."""

from __future__ import annotations

import os

# `make fuzz` sets this: more examples, and a fresh random seed each run.
FUZZ = os.environ.get("PIAGENT_FUZZ") == "1"
