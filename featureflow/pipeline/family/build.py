"""Build one family member into a folder: train, fine-tune, merge (mergekit, with its t sweep) or load."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.pipeline.artifacts import write_json
from featureflow.config import ExperimentConfig, FinetuneMember, LoadMember, MergeMember, TrainMember
from featureflow.pipeline.family.load import WEIGHTS_POINTER, check_loaded_model, folder_digest
from featureflow import merges
from featureflow.pipeline.family.merge import MergeError, MergeRecipe, find_crossing
from featureflow.pipeline.family.model import load_model, new_model, save_model, shape_of
from featureflow.pipeline.family.train import evaluate, train_lm

@dataclass
class MemberInputs:
    """What building a member reads, resolved by the runner (tests pass their own): the config, the folders of
    members already built, the family tokenizer, the device, and the token streams / validation windows /
    validation documents of each domain (read lazily: a merge never reads a training stream)."""

    cfg: ExperimentConfig
    member: Callable[[str], Path]                   # a built member's folder (parents, roots, a ties base)
    tokenizer_dir: Path                             # the family tokenizer's HF folder
    hf_tokenizer: Callable[[], Any]                 # the family tokenizer, loaded
    device: str
    stream: Callable[[str, str], Any]               # (domain, split) -> token ids
    val_windows: Callable[[list[str], int], dict]   # (domains, tokens) -> validation windows per domain
    documents: Callable[[str, str], list[str]]      # (domain, split) -> documents


def build_member(inp: MemberInputs, m, parents: dict[str, Path], out: Path) -> None:
    cfg = inp.cfg
    t0 = time.time()
    tok_dir = inp.tokenizer_dir
    index = [x.name for x in cfg.family].index(m.name)
    seed = m.seed if m.seed is not None else cfg.seed + 1000 * index
    all_domains = list(cfg.corpora.domains)
    info: dict = {"name": m.name, "make": m.make, "parents": m.parents, "seed": seed,
                  "domains": cfg.own_domains(m.name)}

    if isinstance(m, (TrainMember, FinetuneMember)):
        if isinstance(m, TrainMember):
            tok = inp.hf_tokenizer()
            model = new_model(cfg.model, len(tok), tok.eos_token_id, seed)
        else:
            model = load_model(parents[m.parents[0]])
        model.to(inp.device)
        lr = m.lr or (cfg.training.lr if isinstance(m, TrainMember) else cfg.training.lr / 3)
        streams = {d: inp.stream(d, "train") for d in m.domains}
        result = train_lm(model, streams, inp.val_windows(m.domains, cfg.training.eval_tokens), m.tokens,
                          cfg.model.context, cfg.training, lr, seed, desc=f"{m.make} {m.name}")
        write_json(out / "train_log.json", result.log)
        info.update(steps=result.steps, tokens=result.tokens, lr=lr)

    elif isinstance(m, MergeMember):
        model, curve = merge_member(inp, m, parents, out)  # mergekit writes the weights and config into `out`
        write_json(out / "merge_curve.json", curve)
        info.update(t=curve["t"], t_direction=curve["t_direction"], method=curve["method"])

    elif isinstance(m, LoadMember):
        src = Path(m.path).expanduser().resolve()
        model = load_model(src, inp.device)
        texts = [d for dom in cfg.own_domains(m.name) for d in inp.documents(dom, "val")[:3]]
        check_loaded_model(m.name, src, model, inp.hf_tokenizer(), texts)
        info.update(source=str(src), source_digest=folder_digest(src), copied=m.copy_weights)
        if m.copy_weights:
            for f in src.iterdir():  # keep anything else the folder carries (e.g. its README)
                if f.is_file() and not (out / f.name).exists() and f.suffix not in (".safetensors", ".bin"):
                    shutil.copy2(f, out / f.name)
        else:  # reference the weights in place: load_model and merges follow the pointer
            write_json(out / WEIGHTS_POINTER, {"path": str(src)})
    else:  # pragma: no cover - the config union is closed
        raise TypeError(type(m))

    model.to("cpu")
    if isinstance(m, MergeMember):  # keep mergekit's own output; add the family tokenizer beside it
        for f in Path(tok_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    elif not (isinstance(m, LoadMember) and not m.copy_weights):
        save_model(model, out, tok_dir)
    info["shape"] = shape_of(model)
    info["eval"] = evaluate(model.to(inp.device), inp.val_windows(all_domains, cfg.training.eval_tokens))
    info["seconds"] = round(time.time() - t0, 2)
    write_json(out / "member.json", info)


def merge_base(cfg, m: MergeMember) -> str | None:
    """The member whose task vectors a merge that takes a base (ties) combines: `m.base`, else the parents'
    nearest common ancestor. None for the other methods."""
    if not merges.get(m.method).takes_base:
        return None
    p0, p1 = m.parents
    base = m.base or cfg.common_ancestor(p0, p1)
    if base is None:
        raise MergeError(f"member '{m.name}': method '{m.method}' needs a base model, but parents '{p0}' and '{p1}' "
                         "share no ancestor; set `base:` to a member")
    return base


def merge_recipe(inp: MemberInputs, m: MergeMember, parents: dict[str, Path] | None = None) -> MergeRecipe:
    """The member's merge (method, parent folders, base, density), with t left open.

    A method that takes a base (ties): the base is `m.base`, else the parents' nearest common ancestor."""
    p0, p1 = m.parents
    parents = dict(parents) if parents else {p: inp.member(p) for p in m.parents}
    base_name, base = merge_base(inp.cfg, m), None
    if base_name is not None:
        base = parents[base_name] if base_name in parents else inp.member(base_name)
    try:
        return MergeRecipe(m.method, (parents[p0], parents[p1]), base=base,
                           density=m.density if merges.get(m.method).takes_density else None,
                           labels=(p0, p1) + ((base_name,) if base_name else ()))
    except MergeError as e:
        raise MergeError(f"member '{m.name}': {e}") from None


