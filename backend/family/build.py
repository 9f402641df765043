"""Build one family member into a folder: train, fine-tune, merge (with its SLERP sweep) or load."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..artifacts import write_json
from ..config import FinetuneMember, LoadMember, MergeMember, TrainMember
from .merge import MergeError, find_crossing, slerp_state_dicts
from .model import load_model, new_model, save_model, shape_of
from .train import evaluate, train_lm

if TYPE_CHECKING:
    from ..pipeline import Pipeline


def build_member(pl: "Pipeline", m, parents: dict[str, Path], out: Path) -> None:
    cfg = pl.cfg
    t0 = time.time()
    tok_dir = pl.tokenizer() / "tokenizer"
    index = [x.name for x in cfg.family].index(m.name)
    seed = m.seed if m.seed is not None else cfg.seed + 1000 * index
    all_domains = list(cfg.corpora.domains)
    info: dict = {"name": m.name, "make": m.make, "parents": m.parents, "seed": seed,
                  "domains": cfg.own_domains(m.name)}

    if isinstance(m, (TrainMember, FinetuneMember)):
        if isinstance(m, TrainMember):
            tok = pl.hf_tokenizer
            model = new_model(cfg.model, len(tok), tok.eos_token_id, seed)
        else:
            model = load_model(parents[m.parents[0]])
        model.to(pl.device)
        lr = m.lr or (cfg.training.lr if isinstance(m, TrainMember) else cfg.training.lr / 3)
        streams = {d: pl.stream(d, "train") for d in m.domains}
        result = train_lm(model, streams, pl.val_windows(m.domains, cfg.training.eval_tokens), m.tokens,
                          cfg.model.context, cfg.training, lr, seed, desc=f"{m.make} {m.name}")
        write_json(out / "train_log.json", result.log)
        info.update(steps=result.steps, tokens=result.tokens, lr=lr)

    elif isinstance(m, MergeMember):
        model, curve = merge_member(pl, m, parents)
        write_json(out / "merge_curve.json", curve)
        info.update(t=curve["t"], t_direction=curve["t_direction"])

    elif isinstance(m, LoadMember):
        model = load_model(m.path, pl.device)
        if model.config.vocab_size != len(pl.hf_tokenizer):
            raise ValueError(
                f"member '{m.name}': model at '{m.path}' has vocab {model.config.vocab_size} but the family "
                f"tokenizer has {len(pl.hf_tokenizer)}; set tokenizer.path to the model's tokenizer")
        for f in Path(m.path).iterdir():  # keep anything else the folder carries (e.g. its README)
            if f.is_file() and not (out / f.name).exists() and f.suffix not in (".safetensors", ".bin"):
                shutil.copy2(f, out / f.name)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(type(m))

    model.to("cpu")
    save_model(model, out, tok_dir)
    info["shape"] = shape_of(model)
    info["eval"] = evaluate(model.to(pl.device), pl.val_windows(all_domains, cfg.training.eval_tokens))
    info["seconds"] = round(time.time() - t0, 2)
    write_json(out / "member.json", info)


def merge_member(pl: "Pipeline", m: MergeMember, parents: dict[str, Path]):
    """Sweep t, find where the parents' own-domain accuracies meet, and return the merged model."""
    cfg = pl.cfg
    p0, p1 = m.parents
    m0, m1 = load_model(parents[p0]), load_model(parents[p1])
    # clone: `work` below is m0, and loading merged weights into it must not change sd0
    sd0 = {k: v.detach().clone() for k, v in m0.state_dict().items()}
    sd1 = {k: v.detach().clone() for k, v in m1.state_dict().items()}
    for k in sd0:
        if k in sd1 and sd0[k].shape != sd1[k].shape:
            raise MergeError(f"member '{m.name}': parents '{p0}' and '{p1}' have different shapes "
                             f"(tensor '{k}': {tuple(sd0[k].shape)} vs {tuple(sd1[k].shape)})")
    dom0, dom1 = cfg.own_domains(p0), cfg.own_domains(p1)
    domains = list(dict.fromkeys(dom0 + dom1))
    windows = pl.val_windows(domains, cfg.merge.eval_tokens)
    work = m0  # reuse one module for every evaluation
    rows: dict[float, dict] = {}
    bar = tqdm(desc=f"slerp sweep {m.name}", unit="eval", dynamic_ncols=True)

    def eval_at(t: float) -> tuple[float, float]:
        work.load_state_dict(slerp_state_dicts(sd0, sd1, t))
        work.to(pl.device)
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
    eval_at(t)  # the chosen point is always a real evaluation
    baselines = {}
    for root in pl.cfg.roots():
        rm = load_model(pl.member(root), pl.device)
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
    }
    work.load_state_dict(slerp_state_dicts(sd0, sd1, t))
    return work, curve
