"""Bring your own models and SAEs: non-Mistral checkpoints and pretrained SAELens SAEs of every architecture,
built here with random weights (a few thousand parameters each), run end to end into a served store."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from featureflow.config import ConfigError, parse_config

HOOK = "blocks.0.mlp.hook_post"


# ------------------------------------------------------------------------------------ tiny checkpoints
def _tokenizer(vocab_size: int = 300):
    from featureflow.pipeline.corpora import domain_documents
    from featureflow.config import DomainSource
    from featureflow.pipeline.tokenizer import train_tokenizer

    docs = {d: domain_documents(d, DomainSource(chars=20_000), 0) for d in ("babylm", "lua")}
    return train_tokenizer(docs, vocab_size)


def _gpt2(vocab: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64,
                                      bos_token_id=0, eos_token_id=0))


def _neox(vocab: int, seed: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, max_position_embeddings=64, hidden_size=32,
                                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                            bos_token_id=0, eos_token_id=0))


def _others(vocab: int) -> dict:
    """Tiny Llama, Mistral, Qwen2 and Gemma models (random weights)."""
    from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

    kw = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return {"llama": LlamaForCausalLM(LlamaConfig(**kw)), "mistral": MistralForCausalLM(MistralConfig(**kw)),
            "qwen2": Qwen2ForCausalLM(Qwen2Config(**kw)), "gemma": GemmaForCausalLM(GemmaConfig(head_dim=16, **kw))}


def _fine_tuned(model, seed: int, scale: float = 0.02):
    """A 'fine-tune': the same model with every weight nudged by seeded noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def _save(model, tok, folder: Path) -> Path:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _sae(arch: str, d_in: int, d_sae: int, folder: Path, hook: str = HOOK, seed: int = 0, **extra) -> Path:
    """A SAELens SAE of `arch` with random weights, saved by SAELens."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    cls, cfg_cls = {"standard": ("StandardSAE", "StandardSAEConfig"), "topk": ("TopKSAE", "TopKSAEConfig"),
                    "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig"), "gated": ("GatedSAE", "GatedSAEConfig")}[arch]
    torch.manual_seed(seed)
    cfg = getattr(sae_lens, cfg_cls)(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu",
                                     metadata=SAEMetadata(hook_name=hook), **extra)
    sae = getattr(sae_lens, cls)(cfg)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.fill_(0.05)
            elif name != "r_mag":
                p.normal_(0, 0.3 if name.startswith("b_") else 1 / d_in ** 0.5)
    sae.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A family of GPT-2 and GPT-NeoX checkpoints with one shared tokenizer, and pretrained SAEs."""
    root = tmp_path_factory.mktemp("byo")
    tok = _tokenizer()
    V = len(tok)
    tok_dir = root / "tokenizer"
    tok.save_pretrained(tok_dir)
    f = {
        "gpt2-base": _save(_gpt2(V, 0), tok, root / "gpt2-base"),
        "gpt2-ft": _save(_fine_tuned(_gpt2(V, 0), 1), tok, root / "gpt2-ft"),
        "neox-base": _save(_neox(V, 2), tok, root / "neox-base"),
        "neox-ft": _save(_fine_tuned(_neox(V, 2), 3), tok, root / "neox-ft"),
    }
    saes = {"gpt2-base": _sae("topk", 64, 128, root / "sae-gpt2-base", k=8),
            "neox-base": _sae("jumprelu", 64, 128, root / "sae-neox-base", seed=1),
            "neox-ft": _sae("standard", 64, 128, root / "sae-neox-ft", seed=2, apply_b_dec_to_input=False)}
    return {"root": root, "tok": tok, "tok_dir": tok_dir, "models": f, "saes": saes}


