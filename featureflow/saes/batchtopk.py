"""`batchtopk` (Bussmann et al. 2024): trains with the k × rows largest ReLU(pre) of each batch, then is used,
and saved as a SAELens `topk` SAE, with k per token (SAELens's own `batchtopk` training class saves a
jumprelu instead: not this one)."""

from featureflow.saes import register
from featureflow.saes.topk import TopK


def batch_topk_relu(pre, k: int):
    """BatchTopK (Bussmann et al. 2024): the k x rows largest ReLU'd pre-activations of the whole batch,
    so k latents per row on average (SAELens's `BatchTopK`)."""
    import torch

    acts = pre.relu().flatten()
    vals, idx = torch.topk(acts, k=min(acts.numel(), k * pre.shape[:-1].numel()), sorted=False)
    return torch.zeros_like(acts).scatter(0, idx, vals).reshape(pre.shape)


class BatchTopK(TopK):
    name = "batchtopk"
    label = "BatchTopK"
    description = "the k x batch largest latents per batch while training, saved as a SAELens topk SAE"

    def train_activation(self, pre, k, inplace=False):
        return batch_topk_relu(pre, k)


register(BatchTopK())
