"""``python -m impala.control``: the control API configured from ``IMPALA_*`` environment variables."""

from __future__ import annotations

import sys

from impala.control.main import run
from impala.control.settings import ControlSettings

sys.exit(run(ControlSettings.model_validate({})))
