"""One byte-level BPE tokenizer shared by every member of the family.

Feature matching correlates activations token by token, so every model must see identical tokens.
The tokenizer is saved as a Hugging Face `PreTrainedTokenizerFast` folder and copied into each model
folder, so `AutoTokenizer` and TransformerLens load it offline.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def train_tokenizer(texts_by_domain: dict[str, list[str]], vocab_size: int, chars_per_domain: int = 2_000_000):
    """Train a byte-level BPE on an equal share of every domain's text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def sample():
        for docs in texts_by_domain.values():
            n = 0
            for d in docs:
                yield d
                n += len(d)
                if n >= chars_per_domain:
                    break

    tok.train_from_iterator(sample(), trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(folder))


def encode_documents(tokenizer: PreTrainedTokenizerFast, docs: list[str]) -> np.ndarray:
    """Concatenate documents into one token stream, each document followed by EOS."""
    eos = tokenizer.convert_tokens_to_ids(EOS) if EOS in tokenizer.get_vocab() else tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"the tokenizer has neither '{EOS}' nor an eos_token to end documents with")
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    total = sum(len(x) + 1 for x in ids)
    dtype = np.uint16 if len(tokenizer) <= 65535 else np.int32
    out = np.empty(total, dtype=dtype)
    i = 0
    for x in ids:
        out[i:i + len(x)] = x
        out[i + len(x)] = eos
        i += len(x) + 1
    return out


def _hex_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    """A codec error handler: each byte that is not (yet) a whole UTF-8 character as <0xE2>."""
    return "".join(f"<0x{b:02X}>" for b in err.object[err.start:err.end]), err.end


codecs.register_error("featureflow-hexbytes", _hex_bytes)


def token_strings(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """Human-readable text of every token id: byte-level pieces decoded, and every byte of a piece that is
    only part of a UTF-8 character written as <0xE2> (the name byte-fallback vocabularies give such tokens)
    instead of U+FFFD, so the three tokens of one emoji read <0xF0><0x9F>, <0x98>, <0x80> and not as three
    identical replacement characters. A real U+FFFD in the text (bytes EF BF BD) stays U+FFFD."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {ch: b for b, ch in bytes_to_unicode().items()}
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        piece = tokenizer.convert_ids_to_tokens(i)
        if "\ufffd" in text and piece and all(ch in to_byte for ch in piece):
            text = bytes(to_byte[ch] for ch in piece).decode("utf-8", errors="featureflow-hexbytes")
        out.append(text)
    return out
