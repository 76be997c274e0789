"""The installed console script, as users run it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# The environment's own script (tests may run without the environment's bin folder on PATH).
KUBETUNE = shutil.which("kubetune", path=str(Path(sys.executable).parent)) or "kubetune"
