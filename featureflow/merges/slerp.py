"""`slerp`: mergekit's SLERP with `base_model` = parents[0], `parameters.t` = t; t = 0 gives parents[0]
exactly, t = 1 parents[1]. mergekit's pipeline merges each tensor as one group: one angle per WHOLE tensor."""

from featureflow.merges import MergeMethod, register


class Slerp(MergeMethod):
    name = "slerp"
    label = "SLERP"
    description = "mergekit's SLERP with base_model = parents[0]; t = 0 is parents[0], t = 1 is parents[1]"
    mergekit_method = "slerp"

    def mergekit_config(self, t, p0, p1, base=None, density=None):
        return {"merge_method": "slerp", "base_model": p0, "models": [{"model": p0}, {"model": p1}],
                "parameters": {"t": t}, "dtype": "float32"}


register(Slerp())
