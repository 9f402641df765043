"""The stage graph as a plan of tasks: what `featureflow plan` prints and what an executor runs.

The runner (`runner.py`) is a pull graph: each stage method asks for its inputs, then builds its artefact with
`build_dir`. Walking it with building switched off (`artifacts.planning`) while a `Recorder` listens to every
stage call and every `build_dir` gives the plan:

- a **task** is one stage call that builds artefacts itself (`member('child')`, `match('parent', 'child',
  'pearson')`), except a member's SAE replicas, which train together in one pass and so form one task
  (`sae('child')`);
- its **inputs** are the tasks whose artefacts it asked for (directly, or through stage calls that build nothing
  themselves);
- a task is **done** when every artefact it owns has its `DONE` marker.

Stages ask for what their build functions read *before* calling `build_dir` (`Pipeline.needs`), so the plan's
inputs are complete; `tests/test_plan.py` checks them against the calls a real run makes. An executor (`local`
or `ray`, `pipeline/executors.py`) runs the tasks that are not done in an order the inputs allow; keys, atomic
writes and resume are the `build_dir` ones, so a run stopped under one executor finishes under the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from featureflow.pipeline.artifacts import DONE, is_done, observing, planning
from featureflow.pipeline.stages import STAGES

Call = tuple[str, tuple]  # (stage method, its arguments): one memoised stage call
GROUPED = {"sae"}  # stage methods whose calls for one member form one task (the replicas train together)


@dataclass
class Node:
    """One stage call seen while walking the graph: the artefacts it builds itself and the calls it made."""
    call: Call
    own: list[Path] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


@dataclass
class Task:
    id: str                 # e.g. "member(child)", "sae(child)", "match(parent, child, pearson)"
    kind: str               # the stage method: every task of one kind asks for the same resources
    calls: list[Call]       # what a worker calls, in order, to build it
    outputs: list[Path]     # the artefact folders it owns
    inputs: list[str] = field(default_factory=list)  # ids of the tasks whose artefacts it reads
    done: bool = False
    seconds: float | None = None  # its build time from the DONE markers (when done)

    def as_json(self, root: Path) -> dict:
        return {"id": self.id, "kind": self.kind, "inputs": self.inputs, "done": self.done, "seconds": self.seconds,
                "outputs": [str(Path(p).relative_to(root)) for p in self.outputs]}


class Recorder:
    """Listens to a pipeline's stage calls (`_stage` reports enter / exit) and to `build_dir`: which call owns which
    artefact folder, and which calls each call made. The same recorder traces a real run (build functions run, so
    what they read is seen too) or a planning walk (nothing is built)."""

    def __init__(self):
        self.nodes: dict[Call, Node] = {}
        self.stack: list[Call] = []
        self.owner: dict[Path, Call] = {}

    def enter(self, call: Call) -> None:
        if self.stack:
            calls = self.nodes[self.stack[-1]].calls
            if call not in calls:
                calls.append(call)
        self.nodes.setdefault(call, Node(call))
        self.stack.append(call)

    def exit(self) -> None:
        self.stack.pop()

    def built(self, path: Path) -> None:
        if not self.stack:
            return
        top, path = self.stack[-1], Path(path)
        if path not in self.owner:  # `sae(n)` and `sae(n, 0)` name one folder: the first call owns it
            self.owner[path] = top
            self.nodes[top].own.append(path)
        elif self.owner[path] != top and self.owner[path] not in self.nodes[top].calls:
            self.nodes[top].calls.append(self.owner[path])

    def reads(self, call: Call, _memo: dict | None = None) -> set[Call]:
        """The artefact-owning calls `call` reached: its direct children that own artefacts, and through the ones
        that own none (aggregators like `saes()`), theirs."""
        memo = {} if _memo is None else _memo
        if call in memo:
            return memo[call]
        out: set[Call] = set()
        memo[call] = out
        for c in self.nodes[call].calls:
            out |= {c} if self.nodes[c].own else self.reads(c, memo)
        return out


def task_id(call: Call) -> str:
    method, args = call
    if method in GROUPED:
        args = args[:1]
    flat = []
    for a in args:
        flat += list(a) if isinstance(a, tuple) else [a]
    return f"{method}({', '.join(map(str, flat))})"


def _seconds(folder: Path) -> float | None:
    try:
        return float(json.loads((Path(folder) / DONE).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def tasks_of(rec: Recorder) -> list[Task]:
    """The recorder's artefact-owning calls as tasks, in the order they were first seen (an order the inputs
    allow: a stage asks for its inputs before it builds)."""
    tasks: dict[str, Task] = {}
    memo: dict = {}
    for call, node in rec.nodes.items():
        if not node.own:
            continue
        t = tasks.setdefault(task_id(call), Task(task_id(call), call[0], [], []))
        t.calls.append(call)
        t.outputs += [p for p in node.own if p not in t.outputs]
    for t in tasks.values():
        ins: dict[str, None] = {}
        for call in t.calls:
            for c in sorted(rec.reads(call, memo), key=str):
                if task_id(c) != t.id:
                    ins[task_id(c)] = None
        t.inputs = list(ins)
        t.done = all(is_done(p) for p in t.outputs)
        secs = [_seconds(p) for p in t.outputs] if t.done else [None]
        t.seconds = round(sum(secs), 3) if None not in secs else None
    reduce_inputs(list(tasks.values()))
    return list(tasks.values())


def upstream_of(tasks: list[Task]) -> dict[str, set[str]]:
    """Each task's every upstream task (its inputs, theirs, and so on); inputs that are not tasks are ignored."""
    by = {t.id: t for t in tasks}
    out: dict[str, set[str]] = {}

    def up(tid: str) -> set[str]:
        if tid not in out:
            out[tid] = set()
            for i in by[tid].inputs:
                if i in by:
                    out[tid] |= {i} | up(i)
        return out[tid]

    for t in tasks:
        up(t.id)
    return out


