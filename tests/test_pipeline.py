import os
from pathlib import Path

import numpy as np
import pytest
import torch

from featureflow.pipeline.artifacts import DONE, build_dir
from featureflow.config import parse_config
from featureflow.pipeline.runner import Pipeline
from conftest import tiny_dict


def test_every_stage_left_a_finished_artefact(tiny_pipeline):
    pl = tiny_pipeline
    for path in [pl.corpora(), pl.tokenizer(), pl.sample(), *pl.models().values(), *pl.saes().values(),
                 *pl.activations().values(), *pl.matching().values()]:
        assert (path / DONE).exists(), path
    assert pl.cfg.store_path().exists()
    assert not list(pl.root.rglob(".*.tmp-*"))


def test_fine_tunes_beat_the_root_on_their_own_domain(tiny_pipeline):
    from featureflow.pipeline.artifacts import read_json

    ev = {n: read_json(p / "member.json")["eval"] for n, p in tiny_pipeline.models().items()}
    assert ev["lua"]["lua"]["accuracy"] > ev["babypython"]["lua"]["accuracy"]
    assert ev["tinystories"]["tinystories"]["accuracy"] > ev["babypython"]["tinystories"]["accuracy"]


def test_merge_sweep_ends_are_its_parents_and_t_is_where_the_recorded_accuracies_cross(tiny_pipeline):
    """The merge's recorded sweep against the artefacts: its ends are its parents (the point at t=0 scores
    as the first parent's folder did on the same validation windows, t=1 as the second's), and the chosen t
    is where the recorded own-domain accuracies cross: the linear interpolation between the two adjacent
    evaluated points whose difference changes sign around it (the grid point of smallest difference when they
    never cross)."""
    from featureflow.pipeline.artifacts import read_json

    cfg = tiny_pipeline.cfg
    merges = [m for m in cfg.family if m.make == "merge"]
    assert merges
    for m in merges:
        curve = read_json(tiny_pipeline.member(m.name) / "merge_curve.json")
        p0, p1 = m.parents
        points = sorted((p for p in curve["points"] if p["source"] != "chosen"), key=lambda p: p["t"])
        if cfg.merge.eval_tokens == cfg.training.eval_tokens:  # the same windows as each member's own eval
            for t, parent in ((0.0, p0), (1.0, p1)):
                end = next(p for p in points if p["t"] == t)
                own = read_json(tiny_pipeline.member(parent) / "member.json")["eval"]
                for d in cfg.own_domains(parent):
                    assert end["val"][d]["accuracy"] == pytest.approx(own[d]["accuracy"], abs=1e-9), (m.name, t, d)

        def diff(p):
            acc = [np.mean([p["val"][d]["accuracy"] for d in cfg.own_domains(q)]) for q in (p0, p1)]
            return acc[0] - acc[1]

        t_star, ds = curve["t_star"], [diff(p) for p in points]
        if curve["crossed"]:
            at_zero = [p["t"] for p, dd in zip(points, ds) if dd == 0]  # an evaluation where they are equal
            brackets = [a["t"] + (b["t"] - a["t"]) * da / (da - db) for a, b, da, db in
                        zip(points, points[1:], ds, ds[1:]) if da * db < 0 and a["t"] <= t_star <= b["t"]]
            assert t_star in at_zero or (brackets and t_star == pytest.approx(brackets[0], abs=1e-9)), (m.name, t_star)
        else:
            grid = [(abs(dd), p["t"]) for p, dd in zip(points, ds) if p["source"] == "grid"]
            assert t_star == min(grid)[1] and (all(dd > 0 for dd in ds) or all(dd < 0 for dd in ds))
        assert curve["t"] == (t_star if m.t == "auto" else float(m.t))


def test_checkpoint_round_trip_same_logits(tiny_pipeline, tmp_path):
    from featureflow.pipeline.family.model import load_model, save_model

    m = load_model(tiny_pipeline.member("lua"))
    save_model(m, tmp_path, tiny_pipeline.tokenizer() / "tokenizer")
    m2 = load_model(tmp_path)
    x = torch.from_numpy(tiny_pipeline.sample_tokens()[:2].astype(np.int64))
    with torch.no_grad():
        assert torch.equal(m(x).logits, m2(x).logits)


