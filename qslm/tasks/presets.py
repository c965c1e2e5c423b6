"""The built-in tasks: the sst2 and wikitext2 presets (the only place a data set is named) and the two task
kinds read from users' files, behind one dispatcher.

    task = build_task("sst2", loaded, data_dir="data")
    task = build_task("text-classification", loaded, {"validation": "val.csv", "test": "test.csv"},
                      text_column="review", labels=["neg", "pos"])

Data discipline of the presets: the search measures a held-out slice of *training* data (SST-2: seeded
whole sentences of train; WikiText-2: the tail of valid, kept out of training); the reported split
(SST-2 dev, WikiText-2 test) is the task's test, measured once on the chosen plan.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..checkpoint import LoadedModel
from ..data.examples import Example
from ..errors import QslmError
from ..models.zoo import evaluation_task
from . import language_modeling, text_classification
from .base import Task, check_positive
from .datasets import sst2 as sst2_data
from .datasets import wikitext
from .evaluation import CLASSIFICATION, LANGUAGE_MODELING, EvalResult, evaluate_classification, evaluate_lm
from .files import read_examples, read_text_file

PRESETS = ("sst2", "wikitext2")
TASK_NAMES = (*PRESETS, CLASSIFICATION, LANGUAGE_MODELING)
KIND = {"sst2": CLASSIFICATION, "wikitext2": LANGUAGE_MODELING, CLASSIFICATION: CLASSIFICATION,
        LANGUAGE_MODELING: LANGUAGE_MODELING}
# sizes: calibration examples / tokens, validation examples / words (None: all), profiled examples / lines,
# examples / tokens the quantizers (gptq, codebook) fit to
_CLASSIFICATION_SIZES = {"calibration": 128, "validation": None, "profile": text_classification.PROFILE_EXAMPLES,
                         "quantizer": text_classification.QUANTIZER_EXAMPLES}
_LANGUAGE_MODELING_SIZES = {"calibration": 2048, "validation": 8000, "profile": language_modeling.PROFILE_LINES,
                            "quantizer": language_modeling.QUANTIZER_TOKENS}
DEFAULT_SIZES = {
    "sst2": {**_CLASSIFICATION_SIZES, "validation": sst2_data.HOLDOUT_SIZE}, "wikitext2": _LANGUAGE_MODELING_SIZES,
    CLASSIFICATION: _CLASSIFICATION_SIZES, LANGUAGE_MODELING: _LANGUAGE_MODELING_SIZES,
}
REPORTED_SPLIT = {"sst2": "dev", "wikitext2": "test"}
DATA_FILE_KEYS = ("validation", "test", "calibration")
FILE_TEST_SPLIT = "test"


def sst2(loaded: LoadedModel, data_dir=None, calibration_size: int = DEFAULT_SIZES["sst2"]["calibration"],
         validation_size: int = DEFAULT_SIZES["sst2"]["validation"], test_limit: int | None = None,
         profile_size: int = DEFAULT_SIZES["sst2"]["profile"],
         quantizer_size: int = DEFAULT_SIZES["sst2"]["quantizer"]) -> Task:
    """SST-2: validation = the held-out sentences of train, test = dev (its first ``test_limit`` examples);
    the quantizers fit to the longest sentences of the rest of train."""
    training, held_out = sst2_data.train_and_held_out(data_dir)
    return text_classification.task(
        loaded.model, loaded.tokenizer, held_out, sst2_data.load_sst2("dev", data_dir), calibration_size,
        validation_size, test_limit, profile_size=profile_size, quantizer_examples=training,
        quantizer_size=quantizer_size, name="sst2", test_split=REPORTED_SPLIT["sst2"])


def wikitext2(loaded: LoadedModel, data_dir=None,
              calibration_size: int = DEFAULT_SIZES["wikitext2"]["calibration"],
              validation_size: int = DEFAULT_SIZES["wikitext2"]["validation"], test_limit: int | None = None,
              profile_size: int = DEFAULT_SIZES["wikitext2"]["profile"],
              quantizer_size: int = DEFAULT_SIZES["wikitext2"]["quantizer"]) -> Task:
    """WikiText-2: validation and calibration = the held-out tail of valid, test = test (its first
    ``test_limit`` lines); the quantizers fit to training text (``wikitext.training_text``)."""
    held_out = wikitext.calibration_text(data_dir)
    return language_modeling.task(
        loaded.model, loaded.tokenizer, held_out, wikitext.load_wikitext("test", data_dir),
        calibration_text=held_out, calibration_tokens=calibration_size, validation_words=validation_size,
        test_limit=test_limit, profile_lines=profile_size, quantizer_text=wikitext.training_text(data_dir),
        quantizer_tokens=quantizer_size, name="wikitext2", test_split=REPORTED_SPLIT["wikitext2"])


def check_task_name(name: str) -> str:
    if name not in TASK_NAMES:
        raise QslmError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return name


def check_model_kind(loaded: LoadedModel, name: str, action: str) -> None:
    """A classifier for a classification task, a language model for a language-modeling one; ``action``
    (e.g. "evaluated") says what the model was to be."""
    own = KIND[evaluation_task(loaded.config, loaded.path)]
    if KIND[check_task_name(name)] != own:
        kind = "classifier" if own == CLASSIFICATION else "language model"
        raise QslmError(f"model {loaded.path} is a {kind}; it cannot be {action} on task {name!r}")


def default_task(loaded: LoadedModel) -> str:
    """The preset a model is profiled on when no task is named."""
    return "sst2" if KIND[evaluation_task(loaded.config, loaded.path)] == CLASSIFICATION else "wikitext2"


def check_data_files(name: str, data_files: Mapping[str, str | Path] | None, text_column: str | None = None,
                     label_column: str | None = None, labels: Sequence[str] | None = None,
                     data_dir=None) -> dict[str, Path]:
    """The data files of a file task kind, by role; options that a task does not read are refused, so none
    is ignored silently."""
    if name in PRESETS:
        given = _flags_given(data_files=data_files, text_column=text_column, label_column=label_column,
                             labels=labels)
        if given:
            raise QslmError(f"{', '.join(given)}: task {name} reads its own files from the data folder "
                            f"(--data-dir); these options are for {CLASSIFICATION} and {LANGUAGE_MODELING}")
        return {}
    if data_dir is not None:
        raise QslmError(f"--data-dir: task {name} reads the files of --data-files; a data folder is for the "
                        f"presets {' and '.join(PRESETS)}")
    if name == LANGUAGE_MODELING:
        given = _flags_given(text_column=text_column, label_column=label_column, labels=labels)
        if given:
            raise QslmError(f"{', '.join(given)}: {LANGUAGE_MODELING} reads plain text files; these options are "
                            f"for {CLASSIFICATION}")
    if not data_files:
        raise QslmError(f"task {name} reads your files: give --data-files validation=FILE,test=FILE"
                        "[,calibration=FILE]")
    unknown = sorted(set(data_files) - set(DATA_FILE_KEYS))
    if unknown:
        raise QslmError(f"--data-files: unknown role {unknown[0]!r}; expected {', '.join(DATA_FILE_KEYS)}")
    return {role: Path(path) for role, path in data_files.items()}


def _flags_given(**options) -> list[str]:
    """The command-line flags of the options given (not None or empty)."""
    return ["--" + name.replace("_", "-") for name, value in options.items() if value]


def _check_label_names(loaded: LoadedModel, labels: Sequence[str] | None) -> None:
    if labels is not None and len(labels) != loaded.config.num_classes:
        raise QslmError(f"--labels names {len(labels)} classes ({', '.join(labels)}), but model {loaded.path} "
                        f"has {loaded.config.num_classes}")


def read_data_file(name: str, path: Path, text_column: str | None = None, label_column: str | None = None,
                   labels: Sequence[str] | None = None) -> list[Example] | str:
    """Examples (a classification task) or text (a language-modeling one) of one user file."""
    if KIND[name] == CLASSIFICATION:
        return read_examples(path, text_column, label_column, labels)
    return read_text_file(path)


def split_data(loaded: LoadedModel, name: str, split: str, data_files: Mapping[str, str | Path] | None = None,
               data_dir=None, text_column: str | None = None, label_column: str | None = None,
               labels: Sequence[str] | None = None) -> list[Example] | str:
    """One split of a task's data: a preset's split (e.g. sst2 dev) or the user's file of that role."""
    files = check_data_files(name, data_files, text_column, label_column, labels, data_dir)
    if name in PRESETS:
        return _preset_split(name, split, data_dir)
    if split not in DATA_FILE_KEYS:
        raise QslmError(f"split {split!r} unknown for task {name}; expected one of {', '.join(DATA_FILE_KEYS)}")
    if split not in files:
        raise QslmError(f"--data-files names no {split} file; give {split}=FILE or choose another --split "
                        f"({', '.join(files)})")
    _check_label_names(loaded, labels)
    data = read_data_file(name, files[split], text_column, label_column, labels)
    if KIND[name] == CLASSIFICATION:
        text_classification.check_labels(data, loaded.config.num_classes, str(files[split]))
    return data


