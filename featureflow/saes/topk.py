"""`topk`: f = TopK_k(ReLU(pre)) per token, loss = MSE; saved as SAELens `topk` with its k."""

from featureflow.saes import SAEArchitecture, register


def topk_relu(pre, k: int):
    """SAELens's `TopK` activation: each row's k largest pre-activations, ReLU'd, zeros elsewhere.

    ReLU is monotone, so this is TopK_k(ReLU(pre)): the same latents and the same values."""
    import torch  # inside: importing the registry (the config does) imports no torch

    vals, idx = torch.topk(pre, k=min(k, pre.shape[-1]), dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


class TopK(SAEArchitecture):
    name = "topk"                # sae.architecture: topk
    label = "TopK"
    description = "the k largest latents per token"
    saved_as = "topk"            # the SAELens architecture of its folder
    l1_penalty = False           # loss = MSE (True: MSE + λ Σ|f|, λ steerable to target_l0)
    uses_k = True                # sae.k, default round(target_l0), else 32
    resample_scale = 1.0         # a resampled latent must win a place among the k largest: the live columns' full norm

    def activation(self, pre, k, inplace=False):  # f per token, as the saved SAE computes it
        return topk_relu(pre, k)

    def saelens_config(self, k):  # the SAELens config's own fields (unit-norm decoder rows: no rescaling)
        return {"k": int(k), "rescale_acts_by_decoder_norm": False}


register(TopK())
