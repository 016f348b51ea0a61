"""Task runner selection: threads (the default) or Dask through ``prefect-dask``.

Prefect fixes a flow's task runner when the flow is decorated. Two ways in, used together:

- callers that start a flow (the CLI, a parent flow) pick the runner at call time with
  :func:`with_task_runner`, so Prefect's UI shows the runner the run really used;
- inside a flow, :func:`task_runner_for` hands out the flow run's own runner when it already is
  the kind the parameters ask for, and otherwise starts the requested one for the block. A
  deployment run (which always starts with the decorated runner) therefore still honours
  ``task_runner: dask`` in prefect.yaml or in the UI's form.

Dask runs tasks in other processes, possibly on other machines: tasks receive file paths, ids
and small specs (never models or arrays), and every worker must see the data home and the
video files at the same paths (one machine, or a shared file system).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Flow, Task
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

#: Address schemes a Dask scheduler listens on.
SCHEDULER_SCHEMES = ("tcp://", "tls://", "ucx://", "ws://", "wss://")
DASK_EXTRA_HINT = "pip install -e '.[dask]'  (prefect-dask and dask[distributed])"

T = TypeVar("T")


def _dask_runner_class() -> type[TaskRunner]:
    """``prefect_dask.DaskTaskRunner``, or a clear error when the extra is not installed."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:
        raise RuntimeError(f"the dask task runner needs prefect-dask: {DASK_EXTRA_HINT}") from e
    return DaskTaskRunner


def _current_api_url() -> str:
    """The Prefect API this process talks to: ``PREFECT_API_URL``, or the temporary server
    that Prefect started for this process (it has no setting a child process could read)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def local_cluster(**kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` whose worker processes report to this process's Prefect
    API.

    Without this, each worker process of a flow run on Prefect's temporary server (the CLI's
    default) starts a temporary server of its own, a slow start per worker on a shared
    database. Called by the Dask task runner when it creates the cluster, inside the flow run.
    """
    import dask
    from distributed import LocalCluster

    if kwargs.get("processes", True):
        env = {**(kwargs.pop("env", None) or {})}
        env.setdefault("PREFECT_API_URL", _current_api_url())
        kwargs["env"] = env
    if "DASK_LOGGING__DISTRIBUTED" in os.environ:  # the user chose Dask's log level
        return LocalCluster(**kwargs)
    # Dask logs every scheduler/worker start and stop at INFO on the terminal: keep warnings
    # (the workers read the variable when they start, before the nanny's `env` applies).
    logging.getLogger("distributed").setLevel(logging.WARNING)
    quiet = {"distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED": "warning"}
    with dask.config.set(quiet):
        return LocalCluster(**kwargs)


def check_runner_options(kind: str, address: str | None = None) -> None:
    """Reject an unknown runner kind, or a scheduler address that is not one.

    Raises:
        ValueError: naming the bad value.
    """
    if kind not in ("threads", "dask"):
        raise ValueError(f"unknown task runner {kind!r}: use 'threads' or 'dask'")
    if address is not None:
        if kind != "dask":
            raise ValueError(f"a Dask scheduler address ({address!r}) needs task_runner 'dask'")
        if not address.startswith(SCHEDULER_SCHEMES):
            raise ValueError(f"Dask scheduler address {address!r} must start with one of "
                             f"{', '.join(SCHEDULER_SCHEMES)} (e.g. tcp://127.0.0.1:8786)")


def build_task_runner(kind: str = "threads", *, workers: int | None = None,
                      address: str | None = None, processes: bool = True) -> TaskRunner:
    """A new task runner of the requested kind (not started).

    Args:
        kind: ``threads`` (a thread pool in this process) or ``dask``.
        workers: threads: pool size; dask: LocalCluster worker processes (one thread each).
            Default: the CPU count.
        address: dask only: connect to this running scheduler (``tcp://host:8786``) instead
            of starting a LocalCluster; ``workers`` is then ignored.
        processes: dask LocalCluster only: workers as processes (default) or threads of this
            process (``False``: no process start-up, but the GIL is shared).

    Returns:
        A ``ThreadPoolTaskRunner`` or a ``prefect_dask.DaskTaskRunner``.

    Raises:
        ValueError: an unknown kind or a malformed address.
        RuntimeError: ``dask`` asked for but prefect-dask is not installed.
    """
    check_runner_options(kind, address)
    n = workers or os.cpu_count() or 2
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=n)
    runner_cls = _dask_runner_class()
    if address:
        return runner_cls(address=address)
    # One thread per worker: a task (a model forward pass, ffmpeg decodes) already keeps a
    # core busy. The scheduler and workers listen on loopback; so does the dashboard (when
    # bokeh is installed), on a free port that the flow's log names.
    return runner_cls(cluster_class=local_cluster,
                      cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                      "processes": processes,
                                      "dashboard_address": "127.0.0.1:0"})