def merge_member(inp: MemberInputs, m: MergeMember, parents: dict[str, Path], out: Path):
    """Sweep t, find where the parents' own-domain accuracies meet, and write the merge at the chosen t.

    Every evaluated point is a merge by mergekit's pipeline (`run_merge`, what `mergekit-yaml` runs), and
    so is the member folder: `out` receives mergekit's output for the chosen t. Returns (model, curve)."""
    cfg = inp.cfg
    p0, p1 = m.parents
    recipe = merge_recipe(inp, m, parents)
    base_name = merge_base(cfg, m)
    dom0, dom1 = cfg.own_domains(p0), cfg.own_domains(p1)
    domains = list(dict.fromkeys(dom0 + dom1))
    windows = inp.val_windows(domains, cfg.merge.eval_tokens)
    work = load_model(parents[p0])  # one module for every evaluation; each point loads mergekit's tensors
    rows: dict[float, dict] = {}
    bar = tqdm(desc=f"{recipe.label} sweep {m.name}", unit="eval", dynamic_ncols=True)

    def eval_at(t: float) -> tuple[float, float]:
        work.load_state_dict(recipe.state_dict(t))
        work.to(inp.device)
        ev = evaluate(work, windows)
        rows[t] = ev
        a = sum(ev[d]["accuracy"] for d in dom0) / len(dom0)
        b = sum(ev[d]["accuracy"] for d in dom1) / len(dom1)
        bar.update(1)
        bar.set_postfix(t=f"{t:.3f}", acc0=f"{a:.3f}", acc1=f"{b:.3f}")
        return a, b

    crossing = find_crossing(eval_at, cfg.merge.grid_step, cfg.merge.tolerance)
    bar.close()
    t = crossing.t_star if m.t == "auto" else float(m.t)
    config_text = recipe.write(t, out)  # the member folder is mergekit's own output
    model = load_model(out, inp.device)
    rows[t] = evaluate(model, windows)  # the chosen point is always a real evaluation, of the folder itself
    baselines = {}
    for root in inp.cfg.roots():
        rm = load_model(inp.member(root), inp.device)
        baselines[root] = evaluate(rm, windows)
    points = [{"t": tt, "source": next((p["source"] for p in crossing.points if abs(p["t"] - tt) < 1e-12), "chosen"),
               "val": ev} for tt, ev in sorted(rows.items())]
    curve = {
        "parents": [p0, p1], "t_direction": f"t=0 is {p0}, t=1 is {p1}",
        "curve_domains": {p0: dom0, p1: dom1},
        "t": t, "t_mode": "auto" if m.t == "auto" else "fixed",
        "t_star": crossing.t_star, "crossed": crossing.crossed, "t_grid_interpolated": crossing.t_grid_interpolated,
        "grid_step": cfg.merge.grid_step, "tolerance": cfg.merge.tolerance,
        "points": points, "baselines": baselines,
        "method": m.method, "base": base_name, "density": recipe.density,
        "mergekit_config": config_text,
    }
    return model, curve
