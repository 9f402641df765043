"""Matching modes: a **similarity** (what two SAEs' features are compared by) and a **rule** (which match counts),
each one registered object, as SAELens registers SAE classes and mergekit merge methods.

A mode's name is the similarity's, followed by the rule's suffix: `pearson` (best match), `pearson-1to1`
(one-to-one assignment), `decoder`, `token-type-1to1`. The config's allowed modes, the CLI help, the report, the
explorer's mode menus and labels and the planted scorecard read this registry; nothing else names a similarity.

A similarity is one file (`featureflow/similarities/pearson.py` is the model to copy) that calls
`register_similarity(Similarity(...))`. This module and those files import nothing heavy (the explorer reads the
labels): an engine imports what it needs when it runs. The built-in ones register when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from featureflow.registry import Registry


class Side(Protocol):
    """One SAE's data, read lazily, that a similarity turns into what it compares (`Similarity.inputs`)."""

    def acts(self) -> Any: ...        # sparse (tokens x features) activations on the shared sample (scipy CSC)
    def decoder(self) -> Any: ...     # (features x d_in) decoder directions (numpy)
    def tokens(self) -> Any: ...      # the sample's token ids, one per activation row (numpy); None: no tokens
    def vocab_size(self) -> int: ...


@dataclass(frozen=True)
class Similarity:
    """How two SAEs' features are compared: `inputs(side)` makes what is compared from one SAE's data, `width` counts
    its features, `topk(A, B, ia, ib, top_k, block_size, device, desc)` returns the top-k matches both ways
    (`featureflow.pipeline.matching.TopK`) between A's features `ia` and B's features `ib` (alive ones).
    `reads` names the data it needs ("activations", "decoder", "tokens"): an artefact's key follows the SAE itself
    when it reads the decoder, a planted family (no tokens) scores only similarities that do not read tokens, and
    `featureflow validate` refuses decoder similarities across hook widths. The store keeps every similarity alike
    (`matches` / `assignments` rows under its name), so a new one needs no schema change."""

    name: str
    label: str
    inputs: Callable[[Side], Any]
    width: Callable[[Any], int]
    topk: Callable[..., Any]
    reads: tuple[str, ...] = ("activations",)
    doc: str = ""

    @property
    def reads_decoder(self) -> bool:
        return "decoder" in self.reads

    @property
    def planted(self) -> bool:
        """Scored on a planted family (which has activations and decoders, but no tokens)."""
        return "tokens" not in self.reads


@dataclass(frozen=True)
class Rule:
    """Which of a feature's matches counts: its row in the `matches` table at rank 0 (`best`) or in `assignments`
    (`1to1`). `suffix` follows the similarity in a mode's name; `sql` selects each feature's match per edge from
    `{matches}` / `{assignments}` (the family's tables or the control's), `$sim` bound; `artefact` is the matching
    file it reads ('topk.npz' rank 0, or 'assign.npz').

    A rule **with doubt** (e.g. `best+transfer`) reads its `base` rule's matches (and its seed floors) and adds
    evidence that can disagree with them: `doubt_sql` wraps the base rule's rows (`{base}`) and adds `doubt_r`,
    each row's evidence that the feature is still there (for `+transfer`: the parent's SAE on the child for a
    parent feature, the child's SAE on the parent for a child feature); a feature whose match does not persist but
    whose `doubt_r` exceeds `tau` is *uncertain*, not disappearing (or emerging). With `keep_tau`, a feature whose
    `doubt_r` exceeds it persists (is inherited) even without a match above the threshold: the evidence says the
    other model carries it, whether or not the other model's SAE learnt it. With `min_events`, a feature that fires
    fewer times than that on the shared sample (`features.n_active`) is too rare to judge: matched above the
    threshold it persists, otherwise it is uncertain. `needs` names the evidence kinds (`featureflow/evidence/`)
    the rule reads: a config with such a mode computes them."""

    name: str
    label: str
    suffix: str
    sql: str
    artefact: str
    doc: str = ""
    base: str | None = None
    doubt_sql: str | None = None
    tau: float | None = None
    needs: tuple[str, ...] = ()
    keep_tau: float | None = None
    min_events: int = 0

    @property
    def admits_doubt(self) -> bool:
        """A rule with doubt: a feature it leaves unmatched may be uncertain rather than gone."""
        return self.doubt_sql is not None

    @property
    def floor_rule(self) -> str:
        """The rule whose seed floors (`noise_floor.rule`) this rule reads: its base's, else its own."""
        return self.base or self.name


SIMILARITIES: Registry[Similarity] = Registry("similarity")
RULES: Registry[Rule] = Registry("rule")


