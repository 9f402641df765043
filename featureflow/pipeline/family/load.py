"""`make: load` members: a local Hugging Face model folder joins the family.

- The folder's key is a hash of its files' contents (`folder_digest`), so touching or copying the folder
  reruns nothing, while changing a weight reruns what depends on it.
- Its tokenizer must tokenise exactly like the family tokenizer (`tokenizer_mismatch`: same vocabulary,
  same splits of sample texts), since features are matched token by token.
- `copy: false` leaves the weights where they are: the member folder then holds `weights_at.json`, the
  path `load_model` (and merges) read the weights from, instead of a copy of them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS_POINTER = "weights_at.json"

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for this process


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged (size, mtime) file."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


def folder_digest(path: str | Path) -> str:
    """sha256 over the relative path and content digest of every file under `path` (hidden files and folders,
    such as `.cache/`, left out). A file gives the digest of its bytes."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def weights_folder(folder: str | Path) -> Path:
    """Where a member folder's weights are: the folder itself, or the path its `weights_at.json` names."""
    folder = Path(folder)
    pointer = folder / WEIGHTS_POINTER
    if pointer.is_file():
        return Path(json.loads(pointer.read_text())["path"])
    return folder


# sample texts every tokenizer check splits, beside documents of the run's own corpora
PROBE_TEXTS = [
    "Once upon a time, a little fox said: \"Hello, world!\"",
    "def f(x):\n    return x ** 2  # square\n",
    "local t = {} for i = 1, 10 do t[i] = i .. '!' end",
    "  tabs\tand   spaces, ÜNïcödé 漢字 emoji 🙂 and numbers 1234567890",
]


def tokenizer_mismatch(model_tok, family_tok, texts: list[str]) -> str | None:
    """None when the two tokenizers map every text to the same ids, else what differs (for a message)."""
    va, vb = model_tok.get_vocab(), family_tok.get_vocab()
    if va != vb:
        differ = sum(1 for t, i in va.items() if vb.get(t) != i) + sum(1 for t in vb if t not in va)
        return (f"its vocabulary differs from the family tokenizer's ({len(va)} vs {len(vb)} tokens, {differ} "
                "token ids differ)")
    for text in [*PROBE_TEXTS, *texts]:
        a = model_tok(text, add_special_tokens=False)["input_ids"]
        b = family_tok(text, add_special_tokens=False)["input_ids"]
        if a != b:
            return f"it splits {text[:40]!r} differently from the family tokenizer ({a[:8]} vs {b[:8]})"
    return None


def check_loaded_model(name: str, folder: Path, model, family_tok, texts: list[str]) -> None:
    """Raise ValueError unless the folder's tokenizer tokenises like the family's and the model's embedding
    covers every token id."""
    from featureflow.pipeline.tokenizer import load_tokenizer

    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"member '{name}': '{folder}' has no tokenizer; save the model's tokenizer beside its "
                         "weights (tokenizer.save_pretrained(folder)) so featureflow can check that it "
                         "tokenises like the family")
    why = tokenizer_mismatch(load_tokenizer(folder), family_tok, texts)
    if why:
        raise ValueError(f"member '{name}': the tokenizer in '{folder}' does not match the family tokenizer: "
                         f"{why}. Every member must share one tokenizer: set tokenizer.path to this model's "
                         "folder, or load a model trained with the family tokenizer")
    vocab = model.get_input_embeddings().weight.shape[0]
    if vocab < len(family_tok):
        raise ValueError(f"member '{name}': the model at '{folder}' embeds {vocab} token ids but the family "
                         f"tokenizer has {len(family_tok)}")
