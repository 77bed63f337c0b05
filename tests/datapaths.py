"""Where the real data is: ../shared/data beside the project, or $MLT_DATA."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLT_DATA", REPO.parent / "shared" / "data"))
