"""``run_search``: a model folder (or bundled name) and a built-in task, through the generic engine.

    from qslm.search.run import run_search
    result = run_search("spikegpt-sst2", "sst2", "out/sst2", Constraints(max_drop=1.0, max_memory=0.125))
    run_search("runs/my-classifier", "text-classification", "out/mine",
               data_files={"validation": "val.csv", "test": "test.csv"}, labels=["neg", "pos"])

The task (``qslm.tasks.presets``) decides the data: the presets search on a held-out slice of training
data and report on SST-2 dev / WikiText-2 test; the file kinds search on the user's validation file and
report on their test file. Everything else is ``qslm.search.engine.search``.
"""
from __future__ import annotations

from ..checkpoint import load_model
from ..errors import QslmError
from ..models.zoo import resolve_model_path
from ..quant.pack import PLAN_FILE
from ..tasks.data_config import DATA_SETTINGS, DataConfig, data_config_from
from ..tasks.evaluation import CLASSIFICATION
from ..tasks.presets import DEFAULT_SIZES, KIND, build_task, check_task_name
from .config import SearchConfig, config_from
from .engine import ModelSource, SearchResult, check_quality_limit, search
from .objective import Constraints
from .strategies import check_strategy


def run_search(model_ref, task: str, out, constraints: Constraints | None = None, *,
               config: SearchConfig | None = None, data: DataConfig | None = None, cache_dir=None, device=None,
               progress: bool = True, overwrite: bool = False, workers: int = 1, ray_address: str | None = None,
               **settings) -> SearchResult:
    """Search ``model_ref`` on built-in task ``task`` (sst2, wikitext2, text-classification,
    language-modeling) and write the packed model folder (config, weights, plan, tokenizer) and report
    to ``out``. The search settings are ``config`` or ``SearchConfig``'s fields as keywords; the data
    settings are ``data`` or ``DataConfig``'s fields as keywords (one place each: both is an error);
    ``workers`` and ``ray_address`` say where measurements run (see ``qslm.search.engine.search``)."""
    from ..device import resolve_device

    if not isinstance(task, str):
        raise QslmError(f"a model folder is searched on a built-in task name, got {type(task).__name__}; "
                        "for a qslm.Task, load the model and call qslm.search(model, task, ...)")
    data = data_config_from(data, {k: settings.pop(k) for k in list(settings) if k in DATA_SETTINGS})
    config = config_from(config, settings)
    check_strategy(config.strategy)  # before the model is loaded
    check_quality_limit(task, KIND[check_task_name(task)] == CLASSIFICATION, constraints or Constraints())
    source = resolve_model_path(model_ref)
    if (source / PLAN_FILE).is_file():
        raise QslmError(f"{source} is already quantized; search starts from a float model")
    loaded = load_model(source, resolve_device(device))
    task_object = build_task(task, loaded, data.data_files, data.data_dir, text_column=data.text_column,
                             label_column=data.label_column, labels=data.labels,
                             calibration_size=data.calibration_size, validation_size=data.validation_size,
                             test_limit=data.reported_limit, quantizer_size=data.quantizer_calibration_size)
    # The model as the user named it (a bundled name or their path): the report then says which model it
    # was without recording where this machine keeps it.
    source_record = ModelSource(
        label=str(model_ref), protect=(source,),
        companion_files={"tokenizer.json": lambda path: loaded.tokenizer.save(str(path))},
        notes={"reported_limit": data.reported_limit, "model_name": loaded.path.name,
               "validation_size": data.validation_size or DEFAULT_SIZES[task]["validation"]})
    return search(loaded.model, task_object, out, constraints, config, device=device, progress=progress,
                  cache_dir=cache_dir, overwrite=overwrite, workers=workers, ray_address=ray_address,
                  source=source_record)
