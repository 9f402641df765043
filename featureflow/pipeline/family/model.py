"""A one-layer Mistral-like LM as a Hugging Face `MistralForCausalLM` (the family's own models; `load`
members may be any causal LM TransformerLens boots).

RMSNorm, rotary positions, grouped-query attention and a gated SiLU MLP; `intermediate_size` is the
MLP width d_mlp whose post-activation `act(gate(x)) * up(x)` is TransformerLens's
`blocks.0.mlp.hook_post`, the site every SAE reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

from featureflow.config import ModelShape


def mistral_config(shape: ModelShape, vocab_size: int, eos_id: int) -> MistralConfig:
    return MistralConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=1,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads or shape.heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=shape.context,
        rope_theta=shape.rope_theta,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def new_model(shape: ModelShape, vocab_size: int, eos_id: int, seed: int) -> MistralForCausalLM:
    torch.manual_seed(seed)
    return MistralForCausalLM(mistral_config(shape, vocab_size, eos_id))


def save_model(model: MistralForCausalLM, folder: Path, tokenizer_dir: Path) -> None:
    """`save_pretrained` plus the family tokenizer, so the folder boots offline everywhere."""
    model.save_pretrained(folder)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy2(f, folder / f.name)


def load_model(folder: str | Path, device: str = "cpu"):
    """Any causal LM saved in `folder` (or in the folder its `weights_at.json` names: a `copy: false` load
    member), in float32, in eval mode."""
    from featureflow.pipeline.family.load import weights_folder

    model = AutoModelForCausalLM.from_pretrained(str(weights_folder(folder)), dtype=torch.float32)
    return model.to(device).eval()


def shape_of(model) -> dict:
    """Architecture and sizes of any model TransformerLens boots, from the bridge's config."""
    from featureflow.pipeline.hooks import hooked

    c = hooked(model).bridge.cfg
    return {
        "architecture": type(model).__name__,
        "hidden": c.d_model,
        "d_mlp": c.d_mlp,
        "layers": c.n_layers,
        "heads": c.n_heads,
        "vocab": model.get_input_embeddings().weight.shape[0],
    }
