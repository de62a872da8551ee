"""The table of fault scenarios with their rollout accounting, printed after the run."""

from __future__ import annotations

import pytest

from .accounting import TABLE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TABLE.rows:
        terminalreporter.section("fault scenarios: rollout accounting")
        terminalreporter.write_line(TABLE.render())
