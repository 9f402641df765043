"""The explorer: a read-only FastAPI app over one DuckDB store (views and their JSON twins). Never imports torch
or the pipeline."""
