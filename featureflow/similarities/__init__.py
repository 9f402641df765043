"""The built-in similarities, one file each, registered with `featureflow.modes` when it is imported.
A new similarity is a file like `pearson.py` that calls `register_similarity`; import it before the config is
parsed (e.g. from your own script) and every stage, the store, the explorer, the report and the planted
scorecard use it."""
