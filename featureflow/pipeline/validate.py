"""`featureflow validate`: what a config needs from its models, checked before any work.

`load_config` has already checked the config's own fields and that every path it names exists. This module
opens what those paths hold, one model at a time, and checks what the stages would otherwise find out late:

- the tokenizer loads; every `load` member loads with transformers, boots in TransformerLens, and carries a
  tokenizer that tokenises like the family's;
- `sae.hook` exists in every member's architecture (the error lists the valid hooks);
- pretrained SAEs load through SAELens and match the hook and its width (d_in);
- merged parents have the same shape; `decoder` matching and fingerprints compare like with like;
- the sample and training windows fit models with learned position embeddings (GPT-2).

Every fault is one `field: message` line, in the same format as `load_config`'s (`featureflow/config.py`).
`featureflow run` runs these checks first.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

from featureflow.config import ConfigError, ExperimentConfig, FinetuneMember, LoadMember, MergeMember, TrainMember
from featureflow.pipeline.hooks import hook_order


@dataclass
class ModelSpec:
    """What the checks need to know about one member's model."""

    architecture: str
    shape: dict
    hooks: dict[str, int]          # hook name -> width
    max_positions: int | None      # learned position embeddings only (GPT-2): a hard limit on the context
    source: str = ""               # where it came from, for messages


@dataclass
class Validation:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    specs: dict[str, ModelSpec] = field(default_factory=dict)


def _spec(model, source: str) -> ModelSpec:
    from featureflow.pipeline.family.model import shape_of
    from featureflow.pipeline.hooks import hooked

    lm = hooked(model)
    hooks = lm.hook_widths
    learned = "hook_pos_embed" in hooks  # rotary models do not fire it
    return ModelSpec(type(model).__name__, shape_of(model), dict(hooks),
                     int(lm.bridge.cfg.n_ctx) if learned else None, source)


def validate(cfg: ExperimentConfig) -> Validation:
    """Run every check; nothing is written."""
    import torch

    from featureflow.pipeline.family.load import check_loaded_model
    from featureflow.pipeline.family.model import load_model, new_model
    from featureflow.pipeline.sae import load_sae
    from featureflow.pipeline.tokenizer import load_tokenizer

    v = Validation()
    index = {m.name: i for i, m in enumerate(cfg.family)}

    family_tok = None
    if cfg.tokenizer.path:
        try:
            family_tok = load_tokenizer(cfg.tokenizer.path)
        except Exception as e:  # transformers raises OSError / ValueError / KeyError for broken folders
            v.errors.append(f"tokenizer.path: transformers cannot load a tokenizer from '{cfg.tokenizer.path}': "
                            f"{type(e).__name__}: {_one_line(e)}")

    own_spec = None  # the family's own (trained) architecture, built once from `model:`
    for name in cfg.topological_order():
        m, i = cfg.member(name), index[name]
        if isinstance(m, LoadMember):
            try:
                model = load_model(m.path)
            except Exception as e:
                v.errors.append(f"family.{i}.path: transformers cannot load the model in '{m.path}': "
                                f"{type(e).__name__}: {_one_line(e)}")
                continue
            try:
                v.specs[name] = _spec(model, m.path)
            except Exception as e:
                v.errors.append(f"family.{i}.path: TransformerLens cannot boot the {type(model).__name__} in "
                                f"'{m.path}': {type(e).__name__}: {_one_line(e)}")
                continue
            if family_tok is not None:
                try:
                    check_loaded_model(name, Path(m.path).expanduser(), model, family_tok, [])
                except ValueError as e:
                    v.errors.append(f"family.{i}.path: {e}")
            else:
                v.notes.append(f"family.{i}: '{name}''s tokenizer is compared with the trained family tokenizer "
                               "at the models stage (set tokenizer.path to check it now)")
            del model
            gc.collect()
        elif isinstance(m, TrainMember):
            if own_spec is None:
                vocab = len(family_tok) if family_tok is not None else cfg.tokenizer.vocab_size
                with torch.device("cpu"):
                    own_spec = _spec(new_model(cfg.model, vocab, 0, 0), "model:")
            v.specs[name] = own_spec
        elif isinstance(m, (FinetuneMember, MergeMember)):
            parent_specs = [v.specs[p] for p in m.parents if p in v.specs]
            if len(parent_specs) == len(m.parents):
                v.specs[name] = parent_specs[0]  # a fine-tune or merge keeps its parent's architecture
            if isinstance(m, MergeMember) and len(parent_specs) == 2 and parent_specs[0].shape != parent_specs[1].shape:
                a, b = m.parents
                v.errors.append(f"family.{i}.parents: cannot merge '{a}' ({_shape(parent_specs[0])}) with '{b}' "
                                f"({_shape(parent_specs[1])}): merged models must have the same architecture and shape")

    _check_hook(cfg, v, index)
    _check_windows(cfg, v, index)
    for name, path in cfg.sae.pretrained.items():
        spec = v.specs.get(name)
        width = spec.hooks.get(cfg.sae.hook) if spec else None
        try:
            sae = load_sae(path, cfg.sae.hook, width)
            v.notes.append(f"sae.pretrained.{name}: SAELens {sae.architecture}, d_in {sae.d_in}, d_sae {sae.d_sae}"
                           + (f", trained on '{sae.hook_name}'" if sae.hook_name else ""))
        except (ValueError, FileNotFoundError) as e:
            v.errors.append(f"sae.pretrained.{name}: {e}")
    _check_comparisons(cfg, v)
    for name, spec in v.specs.items():
        s = spec.shape
        v.notes.append(f"family.{index[name]}: '{name}' {spec.architecture}, {s['layers']} layer(s), d_model "
                       f"{s['hidden']}, d_mlp {s['d_mlp']}, vocab {s['vocab']}; '{cfg.sae.hook}' width "
                       f"{spec.hooks.get(cfg.sae.hook, '?')}")
    return v