def reduce_inputs(tasks: list[Task]) -> None:
    """Keep of each task's inputs only those no other input already reads (a transitive reduction): `match` reads
    `activation`, which reads `sae`, so `sae` is not listed as an input of `match` as well. The order the
    inputs allow, and the critical path, are unchanged."""
    upstream = upstream_of(tasks)
    for t in tasks:
        below = set().union(*(upstream[i] for i in t.inputs if i in upstream))
        t.inputs = [i for i in t.inputs if i not in below]


@dataclass
class Plan:
    root: Path
    tasks: list[Task]

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}

    def order(self) -> list[Task]:
        """The tasks in an order where every task comes after its inputs (Kahn's algorithm, ties by first seen)."""
        index = {t.id: i for i, t in enumerate(self.tasks)}
        by = self.by_id()
        waiting = {t.id: {i for i in t.inputs if i in by} for t in self.tasks}
        users: dict[str, list[str]] = {t.id: [] for t in self.tasks}
        for t in self.tasks:
            for i in waiting[t.id]:
                users[i].append(t.id)
        ready = sorted((i for i, w in waiting.items() if not w), key=index.get)
        out = []
        while ready:
            tid = ready.pop(0)
            out.append(by[tid])
            for u in users[tid]:
                waiting[u].discard(tid)
                if not waiting[u]:
                    ready.append(u)
            ready.sort(key=index.get)
        if len(out) != len(self.tasks):
            stuck = sorted(set(by) - {t.id for t in out})
            raise RuntimeError(f"the task graph has a cycle through {', '.join(stuck[:5])}")
        return out

    def upstream(self) -> dict[str, set[str]]:
        """Each task's every upstream task (its inputs, theirs, and so on)."""
        return upstream_of(self.tasks)

    def critical_path(self) -> tuple[list[Task], float | None]:
        """The chain of tasks that bounds wall time from below with unlimited workers: the longest path by build
        seconds when every task is done (from its DONE markers), else by task count. Returns (path, seconds or
        None)."""
        timed = all(t.seconds is not None for t in self.tasks)
        weight = {t.id: (t.seconds if timed else 1.0) for t in self.tasks}
        best: dict[str, tuple[float, str | None]] = {}
        for t in self.order():
            prev = max(((best[i][0], i) for i in t.inputs if i in best), default=(0.0, None))
            best[t.id] = (prev[0] + weight[t.id], prev[1])
        if not best:
            return [], 0.0
        end = max(best, key=lambda i: best[i][0])
        path, cur = [], end
        by = self.by_id()
        while cur is not None:
            path.append(by[cur])
            cur = best[cur][1]
        return path[::-1], (round(best[end][0], 3) if timed else None)

    def as_json(self) -> dict:
        path, secs = self.critical_path()
        return {"root": str(self.root), "tasks": [t.as_json(self.root) for t in self.order()],
                "critical_path": [t.id for t in path], "critical_path_seconds": secs,
                "total_seconds": (round(sum(t.seconds for t in self.tasks), 3)
                                  if all(t.seconds is not None for t in self.tasks) else None)}

    def format(self) -> str:
        """The plan as text: per kind its counts, then each task (done or not, seconds, inputs), then the critical
        path."""
        order = self.order()
        lines = [f"plan of {self.root}: {len(order)} tasks, {sum(t.done for t in order)} done, "
                 f"{sum(not t.done for t in order)} to run (then the store, built from every artefact)"]
        kinds: dict[str, list[Task]] = {}
        for t in order:
            kinds.setdefault(t.kind, []).append(t)
        lines.append(f"  {'kind':<20} {'tasks':>5} {'done':>5}")
        lines += [f"  {k:<20} {len(ts):>5} {sum(t.done for t in ts):>5}" for k, ts in kinds.items()]
        lines.append("")
        lines.append(f"  {'task':<44} {'done':<4} {'seconds':>8}  outputs / inputs")
        for t in order:
            secs = f"{t.seconds:8.1f}" if t.seconds is not None else f"{'-':>8}"
            outs = ", ".join(Path(p).name for p in t.outputs)
            lines.append(f"  {t.id:<44} {'yes' if t.done else 'no':<4} {secs}  {outs}")
            if t.inputs:
                lines.append(f"  {'':<44} {'':<4} {'':>8}  <- {', '.join(t.inputs)}")
        path, secs = self.critical_path()
        total = self.as_json()["total_seconds"]
        lines.append("")
        if secs is not None:
            lines.append(f"critical path: {len(path)} tasks, {secs:.1f} s of {total:.1f} s of task time (the lower "
                         "bound of wall time with unlimited workers):")
        else:
            lines.append(f"critical path: {len(path)} tasks (by count: not every task has run, so no seconds yet):")
        lines.append("  " + " -> ".join(t.id for t in path))
        return "\n".join(lines)


