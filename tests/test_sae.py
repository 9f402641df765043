import numpy as np
import pytest
import torch

from featureflow.config import SAEConfig
from conftest import tiny_dict
from featureflow.pipeline.sae import SparseAutoencoder, load_sae, sae_loss, save_sae, train_sae


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
    from featureflow.pipeline.family.model import load_model

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
    from featureflow.pipeline.artifacts import read_json

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
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.sae import sae_health, summarise

    model = load_model(tiny_pipeline.member("lua"))
    sae = load_sae(tiny_pipeline.sae("lua"))
    w = tiny_pipeline.val_windows(["lua", "babylm"], 512)
    pooled = summarise([sae_health(model, sae, w["lua"], "blocks.0.mlp.hook_post"),
                        sae_health(model, sae, w["babylm"], "blocks.0.mlp.hook_post")])
    once = summarise([sae_health(model, sae, torch.cat([w["lua"], w["babylm"]]), "blocks.0.mlp.hook_post")])
    for k in ("l0", "mse", "explained_variance", "ce_clean", "ce_sae", "ce_zero", "dead_features"):
        assert pooled[k] == pytest.approx(once[k], rel=1e-6, abs=1e-9), k


def test_logit_effects_equal_the_explicit_product(tiny_pipeline):
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.features import logit_effects

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


# ------------------------------------------------------------------ target L0, TopK and BatchTopK
class TinyLM:
    """The tiny config's root LM, its training streams and validation windows: only the stages they need
    (corpora, tokenizer, one model), not the whole pipeline."""

    domains = ("babylm", "python")

    def __init__(self, data_dir):
        from featureflow.config import parse_config
        from featureflow.pipeline.family.model import load_model
        from featureflow.pipeline.runner import Pipeline

        self.pl = Pipeline(parse_config(tiny_dict(data_dir)), device="cpu")
        self.model = load_model(self.pl.member("babypython"))
        self.streams = {d: self.pl.stream(d, "train") for d in self.domains}

    def val_windows(self, n_tokens: int) -> dict:
        return self.pl.val_windows(list(self.domains), n_tokens)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return TinyLM(tmp_path_factory.mktemp("tinylm"))


def test_topk_activations_follow_their_definitions():
    from featureflow.saes.batchtopk import batch_topk_relu
    from featureflow.saes.topk import topk_relu

    torch.manual_seed(0)
    pre = torch.randn(40, 64)
    pre[:3] = -pre[:3].abs()  # rows with no positive pre-activation keep nothing
    f = topk_relu(pre, 5)
    relu = pre.relu()
    for row, r in zip(f, relu):
        kept = torch.topk(r, 5).indices
        want = torch.zeros_like(r)
        want[kept] = r[kept]
        assert torch.equal(row, want)
    assert ((f > 0).sum(-1) <= 5).all() and (f[:3] == 0).all()
    b = batch_topk_relu(pre, 5)
    assert int((b > 0).sum()) == 5 * 40                               # k x rows in all, not per row
    assert (b > 0).sum(-1).max() > 5                                  # some rows take more than k
    assert b[b > 0].min() >= relu[b == 0].max()                       # the largest ones across the batch
    assert torch.equal(b[b > 0], relu[b > 0])


