"""``qslm data fetch``: download SST-2 or WikiText-2 into the data folder (needs internet)."""
from __future__ import annotations

import argparse


def run_fetch(args: argparse.Namespace) -> int:
    from ..tasks.datasets.fetch import fetch

    folder = fetch(args.dataset, args.data_dir, url=args.url, sha256=args.sha256, force=args.force)
    print(f"wrote {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    return 0


def add_parser(subparsers) -> None:
    from ..tasks.datasets.fetch import SOURCES

    parser = subparsers.add_parser("data", help="download the public data sets",
                                   description="Manage the data folder the loaders read.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch_parser = actions.add_parser(
        "fetch", help="download, verify (SHA-256) and unpack a data set",
        description="Download SST-2 (GLUE) or WikiText-2 (v1) from the official location, check the "
                    "archive's SHA-256 and unpack it into the data folder in the layout the loaders read.")
    fetch_parser.add_argument("dataset", choices=sorted(SOURCES))
    fetch_parser.add_argument("--data-dir", default=None,
                              help="data folder, created if missing (default: $QSLM_DATA_DIR)")
    fetch_parser.add_argument("--url", default=None, help="download from this mirror instead")
    fetch_parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive at --url")
    fetch_parser.add_argument("--force", action="store_true", help="replace the data set's folder if it exists")
    fetch_parser.set_defaults(func=run_fetch)