def record(pipeline, build: bool = False, upto: str | None = None) -> Recorder:
    """Walk `pipeline`'s stages (all but the store; with `upto`, up to and including that one) with a recorder
    listening; with `build` the stages run for real (a trace of what a run reads), else nothing is built (a
    plan)."""
    if upto is not None and upto not in STAGES:
        raise ValueError(f"unknown stage '{upto}' (stages: {', '.join(STAGES)})")
    stages = STAGES[:-1] if upto in (None, STAGES[-1]) else STAGES[: STAGES.index(upto) + 1]
    rec = Recorder()
    pipeline.recorder = rec
    try:
        with observing(rec.built):
            if build:
                for s in stages:
                    getattr(pipeline, s)()
            else:
                with planning():
                    for s in stages:
                        getattr(pipeline, s)()
    finally:
        pipeline.recorder = None
    return rec


def make_plan(cfg, device: str = "cpu", upto: str | None = None) -> Plan:
    """The plan of `cfg`'s run (up to stage `upto`) as it stands on disk (a fresh pipeline walks the graph;
    nothing is built)."""
    from featureflow.pipeline.runner import Pipeline

    pl = Pipeline(cfg, device=device)
    return Plan(pl.root, tasks_of(record(pl, upto=upto)))


__all__ = ["Plan", "Recorder", "Task", "make_plan", "record", "task_id", "tasks_of"]