@pytest.mark.parametrize("target", [12.0, 40.0])
def test_target_l0_steers_lambda_into_the_band(tiny_lm, target):
    from featureflow.pipeline.sae import L0Controller, activations, block_batches, sae_health, summarise

    model, streams = tiny_lm.model, tiny_lm.streams
    cfg = SAEConfig(expansion=4, tokens=120_000, block_tokens=16, blocks_per_batch=32, lr=3e-3,
                    l1_coefficient=1e-3, target_l0=target)
    tr = train_sae(model, streams, cfg, seed=0)
    # held out: validation streams, in blocks shaped like the training ones
    val = {d: tiny_lm.pl.stream(d, "val") for d in tiny_lm.domains}
    with torch.no_grad():
        l0 = np.mean([(tr.sae.encode(activations(model, b, cfg.hook).reshape(-1, tr.sae.d_in)) > 0)
                      .sum(-1).float().mean().item() for _, b in zip(range(8), block_batches(val, 16, 32, 99))])
    assert abs(l0 - target) <= 0.15 * target, l0
    # sae_health's L0 (context-32 validation windows, not 16-token blocks) lands near it too
    w = tiny_lm.val_windows(1024)
    h = summarise([sae_health(model, tr.sae, w[d], cfg.hook) for d in w])
    assert abs(h["l0"] - target) <= 0.2 * target, h["l0"]
    lam = [r["l1_coefficient"] for r in tr.log]
    steps = tr.log[-1]["step"] + 1
    frozen = [r["l1_coefficient"] for r in tr.log if r["step"] >= steps * L0Controller.CONTROL_FRACTION]
    warm = [r["l1_coefficient"] for r in tr.log if r["step"] < steps * L0Controller.WARMUP_FRACTION]
    assert len(frozen) >= 2 and len(set(frozen)) == 1                  # trained at one λ at the end
    assert tr.l1_coefficient == pytest.approx(frozen[-1])
    assert warm == [pytest.approx(1e-3)] * len(warm)                    # untouched during the warm-up
    assert abs(np.log(tr.l1_coefficient / 1e-3)) > 0.1                  # and then it moved
    assert len(set(lam)) > 3


def test_target_l0_orders_lambda(tiny_lm):
    """From the same start, a lower target ends at a larger λ than the fixed run, a higher one at a smaller."""
    model, streams = tiny_lm.model, tiny_lm.streams
    base = dict(expansion=4, tokens=120_000, block_tokens=16, blocks_per_batch=32, lr=3e-3, l1_coefficient=1e-3)
    lo = train_sae(model, streams, SAEConfig(**base, target_l0=8.0), seed=0)
    hi = train_sae(model, streams, SAEConfig(**base, target_l0=60.0), seed=0)
    fixed = train_sae(model, streams, SAEConfig(**base), seed=0)
    assert lo.l1_coefficient > fixed.l1_coefficient == 1e-3 > hi.l1_coefficient
    assert all(r["l1_coefficient"] == 1e-3 for r in fixed.log)
    assert lo.log[-1]["l0"] < fixed.log[-1]["l0"] < hi.log[-1]["l0"]


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_topk_saes_train_save_and_load_as_saelens_topk(tiny_lm, tmp_path, arch):
    from sae_lens import SAE

    from featureflow.pipeline.artifacts import read_json
    from featureflow.pipeline.sae import activations, sae_health, summarise

    model, streams = tiny_lm.model, tiny_lm.streams
    k = 6
    cfg = SAEConfig(expansion=4, tokens=12_000, block_tokens=16, blocks_per_batch=32, lr=3e-3,
                    architecture=arch, k=k)
    tr = train_sae(model, streams, cfg, seed=3)
    assert tr.architecture == arch and tr.l1_coefficient is None and tr.sae.k == k
    assert tr.log[-1]["mse"] < tr.log[0]["mse"]
    assert all(r["l1_coefficient"] is None for r in tr.log)
    if arch == "batchtopk":  # k x batch active latents in every training batch
        assert all(r["l0"] == pytest.approx(k) for r in tr.log)
    norms = tr.sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)

    save_sae(tr.sae, tmp_path, cfg.hook, "babypython", {"recipe": "test"})
    saved = read_json(tmp_path / "cfg.json")
    assert saved["architecture"] == "topk" and saved["k"] == k and saved["apply_b_dec_to_input"]
    lens = SAE.load_from_disk(str(tmp_path), device="cpu")
    assert lens.cfg.architecture() == "topk" and lens.cfg.metadata.hook_name == cfg.hook
    ours = load_sae(tmp_path)
    assert ours.k == k and ours.architecture == "topk"
    x = activations(model, tiny_lm.val_windows(512)["python"], cfg.hook).reshape(-1, tr.sae.d_in)
    with torch.no_grad():
        f_lens = lens.encode(x)
        np.testing.assert_allclose(tr.sae.encode(x).numpy(), f_lens.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours.encode(x).numpy(), f_lens.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours(x)[0].numpy(), lens.decode(f_lens).numpy(), atol=1e-5)
        np.testing.assert_allclose(ours(x)[0].numpy(), tr.sae(x)[0].numpy(), atol=1e-5)
        f = ours.encode(x)
    assert ((f > 0).sum(-1) <= k).all() and (f > 0).sum(-1).float().mean() > 1

    w = tiny_lm.val_windows(512)
    h = summarise([sae_health(model, ours, w[d], cfg.hook) for d in w])
    assert 0 < h["l0"] <= k and h["mse"] > 0 and 0 < h["explained_variance"] <= 1
    assert h["loss_recovered"] is not None and h["ce_sae"] >= h["ce_clean"] - 0.05
    assert 0 <= h["dead_features"] < tr.sae.d_sae


