"""The search engine on models written outside qslm: a hand-written spiking classifier (bare-parameter
projections, a tied embedding/head, a learnable-threshold neuron), an snnTorch model and a SpikingJelly
model, each searched through the Python API with the user's own metric, saved, and loaded back into a
fresh instance that reproduces the reported metric."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import qslm
from qslm.models.neuron_state import reset_neuron_states
from qslm.quant.quantizer import QuantSpec
from qslm.quant.unit_inputs import record_hessians
from qslm.quant.units import find_units
from qslm.search import engine, stack
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data, train
from tests.search.interrupting import interrupt_at


def unique_fp32_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in model.state_dict(keep_vars=True).values()}
    return sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in tensors.values())


def run_search(model, ids, labels, out, cache, config=None, **constraints):
    train_ids = ids[:96]
    val_ids, val_labels = ids[96:144], labels[96:144]
    test_ids, test_labels = ids[144:], labels[144:]
    task = qslm.Task(evaluate=lambda m: accuracy(m, val_ids, val_labels),
                     calibration=[train_ids[:32], train_ids[32:64]],
                     test=lambda m: accuracy(m, test_ids, test_labels),
                     profile_inputs=[train_ids[i:i + 1] for i in range(6)])
    return task, qslm.search(model, task, out=out, constraints=qslm.Constraints(**constraints), config=config,
                             progress=False, cache_dir=cache)


@pytest.fixture(scope="module")
def handwritten():
    torch.manual_seed(0)
    ids, labels = make_data()
    return train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=80), ids, labels


def test_every_weight_matrix_is_a_unit_and_a_tied_tensor_is_one(handwritten):
    model, _, _ = handwritten
    units = find_units(model)
    assert list(units) == ["embed", "stages.body.0.w_in", "stages.body.0.w_out", "stages.body.1.w_in",
                           "stages.body.1.w_out", "classify"]
    assert units["embed"].aliases == ("lm_head.weight",)
    assert units["stages.body.0.w_in"].kind == "Parameter"
    assert "stages.body.0.gain" not in units  # a [1, 1, d] vector stays float


def test_a_search_into_a_folder_another_job_holds_is_refused_before_any_work(handwritten, tmp_path, monkeypatch):
    import fcntl
    import os

    from qslm.errors import QslmError
    from qslm.outputs import LOCK_FILE

    model, ids, labels = handwritten
    monkeypatch.setattr(engine._SearchRun, "run", lambda *args: pytest.fail("searched in a folder another job holds"))
    (tmp_path / "out").mkdir()
    holder = os.open(tmp_path / "out" / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # a second open file: another job
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(holder, json.dumps({"pid": 4242, "host": "h", "started": "s", "command": "c"}).encode())
        with pytest.raises(QslmError, match=r"output folder .*out is in use by another qslm job \(pid 4242 on h"):
            run_search(model, ids, labels, tmp_path / "out", tmp_path / "cache", max_drop=10.0)
    finally:
        os.close(holder)
    assert sorted(os.listdir(tmp_path / "out")) == [LOCK_FILE]  # no manifest, no journal


def test_an_unknown_strategy_is_refused_before_any_work_or_output_folder(handwritten, tmp_path, monkeypatch):
    from qslm.errors import QslmError

    model, ids, labels = handwritten
    monkeypatch.setattr(engine, "ExecutorChoice", lambda *args: pytest.fail("started executors"))
    with pytest.raises(QslmError, match=r"^unknown strategy 'anneal'; expected one of tiered, uniform, hawq, "):
        run_search(model, ids, labels, tmp_path / "out", tmp_path / "cache", qslm.SearchConfig(strategy="anneal"),
                   max_drop=10.0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_handwritten_model_end_to_end(handwritten, tmp_path):
    model, ids, labels = handwritten
    task, result = run_search(model, ids, labels, tmp_path / "out", tmp_path / "cache", max_drop=10.0,
                              max_memory=0.4)
    report = result.report
    assert report["status"] == "feasible"
    # memory is exact: FP32 = the model's unique tensors; the final figure is the file's tensor bytes
    assert report["baseline"]["memory_bytes"] == unique_fp32_bytes(model)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
        stored = sum(handle.get_tensor(k).nbytes for k in keys)
    assert report["final"]["memory_bytes"] == stored == report["final"]["memory_bytes_predicted"]
    assert stored <= 0.4 * report["baseline"]["memory_bytes"]
    assert "lm_head.weight" not in keys and "embed.weight_codes" in keys  # stored once
    # the block hierarchy and the neurons of a model qslm has never seen
    blocks = report["hierarchy"]["blocks"]
    assert [b["name"] for b in blocks] == ["stages.body.0", "stages.body.1"]
    assert all(0 < b["firing_rate"] < 1 for b in blocks)
    assert set(blocks[0]["neurons"]) == {"stages.body.0.neuron"}
    assert [a for u in report["hierarchy"]["top_level"] for a in u["aliases"]] == ["lm_head.weight"]
    # a fresh instance of the user's class gets the packed weights and reproduces the reported metric
    fresh = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert task.test(fresh) == report["final"]["metric"]
    assert not any(p.shape == (32, 16) for p in fresh.parameters())  # packed codes, not float copies
    assert fresh.lm_head.weight.data_ptr() != 0 and torch.equal(fresh.lm_head.weight, fresh.embed.weight)
    plan = json.loads((tmp_path / "out" / "quant_plan.json").read_text())
    assert set(plan["units"]) == set(find_units(model))


@pytest.mark.slow
def test_sensitivities_measured_when_asked_give_the_plan_of_the_full_table(handwritten, tmp_path):
    model, ids, labels = handwritten
    # without the ternary grid the search's path on this model asks for some sensitivities, not all
    runs = {table: run_search(model, ids, labels, tmp_path / table, tmp_path / f"cache-{table}",
                              qslm.SearchConfig(sensitivity_table=table, grids=("sym", "signed", "asym")),
                              max_drop=10.0, max_memory=0.4)[1].report
            for table in ("full", "needed")}
    full, needed = runs["full"], runs["needed"]
    assert [(c["assignment"], c["metric"]) for c in needed["candidates"]] == \
        [(c["assignment"], c["metric"]) for c in full["candidates"]]
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == \
        (tmp_path / "needed" / "model.safetensors").read_bytes()
    asked = needed["sensitivity"]
    assert 0 < sum(map(len, asked.values())) < sum(map(len, full["sensitivity"].values()))
    assert asked == {name: {bits: full["sensitivity"][name][bits] for bits in row} for name, row in asked.items()}
    assert list(asked) == [name for name in full["sensitivity"] if name in asked]  # model order kept
    # the report says why cells are empty, and the heatmap draws the partial table
    assert "Measured where the search asked for them" in (tmp_path / "needed" / "report.md").read_text()
    assert "Measured where the search asked" not in (tmp_path / "full" / "report.md").read_text()
    assert (tmp_path / "needed" / "sensitivity.png").stat().st_size > 1000


@pytest.mark.slow
def test_reusing_block_outputs_changes_no_figure(handwritten, tmp_path):
    model, ids, labels = handwritten
    runs = {mb: run_search(model, ids, labels, tmp_path / f"out{mb}", tmp_path / f"cache{mb}",
                           qslm.SearchConfig(block_cache_mb=mb), max_drop=10.0, max_memory=0.4)[1].report
            for mb in (0, 64)}
    off, on = runs[0], runs[64]
    assert off["block_cache"] is None
    assert on["block_cache"]["stages"] == ["stages.body.0", "stages.body.1"] and on["block_cache"]["hits"] > 0
    assert on["sensitivity"] == off["sensitivity"]
    assert [(c["assignment"], c["metric"]) for c in on["candidates"]] == \
        [(c["assignment"], c["metric"]) for c in off["candidates"]]
    assert (tmp_path / "out0" / "model.safetensors").read_bytes() == (tmp_path / "out64" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_ignored_units_stay_float(handwritten, tmp_path):
    model, ids, labels = handwritten
    _, result = run_search(model, ids, labels, tmp_path / "out", tmp_path / "cache", max_drop=50.0)
    assert result.report["status"] == "feasible"
    config = qslm.SearchConfig(ignore=["*.w_out", "classify"], strategy="uniform")
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32]])
    ignored = qslm.search(model, task, out=tmp_path / "ignored", config=config, progress=False,
                          cache_dir=tmp_path / "cache")
    assert set(ignored.plan.units) == {"embed", "stages.body.0.w_in", "stages.body.1.w_in"}
    assert ignored.report["baseline"]["memory_bytes"] == unique_fp32_bytes(model)
    assert ignored.report["final"]["split"] == "validation"  # no test function: the validation metric


def is_packed(model: nn.Module) -> bool:
    return any(unit.packed is not None for unit in find_units(model).values())


@pytest.mark.slow
@pytest.mark.parametrize("returns", ["nan", "scores with a nan"])
def test_a_test_figure_that_is_not_finite_is_reported_as_null(handwritten, tmp_path, returns):
    """A test figure decides nothing: the model and report are written, the figure is null and the headline
    says why the limit was not checked on it."""
    model, ids, labels = handwritten
    test_ids, test_labels = ids[144:], labels[144:]

    def test(m):
        if returns == "nan":  # for the float model and the quantized one
            return float("nan")
        with torch.no_grad():
            scores = 100.0 * (m(test_ids).argmax(-1) == test_labels).double()
        if is_packed(m):  # only the quantized model's scores
            scores[3] = float("nan")
        return scores

    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]), calibration=[ids[:32], ids[32:64]],
                     test=test, profile_inputs=[ids[i:i + 1] for i in range(6)])
    out = tmp_path / "out"
    result = qslm.search(model, task, out=out, constraints=qslm.Constraints(max_drop=10.0, max_memory=0.4),
                         progress=False, cache_dir=tmp_path / "cache")
    assert result.report["status"] == "feasible" and (out / "model.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["metric"] is None and report["final"]["quality_loss"] is None
    assert report["final"]["quality_within_limit"] is None and report["quality"]["test_within_limit"] is None
    assert report["quality"]["test"]["estimate"] is None
    assert {"final.metric", "final.quality_loss", "quality.test.estimate"} <= set(report["non_finite"])
    whose = ["float model", "quantized model"] if returns == "nan" else ["quantized model"]
    assert report["quality"]["test_not_finite"] == whose
    if returns == "nan":
        assert report["baseline"]["metric_test"] is None and "baseline.metric_test" in report["non_finite"]
    else:
        assert report["baseline"]["metric_test"] == pytest.approx(accuracy(model, test_ids, test_labels))
    assert report["headline"][0].startswith("Status: **feasible** on the validation data: ")
    assert report["headline"][0].endswith(
        "; the test values of the float model and the quantized model were not finite, so the limit could not be "
        "checked on test." if returns == "nan" else
        "; the test value of the quantized model was not finite, so the limit could not be checked on test.")
    assert "| metric (test) | " + ("not finite" if returns == "nan" else "") in (out / "report.md").read_text()
    assert report["headline"][1].endswith("; on test: not finite.")
    assert report["headline"][0] in (out / "report.md").read_text()
    assert qslm.load_quantized(HandwrittenSpikingClassifier(), out) is not None


def test_a_validation_figure_that_is_not_finite_is_an_error(handwritten, tmp_path):
    """It decides which plans are feasible: refused before anything is written."""
    model, ids, _ = handwritten
    task = qslm.Task(evaluate=lambda m: float("nan"), calibration=[ids[:32]])
    with pytest.raises(qslm.QslmError, match="Task.evaluate must return a finite number"):
        qslm.search(model, task, out=tmp_path / "out", progress=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tuple_and_dict_outputs_are_measured_by_normalised_mse(handwritten, tmp_path):
    model, ids, _ = handwritten

    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, ids):
            logits = self.inner(ids)
            return {"logits": logits, "probs": logits.softmax(-1)}

    wrapped = TwoOutputs()
    task = qslm.Task(evaluate=lambda m: float(m(ids[96:])["logits"].argmax(-1).float().mean()),
                     calibration=[{"ids": ids[:32]}])
    result = qslm.search(wrapped, task, out=tmp_path / "dict", progress=False, cache_dir=tmp_path / "cache",
                         config=qslm.SearchConfig(strategy="uniform"))
    assert result.report["damage_measure"] == "mse"
    kl = qslm.search(wrapped, qslm.Task(evaluate=task.evaluate, calibration=task.calibration,
                                        output=lambda out: out["logits"]),
                     out=tmp_path / "kl", progress=False, cache_dir=tmp_path / "cache",
                     config=qslm.SearchConfig(strategy="uniform", sensitivity_table="full"))
    assert kl.report["damage_measure"] == "kl"
    assert kl.report["sensitivity"]["inner.embed"]["2"]["damage"] > kl.report["sensitivity"]["inner.embed"]["8"]["damage"]


class SnnTorchClassifier(nn.Module):
    """An snnTorch model in the tutorial style: membrane initialised per forward, T steps."""

    def __init__(self, vocab=50, d=16, classes=3, steps=3):
        import snntorch as snn

        super().__init__()
        self.steps = steps
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([nn.Linear(d, d) for _ in range(2)])
        self.neurons = nn.ModuleList([snn.Leaky(beta=0.8, threshold=0.5) for _ in range(2)])
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.embed(ids).mean(1)
        mems = [n.init_leaky() for n in self.neurons]
        counts = 0
        for _ in range(self.steps):
            h = x
            for i, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
                h, mems[i] = neuron(layer(h), mems[i])
            counts = counts + h
        return self.head(counts / self.steps)


class SpikingJellyClassifier(nn.Module):
    """A SpikingJelly multi-step model: state kept in the neurons, reset by the user's code."""

    def __init__(self, vocab=50, d=16, classes=3, steps=3):
        from spikingjelly.activation_based import layer, neuron

        super().__init__()
        self.steps = steps
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*[nn.Sequential(layer.Linear(d, d, step_mode="m"),
                                                    neuron.LIFNode(tau=2.0, v_threshold=0.5, step_mode="m"))
                                      for _ in range(2)])
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.embed(ids).mean(1).unsqueeze(0).repeat(self.steps, 1, 1)  # [T, B, d]
        return self.head(self.blocks(x).mean(0))


