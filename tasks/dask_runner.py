"""A ``DaskTaskRunner`` that sends what every task of a flow run shares once, not per task.

prefect-dask's ``submit`` serialises Prefect's whole context for every task - the settings
model above all, which pydantic dumps field by field - and pickles it with the task and a
closure that wraps it; Dask then hashes all of that into the task's key. That costs the flow
process more CPU per file than the file's own work. Here the flow pickles the shared part (the
context without its per-task asset part, and the task itself) once per flow run and sends the
same bytes with every task, under a digest the workers cache it by; the key is the task run's
id, so Dask hashes nothing.

On the worker, prefect-dask rebuilt Prefect's settings, a client and the flow run's context for
every task; here each worker process builds them once per flow run (``_FlowRunOnWorker``).
What a task runs is unchanged: ``run_task_sync`` with the same task run id, parameters,
dependencies and context as prefect-dask passes, so retries, states, logs and events are
Prefect's own. A task with futures among its inputs or ``wait_for`` goes through
prefect-dask's own path.

It follows ``PrefectDaskClient.submit`` (prefect-dask 0.3.7) and ``hydrated_context`` (Prefect
3.9): on an upgrade of either, compare them with this module and run ``tests/test_dask.py``.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any
from uuid import UUID, uuid4

import cloudpickle
from distributed import Future as DaskFuture
from prefect.context import (
    AssetContext,
    EngineContext,
    SettingsContext,
    SyncClientContext,
    TagsContext,
    TaskRunContext,
    hydrated_context,
    serialize_context,
)
from prefect.task_engine import run_task_sync
from prefect.tasks import Task
from prefect.utilities.engine import collect_task_run_inputs_sync
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

Shared = tuple[str, bytes]
"""(digest, pickled ``{"task": ..., "context": ...}``): what every task of a flow run shares."""


class SharedContextDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, with the per-flow-run context serialised once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shared: tuple[tuple[object, ...], Shared] | None = None
        self._shared_lock = threading.Lock()

    def duplicate(self) -> SharedContextDaskTaskRunner:
        return type(self)(
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
        )

    def submit(  # type: ignore[override]
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectDaskFuture[Any]:
        if task.isasync or wait_for or dependencies:
            return super().submit(task, parameters, wait_for, dependencies)
        inputs = {
            name: collect_task_run_inputs_sync(value, future_cls=(DaskFuture, PrefectDaskFuture))
            for name, value in parameters.items()
        }
        if any(inputs.values()):
            return super().submit(task, parameters, wait_for, dependencies)
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        task_run_id = uuid4()
        asset_context = AssetContext.from_task_and_inputs(
            task=task, task_run_id=task_run_id, task_inputs=inputs, copy_to_child_ctx=True
        ).serialize()
        future = self.client.submit(
            run_on_worker,
            key=f"{task.name}-{task_run_id.hex}",
            pure=False,
            shared=self._shared_for(task),
            task_run_id=task_run_id,
            parameters=parameters,
            dependencies=inputs,
            asset_context=asset_context,
        )
        return PrefectDaskFuture(wrapped_future=future, task_run_id=task_run_id)

    def _shared_for(self, task: Task[Any, Any]) -> Shared:
        """The shared part for this task in the current context, pickled on first use.

        Keyed by the context objects themselves (held, so an id is never reused): a flow run
        keeps them for its whole length, and anything that enters a new one - tags, a parent
        task - gets a new shared part.
        """
        current = (task, EngineContext.get(), TaskRunContext.get(), SettingsContext.get())
        tags = frozenset(TagsContext.get().current_tags)  # a new empty context when unset
        with self._shared_lock:
            if self._shared is not None and _same(self._shared[0], (*current, tags)):
                return self._shared[1]
            context = serialize_context()
            context.pop("asset_context", None)
            blob = cloudpickle.dumps({"task": task, "context": context})
            shared = (hashlib.sha256(blob).hexdigest(), blob)
            self._shared = ((*current, tags), shared)
            return shared


def _same(held: tuple[object, ...], current: tuple[object, ...]) -> bool:
    """The same context objects and the same tags (the last)."""
    *objects, tags = current
    return held[-1] == tags and all(a is b for a, b in zip(held, objects, strict=False))


_loaded: OrderedDict[str, _FlowRunOnWorker] = OrderedDict()
_loaded_lock = threading.Lock()
_LOADED_KEPT = 4
"""Flow runs a worker keeps ready: a long-lived worker serves one run after another. A fifth
run at once on one worker closes the oldest one's client."""


