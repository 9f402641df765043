"""One pydantic-validated YAML file describes a whole experiment.

The family of models is a DAG: every member names how it is made (`train`, `finetune`, `merge`,
`load`) and its parents. Validation errors name the field at fault as a dotted path, one line each, e.g.
`family.2.parents: unknown parent 'lau' of 'merged' (members: root, lau1, ...)`. Every path the config
names (tokenizer.path, sae.pretrained, corpora files, load members) is checked here, before any work;
`featureflow/validate.py` then checks what needs the models themselves (hooks, widths, tokenizers).
"""

from __future__ import annotations

import glob
import graphlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from featureflow.modes import SIMILARITIES, parse_mode  # the mode grammar: registered similarities and rules
from featureflow import saes as sae_archs  # the SAE architectures' registry (torch-free)
from featureflow import merges as merge_methods  # the merge methods' registry (mergekit-free)
from featureflow import evidence as evidence_kinds  # the evidence kinds' registry (torch-free)

DOMAINS = ("babylm", "python", "lua", "tinystories")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------- corpora
class DomainSource(Strict):
    """Where a domain's text comes from.

    - `generated`: this project's embedded generators (babylm, tinystories, lua) or, for `python`,
      the standard library's own `.py` files.
    - `files`: local `.txt` (one document per file or per blank-line block), `.jsonl` or `.parquet`
      (a `text_field` column), given as paths or glob patterns.
    - `hf`: a `datasets` dataset by name (needs the hub or a local cache; not used by the demo).
    """

    source: Literal["generated", "files", "hf"] = "generated"
    paths: list[str] = Field(default_factory=list)
    text_field: str = "text"
    dataset: str | None = None
    dataset_config: str | None = None
    data_dir: str | None = Field(None, description="e.g. data/lua for bigcode/the-stack-smol")
    data_files: list[str] | None = Field(None, description="local files for a `datasets` builder such as json / parquet")
    split: str = "train"
    chars: int = Field(2_000_000, gt=0, description="characters of text to take for this domain")

    @model_validator(mode="after")
    def _check_source(self) -> "DomainSource":
        if self.source == "files" and not self.paths:
            raise ValueError("source 'files' needs at least one entry in 'paths'")
        if self.source == "hf" and not self.dataset:
            raise ValueError("source 'hf' needs 'dataset'")
        return self


class CorporaConfig(Strict):
    domains: dict[str, DomainSource]
    validation_fraction: float = Field(0.05, gt=0, lt=0.5)

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, v: dict[str, DomainSource]) -> dict[str, DomainSource]:
        for name, src in v.items():
            if src.source == "generated" and name not in DOMAINS:
                raise ValueError(
                    f"domain '{name}' has no embedded generator (known: {', '.join(DOMAINS)}); "
                    "give it source: files or source: hf"
                )
        return v


class TokenizerConfig(Strict):
    vocab_size: int = Field(4096, ge=260)
    path: str | None = Field(None, description="use an existing tokenizer folder instead of training one")


