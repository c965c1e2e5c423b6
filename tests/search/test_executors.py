"""Measurements on Ray workers give what one process gives: the same sensitivity table, candidates, plan
and model bytes; a dead worker's measurements are retried; an interrupted parallel run resumes; and
without Ray, asking for workers is an error that names the extra to install. A cluster address where
nothing answers fails in seconds, before any work; more workers than CPUs (GPUs) are cut to those, with a
note. One local Ray (2 CPUs) serves the whole module."""
from __future__ import annotations

import builtins
import json
import os
import signal
import socket
import threading
import time
import types

import pytest
import torch

import qslm
from qslm.analysis.hierarchy import build_hierarchy
from qslm.cli import main
from qslm.errors import QslmError
from qslm.search import executors
from qslm.search.config import SearchConfig
from qslm.search.executors import ExecutorChoice, InProcess, RayExecutor
from qslm.search.journal import Journal
from qslm.search.measure import Measurements
from qslm.search.methods import base_spec_of
from qslm.search.plans import PlanSpecs
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data, train

needs_ray = pytest.mark.ray  # deselect with -m "not ray"

# timings and worker counts differ between runs; everything else in a report must not
VARYING = {"seconds", "workers", "measured_latency_s", "latency_s", "hits", "misses"}


def plan_of(measurements: Measurements, assignment: dict[str, int]):
    """The plan of ``assignment`` on the base spec (one method: rtn)."""
    return PlanSpecs(base_spec_of(measurements.config.base_spec), keyed_by_method=False).plan(assignment)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        executors.start_local_ray(ray, 2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    ids, labels = make_data()
    model = train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=40)
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]),
                     calibration=[ids[:32], ids[32:64]], test=lambda m: accuracy(m, ids[144:], labels[144:]),
                     profile_inputs=[ids[i:i + 1] for i in range(4)])
    return model, task


def run(classifier, out, cache, workers=1, strategy="tiered", **config):
    model, task = classifier
    return qslm.search(model, task, out=out, constraints=qslm.Constraints(max_drop=5.0, max_memory=0.3),
                       config=SearchConfig(strategy=strategy, bit_choices=(2, 4, 8), **config), progress=False,
                       cache_dir=cache, workers=workers, device="cpu")