class _FlowRunOnWorker:
    """What every task of one flow run shares in one worker process, built once.

    prefect-dask's worker rebuilds it for every task: the settings model (pydantic reads the
    environment and ``.env`` again), a client (a new SSL context, a new connection) and the
    flow run's context. Here they are built once, the settings and the client entered in a
    ``contextvars.Context`` that each task runs in a copy of, as the thread runner's tasks
    share the flow's. Each task still gets a context of its own: a shallow copy of the flow
    run's, with empty per-run records (results linked, assets) since a detached flow run's
    context on a worker serves nobody after the task.
    """

    def __init__(self, blob: bytes) -> None:
        loaded = cloudpickle.loads(blob)
        self.task: Task[Any, Any] = loaded["task"]
        context: dict[str, Any] = loaded["context"]
        settings = context.pop("settings_context", None)
        flow_run = context.pop("flow_run_context", None)
        self.context = context
        self.base = contextvars.Context()
        self.flow_run_context: EngineContext | None = None
        self._client_context: SyncClientContext | None = None
        self.base.run(self._enter, settings, flow_run)

    def _enter(self, settings: dict[str, Any] | None, flow_run: dict[str, Any] | None) -> None:
        with hydrated_context():  # with no context, it only rebuilds Prefect's context models
            pass
        if settings:
            SettingsContext(**settings).__enter__()
        self._client_context = SyncClientContext().__enter__()
        if flow_run:
            self.flow_run_context = EngineContext(
                **flow_run,
                client=self._client_context.client,
                task_runner=flow_run["flow"].task_runner.duplicate().__enter__(),
                detached=True,
            )

    def run(self, **kwargs: Any) -> Any:
        return self.base.copy().run(self._run, **kwargs)

    def _run(self, *, task_run_id: UUID, parameters: dict[str, Any], **rest: Any) -> Any:
        dependencies, asset_context = rest["dependencies"], rest["asset_context"]
        flow_run = (
            self.flow_run_context.model_copy(
                update={"run_results": {}, "task_run_assets": {}, "task_run_dynamic_keys": {}}
            )
            if self.flow_run_context is not None
            else nullcontext()
        )
        with flow_run:
            return run_task_sync(
                task=self.task,
                task_run_id=task_run_id,
                parameters=parameters,
                wait_for=None,
                return_type="state",
                dependencies=dependencies,
                context={**self.context, "asset_context": asset_context},
            )

    def close(self) -> None:
        if self._client_context is not None:
            self.base.run(self._client_context.__exit__, None, None, None)


def _load(shared: Shared) -> _FlowRunOnWorker:
    digest, blob = shared
    with _loaded_lock:
        loaded = _loaded.get(digest)
        if loaded is None:
            loaded = _loaded[digest] = _FlowRunOnWorker(blob)
            while len(_loaded) > _LOADED_KEPT:
                _loaded.popitem(last=False)[1].close()
        else:
            _loaded.move_to_end(digest)
        return loaded


def run_on_worker(
    *,
    shared: Shared,
    task_run_id: UUID,
    parameters: dict[str, Any],
    dependencies: dict[str, set[Any]],
    asset_context: dict[str, Any],
) -> Any:
    """On a Dask worker: run the task as prefect-dask would, and return its final state."""
    return _load(shared).run(
        task_run_id=task_run_id,
        parameters=parameters,
        dependencies=dependencies,
        asset_context=asset_context,
    )
