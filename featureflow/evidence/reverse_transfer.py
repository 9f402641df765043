"""Reverse transfer evidence: the child's SAE encodes the parent's activations on the shared sample; a child
feature's **reverse transfer r** is the Pearson r, over the sample's tokens, between its activations on the child and
its activations on the parent. A child feature the parent already computed (whether or not the parent's own SAE
learnt it) keeps a high r; one that emerged in fine-tuning or merging does not. The emerging side of `transfer`."""

from __future__ import annotations

from featureflow.evidence import Evidence, Measure, register_evidence
from featureflow.evidence.transfer import column_pearson, separation


def _compute(edge) -> dict:
    return {"r": column_pearson(edge.acts(edge.child), edge.cross_acts(edge.child, edge.parent))}


def _score(values: dict, truth) -> dict:
    """Planted inherited against emerging child features (`transfer.separation`)."""
    return separation(values["r"], truth, "inherited", "emerging")


REVERSE_TRANSFER = register_evidence(Evidence(
    name="reverse-transfer", label="reverse transfer r (the child's SAE on the parent)", side="child",
    measures=(Measure("r", "reverse transfer r", "Pearson r of the feature's activations from the child's SAE on "
                                                  "the child and on the parent, over the shared sample"),),
    reads=("activations", "cross_activations"), compute=_compute, score=_score,
    doc="the child's SAE applied to the parent's activations: transfer's emerging side"))
