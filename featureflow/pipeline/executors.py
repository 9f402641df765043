"""Executors: who runs the plan's tasks (`pipeline/plan.py`).

- `local` (the default) is the runner itself: one process pulls every stage in order (`Pipeline.run`).
- `ray` hands every task that is not done to Ray (`pip install 'featureflow[ray]'`): on this machine
  (`ray.init()` starts local workers) or on a cluster (`--address`). A task waits for its inputs' tasks (their
  object refs are its arguments), asks for the resources of its kind (`executor.resources`), and runs in a
  worker as the same stage call the local runner makes, in a pipeline of the same config. Its artefacts are
  written where every worker reaches them (`data_dir`, a shared path on a cluster) by the same atomic
  `build_dir`, so a killed Ray run resumes from what finished, on either executor. When every task is done
  the driver builds the store itself, as a local run does.

Ray does the scheduling; nothing here is a scheduler. A worker refuses to build an artefact its task does not
own (`observing`): a missed input fails loudly instead of two workers building one folder.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from featureflow.pipeline.artifacts import PipelineError, is_done, observing
from featureflow.pipeline.plan import Plan, Task, make_plan

log = logging.getLogger("featureflow")
EXECUTORS = ("local", "ray")
RAY_EXTRA = "--executor ray needs Ray, which is not installed: pip install 'featureflow[ray]'"


class RayMissing(ValueError):
    """`--executor ray` without the `ray` extra (the CLI exits 2 with this one line)."""


def need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise RayMissing(RAY_EXTRA)


# ------------------------------------------------------------------------------------------- worker side
_pipelines: dict = {}  # one pipeline per (config, device) in each worker process, reused by its later tasks


def _pipeline(cfg, device: str, threads: int):
    import torch

    from featureflow.pipeline.runner import Pipeline

    torch.set_num_threads(threads)
    key = (cfg.model_dump_json(), device)
    if key not in _pipelines:
        _pipelines[key] = Pipeline(cfg, device=device)
    return _pipelines[key]


def run_task(cfg, device: str, threads: int, task: Task, tracker=None, *inputs: str) -> str:
    """Run one task's stage calls in this process: what a Ray worker executes (and a test may call directly).
    `inputs`: the ids its input tasks returned (Ray passes them once those tasks have finished). Building any
    artefact the task does not own is an error (the plan missed an input)."""
    from featureflow.pipeline.runner import setup_logging

    setup_logging()
    if tracker is not None:
        tracker.started.remote(task.id)
    own = {Path(p) for p in task.outputs}

    def guard(path: Path) -> None:
        if Path(path) not in own and not is_done(path):
            raise PipelineError(f"task {task.id} would build {path}, which belongs to another task that has not "
                                "run: the plan missed an input of this stage (its `needs` call)")

    try:
        pl = _pipeline(cfg, device, threads)
        t0 = time.time()
        with observing(guard):
            for method, args in task.calls:
                getattr(pl, method)(*args)
        log.info("task %s done in %.1f s", task.id, time.time() - t0)
    finally:
        if tracker is not None:
            tracker.finished.remote(task.id)
    return task.id


# ------------------------------------------------------------------------------------------- driver side
def kinds_checked(plan: Plan, cfg) -> None:
    known = sorted({t.kind for t in plan.tasks})
    unknown = sorted(set(cfg.executor.resources) - set(known))
    if unknown:
        raise ValueError(f"executor.resources: unknown task kind {', '.join(map(repr, unknown))} (this config's "
                         f"kinds: {', '.join(known)})")


def progress_lines(plan: Plan, finished: set[str], running: set[str]) -> list[str]:
    """One line per task kind: done / running / queued (queued: not done, not running)."""
    out = []
    kinds: dict[str, list[Task]] = {}
    for t in plan.order():
        kinds.setdefault(t.kind, []).append(t)
    for kind, ts in kinds.items():
        done = sum(t.done or t.id in finished for t in ts)
        run = sum(t.id in running and t.id not in finished for t in ts)
        out.append(f"{kind:<20} {done:>4}/{len(ts):<4} done, {run:>3} running, {len(ts) - done - run:>4} queued")
    return out


def run_ray(cfg, device: str, stage: str | None = None, address: str | None = None, num_cpus: int | None = None,
            poll: float = 2.0) -> Plan:
    """Run every task of `cfg`'s plan that is not done on Ray, then return the plan (the caller builds the store
    with the local runner, whose stages then find every artefact done). `address`: a running cluster's
    (`ray start --head` prints it); without it a local Ray starts with `num_cpus` CPUs (default: all)."""
    need_ray()
    import ray

    root = Path(cfg.data_dir).resolve()
    cfg = cfg.model_copy(update={"data_dir": str(root)})  # workers may start in another folder
    plan = make_plan(cfg, device, upto=stage)
    kinds_checked(plan, cfg)
    todo = [t for t in plan.order() if not t.done]
    log.info("plan: %d tasks, %d done, %d to run on Ray", len(plan.tasks), len(plan.tasks) - len(todo), len(todo))
    if not todo:
        return plan
    started_here = not ray.is_initialized()
    if started_here:
        kw = {"address": address} if address else {"num_cpus": num_cpus, "object_store_memory": 256 * 2**20}
        ctx = ray.init(logging_level=logging.WARNING, log_to_driver=True, **kw)
        url = getattr(ctx, "dashboard_url", None)
        log.info("ray: %s%s", ray.cluster_resources(), f", dashboard at http://{url}" if url else
                 " (no dashboard: pip install 'ray[default]' for one)")
    try:
        @ray.remote(num_cpus=0)
        class Tracker:
            def __init__(self):
                self.running: set[str] = set()

            def started(self, tid: str) -> None:
                self.running.add(tid)

            def finished(self, tid: str) -> None:
                self.running.discard(tid)

            def now(self) -> list[str]:
                return sorted(self.running)

        tracker = Tracker.remote()
        remote = ray.remote(run_task)
        refs: dict[str, object] = {}
        upstream = plan.upstream()
        for t in todo:
            res = cfg.executor.resources.get(t.kind)
            cpus, gpus = (res.num_cpus, res.num_gpus) if res else (1, 0)
            dev = "cuda" if gpus else device
            # threads per task: its CPUs (more would make the workers' threads fight over the cores), or
            # `executor.threads`; torch's and the BLAS libraries' alike (Ray sets only OMP_NUM_THREADS)
            threads = cfg.executor.threads or max(1, int(cpus))
            env = {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            # every upstream task still to run, not only the direct inputs: an input done on disk whose own input
            # was removed must not let this task start before that one is rebuilt
            deps = [refs[i] for i in sorted(upstream[t.id]) if i in refs]
            # an input's ref as an argument: Ray starts the task once that input's task has finished
            refs[t.id] = remote.options(num_cpus=cpus, num_gpus=gpus, name=t.id, max_retries=0,
                                        runtime_env={"env_vars": env}).remote(
                cfg, dev, threads, t, tracker, *deps)
        by_ref = {r: tid for tid, r in refs.items()}
        pending, finished, last = list(refs.values()), set(), set()
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll)
            for r in ready:
                try:
                    finished.add(ray.get(r))
                except ray.exceptions.RayTaskError as e:
                    for p in pending:
                        ray.cancel(p, force=True)
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    raise PipelineError(f"task {by_ref[r]} failed on Ray: {type(cause).__name__}: {cause}") from None
            lines = progress_lines(plan, finished, set(ray.get(tracker.now.remote())))
            for line in lines:  # a kind's line when its counts change
                if line not in last:
                    log.info("progress %s", line)
            last = set(lines)
    finally:
        if started_here:
            ray.shutdown()
    for t in plan.tasks:
        t.done = all(is_done(p) for p in t.outputs)
    return plan  # the store comes next, built by the caller's local runner


__all__ = ["EXECUTORS", "RayMissing", "need_ray", "run_ray", "run_task"]
