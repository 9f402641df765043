"""`standard`: f = ReLU(pre), loss = MSE + λ Σ|f| (Bricken et al. 2023); saved as SAELens `standard`."""

from featureflow.saes import SAEArchitecture, register


class Standard(SAEArchitecture):
    name = "standard"
    label = "ReLU + L1"
    description = "ReLU + L1 (the paper)"
    saved_as = "standard"
    l1_penalty = True
    uses_k = False
    resample_scale = 0.2  # Bricken et al. 2023

    def activation(self, pre, k=None, inplace=False):
        return pre.relu_() if inplace else pre.relu()


register(Standard())