def _preset_split(name: str, split: str, data_dir) -> list[Example] | str:
    return sst2_data.load_sst2(split, data_dir) if name == "sst2" else wikitext.load_wikitext(split, data_dir)


def default_split(name: str) -> str:
    return REPORTED_SPLIT.get(name, FILE_TEST_SPLIT)


def evaluate_data(model, tokenizer, name: str, data: list[Example] | str, split: str, limit: int | None = None,
                  progress: bool = False) -> EvalResult:
    """``model`` on a split's data, or on its first ``limit`` examples / lines."""
    check_positive(limit=limit)
    if KIND[name] == CLASSIFICATION:
        return evaluate_classification(model, tokenizer, data[:limit], split, progress=progress, task=name)
    return evaluate_lm(model, tokenizer, wikitext.first_lines(data, limit), split, progress=progress, task=name)


def evaluate_split(model, tokenizer, task: str, split: str, data_dir=None, limit: int | None = None,
                   progress: bool = False) -> EvalResult:
    """``model`` on a preset's split, or on its first ``limit`` examples (sst2) / lines (wikitext2)."""
    if task not in PRESETS:
        raise QslmError(f"unknown preset {task!r}; expected one of {', '.join(PRESETS)}")
    return evaluate_data(model, tokenizer, task, _preset_split(task, split, data_dir), split, limit, progress)


