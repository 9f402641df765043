"""`pearson`: exact Pearson correlation of two features' activations over the token positions of the shared
sample (the paper's text), from sparse statistics: r = (S / N - mu nu) / (sigma tau) with S = A^T B summed in
float64 (`featureflow.pipeline.matching.pearson_topk`: a compiled row kernel on a CPU, sparse products on a GPU)."""

from __future__ import annotations

from featureflow.modes import Similarity, register_similarity


def _topk(A, B, ia, ib, top_k, block_size, device, desc):
    from featureflow.pipeline.matching import pearson_topk

    return pearson_topk(A[:, ia], B[:, ib], top_k, desc=desc, device=device)


PEARSON = register_similarity(Similarity(
    name="pearson", label="activation Pearson", reads=("activations",),
    inputs=lambda side: side.acts(), width=lambda A: A.shape[1], topk=_topk,
    doc="activations over the token positions of the shared sample (the paper's text)"))
