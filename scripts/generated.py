"""The command-line end shared by the generators: write a generated file, or with ``--check`` exit 1 when
the committed one is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def write_or_check(path: Path, render: Callable[[], str], description: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help=f"Exit 1 when the committed {path.name} is stale.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not path.exists() or path.read_text() != text:
            sys.stderr.write(f"{path.name} is stale: run `python scripts/{Path(sys.argv[0]).name}`\n")
            return 1
        return 0
    path.write_text(text)
    return 0
