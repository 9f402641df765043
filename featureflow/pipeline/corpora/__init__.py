"""Corpora: one list of documents per domain, split deterministically into train and validation."""

from __future__ import annotations

import random
from typing import Iterator

from featureflow.config import DomainSource
from featureflow.pipeline.corpora.generators import GENERATORS, generate
from featureflow.pipeline.corpora.loaders import CorpusError, hf_dataset, local_files, stdlib_python

__all__ = ["CorpusError", "domain_documents", "split_documents"]


def domain_documents(domain: str, src: DomainSource, seed: int) -> list[str]:
    """All documents of one domain, from its configured source."""
    docs: Iterator[str]
    if src.source == "generated":
        if domain == "python":
            docs = stdlib_python(src.chars, seed)
        elif domain in GENERATORS:
            docs = generate(domain, src.chars, seed)
        else:
            raise CorpusError(f"domain '{domain}' has no embedded generator")
    elif src.source == "files":
        docs = local_files(src.paths, src.text_field, src.chars)
    else:
        docs = hf_dataset(src.dataset, src.dataset_config, src.split, src.text_field, src.chars, src.data_dir,
                          src.data_files)
    out = list(docs)
    if len(out) < 2:
        raise CorpusError(f"domain '{domain}' yielded {len(out)} document(s); need at least 2 to split")
    return out


def split_documents(docs: list[str], fraction: float, seed: int, domain: str) -> tuple[list[str], list[str]]:
    """A deterministic shuffle then split: the last `fraction` of documents (at least one) validate."""
    order = list(range(len(docs)))
    random.Random(f"split:{domain}:{seed}").shuffle(order)
    n_val = max(1, round(len(docs) * fraction))
    val = [docs[i] for i in order[:n_val]]
    train = [docs[i] for i in order[n_val:]]
    return train, val
