"""Where a search's measurements run: in this process (``InProcess``, the default), or on Ray actors
that each hold one replica of the model and the task (``RayExecutor``, ``workers > 1`` or a
``ray_address``).

An executor takes measurements -- ``damage(specs)`` and ``metric(plan)``, each unit's spec resolved by the
driver -- and returns
``Pending`` results at once; ``result()`` waits for one. ``InProcess`` computes a result only when it is
asked for, so a strategy that submits candidates ahead of need costs nothing extra in one process.
Workers compute exactly what this process would (``Measurements`` starts each measurement from the
same state, and a worker uses this process's thread count, so floating-point reductions split the
same way); the driver alone writes the journal and the sensitivity cache.

    with ExecutorChoice(workers=2) as choice:
        executor = choice.start(measurements)
        pending = [executor.metric(plans.plan(a)) for a in assignments]  # plans: qslm.search.plans.PlanSpecs
        metrics = [p.result() for p in pending]

Ray is imported only when asked for; a dead worker's measurements are retried on its restarted
actor (Ray's ``max_restarts`` / ``max_task_retries``). A cluster address is checked before any work (a
TCP connect to it), and joining it is given ``JOIN_SECONDS``: a wrong address fails in seconds rather
than retrying for ever. More workers than the CPUs (GPUs for a CUDA model) there are would wait for ever
for a place to run, so their number is cut to those, with a note.
"""
from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..errors import QslmError
from ..model_inputs import model_device
from ..quant.plan import QuantPlan
from ..quant.quantizer import QuantSpec
from ..tasks.scores import Measured
from .futures import Deferred, Executor, Pending
from .measure import Measurements

RAY_EXTRA = "pip install 'qslm[ray]'"
RETRIES = 3  # restarts of a dead worker, and retries of each measurement it held
PROBE_SECONDS = 5.0  # the TCP connect to a cluster's address, before any work
OBJECT_STORE_MIN_BYTES = 78 * 2 ** 20  # Ray refuses a smaller object store
JOIN_SECONDS = 15.0  # ray.init to a cluster that answered the probe; Ray itself would retry for ever
CLIENT_PORT = 10001  # Ray Client's port, for 'ray://HOST'


class InProcess:
    """Measurements on the search's own model, one at a time, in the order they are asked for."""
    workers = 1

    def __init__(self, measurements: Measurements):
        self.measurements = measurements

    def damage(self, specs: dict[str, QuantSpec]) -> Deferred[dict]:
        specs = dict(specs)
        return Deferred(lambda: self.measurements.damage_of(specs))

    def metric(self, plan: QuantPlan) -> Deferred[tuple[Measured, float]]:
        return Deferred(lambda: self.measurements.metric_of(plan))

    def completed(self, pending: Sequence[Pending]) -> Iterator[int]:
        for position, item in enumerate(pending):
            item.result()
            yield position

    def close(self) -> None:
        pass


class Replica:
    """A Ray actor's state: one model replica and the task, with the search's measurements on them."""

    def __init__(self, model, task, hierarchy, config, device: str, threads: int, context=None):
        torch.set_num_threads(threads)  # the driver's: the same reduction order, the same numbers
        self.measurements = Measurements(model.to(device).eval(), task, hierarchy, config, context=context)

    def damage(self, specs: dict[str, QuantSpec]) -> dict:
        return self.measurements.damage_of(specs)

    def metric(self, plan: QuantPlan) -> tuple[Measured, float]:
        return self.measurements.metric_of(plan)

    def pid(self) -> int:
        return os.getpid()


class RayPending:
    def __init__(self, ray, ref):
        self.ray, self.ref = ray, ref

    def result(self):
        try:
            return self.ray.get(self.ref)
        except self.ray.exceptions.RayTaskError as error:
            # The measurement itself failed (e.g. the task's metric is not a number): the user's error,
            # as it would have been raised in this process.
            cause = error.cause if isinstance(error.cause, BaseException) else None
            if cause is None:
                raise QslmError(f"a measurement failed on a Ray worker: {str(error).splitlines()[0]}") from None
            raise cause from None
        except self.ray.exceptions.RayActorError as error:
            raise QslmError(f"a Ray worker died {RETRIES + 1} times during a measurement; last: "
                            f"{str(error).splitlines()[0]}") from None


