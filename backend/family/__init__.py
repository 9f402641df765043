"""The model family: one-layer Hugging Face Mistral models, trained, fine-tuned, merged or loaded."""
