"""featureflow: track SAE features through fine-tuning and model merging.

`featureflow.pipeline` (offline stages, torch) -> `featureflow.store` (the DuckDB contract) ->
`featureflow.explorer` (the read-only web app). `featureflow.config` is the one experiment config."""