def sj_accuracy(model, ids, labels):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
    value = accuracy(model, ids, labels)
    functional.reset_net(model)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("make, metric", [(SnnTorchClassifier, accuracy), (SpikingJellyClassifier, sj_accuracy)])
def test_snn_library_models_end_to_end(make, metric, tmp_path):
    torch.manual_seed(0)
    ids, labels = make_data()
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(60):
        optimizer.zero_grad()
        if make is SpikingJellyClassifier:
            from spikingjelly.activation_based import functional
            functional.reset_net(model)
        F.cross_entropy(model(ids[:96]), labels[:96]).backward()
        optimizer.step()
    model.eval()
    task = qslm.Task(evaluate=lambda m: metric(m, ids[96:144], labels[96:144]), calibration=[ids[:48]],
                     test=lambda m: metric(m, ids[144:], labels[144:]), profile_inputs=[ids[:8]])
    result = qslm.search(model, task, out=tmp_path / "out", constraints=qslm.Constraints(max_drop=10.0),
                         progress=False, cache_dir=tmp_path / "cache")
    report = result.report
    assert report["status"] == "feasible"
    assert report["baseline"]["memory_bytes"] == unique_fp32_bytes(model)
    assert report["final"]["memory_bytes"] < report["baseline"]["memory_bytes"] / 2
    rates = [b["firing_rate"] for b in report["hierarchy"]["blocks"]]
    assert len(rates) == 2 and all(r is not None and 0 < r < 1 for r in rates)
    fresh = qslm.load_quantized(make(), tmp_path / "out")
    assert task.test(fresh) == report["final"]["metric"]


