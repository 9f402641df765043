import numpy as np
import pytest
import torch

from backend.config import SAEConfig
from backend.sae import SparseAutoencoder, load_sae, sae_loss, save_sae, train_sae


def test_loss_terms_match_the_formula():
    torch.manual_seed(0)
    sae = SparseAutoencoder(8, 32, mean=torch.randn(8))
    x = torch.randn(64, 8)
    total, mse, l1 = sae_loss(sae, x, 0.01)
    xbar = x - sae.mean - sae.b_dec
    f = torch.relu(xbar @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec + sae.mean
    assert torch.allclose(mse, ((x_hat - x) ** 2).mean())
    assert torch.allclose(l1, f.abs().sum(-1).mean())
    assert torch.allclose(total, mse + 0.01 * l1)


def test_decoder_rows_unit_norm_after_training(tiny_pipeline):
    from backend.family.model import load_model

    model = load_model(tiny_pipeline.member("babypython"))
    streams = {"babylm": tiny_pipeline.stream("babylm", "train")}
    cfg = SAEConfig(expansion=2, tokens=3000, block_tokens=8, blocks_per_batch=16, lr=1e-2, l1_coefficient=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = train_sae(model, streams, cfg, seed=0)
    norms = trained.sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert trained.log[-1]["mse"] < trained.log[0]["mse"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the LM is untouched


def test_saelens_round_trip_is_the_same_function(tmp_path):
    from sae_lens import SAE

    torch.manual_seed(1)
    sae = SparseAutoencoder(8, 24, mean=torch.randn(8) * 3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    save_sae(sae, tmp_path, "blocks.0.mlp.hook_post", "m", {"recipe": "test"})
    x = torch.randn(50, 8) * 2
    lens = SAE.load_from_disk(str(tmp_path), device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(lens.encode(x).numpy(), sae.encode(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(lens.decode(lens.encode(x)).numpy(), sae(x)[0].numpy(), atol=1e-5)
        again = load_sae(tmp_path)
        np.testing.assert_allclose(again(x)[0].numpy(), sae(x)[0].numpy(), atol=1e-5)


def test_health_metrics_are_recorded(tiny_pipeline):
    from backend.artifacts import read_json

    info = read_json(tiny_pipeline.sae("lua") / "featureflow.json")
    h = info["health"]
    assert 0 < h["l0"] < 256 and 0 <= h["dead_features"] <= 256
    assert h["explained_variance"] <= 1 and h["mse"] > 0
    assert h["ce_sae"] >= h["ce_clean"] - 0.05
    assert h["loss_recovered_scope"] == "own domains: lua"
    by = info["health_by_domain"]
    assert set(by) == {"babylm", "python", "lua"}
    assert h["ce_clean"] == pytest.approx(by["lua"]["ce_clean"])  # own-domain figures are lua's
    assert h["eval_tokens"] == sum(v["eval_tokens"] for v in by.values())


def test_pooled_health_equals_one_pass_over_everything(tiny_pipeline):
    from backend.family.model import load_model
    from backend.sae import sae_health, summarise

    model = load_model(tiny_pipeline.member("lua"))
    sae = load_sae(tiny_pipeline.sae("lua"))
    w = tiny_pipeline.val_windows(["lua", "babylm"], 512)
    pooled = summarise([sae_health(model, sae, w["lua"], "blocks.0.mlp.hook_post"),
                        sae_health(model, sae, w["babylm"], "blocks.0.mlp.hook_post")])
    once = summarise([sae_health(model, sae, torch.cat([w["lua"], w["babylm"]]), "blocks.0.mlp.hook_post")])
    for k in ("l0", "mse", "explained_variance", "ce_clean", "ce_sae", "ce_zero", "dead_features"):
        assert pooled[k] == pytest.approx(once[k], rel=1e-6, abs=1e-9), k


def test_logit_effects_equal_the_explicit_product(tiny_pipeline):
    from backend.family.model import load_model
    from backend.features import logit_effects

    model = load_model(tiny_pipeline.member("lua"))
    sae = load_sae(tiny_pipeline.sae("lua"))
    eff = logit_effects(model, sae, k=3)
    f = 7
    with torch.no_grad():
        resid = model.model.layers[0].mlp.down_proj(sae.W_dec[f])          # the feature's write to the residual
        want = model.lm_head(model.model.norm.weight * resid)                # gain only, no 1/rms
    order = torch.argsort(want, descending=True)
    assert eff["pos_ids"][f].tolist() == order[:3].tolist()
    np.testing.assert_allclose(eff["pos_vals"][f], want[order[:3]].numpy(), rtol=1e-5)
    assert eff["neg_ids"][f].tolist() == order[-3:].flip(0).tolist()
