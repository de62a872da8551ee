"""The control API's image has no torch: nothing it imports may pull it in."""

from __future__ import annotations

import subprocess
import sys


def test_control_api_never_imports_torch() -> None:
    code = (
        "import sys, impala.control.main, impala.control.app, impala.control.scaler, kubernetes.client\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