def test_methods_are_chosen_per_unit_and_bit_width(handwritten, tmp_path):
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    config = qslm.SearchConfig(methods=("rtn", "gptq", "codebook"), strategy="uniform", bit_choices=(2, 4))
    result = qslm.search(model, task, out=tmp_path / "out", config=config, progress=False,
                         cache_dir=tmp_path / "cache")
    methods = result.report["methods"]
    assert set(methods) == set(find_units(model))
    assert {m for by_bits in methods.values() for m in by_bits.values()} - {"rtn"}  # some unit gains
    # the plan names each unit's method, the file holds exactly its bytes, the reload reproduces the metric
    plan = json.loads((tmp_path / "out" / "quant_plan.json").read_text())["units"]
    for unit, bits in result.report["chosen"]["assignment"].items():
        assert plan[unit]["bits"] == bits and plan[unit].get("method", "rtn") == methods[unit][str(bits)]
    assert result.report["final"]["memory_bytes"] == result.report["final"]["memory_bytes_predicted"]
    fresh = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert accuracy(fresh, ids[96:], labels[96:]) == result.report["final"]["metric"]
    with pytest.raises(qslm.QslmError, match="methods must be distinct names"):
        qslm.SearchConfig(methods=("rtn", "awq"))


def test_grids_are_chosen_per_unit_and_bit_width(handwritten, tmp_path):
    """With several grids, each unit takes per width the grid (and method) that moves it least; the plan
    file names each unit's grid, the packed file holds exactly its bytes, and the reload reproduces the
    metric."""
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    config = qslm.SearchConfig(methods=("rtn", "gptq"), grids=("sym", "signed", "asym"), strategy="uniform",
                               bit_choices=(2, 4))
    result = qslm.search(model, task, out=tmp_path / "out", config=config, progress=False,
                         cache_dir=tmp_path / "cache")
    grids = result.report["grids"]
    assert set(grids) == set(find_units(model))
    assert {g for by_bits in grids.values() for g in by_bits.values()} - {"sym"}  # some unit takes another
    plan = json.loads((tmp_path / "out" / "quant_plan.json").read_text())["units"]
    for unit, bits in result.report["chosen"]["assignment"].items():
        spec = QuantSpec.from_dict(plan[unit])
        assert spec.bits == bits and spec.grid == grids[unit][str(bits)]
        assert spec.method == result.report["methods"][unit][str(bits)]
    assert result.report["final"]["memory_bytes"] == result.report["final"]["memory_bytes_predicted"]
    fresh = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert accuracy(fresh, ids[96:], labels[96:]) == result.report["final"]["metric"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| unit | bits | quantizer |" in markdown
    assert any(f" {grids[u][str(b)]} |" in markdown for u, b in result.report["chosen"]["assignment"].items())


def test_the_ternary_grid_through_a_search_the_plan_file_and_the_packed_bytes(handwritten, tmp_path):
    """With the ternary grid among the grids, the units that take it at two bits are written as trits: the
    plan file says so, the packed file holds exactly the predicted bytes, and the reload scores the same."""
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    config = qslm.SearchConfig(methods=("rtn", "gptq"), grids=("sym", "ternary"), strategy="uniform",
                               bit_choices=(2, 4))
    # room for two bits only, and any quality: the plan is the two-bit one
    result = qslm.search(model, task, out=tmp_path / "out", config=config, progress=False,
                         constraints=qslm.Constraints(max_drop=100.0, max_memory=0.15), cache_dir=tmp_path / "cache")
    grids = result.report["grids"]
    assert set(result.report["chosen"]["assignment"].values()) == {2}
    assert "ternary" in {by_bits["2"] for by_bits in grids.values()}
    assert {g for by_bits in grids.values() for g in by_bits.values()} <= {"sym", "ternary"}
    assert all(by_bits.get("4") != "ternary" for by_bits in grids.values())
    plan = json.loads((tmp_path / "out" / "quant_plan.json").read_text())["units"]
    for unit, bits in result.report["chosen"]["assignment"].items():
        spec = QuantSpec.from_dict(plan[unit])
        assert spec.grid == grids[unit][str(bits)] and spec.trits == (spec.grid == "ternary")
    assert result.report["final"]["memory_bytes"] == result.report["final"]["memory_bytes_predicted"]
    fresh = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert accuracy(fresh, ids[96:], labels[96:]) == result.report["final"]["metric"]


@pytest.mark.slow
def test_methods_are_measured_only_at_the_widths_the_search_reaches(handwritten, tmp_path, monkeypatch):
    """A width's methods are chosen when the search first needs it: a plan that stays low never measures a
    method at 8 bits, the plan is the one of choosing every width first, and the journal names each unit's
    method, so an interrupted search resumes."""
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])

    def searched(out, **settings):
        config = qslm.SearchConfig(methods=("rtn", "gptq", "codebook"), bit_choices=(2, 3, 4, 8), **settings)
        return qslm.search(model, task, out=out, constraints=qslm.Constraints(max_drop=5.0), config=config,
                           progress=False, cache_dir=tmp_path / f"cache-{out.name}")

    lazy = searched(tmp_path / "lazy").report
    widths = {b for by_bits in lazy["methods"].values() for b in by_bits}
    assert "2" in widths and "8" not in widths, widths
    eager = searched(tmp_path / "eager", sensitivity_table="full").report
    assert {b for by_bits in eager["methods"].values() for b in by_bits} == {"2", "3", "4", "8"}
    assert eager["chosen"]["assignment"] == lazy["chosen"]["assignment"]
    assert all(eager["methods"][u][b] == m for u, by_bits in lazy["methods"].items() for b, m in by_bits.items())
    written = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("eager", "lazy")]
    assert written[0] == written[1]

    entries = [json.loads(line) for line in (tmp_path / "lazy" / "journal.jsonl").read_text().splitlines()[1:]]
    assert all(any(m in e["key"] for m in ("rtn", "gptq", "codebook")) for e in entries)
    calls = interrupt_at(monkeypatch, None)
    searched(tmp_path / "counted")
    monkeypatch.undo()
    interrupt_at(monkeypatch, len(calls))  # Ctrl-C during the last measurement: the last candidate's
    with pytest.raises(KeyboardInterrupt):
        searched(tmp_path / "resumed")
    monkeypatch.undo()
    resumed = searched(tmp_path / "resumed").report
    assert resumed["evaluations"] == {"total": lazy["evaluations"]["total"], "new": 1}
    assert resumed["chosen"]["assignment"] == lazy["chosen"]["assignment"]


