"""The stage graph: every stage is a method that asks for its inputs, then builds (or reuses) its artefact.

    corpora -> tokenizer -> models -> saes -> sample -> activations -> matching -> floors -> controls
            -> evidence -> autointerp -> cases -> fingerprints -> planted -> store

A stage's artefact lives at `data/<run>/<stage>/<name>-<key>/`; the key hashes the stage's config
section and its inputs' keys, so changing one section re-runs that stage and what depends on it,
and a killed run resumes at the first artefact that is not done. Stage functions themselves live in
their modules (family/, sae.py, ...); this file only wires them.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from featureflow.pipeline.artifacts import build_dir, key_of, planning, sweep_temps, write_json
from featureflow.config import ExperimentConfig, LoadMember, MergeMember, parse_mode
from featureflow.pipeline.stages import STAGES, VERSIONS, sae_data_seed, sae_seed

log = logging.getLogger("featureflow")

def _stage(fn):
    """Memoise a stage method per pipeline instance and log how long it took."""

    @functools.wraps(fn)
    def wrapper(self, *args):
        k = (fn.__name__, args)
        if self.recorder is not None:  # the task plan (pipeline/plan.py): who calls whom, memoised calls included
            self.recorder.enter(k)
        try:
            if k not in self._memo:
                t0 = time.time()
                self._memo[k] = fn(self, *args)
                self.timings[f"{fn.__name__}{'/' + '/'.join(map(str, args)) if args else ''}"] = time.time() - t0
            return self._memo[k]
        finally:
            if self.recorder is not None:
                self.recorder.exit()

    return wrapper


class Pipeline:
    def __init__(self, cfg: ExperimentConfig, device: str | None = None):
        import transformers

        from featureflow.pipeline.family.train import pick_device

        transformers.utils.logging.disable_progress_bar()  # per-save bars drown our own

        self.cfg = cfg
        self.device = device or pick_device()
        self.root = cfg.run_dir()
        self._memo: dict = {}
        self._pending_saes: dict[str, dict] = {}  # member -> replica -> trained SAE not yet written
        self.timings: dict[str, float] = {}        # every stage call of this process, seconds
        self.stage_seconds: dict[str, float] = {}  # `run`'s stages in this process (a cached stage is fast)
        self.recorder = None  # a plan.Recorder while the task plan is taken (every stage call is reported to it)

    def _dir(self, stage: str, name: str, key: str) -> Path:
        return self.root / stage / f"{name}-{key}"

    # ------------------------------------------------------------------------------------ corpora
    @_stage
    def corpora(self) -> Path:
        from featureflow.pipeline.corpora import domain_documents, split_documents

        cfg = self.cfg
        key = key_of(VERSIONS["corpora"], cfg.corpora, cfg.seed)

        def build(tmp: Path) -> None:
            stats = {}
            for domain, src in cfg.corpora.domains.items():
                log.info("corpora: %s from %s", domain, src.source)
                docs = domain_documents(domain, src, cfg.seed)
                train, val = split_documents(docs, cfg.corpora.validation_fraction, cfg.seed, domain)
                for split, part in (("train", train), ("val", val)):
                    with open(tmp / f"{domain}.{split}.jsonl", "w", encoding="utf-8") as f:
                        for d in part:
                            f.write(json.dumps({"text": d}) + "\n")
                stats[domain] = {"source": src.source, "train_docs": len(train), "val_docs": len(val),
                                 "train_chars": sum(map(len, train)), "val_chars": sum(map(len, val))}
            write_json(tmp / "stats.json", stats)

        return build_dir(self._dir("corpora", "text", key), build)

    def documents(self, domain: str, split: str) -> list[str]:
        with open(self.corpora() / f"{domain}.{split}.jsonl", encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f]

    # ---------------------------------------------------------------------------------- tokenizer
    @_stage
    def tokenizer(self) -> Path:
        """The shared tokenizer (`tokenizer/`) and every domain's token streams (`<domain>.<split>.npy`)."""
        from featureflow.pipeline.tokenizer import encode_documents, load_tokenizer, train_tokenizer

        cfg = self.cfg
        corpora = self.corpora()
        from featureflow.pipeline.family.load import folder_digest

        given = cfg.tokenizer.path and folder_digest(cfg.tokenizer.path)  # a given tokenizer by its content
        key = key_of(VERSIONS["tokenizer"], cfg.tokenizer, corpora.name, *([given] if given else []))

        def build(tmp: Path) -> None:
            domains = list(cfg.corpora.domains)
            if cfg.tokenizer.path:
                tok = load_tokenizer(cfg.tokenizer.path)
            else:
                log.info("tokenizer: training byte-level BPE, vocab %d", cfg.tokenizer.vocab_size)
                tok = train_tokenizer({d: self.documents(d, "train") for d in domains}, cfg.tokenizer.vocab_size)
            tok.save_pretrained(tmp / "tokenizer")
            counts = {}
            for d in domains:
                for split in ("train", "val"):
                    arr = encode_documents(tok, self.documents(d, split))
                    np.save(tmp / f"{d}.{split}.npy", arr)
                    counts[f"{d}.{split}"] = int(len(arr))
            write_json(tmp / "token_counts.json", counts)

        return build_dir(self._dir("tokenizer", "bpe", key), build)

    def stream(self, domain: str, split: str) -> np.ndarray:
        return np.load(self.tokenizer() / f"{domain}.{split}.npy", mmap_mode="r")

    def val_windows(self, domains: list[str], n_tokens: int) -> dict[str, torch.Tensor]:
        from featureflow.pipeline.family.train import validation_windows

        return {d: validation_windows(self.stream(d, "val"), self.cfg.model.context, n_tokens) for d in domains}

    @functools.cached_property
    def hf_tokenizer(self):
        from featureflow.pipeline.tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer() / "tokenizer")

    # ------------------------------------------------------------------------------------- models
    def member_key(self, name: str) -> str:
        cfg = self.cfg
        m = cfg.member(name)
        parents = [self.member_key(p) for p in m.parents]
        if isinstance(m, LoadMember):  # the folder's content, not its mtimes: touching it reruns nothing
            from featureflow.pipeline.family.load import folder_digest

            return key_of(VERSIONS["models"], m, folder_digest(m.path), parents, self.tokenizer().name)
        # a merge is keyed by how it is searched, not by what is measured along its path afterwards (survival)
        extra = (cfg.merge.model_dump(mode="json", exclude_none=True, exclude={"survival_step", "survival_tokens"})
                 if isinstance(m, MergeMember) else cfg.training)
        if isinstance(m, MergeMember) and m.base:  # a ties base need not be an ancestor
            parents.append(self.member_key(m.base))
        return key_of(VERSIONS["models"], m, cfg.model, extra, parents, self.tokenizer().name, cfg.seed)

    @_stage
    def member(self, name: str) -> Path:
        """One member's folder: a Hugging Face model + tokenizer, `member.json`, and its training log
        (`train_log.json`) or SLERP sweep (`merge_curve.json`)."""
        from featureflow.pipeline.family import build

        m = self.cfg.member(name)
        parents = {p: self.member(p) for p in m.parents}
        self.needs(*self.merge_reads(name))
        return build_dir(self._dir("models", name, self.member_key(name)),
                         lambda tmp: build.build_member(self.member_inputs(), m, parents, tmp))

    def member_inputs(self):
        """What building (or re-merging) a member reads, as explicit inputs."""
        from featureflow.pipeline.family.build import MemberInputs

        return MemberInputs(cfg=self.cfg, member=self.member, tokenizer_dir=self.tokenizer() / "tokenizer",
                            hf_tokenizer=lambda: self.hf_tokenizer, device=self.device, stream=self.stream,
                            val_windows=self.val_windows, documents=self.documents)

    def merge_reads(self, name: str) -> list[Path]:
        """The members a merge reads besides its parents: its base (ties) and the roots (the sweep's baselines)."""
        from featureflow.pipeline.family.build import merge_base

        m = self.cfg.member(name)
        if not isinstance(m, MergeMember):
            return []
        base = merge_base(self.cfg, m)
        return [self.member(n) for n in dict.fromkeys(([base] if base else []) + self.cfg.roots())]

    def needs(self, *inputs) -> None:
        """Nothing: the stage has asked for its inputs (the calls that made `inputs`) before its `build_dir`, so the
        task plan sees them as this stage's dependencies, even those only its build function reads."""

    @_stage
    def models(self) -> dict[str, Path]:
        return {n: self.member(n) for n in self.cfg.topological_order()}

    # -- random-weights controls (built in the `controls` stage; models like members to every SAE stage) --
    def is_control(self, name: str) -> bool:
        return name in self.cfg.control_members()

    def control_seed(self, name: str) -> int:
        from featureflow.pipeline.family.control import control_seed

        return control_seed(self.cfg.seed, self.cfg.control_members()[name], self.cfg.controls.seed)

    def control_key(self, name: str) -> str:
        root = self.cfg.control_members()[name]
        return key_of(VERSIONS["controls"], name, self.member_key(root), self.control_seed(name),
                      self.tokenizer().name)

    @_stage
    def control(self, name: str) -> Path:
        """A random-weights control's model folder: its root's architecture and tokenizer, untrained
        (`family/control.py`)."""
        from featureflow.pipeline.family.control import build_control

        root = self.cfg.control_members()[name]
        root_dir = self.member(root)
        return build_dir(self._dir("controls", name, self.control_key(name)), lambda tmp: build_control(
            name, root, root_dir, self.tokenizer() / "tokenizer", self.control_seed(name), tmp))

    def model_key(self, name: str) -> str:
        """A member's key (`member_key`) or a control's (`control_key`)."""
        return self.control_key(name) if self.is_control(name) else self.member_key(name)

    def model_dir(self, name: str) -> Path:
        """A member's folder or a control's: what an SAE of `name` reads."""
        return self.control(name) if self.is_control(name) else self.member(name)

    def sae_domains(self, name: str) -> list[str]:
        """The domains an SAE of `name` trains and is evaluated on (a control: its root's)."""
        return self.cfg.member_domains(self.cfg.control_members().get(name, name))

    def own_domains(self, name: str) -> list[str]:
        return self.cfg.own_domains(self.cfg.control_members().get(name, name))

    # --------------------------------------------------------------------------------------- SAEs
    def sae_seed(self, name: str, replica: int = 0) -> int:
        """The seed of one SAE's initialisation and batch order.

        Derived from (run seed, member, replica), so no two SAEs share an initialisation; with
        `sae.shared_init` every SAE gets the same one (the paper's single-seed setup)."""
        return sae_seed(self.cfg.seed, name, replica, self.cfg.sae.shared_init)

    def sae_key(self, name: str, replica: int = 0) -> str:
        from featureflow.pipeline.family.load import folder_digest

        pre = self.cfg.sae.pretrained.get(name)
        pre = pre and (pre, folder_digest(pre))  # a pretrained SAE by its content
        section = self.cfg.sae.model_dump(exclude={"replicas", "shared_init", "pretrained"})
        # a seed replica's own token draw (replica 0 keeps the member's, so its key and SAE are as before)
        draw = [self.sae_data_seed(name, replica)] if replica else []
        return key_of(VERSIONS["saes"], section, self.model_key(name), pre, self.sae_seed(name, replica), *draw)

    def replicas(self, name: str) -> list[int]:
        """Replica indices of a member's SAEs: [0] plus one per extra seed in `sae.replicas` (a control's:
        `controls.replicas`)."""
        extra = self.cfg.controls.replicas if self.is_control(name) else self.cfg.sae_replicas().get(name, 0)
        return list(range(1 + extra))

    def sae_data_seed(self, name: str, replica: int = 0) -> int:
        """The seed of the tokens one SAE of a member trains on (`stages.sae_data_seed`): each replica draws its
        own blocks; with `sae.shared_init` one draw for every SAE of every member (the paper's setup)."""
        return sae_data_seed(self.cfg.seed, name, replica, self.cfg.sae.shared_init)

    def _trained_sae(self, name: str, replica: int, model):
        """The trained SAE of one replica. The first call for a member trains, in one pass over its
        activations (`train_saes`), this replica and every other replica of the member not yet on disk; the
        others wait in memory for their own `sae` call."""
        from featureflow.pipeline.artifacts import is_done
        from featureflow.pipeline.sae import train_saes

        pending = self._pending_saes.setdefault(name, {})
        if replica not in pending:
            todo = sorted({replica} | {r for r in self.replicas(name)
                                       if r not in pending and
                                       not is_done(self._dir("saes", self.sae_tag(name, r), self.sae_key(name, r)))})
            domains = self.sae_domains(name)
            trained = train_saes(model, {d: self.stream(d, "train") for d in domains}, self.cfg.sae,
                                 [self.sae_seed(name, r) for r in todo], [self.sae_data_seed(name, r) for r in todo],
                                 desc=f"sae {name} x{len(todo)}")
            pending.update(zip(todo, trained))
        return pending.pop(replica)

    @staticmethod
    def sae_tag(name: str, replica: int) -> str:
        return name if replica == 0 else f"{name}.r{replica}"

    @_stage
    def sae(self, name: str, replica: int = 0) -> Path:
        """One SAE of a member as a SAELens folder, with featureflow.json (recipe, seed, training log, health).
        Replica 0 is the SAE matched across models; replicas 1.. differ only in their seed. All replicas of a
        member not yet built train together, in one pass over its activations (`_trained_sae`)."""
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.sae import load_sae, sae_health, save_sae, summarise

        cfg = self.cfg
        member_dir = self.model_dir(name)
        seed = self.sae_seed(name, replica)
        tag = self.sae_tag(name, replica)

        def build(tmp: Path) -> None:
            t0 = time.time()
            model = load_model(member_dir, self.device)
            pre = cfg.sae.pretrained.get(name)
            l1 = cfg.sae.l1_coefficient
            if pre:
                from featureflow.pipeline.hooks import hooked  # checked against the member's hook and its width there

                sae = load_sae(pre, cfg.sae.hook, hooked(model).check(cfg.sae.hook))
                log_rows, recipe = [], f"loaded from {pre}"
            else:
                trained = self._trained_sae(name, replica, model)
                sae, log_rows, recipe = trained.sae, trained.log, cfg.sae.recipe
                l1 = getattr(trained, "l1_coefficient", l1)
            domains = self.sae_domains(name)
            windows = self.val_windows(domains, cfg.sae.eval_tokens)
            parts = {d: sae_health(model, sae, w, cfg.sae.hook) for d, w in windows.items()}
            own = [d for d in self.own_domains(name) if d in parts] or domains
            health = summarise(list(parts.values()))  # L0, MSE, EV, dead: over the SAE's whole mix
            on_own = summarise([parts[d] for d in own])
            health.update(loss_recovered_all=health["loss_recovered"], loss_recovered=on_own["loss_recovered"],
                          loss_recovered_scope="own domains: " + ", ".join(own),
                          **{k: on_own[k] for k in ("ce_clean", "ce_sae", "ce_zero")})
            by_domain = {d: summarise([p]) for d, p in parts.items()}
            log.info("sae %s: L0 %.1f, MSE %.4g, explained var %.3f, dead %d, loss recovered %s (%s)", tag,
                     health["l0"], health["mse"], health["explained_variance"], health["dead_features"],
                     health["loss_recovered"], health["loss_recovered_scope"])
            save_sae(sae.cpu(), tmp, cfg.sae.hook, name, {
                "recipe": recipe, "architecture": "pretrained" if pre else cfg.sae.architecture,
                "k": getattr(sae, "k", None), "target_l0": cfg.sae.target_l0,
                "l1_coefficient": l1, "l1_start": cfg.sae.l1_coefficient, "training_tokens": cfg.sae.tokens,
                "seed": None if pre else seed, "data_seed": None if pre else self.sae_data_seed(name, replica),
                "replica": replica, "shared_init": cfg.sae.shared_init,
                "log": log_rows, "health": health, "health_by_domain": by_domain,
                "seconds": round(time.time() - t0, 2)})

        return build_dir(self._dir("saes", tag, self.sae_key(name, replica)), build)

    @_stage
    def saes(self) -> dict[str, Path]:
        """Every member's SAE (replica 0), then the seed replicas."""
        out = {n: self.sae(n) for n in self.cfg.topological_order()}
        for n in self.cfg.topological_order():
            for r in self.replicas(n)[1:]:
                self.sae(n, r)
        return out

    # ------------------------------------------------------------------------------------- sample
    @_stage
    def sample(self) -> Path:
        """The shared token sample: tokens.npy (windows x context) and window_domains.npy."""
        from featureflow.pipeline.features import draw_sample

        cfg = self.cfg
        key = key_of(VERSIONS["sample"], cfg.sample, self.tokenizer().name, cfg.seed)

        def build(tmp: Path) -> None:
            streams = {d: self.stream(d, "train") for d in cfg.corpora.domains}
            tokens, doms = draw_sample(streams, cfg.sample, cfg.seed + 29)
            np.save(tmp / "tokens.npy", tokens)
            np.save(tmp / "window_domains.npy", doms)
            write_json(tmp / "domains.json", list(streams))

        return build_dir(self._dir("sample", "shared", key), build)

    def sample_tokens(self) -> np.ndarray:
        return np.load(self.sample() / "tokens.npy")

    # -------------------------------------------------------------------------------- activations
    def acts_key(self, name: str, replica: int = 0) -> str:
        """The key of one SAE's activations on the shared sample: a member's replica 0 (`activation`) and every
        other replica or control SAE (`replica_activation`) alike."""
        return key_of(VERSIONS["activations"], self.sae_key(name, replica), self.sample().name, self.cfg.sample)

    @_stage
    def activation(self, name: str) -> Path:
        """A member's sparse SAE activations on the shared sample (acts.npz) and every per-feature table
        the explorer shows (features / histograms / top_tokens / examples / logits as parquet)."""
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.features import encode_sample, logit_effects, write_feature_tables, write_logit_table
        from featureflow.pipeline.sae import load_sae

        cfg = self.cfg
        self.needs(self.member(name), self.sae(name), self.sample())

        def build(tmp: Path) -> None:
            import scipy.sparse as sps

            model = load_model(self.member(name), self.device)
            sae = load_sae(self.sae(name))
            acts = encode_sample(model, sae, self.sample_tokens(), cfg.sae.hook, desc=f"encode {name}")
            sps.save_npz(tmp / "acts.npz", acts, compressed=False)
            write_feature_tables(acts, self.sample_tokens(), cfg.sample, cfg.seed, name, tmp)
            write_logit_table(logit_effects(model.cpu(), sae.cpu()), tmp)

        return build_dir(self._dir("activations", name, self.acts_key(name)), build)

    @_stage
    def replica_activation(self, name: str, replica: int) -> Path:
        """A seed replica's sparse activations on the shared sample (acts.npz only: replicas are matched,
        never shown), and likewise every SAE of a control (replica 0 included)."""
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.features import encode_sample
        from featureflow.pipeline.sae import load_sae

        cfg = self.cfg
        self.needs(self.model_dir(name), self.sae(name, replica), self.sample())

        def build(tmp: Path) -> None:
            import scipy.sparse as sps

            model = load_model(self.model_dir(name), self.device)
            acts = encode_sample(model, load_sae(self.sae(name, replica)), self.sample_tokens(), cfg.sae.hook,
                                 desc=f"encode {name}.r{replica}")
            sps.save_npz(tmp / "acts.npz", acts, compressed=False)

        return build_dir(self._dir("activations", f"{name}.r{replica}", self.acts_key(name, replica)), build)

    @_stage
    def cross_activation(self, sae_of: str, data_of: str, replica: int = 0) -> Path:
        """`sae_of`'s SAE (replica) encoding `data_of`'s hook activations on the shared sample (acts.npz): a parent's
        SAE on its child, what transfer evidence reads. Same rows as every member's own activations. health.json:
        how well that SAE reconstructs the other model's activations (explained variance, MSE, L0)."""
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.features import encode_sample
        from featureflow.pipeline.sae import load_sae

        cfg = self.cfg
        key = key_of(VERSIONS["activations"], "cross", "health", self.sae_key(sae_of, replica),
                     self.model_key(data_of), self.sample().name, cfg.sample)
        self.needs(self.model_dir(data_of), self.sae(sae_of, replica))

        def build(tmp: Path) -> None:
            import scipy.sparse as sps

            model, sae = load_model(self.model_dir(data_of), self.device), load_sae(self.sae(sae_of, replica))
            health: dict = {}
            try:
                acts = encode_sample(model, sae, self.sample_tokens(), cfg.sae.hook,
                                     desc=f"encode {data_of} with {sae_of}.r{replica}'s SAE", health=health)
            except RuntimeError as e:  # a shape mismatch: the two members' hooks differ in width
                raise ValueError(f"{sae_of}'s SAE cannot encode {data_of}'s {cfg.sae.hook} activations (widths "
                                 f"differ: {e})") from e
            sps.save_npz(tmp / "acts.npz", acts, compressed=False)
            write_json(tmp / "health.json", {"sae_of": sae_of, "replica": replica, "data_of": data_of, **health})

        return build_dir(self._dir("activations", f"{sae_of}.r{replica}.on.{data_of}", key), build)

    def cross_pairs(self) -> list[tuple[str, str]]:
        """(sae_of, data_of) of every cross encode the configured evidence reads: each edge's parent SAE on the
        child (parent-side kinds) and child SAE on the parent (child-side kinds), each parent SAE on its control."""
        from featureflow.evidence import evidence as registered

        kinds = [registered(k) for k in self.cfg.matching.evidence_kinds]
        kinds = [k for k in kinds if "cross_activations" in k.reads]
        out = [(p, c) for p, c in self.cfg.edges() if any(k.side == "parent" for k in kinds)]
        out += [(c, p) for p, c in self.cfg.edges() if any(k.side == "child" for k in kinds)]
        out += [(p, c) for p, c in self.cfg.control_edges() if any(k.side == "parent" for k in kinds)]
        return list(dict.fromkeys(out))

    def load_cross_acts(self, sae_of: str, data_of: str, replica: int = 0):
        from featureflow.pipeline.features import load_acts

        if sae_of == data_of:
            return self.load_acts(sae_of, replica)
        return load_acts(self.cross_activation(sae_of, data_of, replica))

    @_stage
    def activations(self) -> dict[str, Path]:
        out = {n: self.activation(n) for n in self.cfg.topological_order()}
        for n in self.cfg.topological_order():
            for r in self.replicas(n)[1:]:
                self.replica_activation(n, r)
        return out

    def load_acts(self, name: str, replica: int = 0):
        from featureflow.pipeline.features import load_acts

        own = replica == 0 and not self.is_control(name)  # a member's replica 0 has its feature tables too
        return load_acts(self.activation(name) if own else self.replica_activation(name, replica))

    # ----------------------------------------------------------------------------------- matching
    @property
    def default_mode(self) -> str:
        return self.cfg.matching.modes[0]

    def decoder(self, name: str, replica: int = 0) -> np.ndarray:
        """One SAE's decoder directions (features x d_in)."""
        from featureflow.pipeline.sae import load_sae

        return load_sae(self.sae(name, replica)).W_dec.detach().cpu().numpy()

    def similarity_inputs(self, name: str, replica: int, similarity: str):
        """What a registered similarity (`featureflow.modes`) compares for one SAE: its `inputs` of this SAE's
        data (`SAESide`: activations on the sample, decoder, the sample's tokens), each read only if asked."""
        from featureflow.modes import similarity as registered

        return registered(similarity).inputs(SAESide(self, name, replica))

    def side_reads(self, name: str, replica: int) -> list[Path]:
        """What matching one SAE may read: its activations on the sample (`load_acts`), the SAE (a decoder), the
        sample."""
        own = replica == 0 and not self.is_control(name)
        return [self.activation(name) if own else self.replica_activation(name, replica), self.sae(name, replica),
                self.sample()]

    def _match_pair(self, a: tuple[str, int], b: tuple[str, int], similarity: str, label: str, tmp: Path) -> None:
        """Top-k in both directions (topk.npz) and the one-to-one assignment (assign.npz) of SAE `a` to `b`."""
        from featureflow.pipeline.matching import match_pair

        cfg = self.cfg.matching
        A, B = self.similarity_inputs(*a, similarity), self.similarity_inputs(*b, similarity)
        # only features that fire on the sample are matched (a dead feature has no match in any mode)
        alive_a, alive_b = (np.diff(self.load_acts(*side).indptr) > 0 for side in (a, b))
        top, a1 = match_pair(A, B, similarity, cfg.top_k, cfg.block_size, device=self.device,
                             desc=f"match {label} ({similarity})", alive_a=alive_a, alive_b=alive_b)
        np.savez(tmp / "topk.npz", p2c_idx=top.p2c_idx, p2c_r=top.p2c_r, c2p_idx=top.c2p_idx, c2p_r=top.c2p_r)
        np.savez(tmp / "assign.npz", p2c_idx=a1.a2b_idx, p2c_r=a1.a2b_r, c2p_idx=a1.b2a_idx, c2p_r=a1.b2a_r)

    def _pair_key(self, a: tuple[str, int], b: tuple[str, int], similarity: str) -> str:
        from featureflow.modes import similarity as registered

        cfg = self.cfg.matching
        # A side's activations in the key: a member's replica 0 by `acts_key(n)`, the key of the folder matched;
        # any other replica, and a control's SAE, by key_of(its SAE key, the sample's folder name) instead of
        # `acts_key(n, r)`. A second spelling of the same activations, kept on purpose: spelling it through
        # `acts_key` would change the key of every floor and control match, and the artefacts built before
        # would no longer be found. (It leaves out VERSIONS["activations"]: a bump of that version rebuilds a
        # replica's activations but not the floors and control matches read from them.)
        acts = (lambda n, r: self.acts_key(n) if r == 0 and not self.is_control(n) else
                key_of(self.sae_key(n, r), self.sample().name))
        # a similarity that reads the decoder follows the SAE itself; it reads the activations too (which features
        # are alive)
        side = (lambda n, r: key_of(self.sae_key(n, r), acts(n, r))) if registered(similarity).reads_decoder else acts
        return key_of(VERSIONS["matching"], similarity, cfg.top_k, cfg.block_size, side(*a), side(*b))

    @_stage
    def match(self, parent: str, child: str, similarity: str | None = None) -> Path:
        """One parent -> child edge under one similarity: top-k matches in both directions (topk.npz)
        and the one-to-one assignment (assign.npz)."""
        sim = similarity or parse_mode(self.default_mode)[0]
        key = self._pair_key((parent, 0), (child, 0), sim)
        self.needs(*self.side_reads(parent, 0), *self.side_reads(child, 0))
        return build_dir(self._dir("matching", f"{parent}--{child}.{sim}", key),
                         lambda tmp: self._match_pair((parent, 0), (child, 0), sim, f"{parent}->{child}", tmp))

    @_stage
    def matching(self) -> dict[tuple[str, str], Path]:
        """Every edge under every configured similarity, and its PW-MCC; returns the default similarity's
        folders."""
        for sim in self.cfg.matching.similarities:
            for e in self.cfg.edges():
                self.match(*e, sim)
        for p, c in self.cfg.edges():
            self.agreement((p, 0), (c, 0))
        return {e: self.match(*e) for e in self.cfg.edges()}

    @_stage
    def agreement(self, a: tuple[str, int], b: tuple[str, int]) -> Path:
        """PW-MCC of two SAEs' decoders (`matching.pw_mcc`) and its chance level (pw_mcc.json): an edge
        (both replicas 0, under `matching/`) or a member's replica pair (under `floors/`)."""
        from featureflow.pipeline.matching import pw_mcc

        stage = "floors" if a[0] == b[0] else "matching"
        key = key_of(VERSIONS[stage], "pw_mcc", self.sae_key(*a), self.sae_key(*b))
        label = (f"{a[0]}.r{a[1]}--r{b[1]}" if stage == "floors" else f"{a[0]}--{b[0]}") + ".pwmcc"
        self.needs(self.sae(*a), self.sae(*b))

        def build(tmp: Path) -> None:
            A, B = self.decoder(*a), self.decoder(*b)
            t0 = time.time()
            if A.shape[1] != B.shape[1]:  # members of different widths (loaded models): not comparable
                score = chance = None
                log.info("pw-mcc %s: decoders of width %d and %d, not compared", label, A.shape[1], B.shape[1])
            else:
                score, chance = pw_mcc(A, B, seed=self.cfg.seed)
                log.info("pw-mcc %s: %.3f (chance %.3f) in %.1f s", label, score, chance, time.time() - t0)
            write_json(tmp / "pw_mcc.json", {"a": list(a), "b": list(b), "pw_mcc": score, "chance": chance,
                                             "n_a": int(A.shape[0]), "n_b": int(B.shape[0]), "seed": self.cfg.seed})

        return build_dir(self._dir(stage, label, key), build)

    def best_matches(self, folder: Path, rule: str) -> dict[str, np.ndarray]:
        """Each feature's match on one side under a rule: best (top-1) or 1to1 (its assigned partner; r is
        NaN where it has none). Keys p2c_idx, p2c_r, c2p_idx, c2p_r."""
        from featureflow.pipeline.matching import read_rule_matches

        return read_rule_matches(folder, rule)

    def edge_matches(self, parent: str, child: str, mode: str | None = None) -> dict[str, np.ndarray]:
        sim, rule = parse_mode(mode or self.default_mode)
        return self.best_matches(self.match(parent, child, sim), rule)

    # ------------------------------------------------------------------------------------- floors
    @_stage
    def floor(self, name: str, replica: int, similarity: str) -> Path:
        """Replica 0 of a member's SAE matched against replica `replica`: the same engine as an edge."""
        key = self._pair_key((name, 0), (name, replica), similarity)
        self.needs(*self.side_reads(name, 0), *self.side_reads(name, replica))
        return build_dir(self._dir("floors", f"{name}.r0--r{replica}.{similarity}", key),
                         lambda tmp: self._match_pair((name, 0), (name, replica), similarity,
                                                      f"{name} r0->r{replica}", tmp))

    @_stage
    def floors(self) -> dict[tuple[str, int, str], Path]:
        """The seed-control noise floor: for every replicated member, every replica against replica 0
        under every configured similarity (and each pair's PW-MCC, `agreement`)."""
        out = {(n, r, sim): self.floor(n, r, sim) for n in self.cfg.topological_order()
               for r in self.replicas(n)[1:] for sim in self.cfg.matching.similarities}
        for n in self.cfg.topological_order():
            for r in self.replicas(n)[1:]:
                self.agreement((n, 0), (n, r))
        return out

    def agreements(self) -> list[Path]:
        """Every PW-MCC artefact: each edge's, then each replica pair's, then each member against its control."""
        return [self.agreement((p, 0), (c, 0)) for p, c in self.cfg.edges()] + [
            self.agreement((n, 0), (n, r)) for n in self.cfg.topological_order() for r in self.replicas(n)[1:]] + [
            self.agreement((p, 0), (c, 0)) for p, c in self.cfg.control_edges()]

    # ----------------------------------------------------------------------------------- controls
    @_stage
    def controls(self) -> dict[tuple[str, str, str], Path]:
        """The random-weights controls (`controls:`): each control's model, its SAEs (trained like a member's,
        in one pass) and their activations on the shared sample; then every member that is a parent on some
        edge matched against its root's control under every similarity, like an edge (and its PW-MCC).
        Returns (member, control, similarity) -> the match folder."""
        for c in self.cfg.control_members():
            for r in self.replicas(c):
                self.sae(c, r)
            for r in self.replicas(c):
                self.replica_activation(c, r)
        out = {(p, c, sim): self.match(p, c, sim) for sim in self.cfg.matching.similarities
               for p, c in self.cfg.control_edges()}
        for p, c in self.cfg.control_edges():
            self.agreement((p, 0), (c, 0))
        return out

    # ----------------------------------------------------------------------------------- evidence
    def evidence_key(self, kind: str, parent: str, child: str) -> str:
        """An evidence artefact's key: the kind (name, version, what it reads) and the keys of what it may read:
        both members' models, SAEs and activations, and every configured similarity's matches of the edge when it
        reads matches."""
        from featureflow.evidence import evidence as registered

        k = registered(kind)
        matches = ([self.match(parent, child, sim).name for sim in self.cfg.matching.similarities]
                   if "matches" in k.reads else [])
        return key_of(VERSIONS["evidence"], k.name, k.version, list(k.reads),
                      [(self.model_key(n), self.sae_key(n), self.acts_key(n)) for n in (parent, child)], matches)

    @_stage
    def edge_evidence(self, kind: str, parent: str, child: str) -> Path:
        """One evidence kind (`featureflow/evidence/`) on one edge: values.npz, one array per measure with one value
        per feature of the kind's side."""
        from featureflow.evidence import compute, evidence as registered

        k = registered(kind)
        self.needs(*self.side_reads(parent, 0), *self.side_reads(child, 0),
                   *[self.cross_activation(a, b) for a, b in ((parent, child), (child, parent))
                     if "cross_activations" in k.reads and (a, b) in self.cross_pairs()],
                   *[self.match(parent, child, sim) for sim in self.cfg.matching.similarities if "matches" in k.reads])

        def build(tmp: Path) -> None:
            t0 = time.time()
            n = self.load_acts(parent if k.side == "parent" else child).shape[1]
            values = compute(k, PipelineEdge(self, parent, child), n)
            np.savez(tmp / "values.npz", **values)
            log.info("evidence %s %s->%s: %d features in %.1f s", kind, parent, child, n, time.time() - t0)

        return build_dir(self._dir("evidence", f"{kind}.{parent}--{child}", self.evidence_key(kind, parent, child)),
                         build)

    @_stage
    def evidence(self) -> dict[tuple[str, str, str], Path]:
        """Every configured evidence kind (`matching.evidence_kinds`) on every edge, and each parent-side kind on
        every member against its random-weights control too (the kind's lower anchor: what an untrained model of
        the same architecture and tokenizer shows): (kind, parent, child or control) -> folder."""
        from featureflow.evidence import evidence as registered

        kinds = self.cfg.matching.evidence_kinds
        for a, b in self.cross_pairs():  # the encodes the kinds read, first: so the stage graph reaches them (gc)
            self.cross_activation(a, b)
        return {(k, p, c): self.edge_evidence(k, p, c) for k in kinds for p, c in self.cfg.edges()} | {
            (k, p, c): self.edge_evidence(k, p, c) for k in kinds if registered(k).side == "parent"
            for p, c in self.cfg.control_edges()}

    @_stage
    def survival(self) -> dict[str, Path]:
        """Each merge member's path (`merge.survival_step`; none when it is null): every parent's SAE (replica 0) on
        the merged model at each t of `survival.survival_ts` over the first `merge.survival_tokens` tokens of the
        shared sample, each parent feature's survival r there, and its r into the parent's random-weights control
        over the same tokens (the lower anchor; none without controls): member -> folder (survival.npz)."""
        from featureflow.pipeline.artifacts import read_json
        from featureflow.pipeline.family.build import merge_recipe
        from featureflow.pipeline.sae import load_sae
        from featureflow.pipeline.survival import survival_run, survival_ts

        cfg = self.cfg
        step = cfg.merge.survival_step
        out: dict[str, Path] = {}
        if step is None:
            return out
        for name in cfg.topological_order():
            m = cfg.member(name)
            if not isinstance(m, MergeMember):
                continue
            windows = max(1, -(-cfg.merge.survival_tokens // cfg.sample.context))
            controls = {p: c for p in m.parents if (c := cfg.control_of(p)) is not None}
            key = key_of(VERSIONS["survival"], step, windows, self.member_key(name),
                         [self.sae_key(p) for p in m.parents], [self.acts_key(p) for p in m.parents],
                         self.sample().name, cfg.sample, sorted((p, self.model_key(c)) for p, c in controls.items()))

            self.needs(self.member(name), *[self.member(p) for p in m.parents], *self.merge_reads(name),
                       *[self.sae(p) for p in m.parents], *[self.activation(p) for p in m.parents], self.sample(),
                       *[self.cross_activation(p, c) for p, c in controls.items()])

            def build(tmp: Path, m=m) -> None:
                tokens = self.sample_tokens()[:windows]
                rows = tokens.shape[0] * tokens.shape[1]
                ts = survival_ts(step, read_json(self.member(m.name) / "merge_curve.json").get("t"))
                survival_run(m.name, merge_recipe(self.member_inputs(), m), self.member(m.parents[0]),
                             {p: load_sae(self.sae(p)) for p in m.parents},
                             {p: self.load_acts(p)[:rows] for p in m.parents}, tokens, cfg.sae.hook, ts,
                             self.device, tmp, controls={p: (c, self.load_cross_acts(p, c)[:rows])
                                                         for p, c in controls.items()})

            out[name] = build_dir(self._dir("survival", name, key), build)
        return out

    # -------------------------------------------------------------------------------- crosscoders
    @_stage
    def crosscoder(self, parent: str, child: str) -> Path:
        """One edge's crosscoder (`crosscoder:`; featureflow/pipeline/crosscoder.py): latents.npz (per latent: decoder
        norms, relative norm, cosine, firing, Latent Scaling, call, top tokens, best SAE feature in each model),
        crosscoder.json (health, calls, training log) and its weights."""
        from featureflow.pipeline.crosscoder import edge_run
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.stages import hashed_seed

        cfg, cc = self.cfg, self.cfg.crosscoder
        seed = hashed_seed("crosscoder", cfg.seed, parent, child)
        key = key_of(VERSIONS["crosscoders"], cc, self.member_key(parent), self.member_key(child),
                     self.acts_key(parent), self.acts_key(child), self.sample().name, cfg.sample, seed)
        self.needs(self.member(parent), self.member(child), self.activation(parent), self.activation(child),
                   self.sample(), self.tokenizer())

        def build(tmp: Path) -> None:
            domains = list(dict.fromkeys(self.cfg.member_domains(parent) + self.cfg.member_domains(child)))
            info = edge_run(load_model(self.member(parent), self.device).eval(),
                            load_model(self.member(child), self.device).eval(),
                            [self.stream(d, "train") for d in domains], self.sample_tokens(), self.load_acts(parent),
                            self.load_acts(child), cfg.sae.hook, cc, seed, tmp)
            log.info("crosscoder %s->%s (%s): L0 %.1f, EV %.3f / %.3f, %s in %.1f s", parent, child, cc.architecture,
                     info["l0"], info["health"]["parent"]["explained_variance"],
                     info["health"]["child"]["explained_variance"], info["calls"], info["seconds"])

        return build_dir(self._dir("crosscoders", f"{parent}--{child}.{cc.architecture}", key), build)

    @_stage
    def crosscoders(self) -> dict[tuple[str, str], Path]:
        """A crosscoder per edge when the config has `crosscoder:`; none otherwise."""
        if self.cfg.crosscoder is None:
            return {}
        return {(p, c): self.crosscoder(p, c) for p, c in self.cfg.edges()}

    # --------------------------------------------------------------------------------- autointerp
    def persisting(self, name: str, n_features: int) -> np.ndarray:
        """Features of `name` that persist into some child at the run's threshold under the default mode, called
        by the store's one fate rule (`flows.feature_fates`) over an in-memory table of its edges' matches, filled
        by the store's own writer `insert_edge_matches` (the store itself is built last, from these stages)."""
        import duckdb

        from featureflow.pipeline.matching import read_rule_matches
        from featureflow.store import flows
        from featureflow.store.schema import create_tables
        from featureflow.store.writers import insert_edge_matches

        sim, rule = parse_mode(self.default_mode)
        out = np.zeros(n_features, dtype=bool)
        con = duckdb.connect()
        try:
            create_tables(con)
            for p, c in self.cfg.edges():
                if p == name:
                    folder = self.match(p, c, sim)
                    insert_edge_matches(con, sim, p, c, np.load(folder / "topk.npz"), read_rule_matches(folder, "1to1"))
            rows = con.execute(f"""SELECT feature FROM ({flows.feature_fates(rule, "AND direction = 'p2c'")})
                                   WHERE model = $model AND persisting""",
                               {**flows.fate_params(self.cfg.matching.threshold, self.default_mode), "model": name})
            out[[f for (f,) in rows.fetchall()]] = True
        finally:
            con.close()
        return out

    @_stage
    def explain(self, name: str) -> Path:
        """A member's explanations and scores (explanations.parquet), spend (spend.json) and the LLR of
        every feature's top token (llr.npy)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from featureflow.pipeline.autointerp import check_failures, explain_model, select_features, top_token_llr, unigram
        from featureflow.pipeline.tokenizer import token_strings

        cfg = self.cfg
        edges = [self.match(p, c).name for p, c in cfg.edges() if p == name] + [self.default_mode]
        ai = cfg.autointerp.model_dump(exclude={"concurrency", "max_retries", "timeout"})
        key = key_of(VERSIONS["autointerp"], ai, self.acts_key(name), edges, cfg.matching.threshold, cfg.seed)
        self.needs(self.activation(name), self.sample(), self.tokenizer(),
                   *[self.match(p, c, parse_mode(self.default_mode)[0]) for p, c in cfg.edges() if p == name])

        def build(tmp: Path) -> None:
            acts = self.load_acts(name)
            tokens = self.sample_tokens()
            vocab = token_strings(self.hf_tokenizer)
            feats = pq.read_table(self.activation(name) / "features.parquet")
            alive = feats.column("alive").to_numpy()
            chosen = select_features(cfg.autointerp, alive, self.persisting(name, len(alive)), cfg.seed)
            rows, spend = explain_model(acts, tokens, vocab, chosen, cfg.autointerp, cfg.seed,
                                        self.root / "llm_cache", name)
            check_failures(rows, name)  # most features failed: stop, store nothing
            if rows:
                pq.write_table(pa.Table.from_pylist(rows), tmp / "explanations.parquet")
            write_json(tmp / "spend.json", spend)
            # LLR of each feature's top token: top_token_share is P(top | feature)
            flat = tokens.ravel()
            top_id = feats.column("top_token_id").to_numpy()
            share = feats.column("top_token_share").to_numpy()
            llr = top_token_llr(top_id, share, np.ones_like(share), unigram(flat, len(vocab)))
            np.save(tmp / "llr.npy", llr)

        return build_dir(self._dir("autointerp", name, key), build)

    @_stage
    def autointerp(self) -> dict[str, Path]:
        return {n: self.explain(n) for n in self.cfg.topological_order()}

    # -------------------------------------------------------------------------------------- cases
    @_stage
    def cases(self) -> Path:
        """Case studies found from the data (cases.json)."""
        from featureflow.pipeline.cases import find_cases, write_cases
        from featureflow.pipeline.tokenizer import token_strings

        cfg = self.cfg
        key = key_of(VERSIONS["cases"], cfg.cases, [p.name for p in self.activations().values()])
        self.needs(self.sample(), self.tokenizer())

        def build(tmp: Path) -> None:
            order = cfg.topological_order()
            write_cases(tmp, find_cases(cfg.cases, order, {n: self.load_acts(n) for n in order}, self.sample_tokens(),
                                        token_strings(self.hf_tokenizer), cfg.roots()[0]))

        return build_dir(self._dir("cases", "cases", key), build)

    # ------------------------------------------------------------------------------- fingerprints
    def pool_members(self) -> list[dict]:
        """Extra short fine-tunes of the root for fingerprint clustering: [{name, domain, path}]."""
        cfg, pool = self.cfg, self.cfg.fingerprints.pool
        if pool.per_domain == 0:
            return []
        domains = pool.domains or list(dict.fromkeys(
            d for m in cfg.family if m.make == "finetune" for d in m.domains))
        return [{"name": f"pool-{d}-{i}", "domain": d, "path": self.pool_member(d, i)}
                for d in domains for i in range(pool.per_domain)]

    @_stage
    def pool_member(self, domain: str, i: int) -> Path:
        """One pool fine-tune of the root (`fingerprints.pool`): a model folder."""
        from featureflow.pipeline.family.model import load_model, save_model
        from featureflow.pipeline.family.train import train_lm

        cfg, pool = self.cfg, self.cfg.fingerprints.pool
        root = cfg.roots()[0]
        name = f"pool-{domain}-{i}"
        seed = cfg.seed + 7919 * (i + 1) + sum(map(ord, domain))
        key = key_of(VERSIONS["fingerprints"], pool, self.member_key(root), domain, i, cfg.training, cfg.seed)
        self.needs(self.member(root), self.tokenizer())

        def build(tmp: Path) -> None:
            model = load_model(self.member(root), self.device)
            lr = pool.lr or cfg.training.lr / 3
            train_lm(model, {domain: self.stream(domain, "train")}, self.val_windows([domain], cfg.training.eval_tokens),
                     pool.tokens, cfg.model.context, cfg.training, lr, seed, desc=f"pool {name}")
            save_model(model.to("cpu"), tmp, self.tokenizer() / "tokenizer")

        return build_dir(self._dir("pool", name, key), build)

    @_stage
    def fingerprints(self) -> Path:
        """Delta Activations for every non-root member, pool member and SLERP sweep point, their
        analyses, and the base-SAE features behind each member's fingerprint."""
        from featureflow.pipeline.fingerprints import fingerprint_run

        cfg = self.cfg
        pool = self.pool_members()
        key = key_of(VERSIONS["fingerprints"], cfg.fingerprints, [self.member_key(n) for n in cfg.topological_order()],
                     [p["path"].name for p in pool], [p.name for p in self.activations().values()])
        order = cfg.topological_order()
        root = cfg.roots()[0]
        bases = {n: cfg.fingerprints.base.get(n, root) for n in order}  # as fingerprint_run reads them
        self.needs(*[self.member(n) for n in order], *[self.cross_activation(b, n) for n, b in bases.items() if b != n],
                   self.tokenizer(), *[p for n in order for p in self.merge_reads(n)])
        return build_dir(self._dir("fingerprints", "delta", key), lambda tmp: fingerprint_run(
            cfg, {n: self.member(n) for n in order}, self.load_acts, self.load_cross_acts, self.hf_tokenizer,
            self.device, pool, self.member_inputs(), tmp))

    # ------------------------------------------------------------------------------------ planted
    @_stage
    def planted(self) -> Path | None:
        """The planted-family scorecard (planted.json) when the config has a `planted` section, with the run's
        SAE recipe and matching unless the section sets its own; None otherwise."""
        from featureflow.pipeline.planted import PLANTED_VERSION, resolve, run_planted

        cfg = self.cfg
        if cfg.planted is None:
            return None
        sae, matching = resolve(cfg.planted, cfg.sae, cfg.matching)
        key = key_of(VERSIONS["planted"], PLANTED_VERSION, cfg.planted, sae, matching)

        def build(tmp: Path) -> None:
            write_json(tmp / "planted.json", run_planted(cfg.planted, sae, matching, device=self.device))

        return build_dir(self._dir("planted", "scorecard", key), build)

    # -------------------------------------------------------------------------------------- store
    @_stage
    def store(self) -> Path:
        """Build data/<run>.duckdb from every artefact (temp file, then rename)."""
        from featureflow.pipeline.store_stage import build_store

        return build_store(self.cfg, self.store_inputs())

    def store_inputs(self):
        """What building the store reads, as explicit inputs: every artefact folder it reads (each stage
        resolved, built if need be) and the run's device, default mode and timings."""
        from featureflow.pipeline.store_stage import StoreInputs

        order = self.cfg.topological_order()
        return StoreInputs(
            corpora=self.corpora(), tokenizer=self.tokenizer(), sample=self.sample(),
            members={n: self.member(n) for n in order},
            saes={n: [self.sae(n)] + [self.sae(n, r) for r in self.replicas(n)[1:]] for n in order},
            activations=self.activations(),
            matches={(p, c, sim): self.match(p, c, sim) for sim in self.cfg.matching.similarities
                     for p, c in self.cfg.edges()},
            floors=self.floors(), agreements=self.agreements(), autointerp=self.autointerp(), cases=self.cases(),
            controls={c: {"root": root, "model": self.control(c), "saes": [self.sae(c, r) for r in self.replicas(c)],
                          "acts": self.replica_activation(c, 0)} for c, root in self.cfg.control_members().items()},
            control_matches=self.controls(), evidence=self.evidence(),
            cross={(a, b): self.cross_activation(a, b) for a, b in self.cross_pairs()}, survival=self.survival(),
            crosscoders=self.crosscoders(),
            fingerprints=self.fingerprints(), planted=self.planted(), device=self.device,
            default_mode=self.default_mode, timings=self.timings, stage_seconds=self.stage_seconds)

    # ---------------------------------------------------------------------------- later stages
    def run(self, stage: str | None = None) -> None:
        """Run every stage up to and including `stage` (default: all)."""
        if stage is not None and stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}' (stages: {', '.join(STAGES)})")
        target = stage or STAGES[-1]
        for p in sweep_temps(self.root, recursive=True):
            log.info("removed %s, left by a killed run", p)
        for s in STAGES[: STAGES.index(target) + 1]:
            fn = getattr(self, s)
            t0 = time.time()
            fn()
            self.stage_seconds[s] = round(time.time() - t0, 2)
            log.info("stage %-11s done in %6.1f s", s, time.time() - t0)

    def live_artefacts(self) -> set[Path]:
        """Every artefact folder the current config reaches (built or not), found by walking the stage
        graph with building switched off; `featureflow gc` removes the others."""
        with planning() as paths:
            for s in STAGES[:-1]:  # the store is a file beside the run folder, not an artefact in it
                getattr(self, s)()
        return set(paths)


class SAESide:
    """One SAE (`name`, `replica`) of a pipeline as a similarity reads it (`featureflow.modes.Side`)."""

    def __init__(self, pipeline: Pipeline, name: str, replica: int):
        self.pipeline, self.name, self.replica = pipeline, name, replica

    def acts(self):
        return self.pipeline.load_acts(self.name, self.replica)

    def decoder(self):
        return self.pipeline.decoder(self.name, self.replica)

    def tokens(self):
        return self.pipeline.sample_tokens().ravel()

    def vocab_size(self) -> int:
        return len(self.pipeline.hf_tokenizer)


class PipelineEdge:
    """One edge of a pipeline as an evidence kind reads it (`featureflow.evidence.EdgeData`)."""

    def __init__(self, pipeline: Pipeline, parent: str, child: str):
        self.pipeline, self.parent, self.child = pipeline, parent, child

    def acts(self, member: str, replica: int = 0):
        return self.pipeline.load_acts(member, replica)

    def cross_acts(self, sae_of: str, data_of: str, replica: int = 0):
        return self.pipeline.load_cross_acts(sae_of, data_of, replica)

    def decoder(self, member: str, replica: int = 0):
        return self.pipeline.decoder(member, replica)

    def matches(self, mode: str) -> dict:
        return self.pipeline.edge_matches(self.parent, self.child, mode)


class RedactingFilter(logging.Filter):
    """Removes the API key and anything key-shaped from a record's message and traceback, whichever
    library logged it (openai, httpx, ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from featureflow.pipeline.autointerp.llm import redact

        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(record.exc_text)
        return True


def setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


__all__ = ["Pipeline", "setup_logging"]
