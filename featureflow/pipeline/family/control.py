"""A random-weights control: a root's architecture and tokenizer with the architecture's own random
initialisation and no training, the lower anchor of every persistence figure (`controls:` in the config).

An SAE trained on a random transformer still finds features, most of them token identities (Heap et al.
2025, arXiv 2501.17727); a parent feature that "persists" into such a model says nothing about fine-tuning."""

from __future__ import annotations

from pathlib import Path

import torch

from featureflow.pipeline.artifacts import write_json
from featureflow.pipeline.family.load import weights_folder
from featureflow.pipeline.family.model import save_model, shape_of
from featureflow.pipeline.stages import hashed_seed


def control_seed(run_seed: int, root: str, given: int | None = None) -> int:
    """The seed of a control's initialisation: `given` (controls.seed), else derived from (run seed, root)."""
    if given is not None:
        return given
    return hashed_seed("control", run_seed, root)


def build_control(name: str, root: str, root_dir: Path, tokenizer_dir: Path, seed: int, out: Path) -> None:
    """`out`: the root's model class and config (`AutoConfig` from its folder) initialised by Hugging Face's
    `from_config` under `seed` (the class's own `_init_weights`), saved with the family tokenizer, and
    `member.json` recording the root, the seed and the shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(weights_folder(root_dir)))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    save_model(model, out, tokenizer_dir)
    write_json(out / "member.json", {"name": name, "make": "control", "root": root, "seed": seed,
                                     "init": f"{type(model).__name__}.from_config (untrained)",
                                     "shape": shape_of(model)})
