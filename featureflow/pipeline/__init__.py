"""The offline pipeline: stage functions (corpora -> tokenizer -> family -> SAEs -> sample -> activations ->
matching -> floors -> autointerp -> cases -> fingerprints) and the runner that resolves their inputs.
Importing this package imports nothing heavy: torch and friends load with the stage modules."""