def with_task_runner(flow: Flow, kind: str = "threads", *, workers: int | None = None,
                     address: str | None = None) -> Flow:
    """``flow`` set to run its tasks on the requested runner (Prefect's ``with_options``)."""
    return flow.with_options(task_runner=build_task_runner(kind, workers=workers,
                                                           address=address))


def describe_runner(runner: TaskRunner) -> str:
    """A short human description: ``threads``, ``dask tcp://...`` or ``dask LocalCluster``."""
    if isinstance(runner, ThreadPoolTaskRunner):
        return "threads"
    address = getattr(runner, "address", None)
    return f"dask {address}" if address else "dask LocalCluster"


def _matches(runner: TaskRunner | None, kind: str, address: str | None) -> bool:
    if runner is None:
        return False
    if kind == "threads":
        return isinstance(runner, ThreadPoolTaskRunner)
    if type(runner).__name__ != "DaskTaskRunner":
        return False
    return address is None or getattr(runner, "address", None) == address


@contextmanager
def task_runner_for(kind: str = "threads", *, workers: int | None = None,
                    address: str | None = None) -> Iterator[TaskRunner]:
    """The started task runner to submit this flow run's tasks to.

    The flow run's own runner when it is already of the requested kind (the caller used
    :func:`with_task_runner`, or the flow's default suits); otherwise a new runner, started
    for the block and shut down after it (a LocalCluster is closed with it).
    """
    check_runner_options(kind, address)
    ctx = FlowRunContext.get()
    current = ctx.task_runner if ctx is not None else None
    if _matches(current, kind, address):
        assert current is not None
        yield current
        return
    with build_task_runner(kind, workers=workers, address=address) as runner:
        yield runner


def submit_task(runner: TaskRunner, task: Task[..., Any],
                parameters: dict[str, Any]) -> PrefectFuture[Any]:
    """Submit ``task`` with ``parameters`` (plain values, no futures) to ``runner``.

    On a thread pool every parameter is wrapped in ``quote()``: Prefect would otherwise walk
    large inputs (clip lists, the ingest state) on every submission. On Dask they go as they
    are: Dask rebuilds tuple subclasses such as ``quote`` wrongly when they hold dataclasses
    (prefect-dask issue 43), and it serialises the inputs anyway.
    """
    if isinstance(runner, ThreadPoolTaskRunner):
        parameters = {k: quote(v) for k, v in parameters.items()}
    return runner.submit(task, parameters)


def runner_slots(runner: TaskRunner, workers: int | None, default_threads: int = 1) -> int:
    """How many tasks to keep running at once on ``runner``.

    ``workers`` when given; else ``default_threads`` for a thread pool, or the total worker
    threads of the Dask cluster.
    """
    if workers:
        return workers
    if isinstance(runner, ThreadPoolTaskRunner):
        return default_threads
    client = getattr(runner, "client", None)
    nthreads = client.nthreads() if client is not None else {}
    return max(1, sum(nthreads.values()))


def submit_bounded(submit: Callable[[T], PrefectFuture[Any]], items: list[T],
                   limit: int) -> Iterator[tuple[T, Any]]:
    """Submit ``items`` with at most ``limit`` running; yield (item, result) as each finishes.

    A failed task raises here (its exception, as Prefect recorded it), so the caller commits
    only finished work. Results come in completion order, not submission order.
    """
    pending = list(reversed(items))
    running: dict[PrefectFuture[Any], T] = {}
    while pending or running:
        while pending and len(running) < max(1, limit):
            item = pending.pop()
            running[submit(item)] = item
        done = next(as_completed(list(running)))
        yield running.pop(done), done.result()


def batches(items: list, size: int) -> list[list]:
    """Split ``items`` into consecutive batches of at most ``size``."""
    size = max(1, size)
    return [items[i:i + size] for i in range(0, len(items), size)]