def register_similarity(sim: Similarity) -> Similarity:
    """Add a similarity to the registry (a name already taken is refused) and return it."""
    if any(sim.name.endswith(r.suffix) for r in RULES.values() if r.suffix):
        raise ValueError(f"similarity '{sim.name}' ends like a rule's suffix")
    return SIMILARITIES.add(sim.name, sim)


def unregister_similarity(name: str) -> None:
    """Remove a similarity (a test's toy one)."""
    SIMILARITIES.remove(name)


def register_rule(rule: Rule) -> Rule:
    if any(r.suffix == rule.suffix for r in RULES.values()):
        raise ValueError(f"rule '{rule.name}': suffix '{rule.suffix}' is already registered")
    return RULES.add(rule.name, rule)


register_rule(Rule("best", "best match", "",
                   "SELECT parent, child, direction, src, dst, r FROM {matches} WHERE rank = 0 AND similarity = $sim",
                   "topk", "a feature's highest-similarity feature on the other side (several may share one)"))
register_rule(Rule("1to1", "one-to-one assignment", "-1to1",
                   "SELECT parent, child, direction, src, dst, r FROM {assignments} WHERE similarity = $sim",
                   "assign", "its partner in the assignment of maximum total similarity (unassigned: no match)"))


def rule_with_doubt(base: str, kinds: dict[str, str], tau: float, name: str, label: str, doc: str = "",
                    keep_tau: float | None = None, min_events: int = 0) -> Rule:
    """A rule that reads `base`'s matches and, as `doubt_r`, the evidence `kinds` = {direction: evidence kind}
    (measure `r`) of each row's feature; registered with the suffix `base`'s suffix + '+' + `name`. `tau`,
    `keep_tau` and `min_events` as in `Rule`."""
    b = RULES[base]
    case = " ".join(f"WHEN '{d}' THEN '{k}'" for d, k in kinds.items())
    doubt = f"""SELECT m.*, ev.value AS doubt_r FROM ({{base}}) m
                LEFT JOIN evidence ev ON ev.parent = m.parent AND ev.child = m.child AND ev.feature = m.src
                 AND ev.measure = 'r' AND ev.kind = CASE m.direction {case} END"""
    return register_rule(Rule(f"{base}+{name}", f"{b.label}, {label}", f"{b.suffix}+{name}", b.sql, b.artefact, doc,
                              base=base, doubt_sql=doubt, tau=tau, needs=tuple(dict.fromkeys(kinds.values())),
                              keep_tau=keep_tau, min_events=min_events))


def split_mode(mode: str) -> tuple[str, str]:
    """'pearson' -> ('pearson', 'best'); 'decoder-1to1' -> ('decoder', '1to1'), by the rules' suffixes alone: what a
    store's modes are read with, whether or not this process registered their similarity."""
    for rule in sorted(RULES.values(), key=lambda r: -len(r.suffix)):
        if rule.suffix and mode.endswith(rule.suffix):
            return mode[: -len(rule.suffix)], rule.name
    return mode, "best"


def parse_mode(mode: str) -> tuple[str, str]:
    """`split_mode`, refusing a similarity that is not registered (the config's check)."""
    sim, rule = split_mode(mode)
    if sim not in SIMILARITIES:
        raise ValueError(f"unknown matching mode '{mode}' (modes: a similarity of {', '.join(SIMILARITIES)}, "
                         f"optionally followed by {', '.join(r.suffix for r in RULES.values() if r.suffix)})")
    return sim, rule


def similarity(name: str) -> Similarity:
    """A registered similarity by name."""
    return SIMILARITIES.lookup(name)


def rule_of(mode: str) -> Rule:
    """The registered rule of a mode (by its suffix, `split_mode`)."""
    return RULES[split_mode(mode)[1]]


def mode_label(mode: str) -> str:
    """'activation Pearson, best match'; a similarity this process has not registered reads as its name."""
    sim, rule = split_mode(mode)
    s = SIMILARITIES.get(sim)
    return f"{s.label if s else sim}, {RULES[rule].label}"


def all_modes() -> list[str]:
    """Every registered similarity under every rule, e.g. for help texts."""
    return [s + r.suffix for s in SIMILARITIES for r in RULES.values()]


def _register_builtins() -> None:
    import importlib

    for name in ("pearson", "decoder", "token_type"):  # each registers itself, in this order
        importlib.import_module(f"featureflow.similarities.{name}")
    importlib.import_module("featureflow.evidence")  # its kinds, and the rules with doubt they bring (+transfer)


_register_builtins()
