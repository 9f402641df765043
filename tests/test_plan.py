"""The task plan (`featureflow plan`, pipeline/plan.py) against what a real run did: the tiny run's artefacts on
disk, and the trace of every stage call it made (build functions included, which a plan never runs)."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from featureflow.cli import main
from featureflow.pipeline.plan import make_plan, task_id, tasks_of


def upstream(plan) -> dict[str, set[str]]:
    """Every task's upstream tasks, walked here from the inputs (the oracle of `Plan.upstream`)."""
    by = plan.by_id()
    out: dict[str, set[str]] = {}

    def walk(tid: str) -> set[str]:
        if tid not in out:
            assert all(i in by for i in by[tid].inputs), tid
            out[tid] = set()
            for i in by[tid].inputs:
                out[tid] |= {i} | walk(i)
        return out[tid]

    for t in plan.tasks:
        walk(t.id)
    assert out == plan.upstream()
    return out


def test_plan_tasks_are_the_artefacts_the_run_wrote(tiny_pipeline):
    before = tiny_pipeline.plan_before
    assert before.tasks and not any(t.done for t in before.tasks)  # planned on an empty folder
    planned = [p for t in before.tasks for p in t.outputs]
    assert len(planned) == len(set(planned))  # each artefact has one task
    # the folders the run left on disk (listed, not planned), and the ones the trace saw built
    assert set(planned) == tiny_pipeline.written
    assert set(planned) == {p for t in tasks_of(tiny_pipeline.trace) for p in t.outputs}
    # an SAE task owns every replica of its member (they train in one pass)
    sae = before.by_id()["sae(babypython)"]
    assert len(sae.outputs) == len(tiny_pipeline.replicas("babypython")) == 3


def test_every_input_a_build_read_is_upstream_in_the_plan(tiny_pipeline):
    """The trace holds the calls the build functions made while they ran: each must reach the task through the
    plan's inputs, or an executor could start a task before what it reads exists."""
    plan, trace = tiny_pipeline.plan_before, tiny_pipeline.trace
    up = upstream(plan)
    checked = 0
    memo: dict = {}
    for call, node in trace.nodes.items():
        if not node.own:
            continue
        tid = task_id(call)
        read = {task_id(c) for c in trace.reads(call, memo)} - {tid}
        assert read <= up[tid], f"{tid} read {sorted(read - up[tid])}, which the plan does not put before it"
        checked += bool(read)
    assert checked > 40
    # a known read that happens only inside a build function: activation(lua) loads lua's model and SAE
    assert {"member(lua)", "sae(lua)", "sample()"} <= up["activation(lua)"]


def test_plan_after_the_run_is_done_and_its_critical_path_is_the_longest_chain(tiny_pipeline):
    plan = make_plan(tiny_pipeline.cfg)
    assert [t.id for t in plan.order()] == [t.id for t in tiny_pipeline.plan_before.order()]
    assert all(t.done and t.seconds is not None for t in plan.tasks)
    path, secs = plan.critical_path()
    # networkx's longest path over the same graph, task seconds moved onto the edges into each task
    g = nx.DiGraph()
    g.add_node("start")
    for t in plan.tasks:
        g.add_edge("start", t.id, w=t.seconds)
        for i in t.inputs:
            g.add_edge(i, t.id, w=t.seconds)
    assert secs == pytest.approx(nx.dag_longest_path_length(g, weight="w"), abs=1e-6)
    assert [t.id for t in path][0] == "corpora()" and all(a.id in b.inputs for a, b in zip(path, path[1:]))
    total = sum(t.seconds for t in plan.tasks)
    assert max(t.seconds for t in plan.tasks) <= secs <= total


def test_plan_cli_prints_the_graph_and_json(tiny_pipeline, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_pipeline.cfg.model_dump(mode="json"), sort_keys=False))
    assert main(["plan", "--config", str(cfg), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert {t["id"] for t in js["tasks"]} == {t.id for t in tiny_pipeline.plan_before.tasks}
    assert all(t["done"] for t in js["tasks"]) and js["critical_path"][0] == "corpora()"
    assert main(["plan", "--config", str(cfg), "--stage", "saes"]) == 0
    text = capsys.readouterr().out
    assert "sae(luastories)" in text and "match(" not in text and "critical path: " in text
    assert main(["plan", "--config", str(cfg), "--stage", "nope"]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err