class RayExecutor:
    """Measurements spread round-robin over ``workers`` actors; the model and the task are sent once,
    through the object store."""

    def __init__(self, ray, measurements: Measurements, workers: int):
        self.ray, self.workers = ray, workers
        cuda = model_device(measurements.model).type == "cuda"
        actor = ray.remote(num_cpus=1, num_gpus=1 if cuda else 0, max_restarts=RETRIES,
                           max_task_retries=RETRIES)(Replica)
        try:
            model_ref, task_ref = ray.put(measurements.model), ray.put(measurements.task)
        except Exception as error:  # noqa: BLE001 -- cloudpickle refuses some user objects (open files, locks, ...)
            raise QslmError(f"the model or the task cannot be sent to Ray workers ({type(error).__name__}: "
                            f"{error}); run with workers=1") from None
        device = "cuda" if cuda else "cpu"
        context_ref = ray.put(measurements.context)  # the calibration Hessians, when a method needs them
        # held while the actors live: a restarted actor is built again from these same objects
        self.shared = (model_ref, task_ref, context_ref)
        self.actors = [actor.remote(model_ref, task_ref, measurements.hierarchy, measurements.config, device,
                                    torch.get_num_threads(), context_ref)
                       for _ in range(workers)]
        self._next = 0

    def _actor(self):
        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        return actor

    def damage(self, specs: dict[str, QuantSpec]) -> RayPending:
        return RayPending(self.ray, self._actor().damage.remote(dict(specs)))

    def metric(self, plan: QuantPlan) -> RayPending:
        return RayPending(self.ray, self._actor().metric.remote(plan))

    def completed(self, pending: Sequence[RayPending]) -> Iterator[int]:
        position = {item.ref: index for index, item in enumerate(pending)}
        waiting = list(position)
        while waiting:
            ready, waiting = self.ray.wait(waiting, num_returns=1)
            for ref in ready:
                yield position[ref]

    def pids(self) -> list[int]:
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors, self.shared = [], ()



def import_ray(why: str):
    try:
        import ray
    except ImportError:
        raise QslmError(f"{why} runs measurements on Ray workers, and Ray is not installed: {RAY_EXTRA}") from None
    return ray


def start_local_ray(ray, cpus: int) -> None:
    """A Ray on this machine only (loopback), with ``cpus`` CPUs, whose workers import this very qslm (a
    checkout may shadow an installed one)."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING, runtime_env={"env_vars": {"PYTHONPATH": path}},
             object_store_memory=object_store_bytes())


def object_store_bytes() -> int | None:
    """The local object store's size: Ray's own choice (None), unless this process runs under an
    address-space limit (``ulimit -v``), where Ray's default store cannot be mapped and the raylet dies with
    ``mmap failed``; then a quarter of the limit, which holds a model's weights many times over."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if limit == resource.RLIM_INFINITY else max(OBJECT_STORE_MIN_BYTES, limit // 4)


def check_workers(workers: object) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise QslmError(f"workers must be a positive integer, got {workers!r}")
    return workers


