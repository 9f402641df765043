"""Evidence kinds: what else, beside matching two SAEs, can be measured about a feature's fate on an edge.

An evidence kind is one registered object (`Evidence`), one file per kind in this folder, as a similarity is one
file in `featureflow/similarities/`. It names the **measures** it writes (one number per feature of one side of
an edge, the parent's or the child's), what it **reads** (`EdgeData`: activations, the activations of one
member's SAE on another member's model, decoders, the edge's matches), how it **computes** them, and how it is
**scored** on a planted family (where each latent's true fate is known). Everything else is generic:

- the pipeline's `evidence` stage computes every kind the config lists (`evidence:`) on every edge, one artefact
  per (kind, edge) under a key of its inputs (`Pipeline.edge_evidence`);
- the store keeps every kind alike, in the long table `evidence` (kind, parent, child, feature, measure, value)
  with its label and measures in `evidence_kinds`, so a new kind needs no schema change, and a store opens
  whether or not the reading process registered its kinds;
- the explorer shows a feature's evidence on its page and in its JSON, `/evidence` summarises every kind per
  edge, `featureflow report` prints that summary, and the planted scorecard scores every kind with a `score`.

This module imports nothing heavy (the config reads the registry's names); a kind imports what it needs when it
computes. Built-in kinds register when this module is imported (the import line at its foot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from featureflow.registry import Registry

SIDES = ("parent", "child")


class EdgeData(Protocol):
    """One parent -> child edge as an evidence kind reads it, each piece read (and cached) only when asked. The
    pipeline's (`featureflow.pipeline.runner.PipelineEdge`) and the planted family's (`planted.PlantedEdge`) are
    the two implementations."""

    parent: str
    child: str

    def acts(self, member: str, replica: int = 0) -> Any:
        """`member`'s SAE (replica) on `member`'s own activations over the shared sample: (tokens x features)
        scipy CSC, the matrix every similarity reads."""

    def cross_acts(self, sae_of: str, data_of: str, replica: int = 0) -> Any:
        """`sae_of`'s SAE (replica) encoding `data_of`'s hook activations over the same sample (same rows as
        `acts`): a parent's SAE applied to the child, or the reverse."""

    def decoder(self, member: str, replica: int = 0) -> Any:
        """(features x d_in) decoder directions (numpy)."""

    def matches(self, mode: str) -> dict:
        """The edge's matches under a matching mode: p2c_idx, p2c_r, c2p_idx, c2p_r (each feature's match under
        the mode's rule; index -1 and r NaN where it has none)."""


@dataclass(frozen=True)
class Measure:
    """One number an evidence kind writes per feature."""

    name: str
    label: str
    doc: str = ""
    feature: bool = False  # its value is a feature id of the other side (shown as a link, not summarised)
    count: bool = False    # its value is a whole number (shown without decimals)


@dataclass(frozen=True)
class Evidence:
    """One kind of evidence about features on an edge.

    `compute(edge)` returns {measure name: array with one value per feature of `side`} (NaN where the kind has
    nothing to say, e.g. a dead feature); `reads` names what it reads ("activations", "cross_activations",
    "decoder", "matches"), which keys its artefact (a kind that reads matches follows every configured
    similarity's match artefact). `score(values, truth)` (optional) scores its values on a planted family:
    `values` as `compute` returned them, `truth` each feature's true fate label on this edge (an array of strings:
    'persisting', 'disappearing', 'split', ... for a parent; 'inherited', 'emerging', ... for a child;
    'unresolved' where the latent resolves to no planted feature); it returns {metric: number or None}. Bump
    `version` when the computation changes what it writes."""

    name: str
    label: str
    side: str
    measures: tuple[Measure, ...]
    compute: Callable[[EdgeData], dict[str, Any]]
    reads: tuple[str, ...] = ("activations",)
    score: Callable[[dict[str, Any], Any], dict] | None = None
    version: int = 1
    doc: str = ""

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"evidence '{self.name}': side must be one of {SIDES}, not '{self.side}'")
        if not self.measures:
            raise ValueError(f"evidence '{self.name}' writes no measure")


EVIDENCE: Registry[Evidence] = Registry("evidence kind")


def register_evidence(kind: Evidence) -> Evidence:
    """Add an evidence kind to the registry (a name already taken is refused) and return it."""
    return EVIDENCE.add(kind.name, kind)


def unregister_evidence(name: str) -> None:
    EVIDENCE.remove(name)


def evidence(name: str) -> Evidence:
    """The registered kind `name`; an unknown name is a ValueError listing the registered ones."""
    return EVIDENCE.lookup(name)


def describe() -> str:
    """The registered kinds as the config's field description and the CLI help list them."""
    return "; ".join(f"'{k.name}' ({k.doc or k.label})" for k in EVIDENCE.values()) or "none registered"


def compute(kind: Evidence, edge: EdgeData, n_features: int) -> dict[str, Any]:
    """`kind.compute(edge)`, checked: every measure present, one float per feature of its side."""
    import numpy as np

    out = kind.compute(edge)
    missing = [m.name for m in kind.measures if m.name not in out]
    if missing:
        raise ValueError(f"evidence '{kind.name}' computed no {', '.join(missing)}")
    values = {m.name: np.asarray(out[m.name], dtype=np.float64) for m in kind.measures}
    for name, v in values.items():
        if v.shape != (n_features,):
            raise ValueError(f"evidence '{kind.name}' measure '{name}': {v.shape}, expected ({n_features},): "
                             f"one value per {kind.side} feature")
    return values


from featureflow.evidence import transfer, reverse_transfer, split  # noqa: E402,F401  (built-in kinds register themselves)
