"""Features along a merge's interpolation path (issue 32): does a parent's feature survive into the merged model, and
over which t?

A merge member is a path: mergekit's merge of its two parents at t, from parents[0] (t = 0) to parents[1] (t = 1).
At each t of the sweep (`survival_ts`) the merged model's hook activations on the first tokens of the shared sample
are encoded by each parent's SAE (replica 0), and each parent feature's **survival r** at t is its transfer r
(`featureflow/evidence/transfer.py`'s `column_pearson`): the Pearson r between its activations from its SAE on the
parent and on the merged model, over those tokens. At the parent's own end of the path the merge is the parent
itself, so every feature that fires there has r = 1. The store keeps every r (`merge_survival`); the explorer reads
the share of a parent's features above the page's threshold at each t.

The curves' lower anchor is the same r with the parent's random-weights control (its root's untrained copy) in place
of the merged model, over the same tokens (`merge_survival_control`): the share of a parent's features that
"survive" into a model that learnt nothing, token identity alone."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def survival_ts(step: float, chosen: float | None) -> list[float]:
    """The sweep's t: every multiple of `step` in [0, 1] (1 included) and the chosen t, sorted."""
    n = int(round(1 / step))
    ts = {round(min(1.0, i * step), 10) for i in range(n + 1)} | {0.0, 1.0}
    if chosen is not None:
        ts.add(float(chosen))
    return sorted(ts)


@torch.no_grad()
def survival_sweep(model, state_dict_at, saes: dict, own: dict, tokens: np.ndarray, hook: str, ts: list[float],
                   batch_size: int = 64, desc: str = "survival") -> dict[str, np.ndarray]:
    """{parent: (len(ts), features) float32 survival r}: at each t, `model` loaded with `state_dict_at(t)` and run
    once over `tokens` (windows), its hook activations encoded by every parent's SAE (`saes`), each column's
    Pearson r with the same SAE's codes on the parent itself (`own`, rows aligned with the windows' tokens); NaN
    where a feature never varies on either side."""
    from featureflow.evidence.transfer import column_pearson
    from featureflow.pipeline.features import sparse_codes
    from featureflow.pipeline.sae import activations
    from featureflow.progress import progress as tqdm

    device = next(model.parameters()).device
    out = {p: np.full((len(ts), s.d_sae), np.nan, dtype=np.float32) for p, s in saes.items()}
    for i, t in enumerate(tqdm(ts, desc=desc, unit="t", dynamic_ncols=True)):
        model.load_state_dict(state_dict_at(t))
        parts: dict[str, list] = {p: [] for p in saes}
        for b in range(0, len(tokens), batch_size):
            x = activations(model, torch.from_numpy(tokens[b:b + batch_size].astype(np.int64)).to(device), hook)
            for p, s in saes.items():
                parts[p].append(sparse_codes(s, [x]))
        for p in saes:
            out[p][i] = column_pearson(own[p], sp.vstack(parts[p], format="csc"))
    return out


def survival_run(name: str, recipe, model_dir, saes: dict, own: dict, tokens: np.ndarray, hook: str,
                 ts: list[float], device: str, out, controls: dict | None = None) -> None:
    """Write survival.npz (`ts`, and `r/<parent>` per parent) for one merge member; with `controls` ({parent:
    (control name, the parent's SAE codes on the control, rows aligned with `own`)}), also `control/<parent>`,
    each feature's survival r into the control, and `control_names` ('<parent>=<control>' per parent)."""
    from featureflow.evidence.transfer import column_pearson
    from featureflow.pipeline.family.model import load_model

    model = load_model(model_dir, device).eval()
    r = survival_sweep(model, recipe.state_dict, {p: s.to(device).eval() for p, s in saes.items()}, own, tokens,
                       hook, ts, desc=f"survival {name}")
    controls = controls or {}
    anchor = {f"control/{p}": column_pearson(own[p], codes).astype(np.float32) for p, (_, codes) in controls.items()}
    np.savez(out / "survival.npz", ts=np.asarray(ts), **{f"r/{p}": v for p, v in r.items()}, **anchor,
             control_names=np.asarray([f"{p}={c}" for p, (c, _) in controls.items()], dtype=str))