def _config(byo, **over) -> dict:
    m = byo["models"]
    d = {
        "name": "byo", "data_dir": str(byo["root"] / "data"),
        "corpora": {"validation_fraction": 0.1, "domains": {"babylm": {"chars": 20_000}, "lua": {"chars": 20_000}}},
        "tokenizer": {"path": str(byo["tok_dir"])},
        "model": {"context": 32},
        "training": {"eval_tokens": 256},
        "family": [
            {"name": "gpt2-base", "make": "load", "path": str(m["gpt2-base"]), "domains": ["babylm"]},
            {"name": "gpt2-ft", "make": "load", "path": str(m["gpt2-ft"]), "parents": ["gpt2-base"],
             "domains": ["lua"]},
            {"name": "neox-base", "make": "load", "path": str(m["neox-base"]), "domains": ["babylm", "lua"]},
            # no domains: inherited; copy: false keeps the weights where they are
            {"name": "neox-ft", "make": "load", "path": str(m["neox-ft"]), "parents": ["neox-base"], "copy": False},
        ],
        "sae": {"pretrained": {k: str(v) for k, v in byo["saes"].items()}, "expansion": 2, "tokens": 2048,
                "block_tokens": 16, "blocks_per_batch": 16, "l1_coefficient": 1e-3, "lr": 1e-3, "eval_tokens": 256,
                "replicas": {}},
        "sample": {"tokens": 1024, "context": 32, "top_k_examples": 3, "quantile_bins": 2, "examples_per_bin": 1,
                   "window": 8},
        "matching": {"top_k": 3},
        "autointerp": {"mode": "offline", "n_top": 6, "n_quantiles": 2, "per_quantile": 1, "window": 8},
        "fingerprints": {"base": {"neox-base": "neox-base", "neox-ft": "neox-base"}},
    }
    d.update(over)
    return d


# ------------------------------------------------------------------------------------------ hooks
def test_hooks_are_transformer_lens_values_for_six_architectures(byo):
    """`activations` (the forward pass stopped at the hook) equals TransformerLens's own run_with_cache on a
    bridge booted from the folder, for GPT-2, GPT-NeoX, Llama, Mistral, Qwen2 and Gemma; the HF model the
    bridge wraps a twin of is left untouched."""
    from transformer_lens.model_bridge import TransformerBridge

    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.hooks import hooked

    tok, root = byo["tok"], byo["root"]
    folders = {"gpt2": byo["models"]["gpt2-base"], "neox": byo["models"]["neox-base"]}
    folders |= {n: _save(m, tok, root / f"arch-{n}") for n, m in _others(len(tok)).items()}
    x = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    for arch, folder in folders.items():
        model = load_model(folder)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = TransformerBridge.boot_transformers(str(folder), device="cpu")
        names = [HOOK, "blocks.0.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_pre"]
        with torch.no_grad():
            _, cache = ref.run_with_cache(x, names_filter=lambda n: n in names)
            for h in names:
                torch.testing.assert_close(hooked(model).activations(x, h), cache[h], atol=1e-6, rtol=0,
                                           msg=f"{arch} {h}")
            torch.testing.assert_close(hooked(model).logits(x), model(x).logits, atol=1e-5, rtol=0)
        assert list(model.state_dict()) == list(before), arch  # still a plain HF model
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), arch


def test_unknown_hook_lists_the_valid_ones(byo):
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.hooks import HookError, hooked

    lm = hooked(load_model(byo["models"]["gpt2-base"]))
    assert lm.check(HOOK) == 64 and lm.check("blocks.1.hook_resid_post") == 32
    with pytest.raises(HookError) as e:
        lm.activations(torch.zeros(1, 4, dtype=torch.long), "blocks.2.mlp.hook_post")
    msg = str(e.value)
    assert "'blocks.2.mlp.hook_post' does not exist in this GPT2LMHeadModel" in msg
    assert "blocks.1.mlp.hook_post" in msg and "blocks.0.hook_resid_post" in msg