def test_standard_sae_records_its_fixed_lambda(tiny_lm):
    model, streams = tiny_lm.model, tiny_lm.streams
    cfg = SAEConfig(expansion=2, tokens=3000, block_tokens=8, blocks_per_batch=16, lr=1e-2, l1_coefficient=2e-3)
    tr = train_sae(model, streams, cfg, seed=0)
    assert tr.architecture == "standard" and tr.l1_coefficient == 2e-3 and tr.sae.k is None
    assert {"step", "tokens", "loss", "mse", "l1", "l0", "l1_coefficient"} <= set(tr.log[0])


def test_seed_fixes_initialisation_and_batch_order(tiny_lm):
    model, streams = tiny_lm.model, tiny_lm.streams
    for arch in ("standard", "topk"):
        cfg = SAEConfig(expansion=2, tokens=2048, block_tokens=8, blocks_per_batch=16, lr=1e-2,
                        architecture=arch, k=4, target_l0=10.0)
        a, b, c = (train_sae(model, streams, cfg, seed=s) for s in (5, 5, 6))
        for name, p in a.sae.state_dict().items():
            assert torch.equal(p, b.sae.state_dict()[name]), name
        assert not torch.equal(a.sae.W_dec, c.sae.W_dec)
        assert [r["mse"] for r in a.log] == [r["mse"] for r in b.log] != [r["mse"] for r in c.log]


def test_load_sae_reads_foreign_saelens_variants(tmp_path):
    """Other people's SAELens folders: a topk SAE that rescales by decoder norms (non-unit decoder rows) and a
    standard SAE that does not subtract b_dec from its input load as the same functions."""
    from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(4)
    made = {
        "topk": TopKSAE(TopKSAEConfig(d_in=12, d_sae=40, k=5, rescale_acts_by_decoder_norm=True)),
        "standard": StandardSAE(StandardSAEConfig(d_in=12, d_sae=40, apply_b_dec_to_input=False)),
    }
    x = torch.randn(200, 12) * 2
    for name, s in made.items():
        with torch.no_grad():
            for p in (s.W_enc, s.b_enc, s.W_dec, s.b_dec):
                p.normal_()
            s.W_dec.mul_(torch.rand(40, 1) * 3 + 0.2)
        s.save_model(str(tmp_path / name))
        lens = SAE.load_from_disk(str(tmp_path / name), device="cpu")
        ours = load_sae(tmp_path / name)
        assert ours.k == (5 if name == "topk" else None)
        with torch.no_grad():
            f = lens.encode(x)
            assert (f > 0).any()
            np.testing.assert_allclose(ours.encode(x).numpy(), f.numpy(), atol=1e-4)
            np.testing.assert_allclose(ours(x)[0].numpy(), lens.decode(f).numpy(), atol=1e-4)