def test_hook_post_equals_gated_mlp_and_transformer_lens(tiny_pipeline):
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.sae import activations

    folder = tiny_pipeline.member("babypython")
    AutoTokenizer.from_pretrained(str(folder))  # the tokenizer travels with the model
    model = load_model(folder)
    x = torch.from_numpy(tiny_pipeline.sample_tokens()[:2].astype(np.int64))
    store = {}
    mlp = model.model.layers[0].mlp
    h = mlp.register_forward_pre_hook(lambda mod, args: store.__setitem__("mlp_in", args[0]))
    with torch.no_grad():
        model(x)
        h.remove()
        direct = mlp.act_fn(mlp.gate_proj(store["mlp_in"])) * mlp.up_proj(store["mlp_in"])
        ours = activations(model, x, "blocks.0.mlp.hook_post")
        bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
        _, cache = bridge.run_with_cache(x)
    tl = cache["blocks.0.mlp.hook_post"]
    assert tl.shape == (2, x.shape[1], model.config.intermediate_size)
    torch.testing.assert_close(direct, ours, atol=1e-6, rtol=0)
    torch.testing.assert_close(tl, ours, atol=1e-5, rtol=0)


def test_rerun_does_no_work(tiny_pipeline):
    pl2 = Pipeline(tiny_pipeline.cfg, device="cpu")
    stamps = {p: os.stat(p).st_mtime_ns for p in tiny_pipeline.root.glob("*/*")}
    pl2.run()
    assert {p: os.stat(p).st_mtime_ns for p in tiny_pipeline.root.glob("*/*")} == stamps


@pytest.mark.slow  # runs the tiny pipeline's first stages itself
def test_killed_stage_resumes_where_it_stopped(tmp_path, monkeypatch):
    from featureflow.pipeline.family import build

    cfg = parse_config(tiny_dict(tmp_path))
    real = build.train_lm
    calls = []

    def dying(*a, **k):
        calls.append(k.get("desc"))
        if len(calls) == 2:  # die while fine-tuning the second member
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(build, "train_lm", dying)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(cfg, device="cpu").run("models")
    models = tmp_path / "tiny" / "models"
    done = sorted(p.name.split("-")[0] for p in models.iterdir() if (p / DONE).exists())
    assert done == ["babypython"] and not list(models.glob(".*tmp*"))
    root_dir = next(models.glob("babypython-*"))
    stamp = os.stat(root_dir / "model.safetensors").st_mtime_ns

    monkeypatch.setattr(build, "train_lm", real)
    seen = []
    monkeypatch.setattr(build, "train_lm", lambda *a, **k: seen.append(k["desc"]) or real(*a, **k))
    Pipeline(cfg, device="cpu").run("models")
    assert seen == ["finetune lua", "finetune tinystories"]  # the root was not retrained
    assert os.stat(root_dir / "model.safetensors").st_mtime_ns == stamp


def test_changing_one_section_reruns_only_what_depends_on_it(tiny_pipeline):
    d = tiny_pipeline.cfg.model_dump()
    d["matching"]["top_k"] = 2
    pl = Pipeline(parse_config(d), device="cpu")
    assert pl.member("lua") == tiny_pipeline.member("lua")
    assert pl.sae("lua") == tiny_pipeline.sae("lua")
    assert pl.match("lua", "luastories") != tiny_pipeline.match("lua", "luastories")


def test_load_member_joins_without_training(tiny_pipeline, tmp_path):
    from featureflow.pipeline.family.model import load_model, save_model

    ext = tmp_path / "ext"
    save_model(load_model(tiny_pipeline.member("lua")), ext, tiny_pipeline.tokenizer() / "tokenizer")
    d = tiny_pipeline.cfg.model_dump()
    d["family"].append({"name": "external", "make": "load", "path": str(ext), "parents": ["babypython"],
                        "domains": ["lua"]})
    pl = Pipeline(parse_config(d), device="cpu")
    folder = pl.member("external")
    assert (folder / "member.json").exists() and not (folder / "train_log.json").exists()
    x = torch.from_numpy(tiny_pipeline.sample_tokens()[:1].astype(np.int64))
    with torch.no_grad():
        assert torch.equal(load_model(folder)(x).logits, load_model(ext)(x).logits)


def test_unknown_stage_is_a_clear_error(tiny_pipeline):
    with pytest.raises(ValueError, match="unknown stage 'modles'"):
        tiny_pipeline.run("modles")


def test_build_dir_is_atomic(tmp_path):
    target = tmp_path / "a"

    def boom(tmp: Path):
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_dir(target, boom)
    assert not target.exists() and not list(tmp_path.iterdir())
    build_dir(target, lambda tmp: (tmp / "f").write_text("ok"))
    assert (target / "f").read_text() == "ok" and (target / DONE).exists()