def test_units_with_a_hessian_choose_their_methods_without_a_forward_pass(handwritten, tmp_path, monkeypatch):
    """The choice weighs a unit with calibration inputs by its output error there; the model's damage is
    measured for the choice only for the units without (the embedding)."""
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    measured_for_choice = []
    original = stack._method_damages

    def recording(sensitivity, jobs, progress):
        measured_for_choice.extend(unit for unit, _ in jobs)
        return original(sensitivity, jobs, progress)

    monkeypatch.setattr(stack, "_method_damages", recording)
    config = qslm.SearchConfig(methods=("rtn", "gptq", "codebook"), bit_choices=(2, 3, 4, 8))
    report = qslm.search(model, task, out=tmp_path / "out", constraints=qslm.Constraints(max_drop=5.0),
                         config=config, progress=False, cache_dir=tmp_path / "cache").report
    with_inputs = set(record_hessians(model, task.calibration, reset_neuron_states))
    assert with_inputs and measured_for_choice and set(measured_for_choice).isdisjoint(with_inputs)
    assert any(m != "rtn" for u in with_inputs for m in report["methods"][u].values())


def test_plans_measured_to_choose_methods_are_not_measured_again(handwritten, tmp_path, monkeypatch):
    """Choosing between methods of equal bytes compares every unit at a width with the choices and with rtn
    on the task's metric; the search takes those plans' metrics from there, so no plan is measured twice."""
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    plans = interrupt_at(monkeypatch, None)
    config = qslm.SearchConfig(methods=("rtn", "gptq", "codebook"), bit_choices=(2, 3, 4, 8))
    report = qslm.search(model, task, out=tmp_path / "out", constraints=qslm.Constraints(max_drop=5.0),
                         config=config, progress=False, cache_dir=tmp_path / "cache").report
    measured = [json.dumps({u: [s.bits, s.method] for u, s in plan.units.items()}, sort_keys=True)
                for plan in plans]
    assert len(measured) == len(set(measured))
    uniform = [key for key in measured if len({bits for bits, _ in json.loads(key).values()}) == 1]
    assert any(len({m for _, m in json.loads(key).values()}) > 1 for key in uniform)  # a check was made
    assert len(measured) > report["evaluations"]["total"]  # ... and measured a plan the search never took
    # the report counts the checks' plans: the measurements beyond the candidates' are among them
    assert sum(c["measured"] for c in report["method_checks"]) >= len(measured) - report["evaluations"]["total"]