# ---------------------------------------------------------------------------------------- models
class ModelShape(Strict):
    hidden: int = Field(128, gt=0)
    d_mlp: int = Field(512, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int | None = None
    context: int = Field(128, gt=1)
    rope_theta: float = 10000.0

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelShape":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        return self


class TrainingConfig(Strict):
    batch_size: int = Field(16, gt=0)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(100, gt=0)
    eval_tokens: int = Field(16_384, gt=0, description="validation tokens per domain per evaluation")


class _Member(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    parents: list[str] = Field(default_factory=list)
    label: str | None = Field(None, description="display name; defaults to name")
    seed: int | None = None


class TrainMember(_Member):
    make: Literal["train"]
    domains: list[str] = Field(min_length=1)
    tokens: int = Field(gt=0, description="training tokens")
    lr: float | None = None


class FinetuneMember(_Member):
    make: Literal["finetune"]
    domains: list[str] = Field(min_length=1)
    tokens: int = Field(gt=0)
    lr: float | None = None

    @field_validator("parents")
    @classmethod
    def _one_parent(cls, v: list[str]) -> list[str]:
        if len(v) != 1:
            raise ValueError(f"a finetune member needs exactly one parent, got {len(v)}")
        return v


class MergeMember(_Member):
    """A merge of two parents through mergekit's own merge pipeline (the same as `mergekit-yaml`), by a
    registered merge method (featureflow/merges/):

    - `slerp`: mergekit's SLERP with `base_model` = parents[0]; t = 0 is parents[0], t = 1 is parents[1].
    - `linear`: weights (1 - t, t) on parents[0], parents[1].
    - `ties`: TIES-merging of both parents' task vectors against `base` (default: their nearest common
      ancestor), weights (1 - t, t) and `density`.
    `t: auto` sweeps t and picks where the parents' own-domain accuracies meet.
    """

    make: Literal["merge"]
    method: str = Field("slerp", description="a registered merge method: " + merge_methods.describe())
    t: float | Literal["auto"] = "auto"
    base: str | None = Field(None, description="ties only: the model whose task vectors are merged "
                             "(default: the parents' nearest common ancestor)")
    density: float = Field(0.5, gt=0, le=1, description="ties only: share of each task vector kept")

    @field_validator("method")
    @classmethod
    def _registered_method(cls, v: str) -> str:
        return merge_methods.get(v).name  # an unknown name: ValueError listing the registered ones

    @field_validator("parents")
    @classmethod
    def _two_parents(cls, v: list[str]) -> list[str]:
        if len(v) != 2:
            raise ValueError(f"a merge member needs exactly two parents, got {len(v)}")
        return v

    @field_validator("t")
    @classmethod
    def _t_range(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0.0 <= v <= 1.0:
            raise ValueError(f"t must lie in [0, 1] or be 'auto', got {v}")
        return v


class LoadMember(_Member):
    """A local Hugging Face causal-LM folder (any architecture TransformerLens boots), with its tokenizer.

    `domains`: what the member is about (its SAE trains and is evaluated on them); inherited from its parent
    when left out, required for a root. `copy: false` references the weights where they are instead of
    copying them into the run folder. The member's key hashes the folder's content (not its mtimes)."""

    make: Literal["load"]
    path: str
    domains: list[str] = Field(default_factory=list)
    copy_weights: bool = Field(True, alias="copy", description="false: reference the weights in place "
                               "instead of copying them into data/<run>/models/")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("parents")
    @classmethod
    def _at_most_one(cls, v: list[str]) -> list[str]:
        if len(v) > 1:
            raise ValueError("a load member has at most one parent")
        return v


Member = Annotated[Union[TrainMember, FinetuneMember, MergeMember, LoadMember], Field(discriminator="make")]


class MergeSweepConfig(Strict):
    grid_step: float = Field(0.05, gt=0, le=0.5)
    tolerance: float = Field(0.005, gt=0)
    eval_tokens: int = Field(16_384, gt=0)
    survival_step: float | None = Field(
        0.1, gt=0, le=0.5, description="features along the interpolation path: every parent's SAE encodes the "
        "merged model at every multiple of this step of t (0 and 1 included) and at the chosen t, and each parent "
        "feature's transfer r there is stored (`merge_survival`); null: no survival sweep")
    survival_tokens: int = Field(50_000, gt=0, description="tokens of the shared sample (its first windows) the "
                                 "survival sweep encodes at each t")


# ----------------------------------------------------------------------------------- SAEs & after
class SAEConfig(Strict):
    hook: str = "blocks.0.mlp.hook_post"
    expansion: int = Field(4, gt=0)
    l1_coefficient: float = Field(3e-4, ge=0)
    lr: float = Field(1e-4, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.9999)
    lr_decay_fraction: float = Field(0.0, ge=0, lt=1, description="decay lr linearly to 0 over this last share "
                                     "of training (the paper: constant, 0)")
    lr_warmup_steps: int = Field(0, ge=0, description="raise lr linearly from lr/steps to lr over this many "
                                 "first steps (0: none)")
    block_tokens: int = Field(24, gt=0, description="tokens per sampled block")
    blocks_per_batch: int = Field(128, gt=0)
    tokens: int = Field(500_000, gt=0, description="training tokens per SAE")
    buffer_batches: int = Field(16, gt=0, description="the LM runs once per this many batches of blocks; every "
                                "replica of a member trains on that buffer in its own random token order")
    resample_dead_every: int = Field(0, ge=0, description="every this many steps, latents that did not fire since "
                                     "the last check restart at poorly reconstructed tokens (Bricken et al. 2023), "
                                     "until 60% of training; 0: never")
    init: Literal["random", "data"] = Field(
        "random", description="random: unit-norm Gaussian decoder rows; data: unit-normalised centred "
        "activations of random training tokens (picked per seed). Both set the encoder to the decoder's transpose")
    recipe: Literal["paper-text", "paper-code"] = Field(
        "paper-text",
        description="paper-text: appendix B as written (centred input minus b_d, per-feature unit-norm "
        "decoder, plain MSE); paper-code: the released code's variant (loss normalised by |x|)",
    )
    eval_tokens: int = Field(16_384, gt=0)
    pretrained: dict[str, str] = Field(
        default_factory=dict, description="member name -> local SAELens folder to load instead of training"
    )
    architecture: str = Field(
        "standard", description="a registered SAE architecture (featureflow/saes/): " + sae_archs.describe())
    k: int | None = Field(None, gt=0, description="topk / batchtopk: latents per token (default: target_l0, else 32)")
    sparse_backward: bool = Field(
        True, description="on a CPU, train through a hand-written sparse backward pass once fewer than 6% of "
        "the latents fire (the same gradient to float rounding, about 3x faster); false: dense autograd throughout")
    target_l0: float | None = Field(
        None, gt=0, description="standard: tune the L1 coefficient during training so the SAE ends at this mean "
        "L0 (l1_coefficient is then the starting value); topk / batchtopk: the default k")
    shared_init: bool = Field(
        False, description="true reproduces the paper's single-seed setup: every SAE (all members, all replicas) "
        "starts from the same initialisation and sees the same batch order. false (the default): each SAE's seed "
        "and batch order derive from (run seed, member, replica)")
    replicas: dict[str, int] | None = Field(
        None, description="member -> number of extra SAEs trained with other seeds; replica 0 is the one used "
        "for matching across models, replicas against replica 0 give the member's noise floor. Default: two "
        "extra SAEs for every root member and one for every other member with a trained SAE, so both sides of "
        "every edge have a floor; {} for none. A member's SAEs train in one pass over its activations")

    @field_validator("architecture")
    @classmethod
    def _registered_architecture(cls, v: str) -> str:
        return sae_archs.get(v).name  # an unknown name: ValueError listing the registered ones


class SampleConfig(Strict):
    tokens: int = Field(200_000, gt=0, description="shared sample size (paper: 3M)")
    context: int = Field(64, gt=1, description="window length the sample is cut into")
    top_k_examples: int = Field(20, gt=0)
    quantile_bins: int = Field(5, gt=0)
    examples_per_bin: int = Field(4, ge=0)
    window: int = Field(32, gt=2, description="tokens shown per example context")
    histogram_bins: int = Field(30, gt=1)


class MatchingConfig(Strict):
    """How features are matched parent -> child. A mode is a similarity and a rule, each registered in
    `featureflow/modes.py` (one file per similarity under `featureflow/similarities/`):

    similarities: `pearson` (activations over token positions of the shared sample, the paper's text),
    `decoder` (cosine of decoder directions, data-free, as Neuronpedia and cross-layer feature flow match),
    `token-type` (Pearson of per-token-type mean activations, the paper's released code), and any registered.
    rules: best match (`pearson`), or a one-to-one assignment of maximum total similarity (`pearson-1to1`).
    Every listed mode is computed and stored; the first is the default the explorer opens with.
    """

    threshold: float = Field(0.7, gt=-1, lt=1, description=(
        "similarity above which a parent feature persists into the child (else it disappears; a child feature "
        "no parent reaches above it emerges). The explorer moves it per page (`?threshold=`). Default 0.7, chosen "
        "on the planted family (`featureflow planted`, README 'Planted truth'): among reproducible latents "
        "activation Pearson's persisting precision stays 1.0 from 0.9 down to 0.5 while its recall falls from "
        "0.90 at 0.7 to 0.83 at 0.8, and disappearing precision is higher at 0.7 than at 0.8. The paper's rule "
        "is 0.8 (`configs/paper.yaml` keeps it)."))
    top_k: int = Field(5, gt=0)
    modes: list[str] = Field(default_factory=lambda: ["pearson", "pearson-1to1", "decoder", "decoder-1to1"],
                             min_length=1, description=(
        "matching modes (a similarity and a rule, `featureflow/modes.py`); the first is the run's default mode, "
        "what every page and the report show unless asked otherwise. `pearson+transfer` (first in "
        "configs/demo.yaml and configs/planted.yaml) reads transfer evidence beside the match and is the mode "
        "whose every fate call reached precision 0.96 and recall 0.82 on eleven planted shapes (README 'Planted "
        "truth'); it costs the transfer encodes (about 49 s on the demo), so the bare default leaves it out"))
    block_size: int = Field(2048, gt=0, description="decoder cosine: child features per dense block (memory: features x block float64)")
    evidence: list[str] | None = Field(None, description=(
        "evidence kinds computed on every edge beside matching, each registered in `featureflow/evidence/` (one "
        "file per kind): " + evidence_kinds.describe() + ". Stored in the `evidence` table, shown on feature "
        "pages and /evidence, printed by the report, scored on the planted family. None (the default): none"))

    @field_validator("evidence")
    @classmethod
    def _known_evidence(cls, v: list[str] | None) -> list[str] | None:
        for k in v or []:
            evidence_kinds.evidence(k)
        if v and len(set(v)) != len(v):
            raise ValueError("evidence kinds are listed twice")
        return v

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, v: list[str]) -> list[str]:
        for m in v:
            parse_mode(m)
        if len(set(v)) != len(v):
            raise ValueError("modes are listed twice")
        return v

    @property
    def similarities(self) -> list[str]:
        return list(dict.fromkeys(parse_mode(m)[0] for m in self.modes))

    @property
    def evidence_kinds(self) -> list[str]:
        """The evidence kinds to compute: those listed (`evidence`) and those a mode's rule reads (a `+transfer`
        mode reads transfer and reverse-transfer)."""
        from featureflow.modes import RULES

        needed = [k for m in self.modes for k in RULES[parse_mode(m)[1]].needs]
        return list(dict.fromkeys([*(self.evidence or []), *needed]))


class AutointerpConfig(Strict):
    mode: Literal["offline", "llm"] = Field(
        "offline", description="offline: token-statistics explainer + simulator (no key, no network); "
        "llm: any OpenAI-compatible server through the openai client, key from OPENAI_API_KEY only")
    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8001/v1 for vLLM or Ollama")
    concurrency: int = Field(4, ge=1, le=64)
    features: Literal["all", "persisting+random"] = "all"
    random_per_model: int = Field(200, ge=0)
    max_usd: float = Field(5.0, ge=0, description="stop cleanly once this much is spent")
    price_per_input_token: float = Field(1.5e-7, ge=0)
    price_per_output_token: float = Field(6e-7, ge=0)
    max_retries: int = Field(4, ge=0, le=10)
    timeout: float = Field(60.0, gt=0)
    logprobs: bool = True
    n_top: int = Field(20, ge=2, description="top windows; even ranks explain, odd ranks are held out")
    n_quantiles: int = Field(5, ge=1)
    per_quantile: int = Field(2, ge=0)
    window: int = Field(32, ge=4)


class CaseFeature(Strict):
    model: str
    id: int = Field(ge=0)


class CaseConfig(Strict):
    """A case study: a token hypothesis (the root feature with the highest LLR for it) or a named feature,
    followed to its best match in every descendant (or only in `descendants`)."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    title: str
    description: str = ""
    token: str | None = None
    feature: CaseFeature | None = None
    root: str | None = None
    descendants: list[str] | None = None
    min_coverage: float = Field(0.1, ge=0, le=1, description="a feature 'fires on' the token when it fires on at "
                                "least this share of the token's occurrences (the LLR saturates at -log P(s) for "
                                "any feature that fires only on s, however rarely)")

    @model_validator(mode="after")
    def _one_source(self) -> "CaseConfig":
        if (self.token is None) == (self.feature is None):
            raise ValueError("a case needs exactly one of 'token' or 'feature'")
        return self


class PoolConfig(Strict):
    """Extra short fine-tunes of the root, only for fingerprint clustering (no SAEs)."""

    per_domain: int = Field(0, ge=0, description="extra members per domain; 0 = no pool")
    domains: list[str] = Field(default_factory=list, description="default: the family's fine-tune domains")
    tokens: int = Field(100_000, gt=0)
    lr: float | None = None


class FingerprintConfig(Strict):
    probes: list[str] | None = Field(None, description="probe texts; default: built-in domain-neutral ones")
    probe_set: Literal["neutral", "instruction"] = "neutral"
    base: dict[str, str] = Field(default_factory=dict, description="member -> its base (default: the root)")
    pool: PoolConfig = PoolConfig()
    top_features: int = Field(20, gt=0)


# ---------------------------------------------------------------------------------------- crosscoders
class CrosscoderConfig(Strict):
    """A crosscoder per edge (featureflow/pipeline/crosscoder.py): one dictionary read from and written to the
    parent's and the child's activations at the same token, beside SAE matching. Its latents are shared, parent-only
    or child-only by their decoder norms' relative norm."""
    architecture: Literal["batchtopk", "l1"] = Field("batchtopk", description="batchtopk (Minder et al. 2025: no "
                                                     "L1 shrinkage) or l1 (Lindsey et al. 2024: decoder-norm-weighted "
                                                     "L1)")
    expansion: float = Field(8.0, gt=0, description="latents per dimension of one model's activations")
    k: int = Field(4, ge=1, description="batchtopk: latents kept per row on average over a batch")
    l1_coefficient: float = Field(0.1, gt=0, description="l1: the penalty's weight (0.1 gives L0 about 26 on "
                                  "configs/planted.yaml; 0.03 gives 66 and the artefacts Latent Scaling catches)")
    lr: float = Field(3e-3, gt=0)
    steps: int = Field(2000, ge=1, description="optimiser steps")
    batch: int = Field(256, ge=1, description="paired rows (positions or tokens) per step")
    exclusive_below: float = Field(0.2, gt=0, lt=0.5, description="relative norm rho = |d_child| / (|d_parent| + "
                                   "|d_child|) below this: parent-only; above 1 minus this: child-only; else shared")
    scaling: bool = Field(True, description="keep an exclusive call only where Latent Scaling (Minder et al.) finds "
                          "the other model does not carry the latent's direction (nu below 0.5); else shared")
    aux_k: int = Field(32, ge=0, description="batchtopk: AuxK (Gao et al. 2024), the dead latents' largest "
                       "pre-activations per row kept to reconstruct the live latents' error; 0: off (on the tiny "
                       "LMs it brought dead latents from 245 to 36 of 512)")
    dead_after: int = Field(200, ge=1, description="batchtopk with aux_k: a latent that has not fired for this many "
                            "steps counts as dead")
    aux_coefficient: float = Field(1 / 32, ge=0, description="batchtopk with aux_k: the AuxK loss's weight (relative "
                                   "to the error it reconstructs)")
    sample_tokens: int = Field(20_000, ge=1, description="an LM edge: tokens of the shared sample every latent is "
                               "measured on (its activations are held densely: tokens x latents)")


# ---------------------------------------------------------------------------------------- executor
class TaskResources(Strict):
    num_cpus: float = Field(1, ge=0, description="CPUs a Ray task of this kind asks for")
    num_gpus: float = Field(0, ge=0, description="GPUs a Ray task of this kind asks for (a task with a GPU runs on "
                            "cuda)")


class ExecutorConfig(Strict):
    """How `featureflow run --executor ray` hands tasks to workers (`pipeline/executors.py`). Nothing here is in
    any artefact's key: the same config runs on either executor to the same artefacts."""
    resources: dict[str, TaskResources] = Field(default_factory=dict, description="task kind (a stage: member, "
                                                "sae, activation, match, ... as `featureflow plan` lists them) -> "
                                                "what one task of that kind asks for; kinds not named ask for 1 CPU. "
                                                "E.g. `sae: {num_gpus: 1}`")
    threads: int | None = Field(None, ge=1, description="torch and BLAS threads inside each Ray task (default: the "
                                "task's CPUs; more threads than cores make the workers fight over them). Floating-"
                                "point sums follow the thread count, so artefacts equal a local run's to the bit "
                                "when this equals the local run's threads (the cores, by default)")


# ---------------------------------------------------------------------------------------- controls
CONTROL_SUFFIX = ".random"  # a random-weights control's name: its root's and this (a member's name has no ".")

class ControlsConfig(Strict):
    """Controls every persistence figure is read against. A **random-weights control** of a root has the root's
    architecture and tokenizer and random weights (the architecture's own initialisation, Hugging Face
    `from_config`, from a recorded seed; no training), and its own SAE trained like every member's on the root's
    domains. It is not a member of the family (no Sankey column, no lineage): every member that is a parent on
    some edge is matched against its root's control like an edge, so every edge has a lower anchor, what token
    identity alone "persists" (SAE features of random transformers are as interpretable as trained ones':
    Heap et al. 2025). A feature that also persists into the control is *token-level*."""

    random_weights: bool = Field(True, description="train a random-weights control per root (the lower anchor of "
                                 "every persistence figure); false: none (figures then say the control is missing)")
    seed: int | None = Field(None, description="seed of a control's random initialisation; default: derived from "
                             "the run seed and the root's name (recorded in the store either way)")
    replicas: int = Field(0, ge=0, le=8, description="extra SAEs of the control with other seeds (trained in the "
                          "same pass); the control's persistence reads replica 0, as every edge reads the child's")


# ------------------------------------------------------------------------------ planted family
class PlantedChild(Strict):
    """One member of the planted family made from its parent by known edits. Each fraction is a share of the
    parent's features (root features for a child of the root), drawn without overlap between the children
    of one parent, so a merge of two siblings sees each feature edited by at most one of them."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    parent: str = Field("root", description="the member it is made from (the root is called 'root')")
    drifted: float = Field(0.2, ge=0, le=1, description="share of features kept but drifted: direction rotated "
                           "by an angle of `drift_angles` (in turn), firing magnitude times `drift_scale`")
    removed: float = Field(0.1, ge=0, le=1, description="share of features removed (they should disappear)")
    split: float = Field(0.05, ge=0, le=1, description="share of features split into two children, each firing on "
                         "half of the parent's firing events (a fixed coin per event), each direction rotated by "
                         "`split_angle` from the parent's in its own random plane")
    added: float = Field(0.1, ge=0, le=4, description="new features, as a share of the parent's feature count, "
                         "with firing events of their own (they should emerge)")


class PlantedMerge(Strict):
    """A merge of two members by interpolated dictionaries (the SLERP analogue): a feature both parents have
    gets the SLERP of their directions at `t` and the interpolated magnitude; a feature only one parent has
    keeps its direction at that parent's weight ((1 - t) for the first, t for the second); a feature one
    parent split is split in the merge too."""

    name: str = Field("merge", pattern=r"^[A-Za-z0-9_\-]+$")
    parents: list[str] = Field(min_length=2, max_length=2)
    t: float = Field(0.5, ge=0, le=1)


class PlantedConfig(Strict):
    """A planted family: a root of `features` true features in `d` dimensions (superposition: features > d;
    directions and firing from SAELens's `sae_lens.synthetic`: `FeatureDictionary` with its orthogonalising
    initialiser, `ActivationGenerator`), children made from it by known edits, an optional merge, and one SAE
    per member and replica trained, encoded and matched by the pipeline's own stage functions. Every member
    sees the same firing events at the same positions for the features it shares (a shared sample of
    `sample_positions` positions), as every LM sees one shared token sample. The scorecard: precision, recall
    and F1 of each mode's fate calls against the planted truth, for all features and for reproducible ones."""

    seed: int = 0
    features: int = Field(256, ge=2, description="true features of the root")
    d: int = Field(64, ge=2, description="dimension of the activations (features > d: superposition)")
    firing_min: float = Field(0.005, gt=0, lt=1, description="firing probabilities are log-uniform in "
                              "[firing_min, firing_max]")
    firing_max: float = Field(0.05, gt=0, lt=1)
    magnitude_mean: float = Field(1.0, gt=0, description="mean firing magnitude")
    magnitude_std: float = Field(0.3, ge=0, description="standard deviation of the firing magnitude")
    children: list[PlantedChild] = Field(
        default_factory=lambda: [PlantedChild(name="a"), PlantedChild(name="b")], min_length=1)
    merge: PlantedMerge | None = Field(default_factory=lambda: PlantedMerge(parents=["a", "b"]),
                                       description="a merge member of two members; null for none")
    drift_angles: list[float] = Field(default_factory=lambda: [10.0, 20.0, 30.0, 45.0], min_length=1,
                                      description="degrees; drifted features take these in turn")
    drift_scale: float = Field(0.8, gt=0, description="firing magnitude factor of a drifted feature")
    split_angle: float = Field(30.0, ge=0, le=90, description="degrees between a split child's direction and "
                               "its parent's")
    sample_positions: int = Field(40_000, ge=100, description="positions of the shared sample every SAE is "
                                  "encoded and matched on")
    train_positions: int = Field(200_000, ge=100, description="positions of the training pool every SAE draws "
                                 "its batches from (in an order of its own seed), as SAEs draw blocks of a corpus")
    replicas: int = Field(1, ge=1, le=8, description="extra SAEs per member with other seeds; a feature "
                          "of replica 0 (the one matched) is reproducible when it matches above the threshold in "
                          "every other replica (the store's stability rule)")
    truth_min_cos: float = Field(0.5, ge=0, le=1, description="a latent's truth is the true feature Hungarian "
                                 "assigns it (decoder vs dictionary |cos|) when their |cos| reaches this; "
                                 "below it the latent is 'unresolved' (no planted feature), never a right call")
    sae: SAEConfig | None = Field(None, description="the SAE recipe; default: the run's `sae` section in a run "
                                  "config, else SAEConfig's defaults with a size for the planted shape")
    matching: MatchingConfig | None = Field(None, description="threshold, top_k and modes; default: the run's "
                                            "`matching` section (token-type modes dropped: there are no tokens)")
    crosscoder: CrosscoderConfig | None = Field(None, description="also train a crosscoder per planted edge (both "
                                                "architectures, with and without Latent Scaling) and score its "
                                                "shared / exclusive calls on the same truth (the scorecard's "
                                                "`crosscoder`); none by default")

    @model_validator(mode="after")
    def _check(self) -> "PlantedConfig":
        errors = []
        if self.firing_min > self.firing_max:
            errors.append(f"firing_min: {self.firing_min} is above firing_max ({self.firing_max})")
        names = ["root"]
        for i, c in enumerate(self.children):
            if c.name in names:
                errors.append(f"children.{i}.name: duplicate member '{c.name}'")
            if c.parent not in names:
                errors.append(f"children.{i}.parent: unknown member '{c.parent}' of '{c.name}' (members so far: "
                              f"{', '.join(names)})")
            names.append(c.name)
        for parent in dict.fromkeys(c.parent for c in self.children):
            edits = sum(c.drifted + c.removed + c.split for c in self.children if c.parent == parent)
            if edits > 1 + 1e-9:
                errors.append(f"children: the drifted + removed + split shares of the children of '{parent}' "
                              f"add up to {edits:.3g}, above 1 (they are drawn without overlap)")
        if self.merge is not None:
            for p in self.merge.parents:
                if p not in names:
                    errors.append(f"merge.parents: unknown member '{p}' (members: {', '.join(names)})")
            if self.merge.name in names:
                errors.append(f"merge.name: duplicate member '{self.merge.name}'")
        if self.matching is not None:
            for m in self.matching.modes:
                if not SIMILARITIES[parse_mode(m)[0]].planted:
                    errors.append(f"matching.modes: '{m}' needs tokens; a planted family has none")
        _raise(errors)
        return self


class PlantedFile(Strict):
    """A file holding only a planted section (`configs/planted.yaml`)."""

    planted: PlantedConfig


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    seed: int = 0
    data_dir: str = "data"
    corpora: CorporaConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelShape = ModelShape()
    training: TrainingConfig = TrainingConfig()
    family: list[Member] = Field(min_length=1)
    merge: MergeSweepConfig = MergeSweepConfig()
    sae: SAEConfig = SAEConfig()
    sample: SampleConfig = SampleConfig()
    matching: MatchingConfig = MatchingConfig()
    autointerp: AutointerpConfig = AutointerpConfig()
    cases: list[CaseConfig] = Field(default_factory=list)
    fingerprints: FingerprintConfig = FingerprintConfig()
    controls: ControlsConfig = ControlsConfig()
    executor: ExecutorConfig = ExecutorConfig()
    crosscoder: CrosscoderConfig | None = Field(None, description="a crosscoder per edge beside SAE matching "
                                                "(featureflow/pipeline/crosscoder.py; the `crosscoders` stage); none "
                                                "by default (the demo leaves them out: configs/crosscoder.yaml runs "
                                                "them)")
    planted: PlantedConfig | None = Field(None, description="a planted family scored with this run's SAE recipe "
                                          "and matching (unless it sets its own): the store gets the scorecard "
                                          "and the explorer's /method page shows it")

    @model_validator(mode="after")
    def _check_family(self) -> "ExperimentConfig":
        """Cross-field checks. Every fault is reported at once, one `field: message` line each."""
        errors: list[str] = []
        names = [m.name for m in self.family]
        known = f"members: {', '.join(names)}"
        seen: set[str] = set()
        for i, m in enumerate(self.family):
            if m.name in seen:
                errors.append(f"family.{i}.name: duplicate member '{m.name}'")
            seen.add(m.name)
            for p in m.parents:
                if p not in names:
                    errors.append(f"family.{i}.parents: unknown parent '{p}' of '{m.name}' ({known})")
                elif p == m.name:
                    errors.append(f"family.{i}.parents: '{m.name}' is its own parent")
            for d in getattr(m, "domains", []):
                if d not in self.corpora.domains:
                    errors.append(f"family.{i}.domains: unknown domain '{d}' of '{m.name}' "
                                  f"(corpora.domains: {', '.join(self.corpora.domains)})")
            if isinstance(m, LoadMember):
                if not m.domains and not m.parents:
                    errors.append(f"family.{i}.domains: load member '{m.name}' has no parent to inherit domains "
                                  f"from; list the corpora domains it is about (its SAE trains and is evaluated "
                                  f"on them), e.g. domains: [{next(iter(self.corpora.domains))}]")
                errors += _check_model_folder(f"family.{i}.path", m.path, m.name)
            if isinstance(m, MergeMember) and m.base is not None:
                if not merge_methods.get(m.method).takes_base:
                    have = ", ".join(f"'{n}'" for n in merge_methods.with_base())
                    errors.append(f"family.{i}.base: only method {have} takes a base (got '{m.method}')")
                elif m.base not in names:
                    errors.append(f"family.{i}.base: unknown member '{m.base}' ({known})")
                elif m.base == m.name:
                    errors.append(f"family.{i}.base: '{m.name}' cannot be its own base")
        if self.tokenizer.path is not None:
            errors += _check_tokenizer_folder("tokenizer.path", self.tokenizer.path)
        elif not any(isinstance(m, TrainMember) for m in self.family) and \
                any(isinstance(m, LoadMember) for m in self.family):
            loaded = next(m.path for m in self.family if isinstance(m, LoadMember))
            errors.append("tokenizer.path: no member is trained here, so the family tokenizer must be the loaded "
                          f"models' own: set tokenizer.path to a model folder (e.g. {loaded})")
        for d, src in self.corpora.domains.items():
            if src.source == "files":
                for j, pattern in enumerate(src.paths):
                    if not glob.glob(os.path.expanduser(pattern), recursive=True):
                        errors.append(f"corpora.domains.{d}.paths.{j}: '{pattern}' matches no file")
            for j, f in enumerate(src.data_files or []):
                if not glob.glob(os.path.expanduser(f), recursive=True):
                    errors.append(f"corpora.domains.{d}.data_files.{j}: '{f}' matches no file")
        for name, path in self.sae.pretrained.items():
            if name not in names:
                errors.append(f"sae.pretrained.{name}: unknown member '{name}' ({known})")
            errors += _check_sae_folder(f"sae.pretrained.{name}", path)
        _raise(errors)
        try:
            self.topological_order()
        except ValueError as e:
            _raise([str(e)])

        if not HOOK_NAME.match(self.sae.hook):
            errors.append(f"sae.hook: '{self.sae.hook}' is not a TransformerLens hook name (e.g. "
                          "blocks.0.mlp.hook_post, blocks.0.hook_resid_post; `featureflow validate` lists a "
                          "model's hooks)")
        else:
            layer = re.match(r"^blocks\.(\d+)\.", self.sae.hook)
            trained = [m.name for m in self.family if isinstance(m, (TrainMember, FinetuneMember, MergeMember))
                       and all(isinstance(self.member(r), TrainMember) for r in self.ancestors_roots(m.name))]
            if layer and trained and int(layer.group(1)) >= TRAINED_LAYERS:
                errors.append(f"sae.hook: '{self.sae.hook}' is past the last layer of the family's own models "
                              f"({', '.join(trained)}: {TRAINED_LAYERS} layer, blocks.0 only)")
        for name, n in (self.sae.replicas or {}).items():
            if name not in names:
                errors.append(f"sae.replicas.{name}: unknown member '{name}' ({known})")
            elif n < 0:
                errors.append(f"sae.replicas.{name}: needs a count >= 0, got {n}")
            elif n and name in self.sae.pretrained:
                errors.append(f"sae.replicas.{name}: '{name}' loads a pretrained SAE; only trained SAEs have "
                              "replicas")
        for m, b in self.fingerprints.base.items():
            for n in (m, b):
                if n not in names:
                    errors.append(f"fingerprints.base.{m}: unknown member '{n}' ({known})")
        for j, d in enumerate(self.fingerprints.pool.domains):
            if d not in self.corpora.domains:
                errors.append(f"fingerprints.pool.domains.{j}: unknown domain '{d}'")
        slugs: set[str] = set()
        for i, c in enumerate(self.cases):
            if c.slug in slugs:
                errors.append(f"cases.{i}.slug: duplicate case '{c.slug}'")
            slugs.add(c.slug)
            for n in [c.root] * bool(c.root) + (c.descendants or []) + ([c.feature.model] if c.feature else []):
                if n not in names:
                    errors.append(f"cases.{i}: unknown model '{n}' ({known})")
        _raise(errors)
        return self

    # ---- family helpers (the DAG) ----
    def member(self, name: str) -> Member:
        for m in self.family:
            if m.name == name:
                return m
        raise KeyError(f"no member '{name}' (members: {', '.join(m.name for m in self.family)})")

    def topological_order(self) -> list[str]:
        """Members ordered so that every parent precedes its children (`graphlib`); among members whose parents
        are all placed, the one listed first in the config goes first, so a family listed parents-first keeps
        its order. Raises on a cycle, naming it parent -> child."""
        ts = graphlib.TopologicalSorter({m.name: list(m.parents) for m in self.family})
        try:
            ts.prepare()
        except graphlib.CycleError as e:
            raise ValueError(f"family: cycle {' -> '.join(e.args[1])} (each a parent of the next)") from None
        listed = {m.name: i for i, m in enumerate(self.family)}
        order: list[str] = []
        ready: list[str] = []
        while ts.is_active():
            ready = sorted({*ready, *ts.get_ready()}, key=lambda n: listed.get(n, len(listed)))
            order.append(ready.pop(0))
            ts.done(order[-1])
        return [n for n in order if n in listed]

    def ancestors_roots(self, name: str) -> list[str]:
        """The root members `name` descends from (itself if it is a root)."""
        m = self.member(name)
        if not m.parents:
            return [name]
        return list(dict.fromkeys(r for p in m.parents for r in self.ancestors_roots(p)))

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs in topological order of the child."""
        return [(p, c) for c in self.topological_order() for p in self.member(c).parents]

    def roots(self) -> list[str]:
        return [n for n in self.topological_order() if not self.member(n).parents]

    def control_members(self) -> dict[str, str]:
        """Random-weights controls by name -> the root each copies the architecture and tokenizer of (none when
        `controls.random_weights` is false)."""
        if not self.controls.random_weights:
            return {}
        return {f"{r}{CONTROL_SUFFIX}": r for r in self.roots()}

    def control_of(self, member: str) -> str | None:
        """The control a parent member is matched against: its (first) root's; None without controls."""
        roots = self.ancestors_roots(member)
        name = f"{roots[0]}{CONTROL_SUFFIX}"
        return name if name in self.control_members() else None

    def control_edges(self) -> list[tuple[str, str]]:
        """(member, control) for every member that is a parent on some edge, in topological order."""
        parents = dict.fromkeys(p for p, _ in self.edges())
        return [(p, c) for p in parents if (c := self.control_of(p)) is not None]

    def member_domains(self, name: str) -> list[str]:
        """The domains a member was trained on, inherited through the tree (an SAE trains on these)."""
        m = self.member(name)
        inherited = [d for p in m.parents for d in self.member_domains(p)]
        return list(dict.fromkeys(inherited + list(getattr(m, "domains", []))))

    def own_domains(self, name: str) -> list[str]:
        """The domains that define a member: its own training domains, or for a merge its parents' own."""
        m = self.member(name)
        if isinstance(m, MergeMember):
            return list(dict.fromkeys(d for p in m.parents for d in self.own_domains(p)))
        return list(getattr(m, "domains", [])) or self.member_domains(name)

    def sae_replicas(self) -> dict[str, int]:
        """Extra SAEs per member (the default: two for every root member, one for every other member; none
        for a member whose SAE is pretrained)."""
        if self.sae.replicas is not None:
            return {n: k for n, k in self.sae.replicas.items() if k > 0}
        roots = set(self.roots())
        return {m.name: 2 if m.name in roots else 1 for m in self.family if m.name not in self.sae.pretrained}

    def common_ancestor(self, a: str, b: str) -> str | None:
        """The nearest member that both `a` and `b` descend from (or are)."""
        def up(n: str) -> list[str]:
            out, todo = [], [n]
            while todo:
                x = todo.pop(0)
                if x not in out:
                    out.append(x)
                    todo += self.member(x).parents
            return out
        ub = set(up(b))
        return next((x for x in up(a) if x in ub), None)

    def run_dir(self) -> Path:
        return Path(self.data_dir) / self.name

    def store_path(self) -> Path:
        return Path(self.data_dir) / f"{self.name}.duckdb"


class ConfigError(ValueError):
    """A config that does not validate. `errors` holds one line per fault, `field: message`, the field a
    dotted path (`family.1.parents`, `sae.pretrained.lua`, `corpora.domains.lua.paths.0`); the message is
    those lines, each prefixed with the config's source."""

    def __init__(self, errors: str | list[str], source: str | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.source = source
        super().__init__("\n".join(f"{source}: {e}" if source else e for e in self.errors))


HOOK_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\.|\d+\.)*hook_[A-Za-z0-9_]+$")  # TransformerLens style
TRAINED_LAYERS = 1  # the family's own models (featureflow/family/model.py) have one layer
_MAKES = ("train", "finetune", "merge", "load")


def _raise(errors: list[str]) -> None:
    if errors:
        raise ValueError("\n".join(errors))


def _check_folder(field: str, path: str, what: str, markers: tuple[str, ...], how: str, of: str = "") -> list[str]:
    """[] when `path` is a folder holding one of `markers`, else one error naming the field."""
    p = Path(path).expanduser()
    where = f"'{path}'" + (f" of '{of}'" if of else "")
    if not p.exists():
        return [f"{field}: {where} does not exist"]
    if not p.is_dir() or not any((p / f).is_file() for f in markers):
        return [f"{field}: {where} is not {what} (no {' or '.join(markers)}; {how})"]
    return []


def _check_model_folder(field: str, path: str, name: str) -> list[str]:
    return _check_folder(field, path, "a Hugging Face model folder", ("config.json",),
                         "save it with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)", of=name)


def _check_tokenizer_folder(field: str, path: str) -> list[str]:
    return _check_folder(field, path, "a tokenizer folder", ("tokenizer.json", "tokenizer_config.json"),
                         "save one with tokenizer.save_pretrained(folder)")


def _check_sae_folder(field: str, path: str) -> list[str]:
    return _check_folder(field, path, "a SAELens folder", ("cfg.json",), "save one with sae.save_model(folder)")


def _format_errors(err: ValidationError) -> list[str]:
    """pydantic's errors as `field: message` lines: a dotted location without pydantic's internal parts
    (the `make` tag of a family member, function-after wrappers); errors raised by the cross-field
    validator already name their field and may be several lines."""
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not str(x).startswith(("function-after", "tagged-union"))]
        if len(loc) > 2 and loc[0] == "family" and loc[2] in _MAKES:
            loc.pop(2)
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            lines.append(f"{'.'.join(loc)}: {msg}")
        else:
            lines += msg.splitlines()
    return lines


def parse_config(data: dict, source: str | None = None) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e), source) from None