def test_load_sae_encodes_jumprelu_and_normalised_saes_through_saelens(tmp_path):
    """Once refused, now SAELens's own encode: a JumpReLU SAE and one that layer-normalises its input."""
    from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    for name, sae in (("jr", JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=16))),
                      ("ln", StandardSAE(StandardSAEConfig(d_in=8, d_sae=16, normalize_activations="layer_norm")))):
        with torch.no_grad():
            for p in sae.parameters():
                p.normal_(0, 0.5)
        sae.save_model(str(tmp_path / name))
        x = torch.randn(32, 8) * 3
        with torch.no_grad():
            want = SAE.load_from_disk(str(tmp_path / name)).encode(x)
            assert torch.equal(load_sae(tmp_path / name).encode(x), want) and (want > 0).any(), name


@pytest.mark.parametrize("arch,k,recipe", [("standard", None, "paper-text"), ("standard", None, "paper-code"),
                                           ("topk", 4, "paper-text"), ("batchtopk", 4, "paper-text")])
def test_sparse_backward_is_autograds_gradient(arch, k, recipe):
    """The hand-written sparse backward pass equals autograd through the dense loss (float64)."""
    from featureflow.pipeline.sae import sparse_sae_loss

    torch.manual_seed(0)
    sae = SparseAutoencoder(16, 64, mean=torch.randn(16), seed=1, k=k, architecture=arch).double()
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)  # about a third of the latents fire: a real mix of active and silent
        sae.b_dec.normal_()
    x = torch.randn(40, 16, dtype=torch.float64)
    total, mse, sp = sae_loss(sae, x, 0.03, recipe)
    total.backward()
    dense = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    total2, mse2, sp2, l0 = sparse_sae_loss(sae, x, 0.03, recipe)
    total2.backward()
    assert torch.allclose(total2, total, atol=1e-12) and torch.allclose(mse2, mse) and torch.allclose(sp2, sp)
    f = sae.encode(x) if arch != "batchtopk" else None  # batchtopk trains with the batch's k x rows
    if f is not None:
        assert float(l0) == pytest.approx(float((f > 0).sum(-1).double().mean()))
    assert 0 < float(l0) < 64
    for n, p in sae.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, n
        torch.testing.assert_close(p.grad, dense[n], rtol=1e-10, atol=1e-12, msg=n)


