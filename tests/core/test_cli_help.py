"""The CLI explains itself: every option's variable, default and choices are in the rendered
``--help`` of every subcommand, choices ignore case, settings errors name where the value came from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing

import pytest
from pydantic_settings import BaseSettings
from typer.main import get_command
from typer.testing import CliRunner

from impala.actorpool.settings import ActorPoolSettings
from impala.cli import app
from impala.client.settings import ClientSettings
from impala.control.settings import ControlSettings
from impala.core.cli_options import _shown
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings

SETTINGS_COMMANDS: dict[str, type[BaseSettings]] = {
    "actorpool": ActorPoolSettings,
    "learner": LearnerSettings,
    "weights": WeightsSettings,
    "control": ControlSettings,
    "env": ClientSettings,
}
ALL_COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def rendered_help(*args: str) -> str:
    """The help as a user sees it (Rich, one option per line on a wide terminal), frames dropped."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return re.sub(r"[│╭╮╰╯─]", " ", result.output)


def option_line(text: str, flag: str) -> str:
    lines = [line for line in text.splitlines() if re.search(rf"(^|\s){re.escape(flag)}(\s|/|$)", line)]
    assert len(lines) == 1, f"{flag}: {lines}"
    return " ".join(lines[0].split())


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
def test_every_settings_option_shows_its_variable_default_and_choices(command: str) -> None:
    text = rendered_help(command)
    for name, field in SETTINGS_COMMANDS[command].model_fields.items():
        line = option_line(text, "--" + name.replace("_", "-"))
        assert f"[env: IMPALA_{name.upper()}; default: {_shown(field.default)}]" in line, line
        if typing.get_origin(field.annotation) is typing.Literal:
            choices = "|".join(str(c).lower() for c in typing.get_args(field.annotation))
            assert f"<{choices}>" in line, line


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_option_with_a_default_shows_it(command: str) -> None:
    """Commands with their own options (local, eval, export, bench) show typer's ``[default: …]``."""
    text = rendered_help(command)
    click_command = get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        if param.name == "help" or param.default is None or param.default is False:
            continue
        flag = param.opts[0] if param.opts[0].startswith("--") else str(param.name)
        line = option_line(text, flag)
        assert "default:" in line, line


def test_choices_ignore_case_on_the_command_line_and_in_the_environment() -> None:
    # A port out of range stops the command after the log level was accepted.
    result = CliRunner().invoke(app, ["weights", "--insecure", "--log-level", "debug", "--port", "70000"])
    assert result.exit_code == 2
    assert "--port = '70000'" in result.output and "log-level" not in result.output
    os_env = {"IMPALA_LOG_LEVEL": "warning", "IMPALA_INFERENCE": "Thread", "IMPALA_MODEL": "MLP"}
    for key, value in os_env.items():
        os.environ[key] = value
    try:
        settings = ActorPoolSettings(insecure=True, device="CPU")
    finally:
        for key in os_env:
            del os.environ[key]
    assert (settings.log_level, settings.inference, settings.model, settings.device) == (
        "WARNING",
        "thread",
        "mlp",
        "cpu",
    )
    assert LearnerSettings(reward_clipping="NONE").reward_clipping == "none"
    assert ClientSettings(backend="EnvPool").backend == "envpool"


def test_a_bad_environment_variable_is_named_not_a_flag() -> None:
    env = {**os.environ, "IMPALA_UNROLL_LENGTH": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "impala", "actorpool", "--insecure"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert "environment variable IMPALA_UNROLL_LENGTH = '0'" in result.stderr
    assert "--unroll-length" not in result.stderr


def test_a_secret_value_is_never_echoed_in_an_error() -> None:
    result = CliRunner().invoke(app, ["weights", "--token", "hunter2-secret-value", "--port", "-1"])
    assert result.exit_code == 2
    assert "hunter2-secret-value" not in result.output


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "impala", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert re.fullmatch(r"impala \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout
