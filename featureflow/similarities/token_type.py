"""`token-type`: Pearson correlation of per-token-type mean activations (the paper's released code): each SAE's
activations are first averaged per token type present in the sample (`token_type_means`), then correlated across
token types by the same engine as `pearson`. It reads the sample's tokens, so a planted family does not score it."""

from __future__ import annotations

from featureflow.modes import Similarity, register_similarity


def _inputs(side):
    from featureflow.pipeline.matching import token_type_means

    return token_type_means(side.acts(), side.tokens(), side.vocab_size())


def _topk(A, B, ia, ib, top_k, block_size, device, desc):
    from featureflow.pipeline.matching import pearson_topk

    return pearson_topk(A[:, ia], B[:, ib], top_k, desc=desc, device=device)


TOKEN_TYPE = register_similarity(Similarity(
    name="token-type", label="token-type Pearson", reads=("activations", "tokens"),
    inputs=_inputs, width=lambda A: A.shape[1], topk=_topk,
    doc="Pearson of per-token-type mean activations (the paper's released code)"))
