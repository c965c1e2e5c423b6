"""``qslm <command>``: one entry point. Each command lives in ``qslm/commands/<name>.py`` and
provides ``add_parser(subparsers)``; the parser it adds carries ``func`` to run."""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import QslmError

# Errors that only a write can raise: the message says so.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
COMMAND_MODULES = ("train", "eval", "info", "data", "quantize", "profile", "search", "demo", "convert")
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143, what a shell reports for a process the signal ended


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C's KeyboardInterrupt is: the same ``finally`` blocks
    and ``with`` exits run (an output folder's claim is undone, a journal keeps what it holds)."""


def _on_sigterm(signum, frame) -> None:
    # a second SIGTERM during the cleanup the first one started would cut that cleanup short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated``; the previous handler is put back after. Code that sets
    its own handler meanwhile (training saves a checkpoint on SIGTERM) takes precedence until it puts
    this one back. Signal handlers can only be set in the main thread: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    with sigterm_as_interrupt():
        try:
            return _run(argv)
        except Terminated:  # in the moment between _run's handlers and here
            print("qslm: terminated", file=sys.stderr)
            return SIGTERM_EXIT


def _run(argv: list[str] | None) -> int:
    try:  # the command modules import torch: seconds in which a Ctrl-C must still be one line
        parser = build_parser()
    except Terminated:
        print("qslm: terminated", file=sys.stderr)
        return SIGTERM_EXIT
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
    except Terminated:  # SIGTERM (a scheduler, kill): cleaned up as after Ctrl-C, one line
        print(f"qslm {args.command}: terminated", file=sys.stderr)
        return SIGTERM_EXIT
    except KeyboardInterrupt:
        print(f"qslm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