def build_task(name: str, loaded: LoadedModel, data_files: Mapping[str, str | Path] | None = None, data_dir=None,
               *, text_column: str | None = None, label_column: str | None = None,
               labels: Sequence[str] | None = None, calibration_size: int | None = None,
               validation_size: int | None = None, test_limit: int | None = None,
               profile_size: int | None = None, quantizer_size: int | None = None,
               action: str = "searched") -> Task:
    """The task ``name`` for ``loaded``: a preset read from ``data_dir``, or a task kind read from
    ``data_files`` (roles validation, test, calibration; validation is required). Sizes left None take
    the kind's defaults (``DEFAULT_SIZES``); ``action`` names what the model is for in a refusal."""
    check_model_kind(loaded, name, action)
    files = check_data_files(name, data_files, text_column, label_column, labels, data_dir)
    check_positive(calibration_size=calibration_size, validation_size=validation_size, test_limit=test_limit,
                   profile_size=profile_size, quantizer_size=quantizer_size)
    defaults = DEFAULT_SIZES[name]
    sizes = dict(calibration_size=calibration_size or defaults["calibration"],
                 validation_size=validation_size or defaults["validation"], test_limit=test_limit,
                 profile_size=profile_size or defaults["profile"],
                 quantizer_size=quantizer_size or defaults["quantizer"])
    if name == "sst2":
        return sst2(loaded, data_dir, **sizes)
    if name == "wikitext2":
        return wikitext2(loaded, data_dir, **sizes)
    if "validation" not in files:
        raise QslmError(f"--data-files names no validation file: task {name} measures candidates on it; "
                        "give validation=FILE")
    _check_label_names(loaded, labels)
    read = {role: read_data_file(name, path, text_column, label_column, labels) for role, path in files.items()}
    if name == CLASSIFICATION:
        return text_classification.task(
            loaded.model, loaded.tokenizer, read["validation"], read.get("test"), sizes["calibration_size"],
            sizes["validation_size"], test_limit, calibration_examples=read.get("calibration"),
            profile_size=sizes["profile_size"], quantizer_size=sizes["quantizer_size"], test_split=FILE_TEST_SPLIT)
    return language_modeling.task(
        loaded.model, loaded.tokenizer, read["validation"], read.get("test"),
        calibration_text=read.get("calibration"), calibration_tokens=sizes["calibration_size"],
        validation_words=sizes["validation_size"], test_limit=test_limit, profile_lines=sizes["profile_size"],
        quantizer_tokens=sizes["quantizer_size"], test_split=FILE_TEST_SPLIT)