def local_cpus() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cluster_host_port(address: str) -> tuple[str, int] | None:
    """The host and port of ``address`` a TCP connect can check ('HOST:PORT', 'ray://HOST[:PORT]'); None
    for any other form (Ray judges those itself)."""
    scheme, separator, rest = address.strip().partition("://")
    if not separator:
        scheme, rest = "", address.strip()
    elif scheme != "ray":
        return None
    rest = rest.split("/", 1)[0]
    if rest == "local" and not scheme:
        return None  # Ray's name for a new Ray on this machine
    if rest.startswith("["):  # [IPv6]:PORT
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else port
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not port and scheme == "ray":
        port = str(CLIENT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QslmError(f"ray_address {address!r} is not a Ray cluster address: expected 'auto', HOST:PORT (a Ray "
                        f"head's port, 6379 unless it was started with another) or ray://HOST:PORT")
    return host, int(port)


def auto_address() -> str | None:
    """What ``ray.init(address='auto')`` joins: $RAY_ADDRESS, else the cluster last started on this machine
    (None when this Ray keeps that where qslm cannot look: ``ray.init`` alone judges it then)."""
    from_environment = os.environ.get("RAY_ADDRESS", "").strip()
    if from_environment and from_environment != "auto":
        return from_environment
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except (ConnectionError, ValueError) as error:
        reason = str(error).splitlines()[0] if "multiple" in str(error) else (
            "RAY_ADDRESS is not set and no cluster was started on this machine with 'ray start'")
        raise QslmError(f"ray_address='auto' finds no Ray cluster to join ({reason}); name one (HOST:6379), or "
                        f"start one with 'ray start --head'") from None


def check_cluster_address(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens there: ``ray.init`` would retry for ever."""
    shown = f"ray_address={address!r}"
    if address.strip() == "auto":
        resolved = auto_address()
        if resolved is None:
            return
        shown, address = f"{shown} ({resolved})", resolved
    target = cluster_host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=PROBE_SECONDS):
            return
    except socket.timeout:
        why = f"no answer within {PROBE_SECONDS:g} s"
    except OSError as error:
        why = error.strerror or str(error) or type(error).__name__
    raise QslmError(f"no Ray cluster answers at {shown}: {why}; check the address, or start a cluster there with "
                    f"'ray start --head'")


class _SigtermNote(logging.Filter):
    """Drops Ray's warning that it set no SIGTERM handler off the main thread: leaving it unset is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def join_cluster(ray, address: str) -> None:
    """``ray.init(address=...)``, given ``JOIN_SECONDS``. It runs on a thread this one waits for, so a
    cluster that answers but never lets this driver in (not a Ray port, another Ray version, a token this
    process lacks) costs that long, not for ever, and Ctrl-C and SIGTERM work meanwhile (Ray's SIGTERM
    handler, which a process blocked in Ray never runs, is set on the main thread only)."""
    outcome: list[BaseException | None] = []

    def join() -> None:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 -- handed to the waiting thread
            outcome.append(error)

    quiet, worker_log = _SigtermNote(), logging.getLogger("ray._private.worker")
    worker_log.addFilter(quiet)
    try:
        thread = threading.Thread(target=join, name="ray-join", daemon=True)
        thread.start()
        thread.join(JOIN_SECONDS)
    finally:
        worker_log.removeFilter(quiet)
    if not outcome:
        raise QslmError(f"the Ray cluster at ray_address={address!r} did not let this process join within "
                        f"{JOIN_SECONDS:g} s (not a Ray head's port, a Ray version other than this "
                        f"process's {getattr(ray, '__version__', '')}, or an authentication token this process "
                        f"lacks)")
    if outcome[0] is not None:
        error = outcome[0]
        raise QslmError(f"cannot join the Ray cluster at ray_address={address!r}: {type(error).__name__}: "
                        f"{(str(error).strip().splitlines() or [''])[0]}") from None


class ExecutorChoice:
    """The executor a search runs on: ``InProcess`` for ``workers=1`` and no ``ray_address`` (Ray is never
    imported), else ``workers`` Ray actors on a local Ray started here (``ray.init(num_cpus=workers)``,
    loopback only) or on the cluster at ``ray_address`` (one actor per CPU, or per GPU for a CUDA model,
    when ``workers`` is 1). Checked when made, before any work: a cluster's address must answer, and a
    local Ray gets at most this machine's CPUs (more workers are cut to those, with a note in ``notes``;
    a cluster's CPUs or GPUs cut them the same way when it is joined). Used as a context manager, it stops
    what it started on exit, whatever happens inside."""

    def __init__(self, workers: int = 1, ray_address: str | None = None):
        self.workers = check_workers(workers)
        if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
            raise QslmError(f"ray_address must be a Ray cluster address such as 'auto' or 'HOST:6379', got "
                            f"{ray_address!r}")
        self.ray_address = ray_address
        self.parallel = workers > 1 or ray_address is not None
        why = f"ray_address={ray_address!r}" if ray_address is not None else f"workers={workers}"
        self.ray = import_ray(why) if self.parallel else None
        self.notes: list[str] = []  # worker counts cut to what there is, printed once by start()
        self._started_ray = False
        self._executor: Executor | None = None
        if self.parallel and not self.ray.is_initialized():  # a Ray the caller started is judged in start()
            if ray_address is not None:
                check_cluster_address(ray_address)
            else:
                self._cap(local_cpus(), "CPU", "this machine has")

    def _cap(self, available: int, kind: str, where: str) -> None:
        """Cut the workers to ``available``: each takes one, and the rest would wait for ever."""
        if self.workers > available:
            plural = "s" if available != 1 else ""
            self.notes.append(f"workers={self.workers} is more than the {available} {kind}{plural} {where}: "
                              f"measuring on {available} worker{plural}")
            self.workers = available

    def connect(self) -> None:
        """Join the cluster at ``ray_address`` now (``start`` does otherwise), so that an address that
        answers but never lets this process in is found before any work; nothing for a local Ray, which
        ``start`` starts when it is needed."""
        if self.ray_address is not None and not self.ray.is_initialized():
            join_cluster(self.ray, self.ray_address)
            self._started_ray = True

    def start(self, measurements: Measurements) -> Executor:
        if not self.parallel:
            self._executor = InProcess(measurements)
            return self._executor
        ray = self.ray
        self.connect()
        if not ray.is_initialized():  # a Ray the caller started is used as it is, and left running
            self._started_ray = True
            start_local_ray(ray, self.workers)
        cuda = model_device(measurements.model).type == "cuda"
        kind = "GPU" if cuda else "CPU"  # what each worker takes one of
        available = int(ray.cluster_resources().get(kind, 0))
        if available < 1:
            raise QslmError(f"the Ray cluster has no {kind} for a worker"
                            + (" (each worker of a CUDA model takes one GPU)" if cuda else ""))
        if self.workers == 1:  # only with a ray_address: one worker per CPU (GPU) of the cluster
            self.workers = available
        self._cap(available, kind, "the Ray cluster has")
        for note in self.notes:
            print(f"note: {note}", file=sys.stderr)
        self._executor = RayExecutor(ray, measurements, self.workers)
        return self._executor

    def __enter__(self) -> ExecutorChoice:
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False