def test_train_sae_switches_to_the_sparse_pass_and_learns(tiny_pipeline, monkeypatch):
    """Once the SAE is sparse, training goes through `sparse_sae_loss`; the result still reconstructs."""
    import featureflow.pipeline.sae as mod
    from featureflow.pipeline.family.model import load_model

    calls = {"sparse": 0}
    real = mod.sparse_sae_loss

    def counting(*a, **kw):
        calls["sparse"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(mod, "sparse_sae_loss", counting)
    monkeypatch.setattr(mod, "SPARSE_BELOW", 0.5)
    model = load_model(tiny_pipeline.member("babypython"))
    streams = {"babylm": tiny_pipeline.stream("babylm", "train")}
    cfg = SAEConfig(expansion=2, tokens=6000, block_tokens=8, blocks_per_batch=16, lr=1e-2, l1_coefficient=1e-3)
    trained = train_sae(model, streams, cfg, seed=0)
    assert calls["sparse"] > 0
    assert trained.log[-1]["mse"] < trained.log[0]["mse"]
    before = calls["sparse"]
    off = train_sae(model, streams, cfg.model_copy(update={"sparse_backward": False}), seed=0)
    assert calls["sparse"] == before  # sparse_backward: false keeps dense autograd throughout
    assert off.log[-1]["mse"] < off.log[0]["mse"]


@pytest.mark.parametrize("init", ["random", "data"])
def test_one_pass_replicas_equal_replicas_trained_alone(tiny_lm, init, monkeypatch):
    """`train_saes` with several seeds gives each seed exactly the SAE it gets trained alone on the same data
    seed (oracle: separate runs), so no replica leans on another; different seeds start and end apart."""
    import featureflow.pipeline.sae as mod
    from featureflow.pipeline.sae import train_saes

    monkeypatch.setattr(mod, "MEAN_TOKENS", 4096)  # a shorter mean estimate: the test is about the training
    model, streams = tiny_lm.model, tiny_lm.streams

    cfg = SAEConfig(expansion=2, tokens=2048, block_tokens=8, blocks_per_batch=16, lr=1e-2, architecture="topk",
                    k=4, buffer_batches=3, init=init, lr_warmup_steps=3, lr_decay_fraction=0.2)
    together = train_saes(model, streams, cfg, [11, 12, 13], data_seed=7)
    for seed, one in zip([11, 12, 13], together):
        alone = train_saes(model, streams, cfg, [seed], data_seed=7)[0]
        for name, p in one.sae.state_dict().items():
            assert torch.equal(p, alone.sae.state_dict()[name]), (seed, name)
        assert [r["mse"] for r in one.log] == [r["mse"] for r in alone.log]
    w = [t.sae.W_dec for t in together]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert together[0].log[0]["mse"] != together[1].log[0]["mse"]  # different batch order from step 0


def test_one_pass_runs_the_lm_once_for_all_replicas(tiny_lm, monkeypatch):
    """The LM's activations are computed once per chunk, whatever the number of replicas (count of calls)."""
    import featureflow.pipeline.sae as mod

    model, streams = tiny_lm.model, tiny_lm.streams
    calls = {"n": 0}
    real = mod.activations

    def counting(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(mod, "activations", counting)
    monkeypatch.setattr(mod, "MEAN_TOKENS", 4096)
    cfg = SAEConfig(expansion=2, tokens=2048, block_tokens=8, blocks_per_batch=16, lr=1e-2, buffer_batches=4)
    mod.train_saes(model, streams, cfg, [1], data_seed=0)
    one = calls["n"]
    calls["n"] = 0
    mod.train_saes(model, streams, cfg, [1, 2, 3, 4], data_seed=0)
    assert calls["n"] == one
    steps = 2048 // (8 * 16)
    # one LM call per buffer of 4 batches of blocks: the mean's 4096 tokens (32 batches), then the steps' batches
    assert one == -(-(4096 // (8 * 16)) // 4) + -(-steps // 4)


def test_activation_chunks_equal_one_lm_pass_per_batch(tiny_lm):
    """A chunk read in one LM pass over its stacked batches holds, row for row, what a pass over each batch of
    blocks alone gives (the blocks drawn with the same seed, in the same order)."""
    from itertools import islice

    from featureflow.pipeline.sae import activation_chunks, activations, block_batches

    model, streams = tiny_lm.model, tiny_lm.streams
    cfg = SAEConfig(expansion=2, tokens=2048, block_tokens=8, blocks_per_batch=16, buffer_batches=4)
    chunks = list(islice(activation_chunks(model, streams, cfg, data_seed=3, first=1000), 3))
    batches = block_batches(streams, 8, 16, 3)
    n_first = -(-1000 // 128)  # the mean's chunk: whole batches until 1,000 tokens
    for chunk, n in zip(chunks, (n_first, 4, 4)):
        alone = torch.cat([activations(model, next(batches), cfg.hook).reshape(-1, chunk.shape[1]) for _ in range(n)])
        assert chunk.shape == alone.shape == (n * 128, chunk.shape[1])
        torch.testing.assert_close(chunk, alone, rtol=1e-5, atol=1e-6)


def test_one_pass_equal_seeds_give_equal_saes_and_others_differ(tiny_lm, monkeypatch):
    """In one pass, an SAE's own seed alone sets its initialisation and order: two replicas with one seed
    (what `shared_init` asks for) are the same SAE, a third seed a different one."""
    import featureflow.pipeline.sae as mod
    from featureflow.pipeline.sae import train_saes

    monkeypatch.setattr(mod, "MEAN_TOKENS", 4096)

    model, streams = tiny_lm.model, tiny_lm.streams
    cfg = SAEConfig(expansion=2, tokens=1024, block_tokens=8, blocks_per_batch=16, lr=1e-2)
    a, b, c = train_saes(model, streams, cfg, [5, 5, 6], data_seed=0)
    for name, p in a.sae.state_dict().items():
        assert torch.equal(p, b.sae.state_dict()[name]), name
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)
    assert [r["mse"] for r in a.log] == [r["mse"] for r in b.log] != [r["mse"] for r in c.log]
