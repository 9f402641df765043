"""A planted family: how often are featureflow's persist / emerge / disappear calls right?

On real models nobody knows which features persist; on a synthetic family the truth is planted.

1. **The family.** A root of N true features in d dimensions (N > d: superposition), its directions from
   SAELens's `FeatureDictionary` (with its orthogonalising initialiser) and its firing events from SAELens's
   `ActivationGenerator` (log-uniform firing probabilities, folded-normal magnitudes). A member is a list of
   rows, each a firing source (an event index of the generator and a gate: all of its events, or the half
   of them where a fixed per-event coin is low / high), a unit direction and a magnitude scale; its
   activations are x = Σ_rows scale · gate · event · direction. Children come from their parent by known
   edits (`PlantedChild`): unchanged, drifted (direction rotated by a known angle, magnitude rescaled),
   removed, split (two rows, each on half of the events, directions rotated apart) and added (new event
   sources); a merge interpolates two members' dictionaries (`PlantedMerge`, SLERP of directions). Every
   member is computed from the same events at the same positions, so a feature two members share fires at
   the same positions in both, as every LM of a family sees one shared token sample.
2. **The same machinery.** Each member's SAE and its seed replicas are trained by `sae.train_sae_on` (the
   loop the LM pipeline's `train_sae` runs) with seeds from `runner.sae_seed`, encoded on the shared sample
   by `features.sparse_codes`, matched by `matching.match_pair` for every mode (best match and one-to-one),
   replica 0 against every other replica for the floor, and the fates are called by the store's own SQL
   (`store/flows.py`: `edge_fate_sets`, `flows`, `floors`) over an in-memory store filled by `store/writers.py`'s
   `insert_edge_matches` / `insert_floor`.
3. **Truth and scorecard.** Each SAE latent's truth is the member row Hungarian assigns it on decoder vs
   dictionary |cos| (`scipy.optimize.linear_sum_assignment`; MCC reported, as `sae_lens.synthetic`'s
   `mean_correlation_coefficient` computes it), or for a latent Hungarian leaves over (a wider SAE) its best
   row by |cos|, when that |cos| reaches `truth_min_cos`; else 'unresolved'.
   Per mode and fate: precision, recall and F1 for all alive latents and for reproducible ones (replica 0's
   match above the threshold in every other replica, `flows.STABILITY`); recall of persisting features by drift angle; split detection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from featureflow.config import MatchingConfig, PlantedConfig, SAEConfig, parse_mode
from featureflow.modes import RULES, SIMILARITIES

log = logging.getLogger("featureflow")

ALL, LO, HI = 0, 1, 2          # row gates: every firing event, the events whose coin is < 1/2, >= 1/2
PARENT_FATES = ("persisting", "disappearing")
CHILD_FATES = ("inherited", "emerging")
FATES = PARENT_FATES + CHILD_FATES
EDITS = ("unchanged", "drifted", "removed", "split", "added")
NULL = "~null"                  # suffix of the null child's name in the in-memory store
RESOLVED_COS = 0.9              # a planted split's half is learnt by a child latent within this |cos|
PLANTED_VERSION = 2             # bump when the scorecard changes for the same config

# the SAE recipe of a standalone planted config: sized for the planted shape (activations of norm ~ sqrt(L0))
DEFAULT_SAE = SAEConfig(architecture="topk", k=4, expansion=4, lr=3e-3, block_tokens=1, blocks_per_batch=256,
                        tokens=256_000, lr_decay_fraction=0.2)


# ------------------------------------------------------------------------------------- the family
@dataclass
class Member:
    """One planted member: rows of (event source, gate, unit direction, magnitude scale) and what each row
    is relative to the member's parent (`edit`, `angle` in degrees for drifted rows)."""

    name: str
    parents: list[str]
    src: np.ndarray
    gate: np.ndarray
    dirs: np.ndarray
    scale: np.ndarray
    edit: np.ndarray = field(default=None)
    angle: np.ndarray = field(default=None)

    @property
    def keys(self) -> list[tuple[int, int]]:
        return list(zip(self.src.tolist(), self.gate.tolist()))

    def map(self, M: int) -> np.ndarray:
        """(3M, d) float32: row gate·M + source holds scale · direction, so that activations are
        `positions @ map` for positions in the (n, 3M) layout of `Family.positions`."""
        W = np.zeros((3 * M, self.dirs.shape[1]), dtype=np.float64)
        np.add.at(W, self.gate * M + self.src, self.scale[:, None] * self.dirs)
        return W.astype(np.float32)


