"""Options several commands share, so they read the same everywhere."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from ..errors import QslmError


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="bundled model name (e.g. spikegpt-sst2) or path to a model folder")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda when available, else cpu)")


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="data folder (default: $QSLM_DATA_DIR)")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder that holds other files or another command's output; "
                             "only the files this command writes are replaced, none is deleted")


def claim_output(out: str, kind: str, overwrite: bool, inputs: Iterable[str | None] = ()):
    """Claim ``--out`` for a ``kind`` job before any work starts (``qslm.outputs``), refusing the input
    models' folders and folders above them."""
    from ..models.zoo import resolve_model_path
    from ..outputs import OutputFolder

    protect = []
    for ref in inputs:
        if ref is None:
            continue
        try:
            protect.append(resolve_model_path(ref))
        except QslmError:
            protect.append(Path(ref))  # not a model: the job itself reports that; the path is still kept safe
    return OutputFolder.claim(out, kind, overwrite=overwrite, protect=protect)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: list[list], headers: list[str]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
