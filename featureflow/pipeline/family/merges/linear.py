"""`linear`: mergekit's linear merge with weights (1 - t, t) on parents[0], parents[1]."""

from featureflow.pipeline.family.merges import MergeMethod, register


class Linear(MergeMethod):
    name = "linear"
    label = "linear merge"
    description = "weights (1 - t, t) on parents[0], parents[1]"
    mergekit_method = "linear"

    def mergekit_config(self, t, p0, p1, base=None, density=None):
        return {"merge_method": "linear", "models": [{"model": p0, "parameters": {"weight": 1.0 - t}},
                                                      {"model": p1, "parameters": {"weight": t}}],
                "dtype": "float32"}


register(Linear())
