"""featureflow's offline pipeline: corpora -> tokenizer -> model family -> SAEs -> matching -> DuckDB."""
