"""`decoder`: cosine of two features' decoder directions; data-free, as Neuronpedia and cross-layer feature-flow
work match (`featureflow.pipeline.matching.decoder_topk`, dense blocks of `block_size` child features). A zero
decoder row has cosine 0 with everything. Only features that fire on the sample are matched, as in every mode."""

from __future__ import annotations

from featureflow.modes import Similarity, register_similarity


def _topk(A, B, ia, ib, top_k, block_size, device, desc):
    from featureflow.pipeline.matching import decoder_topk

    return decoder_topk(A[ia], B[ib], top_k, block_size)


DECODER = register_similarity(Similarity(
    name="decoder", label="decoder cosine", reads=("decoder", "activations"),
    inputs=lambda side: side.decoder(), width=lambda A: A.shape[0], topk=_topk,
    doc="cosine of decoder directions: data-free, as Neuronpedia and cross-layer feature flow match"))
