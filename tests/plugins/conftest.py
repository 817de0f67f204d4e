"""Make ``gan_losses`` (what the tests of the adversarial losses and of their companions share) importable."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
