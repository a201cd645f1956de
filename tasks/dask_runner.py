"""A ``DaskTaskRunner`` that sends what every task of a flow run shares once, not per task.

prefect-dask's ``submit`` serialises Prefect's whole context for every task - the settings
model above all, which pydantic dumps field by field - and pickles it with the task and a
closure that wraps it; Dask then hashes all of that into the task's key. That costs the flow
process more CPU per file than the file's own work. Here the flow pickles the shared part (the
context without its per-task asset part, and the task itself) once per flow run and sends the
same bytes with every task, under a digest the workers cache it by; the key is the task run's
id, so Dask hashes nothing.

What a task runs is unchanged: ``run_task_sync`` with the same task run id, parameters,
dependencies and context as prefect-dask passes, so retries, states, logs and events are
Prefect's own. A task with futures among its inputs or ``wait_for`` goes through
prefect-dask's own path.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4

import cloudpickle
from distributed import Future as DaskFuture
from prefect.context import (
    AssetContext,
    EngineContext,
    SettingsContext,
    TagsContext,
    TaskRunContext,
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


_loaded: OrderedDict[str, dict[str, Any]] = OrderedDict()
_loaded_lock = threading.Lock()
_LOADED_KEPT = 4
"""Flow runs whose shared part a worker keeps: a long-lived worker serves one run after another."""


def _load(shared: Shared) -> dict[str, Any]:
    digest, blob = shared
    with _loaded_lock:
        loaded = _loaded.get(digest)
        if loaded is None:
            loaded = _loaded[digest] = cloudpickle.loads(blob)
            while len(_loaded) > _LOADED_KEPT:
                _loaded.popitem(last=False)
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
    loaded = _load(shared)
    return run_task_sync(
        task=loaded["task"],
        task_run_id=task_run_id,
        parameters=parameters,
        wait_for=None,
        return_type="state",
        dependencies=dependencies,
        context={**loaded["context"], "asset_context": asset_context},
    )
