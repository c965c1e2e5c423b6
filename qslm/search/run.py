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

from collections.abc import Mapping, Sequence

from ..checkpoint import load_model
from ..errors import QslmError
from ..models.zoo import resolve_model_path
from ..quant.pack import PLAN_FILE
from ..quant.quantizer import QuantSpec
from ..tasks.evaluation import CLASSIFICATION
from ..tasks.presets import DEFAULT_SIZES, KIND, build_task, check_task_name
from .config import BASE_SPEC, DEFAULT_BIT_CHOICES, DEFAULT_BLOCK_CACHE_MB, SearchConfig
from .engine import SearchResult, check_quality_limit, search
from .objective import Constraints
from .strategies import check_strategy


def run_search(model_ref, task: str, out, constraints: Constraints | None = None, *, config: SearchConfig | None = None,
               weights=None, bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES, strategy: str = "tiered",
               max_evaluations: int | None = None, sensitivity_method: str = "exact", seed: int = 0,
               hardware: str = "default_45nm", base_spec: QuantSpec = BASE_SPEC, ignore: Sequence[str] = (),
               methods: Sequence[str] | None = None, block_cache_mb: int = DEFAULT_BLOCK_CACHE_MB,
               sensitivity_table: str = "needed",
               calibration_size: int | None = None, validation_size: int | None = None,
               quantizer_calibration_size: int | None = None,
               reported_limit: int | None = None, data_dir=None, data_files: Mapping[str, str] | None = None,
               text_column: str | None = None, label_column: str | None = None, labels: Sequence[str] | None = None,
               cache_dir=None, device=None, progress: bool = True, overwrite: bool = False, workers: int = 1,
               ray_address: str | None = None) -> SearchResult:
    """Search ``model_ref`` on built-in task ``task`` (sst2, wikitext2, text-classification,
    language-modeling) and write the packed model folder (config, weights, plan, tokenizer) and report
    to ``out``. ``reported_limit`` reports on only the first N examples / lines of the test data
    (benchmarks of many strategies). The search settings are ``config`` or the keyword arguments;
    ``workers`` and ``ray_address`` say where measurements run (see ``qslm.search.engine.search``)."""
    from ..device import resolve_device

    if not isinstance(task, str):
        raise QslmError(f"a model folder is searched on a built-in task name, got {type(task).__name__}; "
                        "for a qslm.Task, load the model and call qslm.search(model, task, ...)")
    if config is None:
        config = SearchConfig(bit_choices=tuple(bit_choices), strategy=strategy, max_evaluations=max_evaluations,
                              sensitivity=sensitivity_method, seed=seed, hardware=hardware, base_spec=base_spec,
                              weights=weights, ignore=tuple(ignore),
                              methods=None if methods is None else tuple(methods),
                              block_cache_mb=block_cache_mb, sensitivity_table=sensitivity_table)
    check_strategy(config.strategy)  # before the model is loaded and the data read
    check_quality_limit(task, KIND[check_task_name(task)] == CLASSIFICATION, constraints or Constraints())
    source = resolve_model_path(model_ref)
    if (source / PLAN_FILE).is_file():
        raise QslmError(f"{source} is already quantized; search starts from a float model")
    loaded = load_model(source, resolve_device(device))
    task_object = build_task(task, loaded, data_files, data_dir, text_column=text_column, label_column=label_column,
                             labels=labels, calibration_size=calibration_size, validation_size=validation_size,
                             test_limit=reported_limit, quantizer_size=quantizer_calibration_size)
    # The model as the user named it (a bundled name or their path): the report then says which model it
    # was without recording where this machine keeps it.
    return search(loaded.model, task_object, out, constraints, config, device=device, progress=progress,
                  label=str(model_ref), cache_dir=cache_dir, overwrite=overwrite, protect=(source,),
                  workers=workers, ray_address=ray_address,
                  companion_files={"tokenizer.json": lambda path: loaded.tokenizer.save(str(path))},
                  notes={"reported_limit": reported_limit, "model_name": loaded.path.name,
                         "validation_size": validation_size or DEFAULT_SIZES[task]["validation"]})
