"""Options naming a task and its data, shared by the commands that run a model on one (eval, profile,
search): a preset (``--task sst2``, files from ``--data-dir``) or a task kind over the user's files.

    --task text-classification --data-files validation=val.csv,test=test.csv --text-column review --labels neg,pos
    --task language-modeling --data-files validation=valid.txt,test=test.txt
"""
from __future__ import annotations

import argparse

from ..errors import QslmError
from ..tasks.base import Task
from ..tasks.presets import DATA_FILE_KEYS, TASK_NAMES, build_task
from .common import add_data_dir_argument


def add_task_arguments(parser: argparse.ArgumentParser, required: bool = False,
                       task_help: str = "the task and its data") -> None:
    parser.add_argument("--task", required=required, default=None, choices=TASK_NAMES, help=task_help)
    parser.add_argument("--data-files", default=None, metavar="ROLE=FILE,...",
                        help="your files for text-classification (.tsv, .csv, .jsonl with a header) or "
                             f"language-modeling (plain text), by role: {', '.join(DATA_FILE_KEYS)} "
                             "(calibration defaults to the validation file)")
    parser.add_argument("--text-column", default=None,
                        help="text-classification: the text column (default: sentence, else text)")
    parser.add_argument("--label-column", default=None,
                        help="text-classification: the label column (default: label)")
    parser.add_argument("--labels", default=None, metavar="NAME,...",
                        help="text-classification: label names in class order (e.g. neg,pos); "
                             "default: the labels are integers 0..K-1")
    add_data_dir_argument(parser)


def parse_data_files(text: str | None) -> dict[str, str] | None:
    """``validation=a.csv,test=b.csv`` -> {"validation": "a.csv", "test": "b.csv"}."""
    if text is None:
        return None
    files: dict[str, str] = {}
    for item in text.split(","):
        role, sep, path = item.partition("=")
        role, path = role.strip(), path.strip()
        if not sep or not path:
            raise QslmError(f"--data-files item {item!r}: expected ROLE=FILE with ROLE one of "
                            f"{', '.join(DATA_FILE_KEYS)}")
        if role in files:
            raise QslmError(f"--data-files names the {role} file twice")
        files[role] = path
    return files


def parse_labels(text: str | None) -> list[str] | None:
    return None if text is None else text.split(",")


def data_options(args: argparse.Namespace) -> dict:
    """The task's data options of ``args`` as keyword arguments of ``qslm.tasks.presets`` functions."""
    return dict(data_files=parse_data_files(args.data_files), data_dir=args.data_dir, text_column=args.text_column,
                label_column=args.label_column, labels=parse_labels(args.labels))


def task_from_args(args: argparse.Namespace, loaded, task_name: str | None = None, action: str = "searched",
                   **sizes: int | None) -> Task:
    """The task the options name for ``loaded`` (``task_name`` overrides ``--task``, e.g. a default);
    ``sizes`` are those of ``build_task``."""
    name = task_name or args.task
    if name is None:
        raise QslmError(f"no task: give --task ({', '.join(TASK_NAMES)})")
    return build_task(name, loaded, action=action, **data_options(args), **sizes)