def _check_hook(cfg: ExperimentConfig, v: Validation, index: dict[str, int]) -> None:
    """sae.hook in every architecture of the family, reported once per architecture."""
    seen: set[int] = set()
    for name, spec in v.specs.items():
        if id(spec) in seen or cfg.sae.hook in spec.hooks:
            continue
        seen.add(id(spec))
        v.errors.append(f"sae.hook: '{cfg.sae.hook}' does not exist in the {spec.architecture} of '{name}' "
                        f"(family.{index[name]}); its hooks (TransformerLens names): "
                        f"{', '.join(sorted(spec.hooks, key=hook_order))}")


def _check_windows(cfg: ExperimentConfig, v: Validation, index: dict[str, int]) -> None:
    """Models with learned position embeddings cannot read windows longer than their table."""
    windows = {"sample.context": cfg.sample.context, "model.context": cfg.model.context}
    for name, spec in v.specs.items():
        if spec.max_positions is None:
            continue
        for fld, n in windows.items():
            if n > spec.max_positions:
                v.errors.append(f"{fld}: {n} tokens exceed the {spec.max_positions} positions of '{name}' "
                                f"(family.{index[name]}, {spec.architecture}); set {fld} to at most {spec.max_positions}")


def _check_comparisons(cfg: ExperimentConfig, v: Validation) -> None:
    """Decoder directions and fingerprints compare two models' vectors: their widths must agree."""
    width = {n: s.hooks.get(cfg.sae.hook) for n, s in v.specs.items()}
    from featureflow.modes import SIMILARITIES

    for sim in (x for x in cfg.matching.similarities if SIMILARITIES[x].reads_decoder):
        for p, c in cfg.edges():
            if p in width and c in width and None not in (width[p], width[c]) and width[p] != width[c]:
                v.errors.append(f"matching.modes: '{sim}' compares decoder directions, but edge {p} -> {c} joins "
                                f"hook widths {width[p]} and {width[c]}; drop the {sim} modes")
    from featureflow.evidence import evidence as kind_of

    for kind in (k for k in cfg.matching.evidence_kinds if "cross_activations" in kind_of(k).reads):
        for p, c in cfg.edges():
            if p in width and c in width and None not in (width[p], width[c]) and width[p] != width[c]:
                v.errors.append(f"matching: evidence '{kind}' runs one member's SAE on the other's activations, but "
                                f"edge {p} -> {c} joins hook widths {width[p]} and {width[c]}; drop it (and any "
                                "+transfer mode)")
    roots = cfg.roots()
    for name in cfg.topological_order():
        base = cfg.fingerprints.base.get(name, roots[0])
        if name == base or name not in v.specs or base not in v.specs:
            continue
        a, b = v.specs[name], v.specs[base]
        if (a.architecture, a.shape["hidden"], width[name]) != (b.architecture, b.shape["hidden"], width[base]):
            v.errors.append(f"fingerprints.base.{name}: '{name}' ({_shape(a)}) is fingerprinted against '{base}' "
                            f"({_shape(b)}), a model of another shape; set fingerprints.base.{name} to an ancestor "
                            "of the same architecture")


    fingerprinted = {(s.shape["hidden"], width[n]) for n, s in v.specs.items()
                     if cfg.fingerprints.base.get(n, roots[0]) != n}
    if len(fingerprinted) > 1:
        v.errors.append("fingerprints: the fingerprinted members have different widths (d_model, hook width: "
                        f"{', '.join(map(str, sorted(fingerprinted)))}); one fingerprint map compares them all")


def _shape(spec: ModelSpec) -> str:
    s = spec.shape
    return f"{spec.architecture}, {s['layers']} layer(s), d_model {s['hidden']}, d_mlp {s['d_mlp']}"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def check_config(cfg: ExperimentConfig, source: str | None = None) -> Validation:
    """`validate`, raising ConfigError with every fault."""
    v = validate(cfg)
    if v.errors:
        raise ConfigError(v.errors, source)
    return v