def _rotate(v: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """`v` (unit) rotated by exactly `degrees` towards a random direction orthogonal to it."""
    u = rng.standard_normal(v.shape[0])
    u -= u.dot(v) * v
    u /= np.linalg.norm(u)
    a = np.deg2rad(degrees)
    return np.cos(a) * v + np.sin(a) * u


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    cos = float(np.clip(a.dot(b), -1, 1))
    if cos > 0.9995:
        v = (1 - t) * a + t * b
    else:
        w = np.arccos(cos)
        v = (np.sin((1 - t) * w) * a + np.sin(t * w) * b) / np.sin(w)
    return v / np.linalg.norm(v)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a.dot(b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


@dataclass
class Family:
    cfg: PlantedConfig
    members: dict[str, Member]
    generator: object                 # sae_lens.synthetic.ActivationGenerator over every event source
    dictionary: np.ndarray            # (M, d) SAELens FeatureDictionary directions of every event source
    edges: list[tuple[str, str]]
    edit_counts: dict[str, dict[str, int]]
    _maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        return list(self.members)

    @property
    def n_sources(self) -> int:
        return int(self.dictionary.shape[0])

    def positions(self, seed: int, rows: int, chunk: int = 8192) -> sp.csr_matrix:
        """`rows` positions, reproducible from `seed`: (rows, 3M) sparse float32, columns [events | events
        where the position's coin for that source is < 1/2 | events where it is >= 1/2]. Events come from
        SAELens's `ActivationGenerator`; one coin per position and source decides which half of a split
        feature fires."""
        M = self.n_sources
        parts = []
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for r0 in range(0, rows, chunk):
                e = self.generator.sample(min(chunk, rows - r0)).numpy()
                r, c = np.nonzero(e)
                v = e[r, c]
                lo = torch.rand(e.shape).numpy()[r, c] < 0.5
                parts.append(sp.csr_matrix((np.concatenate([v, v]), (np.concatenate([r, r]),
                                            np.concatenate([c, np.where(lo, M + c, 2 * M + c)]))),
                                           shape=(e.shape[0], 3 * M), dtype=np.float32))
        return sp.vstack(parts, format="csr")

    def activations(self, name: str, positions: sp.csr_matrix) -> torch.Tensor:
        """A member's (n, d) activations at these positions."""
        if name not in self._maps:
            self._maps[name] = self.members[name].map(self.n_sources)
        return torch.from_numpy(np.asarray(positions @ self._maps[name], dtype=np.float32))

    def batches(self, name: str, pool: sp.csr_matrix, rows: int, seed: int) -> Iterator[torch.Tensor]:
        """Endless training batches of a member: `rows` positions drawn from `pool` in an order fixed by `seed`
        (as `sae.block_batches` draws blocks of a corpus)."""
        rng = np.random.default_rng(seed)
        while True:
            yield self.activations(name, pool[rng.integers(0, pool.shape[0], rows)])


def build_family(cfg: PlantedConfig) -> Family:
    """The root, its children and the merge, from `cfg` (deterministic in `cfg.seed`)."""
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary

    rng = np.random.default_rng(cfg.seed)
    N = cfg.features
    parents_rows: dict[str, int] = {"root": N}
    n_added = {}
    for c in cfg.children:
        n_added[c.name] = int(round(c.added * parents_rows[c.parent]))
        parents_rows[c.name] = parents_rows[c.parent] + n_added[c.name]  # an upper bound, for the next ones
    M = N + sum(n_added.values())
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        fd = FeatureDictionary(M, cfg.d, seed=cfg.seed)
    dictionary = fd.feature_vectors.detach().double().numpy()
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    p = np.exp(rng.uniform(np.log(cfg.firing_min), np.log(cfg.firing_max), M))
    gen = ActivationGenerator(M, torch.tensor(p, dtype=torch.float32), std_firing_magnitudes=cfg.magnitude_std,
                              mean_firing_magnitudes=cfg.magnitude_mean)

    members: dict[str, Member] = {"root": Member("root", [], np.arange(N), np.zeros(N, dtype=np.int64),
                                                 dictionary[:N].copy(), np.ones(N), np.full(N, "root", dtype=object),
                                                 np.zeros(N))}
    edges, counts = [], {}
    next_src = N
    perms: dict[str, np.ndarray] = {}   # one permutation of a parent's rows shared by its children
    used: dict[str, int] = {}
    for c in cfg.children:
        par = members[c.parent]
        R = len(par.src)
        if c.parent not in perms:
            perms[c.parent] = rng.permutation(R)
            used[c.parent] = 0
        n_d, n_r = int(round(c.drifted * R)), int(round(c.removed * R))
        n_s = int(round(c.split * R))
        take = perms[c.parent][used[c.parent]:used[c.parent] + n_d + n_r + n_s]
        used[c.parent] += len(take)
        drift, removed, split = take[:n_d], take[n_d:n_d + n_r], take[n_d + n_r:]
        # split only rows that fire on all their events (a half cannot be halved again)
        split = split[par.gate[split] == ALL]
        kind = np.full(R, "unchanged", dtype=object)
        kind[drift], kind[removed], kind[split] = "drifted", "removed", "split"
        src, gate, dirs, scale, edit, angle = [], [], [], [], [], []
        k = 0
        for i in range(R):
            if kind[i] == "removed":
                continue
            if kind[i] == "split":
                for g in (LO, HI):
                    src.append(par.src[i]); gate.append(g); scale.append(par.scale[i]); edit.append("split")
                    dirs.append(_rotate(par.dirs[i], cfg.split_angle, rng)); angle.append(cfg.split_angle)
                continue
            src.append(par.src[i]); gate.append(par.gate[i]); edit.append(kind[i])
            if kind[i] == "drifted":
                a = cfg.drift_angles[k % len(cfg.drift_angles)]
                k += 1
                dirs.append(_rotate(par.dirs[i], a, rng)); scale.append(par.scale[i] * cfg.drift_scale); angle.append(a)
            else:
                dirs.append(par.dirs[i]); scale.append(par.scale[i]); angle.append(0.0)
        for _ in range(n_added[c.name]):
            src.append(next_src); gate.append(ALL); dirs.append(dictionary[next_src]); scale.append(1.0)
            edit.append("added"); angle.append(0.0)
            next_src += 1
        members[c.name] = Member(c.name, [c.parent], np.asarray(src, dtype=np.int64), np.asarray(gate, dtype=np.int64),
                                 np.asarray(dirs), np.asarray(scale, dtype=np.float64), np.asarray(edit, dtype=object),
                                 np.asarray(angle))
        edges.append((c.parent, c.name))
        counts[c.name] = {"unchanged": int((kind == "unchanged").sum()), "drifted": len(drift),
                          "removed": len(removed), "split": len(split), "added": n_added[c.name], "parent_features": R}
    if cfg.merge is not None:
        a, b = (members[n] for n in cfg.merge.parents)
        members[cfg.merge.name] = _merge(cfg.merge.name, a, b, cfg.merge.t)
        edges += [(a.name, cfg.merge.name), (b.name, cfg.merge.name)]
    return Family(cfg, members, gen, dictionary, edges, counts)


def _merge(name: str, a: Member, b: Member, t: float) -> Member:
    """Interpolated dictionaries: rows by (source, gate); a source split in one parent is split in both."""
    def rows(m: Member, split_srcs: set[int]) -> dict[tuple[int, int], tuple[np.ndarray, float]]:
        out = {}
        for s, g, d, sc in zip(m.src.tolist(), m.gate.tolist(), m.dirs, m.scale):
            gates = (LO, HI) if g == ALL and s in split_srcs else (g,)
            for gg in gates:
                out[(s, gg)] = (d, sc)
        return out

    split_srcs = {s for m in (a, b) for s, g in zip(m.src.tolist(), m.gate.tolist()) if g != ALL}
    ra, rb = rows(a, split_srcs), rows(b, split_srcs)
    keys = list(dict.fromkeys(list(ra) + list(rb)))
    src, gate, dirs, scale = [], [], [], []
    for k in keys:
        if k in ra and k in rb:
            d, sc = _slerp(ra[k][0], rb[k][0], t), (1 - t) * ra[k][1] + t * rb[k][1]
        elif k in ra:
            d, sc = ra[k][0], (1 - t) * ra[k][1]
        else:
            d, sc = rb[k][0], t * rb[k][1]
        src.append(k[0]); gate.append(k[1]); dirs.append(d); scale.append(sc)
    n = len(keys)
    return Member(name, [a.name, b.name], np.asarray(src, dtype=np.int64), np.asarray(gate, dtype=np.int64),
                  np.asarray(dirs), np.asarray(scale), np.full(n, "merge", dtype=object), np.zeros(n))


def edge_truth(parent: Member, child: Member) -> dict[str, np.ndarray]:
    """Per parent row: persisting (the child has the same source and gate), split (the child has its two
    halves) or disappearing, with the angle its direction moved by; per child row: inherited, split (a half
    of a parent row) or emerging."""
    pk = {k: i for i, k in enumerate(parent.keys)}
    ck = {k: i for i, k in enumerate(child.keys)}
    p_truth = np.empty(len(pk), dtype=object)
    p_angle = np.full(len(pk), np.nan)
    for (s, g), i in pk.items():
        if (s, g) in ck:
            p_truth[i] = "persisting"
            p_angle[i] = _angle(parent.dirs[i], child.dirs[ck[(s, g)]])
        elif g == ALL and (s, LO) in ck and (s, HI) in ck:
            p_truth[i] = "split"
        else:
            p_truth[i] = "disappearing"
    c_truth = np.empty(len(ck), dtype=object)
    for (s, g), j in ck.items():
        if (s, g) in pk:
            c_truth[j] = "inherited"
        elif g != ALL and (s, ALL) in pk:
            c_truth[j] = "split"
        else:
            c_truth[j] = "emerging"
    return {"parent": p_truth, "parent_angle": p_angle, "child": c_truth}


# ------------------------------------------------------------------------------------------ truth
def latent_truth(W_dec: np.ndarray, dirs: np.ndarray, min_cos: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Each SAE latent's true feature: Hungarian on |cos| between decoder rows (L x d) and the member's true
    directions (R x d) first; a latent Hungarian leaves over (an SAE wider than the truth) takes its best true
    feature by |cos| (a duplicate of it). Returns each latent's row (-1 when its |cos| is below `min_cos`:
    unresolved), that |cos|, and the MCC: mean |cos| over the min(L, R) Hungarian pairs, as
    `sae_lens.synthetic.mean_correlation_coefficient` computes it."""
    from scipy.optimize import linear_sum_assignment

    from featureflow.pipeline.matching import unit_rows

    cos = np.abs(unit_rows(W_dec) @ unit_rows(dirs).T)
    r, c = linear_sum_assignment(cos, maximize=True)
    row = cos.argmax(axis=1).astype(np.int64) if cos.shape[1] else np.full(W_dec.shape[0], -1, dtype=np.int64)
    row[r] = c
    val = cos[np.arange(len(row)), row] if cos.shape[1] else np.zeros(W_dec.shape[0])
    mcc = float(cos[r, c].mean()) if len(r) else 0.0
    row[val < min_cos] = -1
    return row, val, mcc


# -------------------------------------------------------------------------------------- the run
class PlantedSide:
    """One planted SAE's data as a similarity reads it (`featureflow.modes.Side`): activations and decoder; a
    planted family has no tokens."""

    def __init__(self, acts, decoder):
        self._acts, self._decoder = acts, decoder

    def acts(self):
        return self._acts

    def decoder(self):
        return self._decoder

    def tokens(self):
        raise ValueError("a planted family has no tokens")

    def vocab_size(self) -> int:
        raise ValueError("a planted family has no tokens")


def resolve(cfg: PlantedConfig, sae: SAEConfig | None = None, matching: MatchingConfig | None = None
            ) -> tuple[SAEConfig, MatchingConfig]:
    """The SAE recipe and matching the planted family runs with: its own sections, else the run's (modes whose
    similarity reads tokens dropped: a planted family has none), else the defaults."""
    s = cfg.sae or sae or DEFAULT_SAE
    m = cfg.matching or matching or MatchingConfig()
    modes = [x for x in m.modes if SIMILARITIES[parse_mode(x)[0]].planted]
    if not modes:
        raise ValueError("planted: no matching mode left once the modes that read tokens (token-type) are dropped "
                         "(a planted family has no tokens); give planted.matching.modes")
    return s, m.model_copy(update={"modes": modes})


def reproducible(con, model: str, mode: str, threshold: float) -> np.ndarray:
    """Features of replica 0 of `model` that are reproducible under `mode`: matched above `threshold` in every
    other replica, by the store's one stability rule (`flows.STABILITY`, what the explorer's reproducible
    persistence counts)."""
    from featureflow.store.flows import STABILITY, stability_params

    rows = con.execute(f"SELECT feature, stable FROM ({STABILITY}) WHERE model = $m ORDER BY feature",
                       {**stability_params(threshold, mode), "m": model}).fetchall()
    return np.asarray([bool(x[1]) for x in rows], dtype=bool)


def _prf(tp: int, calls: int, support: int) -> dict:
    p = tp / calls if calls else None
    r = tp / support if support else None
    f = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (0.0 if p == 0 or r == 0 else None)
    return {"precision": p, "recall": r, "f1": f, "support": support, "calls": calls, "correct": tp}


def run_planted(cfg: PlantedConfig, sae: SAEConfig | None = None, matching: MatchingConfig | None = None,
                device: str = "cpu", progress: bool = False, keep: dict | None = None) -> dict:
    """Build the family, train every SAE, encode, match, call the fates and score them. Returns the scorecard
    (JSON-able): {"modes": {mode: {fate: {precision, recall, f1, support, calls, correct}}}, "reproducible":
    the same for reproducible latents, "drift": {mode: {angle: {recall, support}}}, "split": {mode: {...}},
    "mcc": {member: {replica: mcc}}, "sae": per SAE health, "floors": {mode: {member: share}}, "flows":
    {mode: [per-edge counts]}, "chance": {mode: {edge: persisting calls against a null child}}, "truth": the
    edit table, "config": the config, "seconds": wall time}. The null child is the child's own SAE with its
    sample positions shifted by half the sample (activations) or its decoder rotated at random (decoder).
    `keep`, when given, receives the family, activations, decoders, matches, latent truth rows, evidence values
    ({(kind, parent, child): {measure: array}}), each edge's truth (`edge_truth`), each mode's reproducible
    latents ({mode: {member: mask}}) and the in-memory store the calls were read from (`store`).

    Torch runs on one thread here: at these shapes (d in the tens, a few hundred latents) intra-op threads
    cost more than they give (one SAE step 13x faster on 1 thread than on 2 busy cores, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_planted(cfg, sae, matching, device, progress, keep)
    finally:
        torch.set_num_threads(threads)


def _run_planted(cfg: PlantedConfig, sae: SAEConfig | None, matching: MatchingConfig | None, device: str,
                 progress: bool, keep: dict | None) -> dict:
    t0 = time.time()
    sae_cfg, mcfg = resolve(cfg, sae, matching)
    tf = train_family(cfg, sae_cfg, progress)
    card = score_family(cfg, tf, mcfg, device, keep)
    if cfg.crosscoder is not None:  # the same family and truth, read by a crosscoder per edge
        from featureflow.pipeline.crosscoder_planted import score_crosscoders

        card["crosscoder"] = score_crosscoders(tf.fam, tf.pool, tf.sample, cfg.crosscoder, cfg.truth_min_cos, cfg.seed)
    card["seconds"] = round(time.time() - t0, 2)
    return card


@dataclass
class TrainedFamily:
    """The family with every SAE trained and encoded on the shared sample (keys (member, replica))."""

    fam: Family
    sae_cfg: SAEConfig
    acts: dict
    decoders: dict
    truth_row: dict
    mcc: dict
    health: dict
    saes: dict = field(default_factory=dict)   # (member, replica) -> its trained SAE (eval mode)
    hooks: dict = field(default_factory=dict)  # member -> its activations on the shared sample (torch)
    sample: object = None                      # the shared sample's positions (`Family.positions`)
    pool: object = None                        # the training pool's positions every SAE drew its batches from


def train_family(cfg: PlantedConfig, sae_cfg: SAEConfig, progress: bool = False) -> TrainedFamily:
    """Build the family and train, encode and resolve (Hungarian truth, MCC) every SAE of every member and
    replica. Call under one torch thread (`run_planted` does)."""
    from featureflow.pipeline.features import sparse_codes
    from featureflow.pipeline.stages import sae_seed
    from featureflow.pipeline.sae import train_sae_on

    fam = build_family(cfg)
    order = fam.order
    rows = sae_cfg.block_tokens * sae_cfg.blocks_per_batch
    # the shared sample: the same events at the same positions for every member; the training pool likewise
    sample = fam.positions(cfg.seed * 7919 + 1, cfg.sample_positions)
    pool = fam.positions(cfg.seed * 7919 + 2, cfg.train_positions)
    replicas = list(range(cfg.replicas + 1))
    acts: dict[tuple[str, int], sp.csc_matrix] = {}
    decoders: dict[tuple[str, int], np.ndarray] = {}
    mcc: dict[str, dict[str, float]] = {}
    truth_row: dict[tuple[str, int], np.ndarray] = {}
    health: dict[str, dict[str, dict]] = {}
    saes, hooks = {}, {}
    for name in order:
        m = fam.members[name]
        X = hooks[name] = fam.activations(name, sample)
        for rep in replicas:
            seed = sae_seed(cfg.seed, name, rep, sae_cfg.shared_init)
            trained = train_sae_on(fam.batches(name, pool, rows, seed), sae_cfg, seed,
                                   desc=f"planted sae {name}.r{rep}" if progress else None)
            s = trained.sae.eval()
            with torch.no_grad():
                A = sparse_codes(s, (X[i:i + 8192] for i in range(0, len(X), 8192)))
                err = float(((s(X)[0] - X) ** 2).sum())
                tot = float(((X - X.mean(0)) ** 2).sum())
            acts[(name, rep)], saes[(name, rep)] = A, s
            decoders[(name, rep)] = s.W_dec.detach().double().numpy()
            row, _, mcc_v = latent_truth(decoders[(name, rep)], m.dirs, cfg.truth_min_cos)
            truth_row[(name, rep)] = row
            mcc.setdefault(name, {})[str(rep)] = mcc_v
            health.setdefault(name, {})[str(rep)] = {
                "l0": A.nnz / A.shape[0], "explained_variance": 1 - err / max(tot, 1e-12),
                "dead": int((np.diff(A.indptr) == 0).sum()), "d_sae": int(A.shape[1]), "true_features": len(m.src),
                "resolved": int((row >= 0).sum()), "seed": seed, "l1_coefficient": trained.l1_coefficient}
            log.info("planted: %s.r%d  L0 %.1f  EV %.3f  MCC %.3f", name, rep, health[name][str(rep)]["l0"],
                     health[name][str(rep)]["explained_variance"], mcc_v)
    return TrainedFamily(fam, sae_cfg, acts, decoders, truth_row, mcc, health, saes, hooks, sample, pool)


def score_family(cfg: PlantedConfig, tf: TrainedFamily, mcfg: MatchingConfig, device: str = "cpu",
                 keep: dict | None = None) -> dict:
    """Match every edge and floor under every mode of `mcfg` and score the fate calls at its threshold
    (cheap next to training: a sweep of thresholds scores one `TrainedFamily` several times)."""
    import duckdb

    from featureflow.pipeline.matching import match_pair, rule_matches
    from featureflow.store import flows as F
    from featureflow.store.schema import create_tables
    from featureflow.store.writers import insert, insert_edge_matches, insert_evidence, insert_floor, insert_row

    fam, acts, decoders, truth_row = tf.fam, tf.acts, tf.decoders, tf.truth_row
    sae_cfg, mcc, health = tf.sae_cfg, tf.mcc, tf.health
    order = fam.order
    replicas = list(range(cfg.replicas + 1))
    thr = mcfg.threshold
    # an in-memory store, filled by the store build's own functions, read by its own fate rules
    con = duckdb.connect()
    create_tables(con)
    alive = {n: np.diff(acts[(n, 0)].indptr) > 0 for n in order}

    def live(n: str, rep: int) -> np.ndarray:
        return np.diff(acts[(n, rep)].indptr) > 0
    for i, n in enumerate(order):
        F_ = acts[(n, 0)].shape[1]
        insert_row(con, "models", {"model": n, "label": n, "idx": i, "make": "planted", "d_sae": F_})
        insert(con, "features", {"model": np.full(F_, n, dtype=object), "feature": np.arange(F_, dtype=np.int32),
                                 "alive": alive[n], "n_active": np.diff(acts[(n, 0)].indptr).astype(np.int64),
                                 "density": np.diff(acts[(n, 0)].indptr) / acts[(n, 0)].shape[0]})
    for p, c in fam.edges:
        insert_row(con, "model_edges", {"parent": p, "child": c, "make": "planted"})
    sims = list(dict.fromkeys(parse_mode(x)[0] for x in mcfg.modes))
    tops: dict[tuple[str, str, str], object] = {}
    one_of: dict[tuple[str, str, str], object] = {}

    def inputs(n: str, rep: int, sim: str):
        return SIMILARITIES[sim].inputs(PlantedSide(acts[(n, rep)], decoders[(n, rep)]))

    for sim in sims:
        for p, c in fam.edges:
            top, one = match_pair(inputs(p, 0, sim), inputs(c, 0, sim), sim, mcfg.top_k, mcfg.block_size, device,
                                  alive_a=alive[p], alive_b=alive[c])
            tops[(p, c, sim)], one_of[(p, c, sim)] = top, one
            insert_edge_matches(con, sim, p, c, vars(top), rule_matches(top, one, "1to1"))
        for n in order:
            for rep in replicas[1:]:
                top, one = match_pair(inputs(n, 0, sim), inputs(n, rep, sim), sim, mcfg.top_k, mcfg.block_size,
                                      device, alive_a=alive[n], alive_b=live(n, rep))
                for rule in ("best", "1to1"):
                    insert_floor(con, n, rep, sim, rule, rule_matches(top, one, rule)["p2c_r"], alive[n])

    # the chance baseline: each edge against a null child, called by the same rule under a name of its own
    rot = np.linalg.qr(np.random.default_rng(cfg.seed + 1).standard_normal((cfg.d, cfg.d)))[0]
    for sim in sims:
        for p, c in fam.edges:
            B = acts[(c, 0)]
            null = SIMILARITIES[sim].inputs(PlantedSide(sp.vstack([B[B.shape[0] // 2:], B[:B.shape[0] // 2]],
                                                                  format="csc"), decoders[(c, 0)] @ rot))
            top, one = match_pair(inputs(p, 0, sim), null, sim, mcfg.top_k, mcfg.block_size, device,
                                  alive_a=alive[p], alive_b=alive[c])
            insert_edge_matches(con, sim, p, f"{c}{NULL}", vars(top), rule_matches(top, one, "1to1"))
    if keep is not None:
        keep.update(family=fam, acts=acts, decoders=decoders, truth_row=truth_row,
                    matches={(p, c, sim): (tops[(p, c, sim)], one_of[(p, c, sim)]) for p, c in fam.edges
                             for sim in sims})

    truths = {(p, c): edge_truth(fam.members[p], fam.members[c]) for p, c in fam.edges}
    values = evidence_values(tf, mcfg, {(p, c, sim): (tops[(p, c, sim)], one_of[(p, c, sim)])
                                        for p, c in fam.edges for sim in sims})
    for (kind, p, c), v in values.items():  # what a rule with doubt (a `+transfer` mode) reads
        insert_evidence(con, kind, p, c, v)
    evidence = score_evidence(tf, values, truths)
    if keep is not None:
        keep.update(evidence=values, truths=truths, reproducible={}, store=con)
    out_modes, out_rep, drift, split, floors, flows, chance, out_conf = {}, {}, {}, {}, {}, {}, {}, {}
    uncertain: dict[str, dict] = {}
    per_edge: dict[str, dict] = {}
    for mode in mcfg.modes:
        sim, _ = parse_mode(mode)
        tally = {pop: {f: [0, 0, 0] for f in FATES} for pop in ("all", "reproducible")}
        confusion = {pop: {f: {} for f in FATES} for pop in ("all", "reproducible")}
        d_tally: dict[str, list[int]] = {}
        s_tally = {pop: {"support": 0, "calls": 0, "correct": 0, "with_halves": 0, "resolved": 0, "resolved_found": 0,
                         "called_persisting": 0,
                         "called_disappearing": 0, "calls_by_truth": {}} for pop in ("all", "reproducible")}
        doubt = RULES[parse_mode(mode)[1]].admits_doubt
        u_tally = {pop: {side: {"calls": 0, "eligible": 0, "by_truth": {}} for side in ("parent", "child")}
                   for pop in ("all", "reproducible")}
        repro = {n: reproducible(con, n, mode, thr) for n in order}
        if keep is not None:
            keep["reproducible"][mode] = repro
        for p, c in fam.edges:
            tr = truths[(p, c)]
            lat = {"parent": _latent_labels(truth_row[(p, 0)], tr["parent"]),
                   "child": _latent_labels(truth_row[(c, 0)], tr["child"])}
            fates = F.edge_fate_sets(con, p, c, thr, mode)  # the store's fate rule, every fate in one query
            called = {f: fates[f] for f in FATES + ("split",)}
            edge_tally = {f: [0, 0, 0] for f in FATES}
            for fate in FATES:
                side, model = ("parent", p) if fate in PARENT_FATES else ("child", c)
                labels = lat[side]
                eligible = alive[model] & (labels != "split")
                is_call = np.zeros(len(labels), dtype=bool)
                is_call[list(called[fate])] = True
                for pop, mask in (("all", eligible), ("reproducible", eligible & repro[model])):
                    t = tally[pop][fate]
                    tp = int((mask & is_call & (labels == fate)).sum())
                    t[0] += tp
                    t[1] += int((mask & is_call).sum())
                    t[2] += int((mask & (labels == fate)).sum())
                    for lab, n in zip(*np.unique(labels[mask & is_call].astype(str), return_counts=True)):
                        confusion[pop][fate][lab] = confusion[pop][fate].get(lab, 0) + int(n)
                    if pop == "all":
                        edge_tally[fate] = [tp, int((mask & is_call).sum()), int((mask & (labels == fate)).sum())]
            per_edge.setdefault(mode, {})[f"{p}->{c}"] = {f: _prf(*v) for f, v in edge_tally.items()}
            if doubt:  # the calls left uncertain, and what they are in truth
                for side, model, fate in (("parent", p, "uncertain"), ("child", c, "uncertain-origin")):
                    labels = lat[side]
                    eligible = alive[model] & (labels != "split")
                    unsure = np.zeros(len(labels), dtype=bool)
                    unsure[list(fates[fate])] = True
                    for pop, mask in (("all", eligible), ("reproducible", eligible & repro[model])):
                        u = u_tally[pop][side]
                        u["calls"] += int((mask & unsure).sum())
                        u["eligible"] += int(mask.sum())
                        for lab, n in zip(*np.unique(labels[mask & unsure].astype(str), return_counts=True)):
                            u["by_truth"][lab] = u["by_truth"].get(lab, 0) + int(n)
            # recall of persisting parent features by the angle their direction moved
            row = truth_row[(p, 0)]
            persist_call = np.zeros(len(row), dtype=bool)
            persist_call[list(called["persisting"])] = True
            for i in np.flatnonzero((row >= 0) & alive[p]):
                if tr["parent"][row[i]] == "persisting":
                    key = str(int(5 * round(tr["parent_angle"][row[i]] / 5)))
                    d = d_tally.setdefault(key, [0, 0])
                    d[0] += int(persist_call[i])
                    d[1] += 1
            # split: the parent latents of planted split features, those called split (`flows.FATE`, from the
            # `split` evidence) and whether a call's parts are the planted halves' latents in the child
            c_row = truth_row[(c, 0)]
            pm, cm = fam.members[p], fam.members[c]
            ck = {k: j for j, k in enumerate(cm.keys)}
            split_call = np.zeros(len(row), dtype=bool)
            split_call[list(called["split"])] = True
            ev = values.get(("split", p, c), {})
            parts = np.stack([ev[f"part_{k + 1}"] for k in range(3)], axis=1) if ev else None
            labels = lat["parent"]
            # a planted split is resolved where the child's SAE learnt both halves: each half's nearest alive latent
            # (decoder |cos|) is within RESOLVED_COS of it and the two are different latents (one latent between
            # the halves, as an SAE learns for halves close together, is no split: no method reading SAEs sees it)
            C = np.abs(_unit(decoders[(c, 0)]) @ _unit(cm.dirs).T)
            C[~alive[c]] = -1
            near, cos = C.argmax(axis=0), C.max(axis=0)
            resolved = np.zeros(len(row), dtype=bool)
            for i in np.flatnonzero((row >= 0) & (labels == "split")):
                h = [ck[(int(pm.src[row[i]]), g)] for g in (LO, HI)]
                resolved[i] = min(cos[h]) >= RESOLVED_COS and near[h[0]] != near[h[1]]
            for pop, mask in (("all", alive[p]), ("reproducible", alive[p] & repro[p])):
                t = s_tally[pop]
                t["support"] += int((mask & (labels == "split")).sum())
                t["resolved"] += int((mask & resolved).sum())
                t["resolved_found"] += int((mask & resolved & split_call).sum())
                t["calls"] += int((mask & split_call).sum())
                t["correct"] += int((mask & split_call & (labels == "split")).sum())
                for lab, n in zip(*np.unique(labels[mask & split_call].astype(str), return_counts=True)):
                    t["calls_by_truth"][lab] = t["calls_by_truth"].get(lab, 0) + int(n)
                for i in np.flatnonzero(mask & (labels == "split")):
                    t["called_persisting"] += int(persist_call[i])
                    t["called_disappearing"] += int(i in called["disappearing"])
                    if split_call[i] and parts is not None:
                        src = int(pm.src[row[i]])
                        halves = {ck[(src, g)] for g in (LO, HI)}
                        got = {int(c_row[int(x)]) for x in parts[i] if np.isfinite(x)}
                        t["with_halves"] += int(got == halves)
        if doubt:
            uncertain[mode] = {pop: {side: {**u, "share": u["calls"] / u["eligible"] if u["eligible"] else None}
                                     for side, u in sides.items()} for pop, sides in u_tally.items()}
            for pop, sides in u_tally.items():  # stored with the other calls by truth (`planted_calls`)
                confusion[pop]["uncertain"] = sides["parent"]["by_truth"]
                confusion[pop]["uncertain-origin"] = sides["child"]["by_truth"]
        out_modes[mode] = {f: _prf(*tally["all"][f]) for f in FATES}
        out_rep[mode] = {f: _prf(*tally["reproducible"][f]) for f in FATES}
        out_conf[mode] = confusion
        drift[mode] = {k: {"recall": v[0] / v[1] if v[1] else None, "support": v[1]}
                       for k, v in sorted(d_tally.items(), key=lambda kv: float(kv[0]))}
        split[mode] = {pop: {**_prf(t["correct"], t["calls"], t["support"]), **t,
                             "resolved_recall": t["resolved_found"] / t["resolved"] if t["resolved"] else None}
                       for pop, t in s_tally.items()}
        chance[mode] = {f"{p}->{c}": F.edge_features(con, p, f"{c}{NULL}", "persisting", thr, mode, limit=1)[0]
                        for p, c in fam.edges}
        floors[mode] = {n: f["share"] for n, f in F.floors(con, thr, mode).items()}
        flows[mode] = [{k: r[k] for k in ("parent", "child", "persisting", "disappearing", "inherited", "emerging",
                                          "parent_alive", "child_alive", "persist_share", "floor_share")}
                       for r in F.flows(con, thr, mode)]
    inheritance = score_inheritance(con, fam, truth_row, alive, mcfg, truths) if cfg.merge is not None else {}
    survival = survival_series(tf, thr) if cfg.merge is not None and tf.sample is not None else {}
    if keep is None:  # else the caller has it (`keep["store"]`), to read more calls from
        con.close()
    truth = {}
    for name, cnt in fam.edit_counts.items():
        R = cnt["parent_features"]
        spec = next(c for c in cfg.children if c.name == name)
        truth[f"{spec.parent}->{name}"] = {
            k: {"n": cnt[k], "fraction": cnt[k] / R,
                "planted": (1 - spec.drifted - spec.removed - spec.split) if k == "unchanged" else getattr(spec, k)}
            for k in EDITS}
    if cfg.merge is not None:
        for p in cfg.merge.parents:
            tr = truths[(p, cfg.merge.name)]
            truth[f"{p}->{cfg.merge.name}"] = {k: {"n": int((tr["parent"] == k).sum()) if k in PARENT_FATES + ("split",)
                                                   else int((tr["child"] == k).sum())}
                                               for k in ("persisting", "disappearing", "split", "emerging")}
    return {"modes": out_modes, "reproducible": out_rep, "calls_by_truth": out_conf, "per_edge": per_edge, "drift": drift, "split": split,
            "evidence": evidence, "uncertain": uncertain, "inheritance": inheritance, "survival": survival, "mcc": mcc, "sae": health, "floors": floors, "flows": flows, "chance": chance, "truth": truth, "threshold": thr,
            "config": {**cfg.model_dump(mode="json"), "sae": sae_cfg.model_dump(mode="json"),
                       "matching": mcfg.model_dump(mode="json")},
            "version": PLANTED_VERSION}


def survival_series(tf: TrainedFamily, threshold: float, steps: int = 11) -> dict:
    """The planted merge's path, as `pipeline/survival.py` follows an LM merge's: at each t of `steps` in [0, 1] and
    the config's t, the merge of the two parents' dictionaries (`_merge`) on the shared sample, encoded by each
    parent's SAE (replica 0); each alive parent latent's survival r (transfer r against the parent itself) and the
    share above `threshold`. {parent: {"t": [...], "share": [...], "n": latents that fire at its own end}}."""
    from featureflow.evidence.transfer import column_pearson
    from featureflow.pipeline.features import sparse_codes

    cfg = tf.fam.cfg
    a, b = (tf.fam.members[n] for n in cfg.merge.parents)
    ts = sorted(set(np.round(np.linspace(0, 1, steps), 10).tolist()) | {float(cfg.merge.t)})
    r = {p: [] for p in (a.name, b.name)}
    for t in ts:
        m = _merge("path", a, b, t)
        X = torch.from_numpy(np.asarray(tf.sample @ m.map(tf.fam.n_sources), dtype=np.float32))
        for p in r:
            with torch.no_grad():
                codes = sparse_codes(tf.saes[(p, 0)], (X[i:i + 8192] for i in range(0, len(X), 8192)))
            r[p].append(column_pearson(tf.acts[(p, 0)], codes))
    out = {}
    for p, own in ((a.name, 0), (b.name, -1)):
        R = np.stack(r[p])
        pop = np.isfinite(R[own])
        out[p] = {"t": ts, "n": int(pop.sum()),
                  "share": [float((np.nan_to_num(R[i][pop], nan=-1) > threshold).mean()) if pop.any() else None
                            for i in range(len(ts))]}
    return out


INHERITED = ("both", "first", "second", "new")  # the inheritance classes planted truth can hold


def score_inheritance(con, fam: Family, truth_row: dict, alive: dict, mcfg: MatchingConfig, truths: dict) -> dict:
    """What the planted merge inherits, called by the store's rule (`flows.merge_inheritance`) under every mode and
    scored against its planted truth: a merged latent's true feature is in the first parent, the second, both, or
    neither (new); latents of a split half are left out (their truth is a split). {mode: {population: {class:
    precision / recall / ..., "uncertain": n, "split": n}}}."""
    from featureflow.store.flows import merge_inheritance

    out: dict[str, dict] = {}
    merge = fam.cfg.merge.name
    row = truth_row[(merge, 0)]
    for mode in mcfg.modes:
        out[mode] = {}
        for pop, repro in (("all", False), ("reproducible", True)):
            calls = merge_inheritance(con, mcfg.threshold, mode, repro)
            if not calls:
                continue
            first, second = calls[0]["first_parent"], calls[0]["second_parent"]
            inh = {p: truths[(p, merge)]["child"] for p in (first, second)}
            tally = {k: [0, 0, 0] for k in INHERITED}
            left = {"uncertain": 0, "split": 0}
            left_truth: dict[str, dict] = {k: {} for k in left}
            called = {r["feature"]: r["inheritance"] for r in calls}
            for j, call in called.items():  # the population: the merged model's latents the rule called
                R = row[j]
                labels = {p: inh[p][R] for p in (first, second)} if R >= 0 else None
                if labels and "split" in labels.values():
                    continue
                truth = None if labels is None else {
                    (True, True): "both", (True, False): "first", (False, True): "second", (False, False): "new"}[
                    (labels[first] == "inherited", labels[second] == "inherited")]
                if call in left:
                    left[call] += 1
                    left_truth[call][truth or "unresolved"] = left_truth[call].get(truth or "unresolved", 0) + 1
                    if truth is not None:
                        tally[truth][2] += 1
                    continue
                tally[call][1] += 1
                tally[call][0] += int(call == truth)
                if truth is not None:
                    tally[truth][2] += 1
            out[mode][pop] = {**{k: _prf(*v) for k, v in tally.items()}, **left,
                              "uncertain_by_truth": left_truth["uncertain"]}
    return out


class PlantedEdge:
    """One planted edge as an evidence kind reads it (`featureflow.evidence.EdgeData`): the trained family's
    activations, SAEs, decoders and the edge's matches."""

    def __init__(self, tf: TrainedFamily, parent: str, child: str, matched: dict):
        self.tf, self.parent, self.child, self._matched = tf, parent, child, matched

    def acts(self, member: str, replica: int = 0):
        return self.tf.acts[(member, replica)]

    def cross_acts(self, sae_of: str, data_of: str, replica: int = 0):
        from featureflow.pipeline.features import sparse_codes

        X = self.tf.hooks[data_of]
        with torch.no_grad():
            return sparse_codes(self.tf.saes[(sae_of, replica)], (X[i:i + 8192] for i in range(0, len(X), 8192)))

    def decoder(self, member: str, replica: int = 0):
        return self.tf.decoders[(member, replica)]

    def matches(self, mode: str) -> dict:
        from featureflow.pipeline.matching import rule_matches

        sim, rule = parse_mode(mode)
        return rule_matches(*self._matched[(self.parent, self.child, sim)], rule)


def evidence_values(tf: TrainedFamily, mcfg: MatchingConfig, matched: dict) -> dict[tuple[str, str, str], dict]:
    """Every evidence kind of `mcfg.evidence_kinds` (those listed and those a mode's rule reads) on every planted
    edge: (kind, parent, child) -> {measure: one value per feature of the kind's side}."""
    from featureflow.evidence import compute, evidence as registered

    out = {}
    for name in mcfg.evidence_kinds:
        kind = registered(name)
        for p, c in tf.fam.edges:
            model = p if kind.side == "parent" else c
            out[(name, p, c)] = compute(kind, PlantedEdge(tf, p, c, matched), tf.acts[(model, 0)].shape[1])
    return out


def score_evidence(tf: TrainedFamily, values: dict, truths: dict) -> dict:
    """Every evidence kind in `values` (`evidence_values`) that has a `score`, scored against the planted fates of
    its side's latents: {kind: {"parent->child": {metric: value}}}."""
    from featureflow.evidence import evidence as registered

    out: dict[str, dict] = {}
    for (name, p, c), v in values.items():
        kind = registered(name)
        if kind.score is None:
            continue
        model = p if kind.side == "parent" else c
        labels = _latent_labels(tf.truth_row[(model, 0)], truths[(p, c)][kind.side])
        out.setdefault(name, {})[f"{p}->{c}"] = kind.score(v, labels.astype(str))
    return out


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _latent_labels(row: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each latent's planted fate on an edge ('unresolved' when it has no true feature)."""
    out = np.full(len(row), "unresolved", dtype=object)
    ok = row >= 0
    out[ok] = truth[row[ok]]
    return out


# -------------------------------------------------------------------------------------- printing
def format_scorecard(card: dict) -> str:
    """The scorecard as a plain-text table: per mode and fate, all latents | reproducible latents."""
    def f(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"planted family: threshold {card['threshold']}, "
             f"MCC (root r0) {card['mcc'].get('root', {}).get('0', float('nan')):.3f}, {card.get('seconds', 0):.0f} s",
             f"{'mode':<14} {'fate':<13} | {'P':>6} {'R':>6} {'F1':>6} {'n':>5} | "
             f"{'P':>6} {'R':>6} {'F1':>6} {'n':>5}   (all | reproducible)"]
    for mode, fates in card["modes"].items():
        for fate, s in fates.items():
            r = card["reproducible"][mode][fate]
            lines.append(f"{mode:<14} {fate:<13} | {f(s['precision'])} {f(s['recall'])} {f(s['f1'])} "
                         f"{s['support']:>5} | {f(r['precision'])} {f(r['recall'])} {f(r['f1'])} {r['support']:>5}")
    for mode, bins in card["drift"].items():
        lines.append(f"drift recall ({mode}): " + ", ".join(
            f"{k}°: {f(v['recall']).strip()} (n {v['support']})" for k, v in bins.items()))
    for mode, pops in card.get("calls_by_truth", {}).items():
        for fate in ("disappearing", "emerging"):
            c = pops["reproducible"][fate]
            lines.append(f"{fate} calls on reproducible latents by planted truth ({mode}): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])))
    for mode, pops in card.get("uncertain", {}).items():
        for pop, sides in pops.items():
            lines.append(f"uncertain ({mode}, {pop} latents): " + "; ".join(
                f"{side} {u['calls']} of {u['eligible']} ({f(u['share']).strip()}), in truth "
                + (", ".join(f"{k} {v}" for k, v in sorted(u["by_truth"].items(), key=lambda kv: -kv[1])) or "-")
                for side, u in sides.items()))
    for parent, s in card.get("survival", {}).items():
        lines.append(f"survival of {parent}'s {s['n']} latents along the merge's path: " + ", ".join(
            f"t {t:.2f} {f(x).strip()}" for t, x in zip(s["t"], s["share"])))
    for mode, pops in card.get("inheritance", {}).items():
        for pop, s in pops.items():
            lines.append(f"inheritance of the merge ({mode}, {pop} latents): " + "; ".join(
                f"{k} P {f(s[k]['precision']).strip()} R {f(s[k]['recall']).strip()} (n {s[k]['support']})"
                for k in INHERITED) + f"; uncertain {s['uncertain']} (in truth "
                + (", ".join(f"{k} {v}" for k, v in s["uncertain_by_truth"].items()) or "-") + f"), split {s['split']}")
    for mode, pops in card["split"].items():
        for pop, s in pops.items():
            lines.append(f"split ({mode}, {pop} latents): P {f(s['precision']).strip()} R {f(s['recall']).strip()} "
                         f"({s['correct']} of {s['calls']} calls right, {s['support']} planted; "
                         f"{s['with_halves']} with both halves as parts; the child's SAE resolved both halves of "
                         f"{s['resolved']}, recall there {f(s['resolved_recall']).strip()}); planted splits called persisting "
                         f"{s['called_persisting']}, disappearing {s['called_disappearing']}; calls by truth: "
                         + (", ".join(f"{k} {v}" for k, v in sorted(s["calls_by_truth"].items(), key=lambda kv: -kv[1]))
                            or "-"))
    if card.get("crosscoder"):
        from featureflow.pipeline.crosscoder_planted import format_crosscoders

        lines.append(format_crosscoders(card["crosscoder"], card["modes"]))
    for kind, edges in card.get("evidence", {}).items():
        for edge, metrics in edges.items():
            lines.append(f"evidence {kind} ({edge}): " + ", ".join(
                f"{m} {f(v).strip() if isinstance(v, float) else ('-' if v is None else v)}"
                for m, v in metrics.items()))
    return "\n".join(lines)


def write_scorecard(card: dict, path) -> None:
    from featureflow.pipeline.artifacts import write_json

    write_json(path, card)


__all__ = ["Family", "Member", "build_family", "edge_truth", "latent_truth", "run_planted", "format_scorecard",
           "reproducible", "resolve"]
