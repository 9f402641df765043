"""`ties`: mergekit's TIES-merging of both parents' task vectors against `base`, weights (1 - t, t), `density`
of each task vector kept."""

from featureflow.merges import MergeMethod, register


class Ties(MergeMethod):
    name = "ties"
    label = "TIES merge"
    description = ("TIES-merging of both parents' task vectors against `base` (default: their nearest common "
                   "ancestor), weights (1 - t, t) and `density`")
    mergekit_method = "ties"
    takes_base = True
    takes_density = True

    def mergekit_config(self, t, p0, p1, base=None, density=None):
        d = float(density)
        return {"merge_method": "ties", "base_model": base,
                "models": [{"model": p0, "parameters": {"weight": 1.0 - t, "density": d}},
                           {"model": p1, "parameters": {"weight": t, "density": d}}],
                "dtype": "float32"}


register(Ties())
