"""``qslm <command>``: one entry point. Each command lives in ``qslm/commands/<name>.py`` and
provides ``add_parser(subparsers)``; the parser it adds carries ``func`` to run."""
from __future__ import annotations

import argparse
import errno
import sys

from .errors import QslmError

# Errors that only a write can raise: the message says so.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
COMMAND_MODULES = ("train", "eval", "info", "data", "quantize", "profile", "search", "demo", "convert")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="qslm",
        description="Quantize spike-driven language models: profile, measure sensitivity, search "
                    "mixed precision under accuracy/memory/energy constraints, export bit-packed models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as err:
            if err.name == f"{__package__}.commands.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def describe_os_error(err: OSError) -> str:
    """One line naming what failed and where, e.g. ``cannot write out/model.safetensors: No space left on device``."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return reason
    paths = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 is not None else "")
    return f"cannot write {paths}: {reason}" if err.errno in WRITE_ERRNOS else f"{paths}: {reason}"


def main(argv: list[str] | None = None) -> int:
    try:  # the command modules import torch: seconds in which a Ctrl-C must still be one line
        parser = build_parser()
    except KeyboardInterrupt:
        print("qslm: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except QslmError as err:
        print(f"qslm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permission denied, disk full, not a directory: the path, not a traceback
        print(f"qslm {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qslm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
