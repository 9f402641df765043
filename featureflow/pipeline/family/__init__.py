"""The model family: one-layer Hugging Face Mistral models trained, fine-tuned and merged here, and local
Hugging Face models of any architecture TransformerLens boots, loaded (`load.py`)."""
