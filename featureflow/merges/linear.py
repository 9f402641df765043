"""`linear`: mergekit's linear merge with weights (1 - t, t) on parents[0], parents[1]."""

from featureflow.merges import MergeMethod, register


class Linear(MergeMethod):
    name = "linear"              # method: linear
    label = "linear merge"       # what the explorer's /merge page and the progress bar call it
    description = "weights (1 - t, t) on parents[0], parents[1]"
    mergekit_method = "linear"   # checked against mergekit.merge_methods.registry
    # takes_base / takes_density = True for a method of task vectors against a base (ties.py)

    def mergekit_config(self, t, p0, p1, base=None, density=None):  # what mergekit-yaml would read at t
        return {"merge_method": "linear", "models": [{"model": p0, "parameters": {"weight": 1.0 - t}},
                                                      {"model": p1, "parameters": {"weight": t}}],
                "dtype": "float32"}


register(Linear())