def test_in_place_weight_changes_are_seen_through_the_hooks(byo):
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.hooks import hooked

    model = load_model(byo["models"]["neox-base"])
    x = torch.randint(0, len(byo["tok"]), (1, 8), generator=torch.Generator().manual_seed(1))
    a = hooked(model).activations(x, "blocks.0.hook_resid_post")
    with torch.no_grad():
        model.gpt_neox.embed_in.weight.mul_(3.0)
    b = hooked(model).activations(x, "blocks.0.hook_resid_post")
    got = {}
    layer = model.gpt_neox.layers[0]  # its output is the residual stream after block 0
    h = layer.register_forward_hook(lambda mod, args, out: got.__setitem__("resid", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(x)
    h.remove()
    want = got["resid"]
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, want, atol=1e-5, rtol=1e-5)


def test_logit_effects_of_a_gpt2_feature_equal_the_explicit_product(byo):
    """Through GPT-2's Conv1D output projection and LayerNorm (centred, gain only) into the unembedding."""
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.features import logit_effects
    from featureflow.pipeline.sae import load_sae

    model = load_model(byo["models"]["gpt2-base"])
    sae = load_sae(byo["saes"]["gpt2-base"])
    eff = logit_effects(model, sae, k=4)
    f = 5
    with torch.no_grad():
        mlp = model.transformer.h[0].mlp
        resid = mlp.c_proj(sae.W_dec[f]) - mlp.c_proj.bias         # the feature's write to the residual
        want = model.lm_head((resid - resid.mean()) * model.transformer.ln_f.weight)
    order = torch.argsort(want, descending=True)
    assert eff["pos_ids"][f].tolist() == order[:4].tolist()
    np.testing.assert_allclose(eff["pos_vals"][f], want[order[:4]].numpy(), rtol=1e-4, atol=1e-6)
    assert eff["neg_ids"][f].tolist() == order[-4:].flip(0).tolist()


# ------------------------------------------------------------------------------------------- SAEs
@pytest.mark.parametrize("arch,extra", [("standard", {}), ("standard", {"apply_b_dec_to_input": False}),
                                        ("topk", {"k": 5}), ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
                                        ("jumprelu", {}), ("gated", {})])
def test_every_saelens_architecture_encodes_through_saelens(tmp_path, arch, extra):
    from sae_lens import SAE

    from featureflow.pipeline.sae import load_sae

    folder = _sae(arch, 16, 40, tmp_path, **extra)
    ours = load_sae(folder, HOOK, 16)
    lens = SAE.load_from_disk(str(folder))
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        f = ours.encode(x)
        assert torch.equal(f, lens.encode(x)) and 0 < (f > 0).float().mean() < 1
        torch.testing.assert_close(ours(x)[0], lens.decode(lens.encode(x)))
    assert ours.architecture == arch and ours.W_dec.shape == (40, 16)


def test_a_pretrained_sae_must_match_the_hook_and_its_width(tmp_path):
    from featureflow.pipeline.sae import load_sae

    folder = _sae("topk", 16, 40, tmp_path, hook="blocks.0.hook_resid_post", k=4)
    with pytest.raises(ValueError, match="trained on hook 'blocks.0.hook_resid_post', but sae.hook is"):
        load_sae(folder, HOOK, 16)
    with pytest.raises(ValueError, match="reads d_in = 16 but the model's 'blocks.0.hook_resid_post' has width 32"):
        load_sae(folder, "blocks.0.hook_resid_post", 32)


# ----------------------------------------------------------------------------------- load members
def test_load_member_needs_domains_or_a_parent(byo):
    d = _config(byo)
    del d["family"][0]["domains"]
    with pytest.raises(ConfigError) as e:
        parse_config(d)
    assert "family.0.domains: load member 'gpt2-base' has no parent to inherit domains from" in str(e.value)
    cfg = parse_config(_config(byo))
    assert cfg.member_domains("neox-ft") == ["babylm", "lua"]  # inherited


def test_tokenizer_is_compared_by_content(byo, tmp_path):
    from featureflow.pipeline.family.load import check_loaded_model
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.tokenizer import load_tokenizer

    family = load_tokenizer(byo["tok_dir"])
    other = _tokenizer(vocab_size=280)  # trained on the same text, with fewer merges
    folder = _save(_gpt2(len(family), 0), other, tmp_path / "other")
    with pytest.raises(ValueError, match="does not match the family tokenizer"):
        check_loaded_model("other", folder, load_model(folder), family, [])
    same = byo["models"]["gpt2-base"]
    check_loaded_model("same", same, load_model(same), family, ["local x = 1"])


def test_validate_names_every_fault(byo, tmp_path):
    from featureflow.pipeline.validate import check_config

    d = _config(byo)
    d["fingerprints"] = {}  # neox members would be fingerprinted against the GPT-2 root
    d["sample"]["context"] = 80  # GPT-2 here has 64 learned positions
    d["sae"]["pretrained"]["gpt2-ft"] = str(_sae("topk", 96, 128, tmp_path, k=4))  # 96 wide on a 64-wide hook
    with pytest.raises(ConfigError) as e:
        check_config(parse_config(d))
    errors = e.value.errors
    assert any(x.startswith("fingerprints.base.neox-base: 'neox-base' (GPTNeoXForCausalLM") for x in errors)
    assert any(x.startswith("sample.context: 80 tokens exceed the 64 positions of 'gpt2-base'") for x in errors)
    assert any(x.startswith("sae.pretrained.gpt2-ft:") and "d_in = 96" in x for x in errors)
    d = _config(byo, sae={**_config(byo)["sae"], "hook": "blocks.0.mlp.hook_postt"})
    with pytest.raises(ConfigError, match=r"sae.hook: 'blocks.0.mlp.hook_postt' does not exist in the "
                                          r"GPT2LMHeadModel of 'gpt2-base' \(family.0\); its hooks"):
        check_config(parse_config(d))


def test_byo_family_end_to_end_into_a_served_store(byo):
    """GPT-2 and GPT-NeoX members, pretrained TopK / JumpReLU / standard SAEs and one trained SAE: every stage
    runs, the stored activations are SAELens's encoding of TransformerLens's hook, the explorer serves it."""
    import duckdb
    import scipy.sparse as sps
    from fastapi.testclient import TestClient
    from sae_lens import SAE
    from transformer_lens.model_bridge import TransformerBridge

    from featureflow.explorer.app import create_app
    from featureflow.pipeline.runner import Pipeline
    from featureflow.pipeline.validate import check_config

    cfg = parse_config(_config(byo))
    check_config(cfg)
    pl = Pipeline(cfg, device="cpu")
    pl.run()

    # copy: false references the weights; the key follows the folder's content, not its mtimes
    ft = pl.member("neox-ft")
    assert (ft / "weights_at.json").exists() and not list(ft.glob("*.safetensors"))
    assert list(pl.member("gpt2-ft").glob("*.safetensors"))  # copy: true (the default) copies
    for p in byo["models"]["neox-ft"].iterdir():
        os.utime(p)
    assert Pipeline(cfg, device="cpu").member("neox-ft") == ft

    # stored activations = SAELens encode of the TransformerLens hook on the shared sample
    tokens = torch.from_numpy(pl.sample_tokens()[:4].astype(np.int64))
    for name in ("gpt2-base", "neox-base", "neox-ft"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(str(byo["models"][name]), device="cpu")
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=HOOK)
            want = SAE.load_from_disk(str(byo["saes"][name])).encode(cache[HOOK].reshape(-1, cache[HOOK].shape[-1]))
        got = sps.load_npz(pl.activation(name) / "acts.npz").tocsr()[: want.shape[0]].toarray()
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
        assert (want > 0).any()

    con = duckdb.connect(str(cfg.store_path()), read_only=True)
    models = {r[0] for r in con.execute("SELECT model FROM models").fetchall()}
    con.close()
    assert models == {"gpt2-base", "gpt2-ft", "neox-base", "neox-ft"}
    client = TestClient(create_app(cfg.store_path()))
    assert client.get("/").status_code == 200
    for name in models:
        page = client.get(f"/models/{name}/features/0")
        assert page.status_code == 200, name
        assert client.get(f"/api/models/{name}/features/0").json()["feature"]