def load_planted(path: str | Path) -> tuple[PlantedConfig, SAEConfig | None, MatchingConfig | None]:
    """The planted section of a file: a file of only `planted:` (its own sae / matching or the defaults), or a
    run config with a `planted:` section (falling back on the run's `sae` and `matching`)."""
    path = Path(path)
    data = _read_yaml(path)
    if "family" in data:
        cfg = parse_config(data, str(path))
        if cfg.planted is None:
            raise ConfigError("planted: this run config has no planted section", str(path))
        return cfg.planted, cfg.sae, cfg.matching
    try:
        return PlantedFile.model_validate(data).planted, None, None
    except ValidationError as e:
        raise ConfigError(_format_errors(e), str(path)) from None


def _read_yaml(path: Path) -> dict:
    """The mapping in the YAML file `path`. Every fault of the file itself (missing, a directory, unreadable,
    not UTF-8, not YAML, a lone surrogate in a value) is a one-line ConfigError naming the file and the line
    or field (`featureflow.userfiles`, the one error path of every user file)."""
    from featureflow.userfiles import UserFileError, check_text, read_text

    try:
        text = read_text(path, "config file")
    except UserFileError as e:
        raise ConfigError(str(e)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")

    def walk(x, where: str) -> None:  # YAML escapes such as "\ud800" make strings no file can hold
        if isinstance(x, str):
            try:
                check_text(x, where)
            except UserFileError as e:
                raise ConfigError(str(e), str(path)) from None
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k, f"{where}.{k}".lstrip(".") if isinstance(k, str) else where)
                walk(v, f"{where}.{k}".lstrip("."))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}.{i}".lstrip("."))

    walk(data, "")
    return data


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    return parse_config(_read_yaml(path), str(path))