@pytest.mark.slow
def test_quantizers_fit_to_the_quantizer_calibration(handwritten, tmp_path):
    """GPTQ's Hessians come from Task.quantizer_calibration; its measurements are cached and journalled
    under those inputs, so searches fitted to other inputs never share them."""
    model, ids, labels = handwritten
    config = qslm.SearchConfig(methods=("gptq",), strategy="uniform", bit_choices=(2, 4), sensitivity_table="full")

    def searched(out, cache, fitted):
        task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32]],
                         quantizer_calibration=fitted)
        result = qslm.search(model, task, out=out, config=config, progress=False, cache_dir=cache)
        return result.report, (out / "model.safetensors").read_bytes()

    default, default_bytes = searched(tmp_path / "default", tmp_path / "c1", None)
    same, same_bytes = searched(tmp_path / "same", tmp_path / "c2", [ids[:32]])
    assert same_bytes == default_bytes and same["sensitivity"] == default["sensitivity"]
    other, other_bytes = searched(tmp_path / "other", tmp_path / "c1", [ids[32:96]])  # the first one's cache
    fresh, fresh_bytes = searched(tmp_path / "fresh", tmp_path / "c3", [ids[32:96]])
    assert other_bytes == fresh_bytes != default_bytes
    assert other["sensitivity"] == fresh["sensitivity"] != default["sensitivity"]
    assert other["quantizer_calibration_size"] == 64 and default["quantizer_calibration_size"] == 32
    assert ("- calibration: 32 inferences for the sensitivities; gptq fitted to 64"
            in (tmp_path / "other" / "report.md").read_text())
    with pytest.raises(qslm.QslmError, match="belongs to a different search"):
        searched(tmp_path / "other", tmp_path / "c1", [ids[32:64]])