def without_varying(value):
    if isinstance(value, dict):
        return {k: without_varying(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [without_varying(v) for v in value]
    return value


def assert_same_plan(sequential, parallel) -> None:
    """The same plan and model bytes, from the same candidates with the same metrics, in the same order."""
    for name in ("quant_plan.json", "model.safetensors"):
        assert (sequential.out / name).read_bytes() == (parallel.out / name).read_bytes(), name
    assert [(c["index"], c["tier"], c["metric"], c["assignment"]) for c in parallel.report["candidates"]] == \
        [(c["index"], c["tier"], c["metric"], c["assignment"]) for c in sequential.report["candidates"]]


def assert_same_search(sequential, parallel) -> None:
    assert_same_plan(sequential, parallel)
    assert without_varying(parallel.report) == without_varying(sequential.report)


@pytest.fixture(scope="module")
def sequential(classifier, tmp_path_factory):
    """The tiered search in one process, the reference every parallel run must reproduce."""
    root = tmp_path_factory.mktemp("sequential")
    result = run(classifier, root / "out", root / "cache")
    assert result.report["status"] == "feasible" and result.report["workers"] == 1
    return result


def cache_lines(cache) -> list[str]:
    return sorted(next(cache.glob("*.jsonl")).read_text().splitlines())


@pytest.mark.slow
@needs_ray
def test_two_workers_find_the_one_process_plan(local_ray, sequential, classifier, tmp_path):
    parallel = run(classifier, tmp_path / "out", tmp_path / "cache", workers=2)
    assert parallel.report["workers"] == 2
    assert_same_search(sequential, parallel)
    # a cold cache holds the same measurements (written as they finished, in any order)
    assert cache_lines(tmp_path / "cache") == cache_lines(sequential.out.parent / "cache")
    # only candidates are journaled (moves measured ahead and never reached are not), under the same header
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (sequential.out / "journal.jsonl").read_text().splitlines()]
    assert journal[0] == reference[0] and "workers" not in json.dumps(journal[0])
    assert sorted(e["key"] for e in journal[1:]) == sorted(e["key"] for e in reference[1:])
    assert "workers" not in parallel.report["config"]


@pytest.mark.slow
@needs_ray
def test_nsga2_generations_on_two_workers(local_ray, classifier, tmp_path):
    one = run(classifier, tmp_path / "one", tmp_path / "cache", strategy="nsga2", max_evaluations=12)
    two = run(classifier, tmp_path / "two", tmp_path / "cache", workers=2, strategy="nsga2", max_evaluations=12)
    assert len(two.report["candidates"]) == 12
    assert_same_search(one, two)


@pytest.mark.slow
@needs_ray
def test_interrupted_parallel_search_resumes(local_ray, sequential, classifier, tmp_path, monkeypatch):
    add, calls = Journal.add, []

    def interrupted(self, entry):  # Ctrl-C in the driver while workers are busy
        calls.append(entry)
        if len(calls) == 3:
            raise KeyboardInterrupt
        add(self, entry)
    monkeypatch.setattr(Journal, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(classifier, tmp_path / "out", tmp_path / "cache", workers=2)
    monkeypatch.setattr(Journal, "add", add)
    journal = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 2  # the header and the two completed evaluations, nothing in flight
    resumed = run(classifier, tmp_path / "out", tmp_path / "cache", workers=2)
    assert resumed.report["evaluations"]["total"] - resumed.report["evaluations"]["new"] == 2
    assert_same_plan(sequential, resumed)


@pytest.mark.slow
@needs_ray
def test_a_killed_worker_is_replaced_and_its_measurements_retried(local_ray, classifier):
    model, task = classifier
    config = SearchConfig(bit_choices=(2, 4, 8))
    measurements = Measurements(model, task, build_hierarchy(model, "m"), config)
    units = list(measurements.hierarchy.units)
    plans = [{u: bits for u in units} | {units[i % len(units)]: 8} for i, bits in enumerate([2, 4] * 4)]
    executor = RayExecutor(local_ray, measurements, 2)
    try:
        first_pids = executor.pids()
        pending = [executor.metric(plan_of(measurements, plan)) for plan in plans]
        os.kill(first_pids[0], signal.SIGKILL)  # while it holds half of the batch
        metrics = [p.result()[0] for p in pending]
        assert executor.pids()[0] != first_pids[0]  # restarted
    finally:
        executor.close()
    in_process = InProcess(measurements)
    assert metrics == [in_process.metric(plan_of(measurements, plan)).result()[0] for plan in plans]


@pytest.mark.slow
@needs_ray
def test_a_failing_measurement_raises_the_users_error(local_ray, classifier):
    model, _ = classifier
    task = qslm.Task(evaluate=lambda m: float("nan"), calibration=[make_data()[0][:8]])
    measurements = Measurements(model, task, build_hierarchy(model, "m"), SearchConfig(bit_choices=(2, 4, 8)))
    executor = RayExecutor(local_ray, measurements, 1)
    try:
        with pytest.raises(QslmError, match="finite number"):
            executor.metric(plan_of(measurements, {u: 4 for u in measurements.hierarchy.units})).result()
    finally:
        executor.close()


@pytest.fixture
def no_ray(monkeypatch):
    real_import = builtins.__import__

    def refuse_ray(name, globals=None, *args, **kwargs):
        # only qslm's imports: a Ray already running in this process keeps importing its own modules
        importer = (globals or {}).get("__name__", "")
        if importer.startswith("qslm") and (name == "ray" or name.startswith("ray.")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, globals, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", refuse_ray)


def test_workers_without_ray_name_the_extra(no_ray):
    with pytest.raises(QslmError, match=r"workers=2 .*pip install 'qslm\[ray\]'"):
        ExecutorChoice(workers=2)
    with pytest.raises(QslmError, match=r"ray_address='auto' .*qslm\[ray\]"):
        ExecutorChoice(ray_address="auto")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(QslmError, match="workers must be a positive integer"):
            ExecutorChoice(workers=bad)


def test_one_worker_never_imports_ray(no_ray, classifier, tmp_path):
    result = run(classifier, tmp_path / "out", tmp_path / "cache", strategy="uniform")
    assert result.report["status"] == "feasible" and result.report["workers"] == 1


def test_cli_workers_without_ray_is_one_line_and_exit_2(no_ray, tiny_classifier, tmp_path, capsys):
    code = main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--workers", "2",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "qslm[ray]" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "journal.jsonl").exists()


class FakeRay:
    """Just enough of Ray's API to see what ``ExecutorChoice`` starts, joins and stops (no processes)."""

    def __init__(self, initialized=False, cpus=3, gpus=0):
        self.initialized, self.cpus, self.gpus, self.calls = initialized, cpus, gpus, []

    def is_initialized(self):
        return self.initialized

    def init(self, **options):
        self.calls.append(("init", options))
        self.initialized = True

    def shutdown(self):
        self.calls.append(("shutdown", {}))
        self.initialized = False

    def cluster_resources(self):
        return {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus else {})}

    def put(self, value):
        return value

    def remote(self, **options):
        self.calls.append(("actor options", options))

        class Actor:
            @staticmethod
            def remote(*args):
                return object()
        return lambda cls: Actor

    def kill(self, actor, no_restart):
        self.calls.append(("kill", {"no_restart": no_restart}))


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(executors, "import_ray", lambda why: fake)
    monkeypatch.setattr(executors, "local_cpus", lambda: fake.cpus)  # as many as the fake cluster has
    return fake


def test_a_local_ray_is_started_on_loopback_and_stopped_after(fake_ray, classifier):
    model, task = classifier
    measurements = Measurements(model, task, build_hierarchy(model, "m"), SearchConfig(bit_choices=(2, 4, 8)))
    with pytest.raises(RuntimeError), ExecutorChoice(workers=3) as choice:
        assert choice.start(measurements).workers == 3
        raise RuntimeError("the search failed")
    (_, init), (_, actor) = fake_ray.calls[:2]
    assert init["address"] == "local" and init["num_cpus"] == 3 and init["_node_ip_address"] == "127.0.0.1"
    assert init["include_dashboard"] is False
    assert actor["num_gpus"] == 0 and actor["max_restarts"] >= 1 and actor["max_task_retries"] >= 1
    assert [name for name, _ in fake_ray.calls[2:]] == ["kill"] * 3 + ["shutdown"]


def test_a_cluster_gets_one_actor_per_cpu_and_a_callers_ray_keeps_running(fake_ray, classifier, monkeypatch):
    model, task = classifier
    measurements = Measurements(model, task, build_hierarchy(model, "m"), SearchConfig(bit_choices=(2, 4, 8)))
    probed = []
    monkeypatch.setattr(executors, "check_cluster_address", probed.append)
    with ExecutorChoice(ray_address="10.0.0.5:6379") as choice:
        assert probed == ["10.0.0.5:6379"] and fake_ray.calls == []  # checked when made, joined later
        assert choice.start(measurements).workers == 3  # the cluster's CPUs
    assert fake_ray.calls[0] == ("init", {"address": "10.0.0.5:6379", "include_dashboard": False,
                                          "logging_level": 30})
    assert fake_ray.calls[-1][0] == "shutdown"  # it started that one
    fake_ray.calls.clear()
    fake_ray.initialized = True  # the caller's own Ray
    with ExecutorChoice(workers=2) as choice:
        choice.start(measurements)
    assert [name for name, _ in fake_ray.calls] == ["actor options", "kill", "kill"] and fake_ray.initialized


# ---- a cluster that is not there, and more workers than there are CPUs

@pytest.fixture
def unstarted_ray(monkeypatch):
    """The real Ray module as a process that has not started or joined one sees it (this module's local Ray
    may be running)."""
    ray = pytest.importorskip("ray")
    view = types.SimpleNamespace(is_initialized=lambda: False, __version__=ray.__version__)
    monkeypatch.setattr(executors, "import_ray", lambda why: view)
    return view


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_cluster_address_where_nothing_listens_fails_in_seconds(unstarted_ray, address):
    started = time.monotonic()
    with pytest.raises(QslmError) as refused:
        ExecutorChoice(ray_address=address)
    assert time.monotonic() - started < executors.PROBE_SECONDS
    assert str(refused.value) == (f"no Ray cluster answers at ray_address={address!r}: Connection refused; check "
                                  "the address, or start a cluster there with 'ray start --head'")


def test_auto_names_the_address_it_found_or_that_it_found_none(unstarted_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(QslmError, match=r"no Ray cluster answers at ray_address='auto' \(127.0.0.1:1\): Connection "
                                        r"refused"):
        ExecutorChoice(ray_address="auto")
    monkeypatch.delenv("RAY_ADDRESS")
    from ray._private import services

    def none_running(address):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")
    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", none_running)
    with pytest.raises(QslmError, match=r"ray_address='auto' finds no Ray cluster to join \(RAY_ADDRESS is not set "
                                        r"and no cluster was started on this machine with 'ray start'\)"):
        ExecutorChoice(ray_address="auto")


@pytest.mark.parametrize("address", ["headnode", "headnode:port", "headnode:0", ":6379", "ray://:10001"])
def test_a_cluster_address_without_host_and_port_is_refused(unstarted_ray, address):
    with pytest.raises(QslmError, match=rf"ray_address {address!r} is not a Ray cluster address: expected 'auto', "
                                        r"HOST:PORT"):
        ExecutorChoice(ray_address=address)


def test_a_cluster_that_answers_but_never_lets_this_process_in_costs_seconds(fake_ray, monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never speaks Ray
    never = threading.Event()
    monkeypatch.setattr(fake_ray, "init", lambda **options: never.wait(30), raising=False)
    monkeypatch.setattr(executors, "JOIN_SECONDS", 0.5)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(QslmError, match=rf"the Ray cluster at ray_address={address!r} did not let this process "
                                            r"join within 0.5 s"):
            with ExecutorChoice(ray_address=address) as choice:
                choice.connect()
        assert time.monotonic() - started < 5
        assert fake_ray.calls == []  # nothing to shut down: it never joined
    finally:
        never.set()
        listener.close()

    def refused(**options):
        raise ConnectionError("GCS has gone away\nmore detail")
    monkeypatch.setattr(fake_ray, "init", refused, raising=False)
    monkeypatch.setattr(executors, "check_cluster_address", lambda address: None)
    with pytest.raises(QslmError, match=r"^cannot join the Ray cluster at ray_address='10.0.0.5:6379': "
                                        r"ConnectionError: GCS has gone away$"):
        ExecutorChoice(ray_address="10.0.0.5:6379").connect()


def test_more_workers_than_cpus_are_cut_to_them_before_any_work(fake_ray, classifier, monkeypatch, capsys):
    monkeypatch.setattr(executors, "local_cpus", lambda: 2)
    choice = ExecutorChoice(workers=64)
    note = "workers=64 is more than the 2 CPUs this machine has: measuring on 2 workers"
    assert choice.workers == 2 and choice.notes == [note] and fake_ray.calls == []  # before Ray is started
    model, task = classifier
    measurements = Measurements(model, task, build_hierarchy(model, "m"), SearchConfig(bit_choices=(2, 4, 8)))
    with choice:
        assert choice.start(measurements).workers == 2
    assert fake_ray.calls[0][1]["num_cpus"] == 2
    assert capsys.readouterr().err == f"note: {note}\n"  # said once
    # a cluster's CPUs, and a CUDA model's GPUs, cut them the same way when it is joined
    fake_ray.initialized, fake_ray.gpus = True, 1
    with ExecutorChoice(workers=5) as choice:
        assert choice.start(measurements).workers == 3
    assert choice.notes == ["workers=5 is more than the 3 CPUs the Ray cluster has: measuring on 3 workers"]
    monkeypatch.setattr(executors, "model_device", lambda model: torch.device("cuda"))
    with ExecutorChoice(workers=2) as choice:
        assert choice.start(measurements).workers == 1
    assert choice.notes == ["workers=2 is more than the 1 GPU the Ray cluster has: measuring on 1 worker"]
    fake_ray.gpus = 0
    with pytest.raises(QslmError, match="the Ray cluster has no GPU for a worker"), ExecutorChoice(workers=2) as choice:
        choice.start(measurements)


def test_the_cpu_count_is_this_processs_share(unstarted_ray):
    cpus = executors.local_cpus()
    assert cpus == len(os.sched_getaffinity(0)) >= 1
    assert ExecutorChoice(workers=cpus + 1).workers == cpus
    assert ExecutorChoice(workers=cpus).notes == []


@pytest.mark.slow
@needs_ray
def test_a_search_with_more_workers_than_cpus_runs_on_those_and_says_so(local_ray, sequential, classifier, tmp_path,
                                                                         capsys):
    cpus = int(local_ray.cluster_resources()["CPU"])
    capsys.readouterr()
    parallel = run(classifier, tmp_path / "out", tmp_path / "cache", workers=64)
    note = f"workers=64 is more than the {cpus} CPUs the Ray cluster has: measuring on {cpus} workers"
    assert parallel.report["workers"] == cpus and parallel.report["workers_note"] == note
    assert capsys.readouterr().err.count(note) == 1
    assert_same_plan(sequential, parallel)


@pytest.mark.slow
def test_the_object_store_fits_an_address_space_limit(monkeypatch):
    import resource

    from qslm.search import executors

    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert executors.object_store_bytes() is None  # Ray's own choice
    monkeypatch.setattr(resource, "getrlimit", lambda which: (8 * 2 ** 30, resource.RLIM_INFINITY))
    assert executors.object_store_bytes() == 2 * 2 ** 30  # ulimit -v 8 GiB: Ray's default store would not map
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2 ** 28, resource.RLIM_INFINITY))
    assert executors.object_store_bytes() == executors.OBJECT_STORE_MIN_BYTES
