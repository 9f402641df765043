"""The SAE-architecture and merge-method registries: adding one is a subclass and a `register` call.

Every toy architecture and method here is registered in this file only, used through the same code paths as
the built-in ones (`train_sae_on` / `save_sae` / `load_sae`; `MergeRecipe` through mergekit's `run_merge`), and
unregistered afterwards. Nothing here trains an LM: the SAEs train on synthetic activations, the merges run
on two tiny random checkpoints.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from featureflow.config import MergeMember, SAEConfig
from featureflow import saes
from featureflow import merges


# ------------------------------------------------------------------------------------ the registries
def test_built_in_registrations_and_the_configs_allowed_values():
    assert saes.names()[:3] == ["standard", "topk", "batchtopk"]
    assert [saes.get(n).saved_as for n in ("standard", "topk", "batchtopk")] == ["standard", "topk", "topk"]
    assert merges.names()[:3] == ["slerp", "linear", "ties"]
    assert merges.with_base() == ["ties"]
    assert [merges.label(n) for n in ("slerp", "linear", "ties", None)] == ["SLERP", "linear merge", "TIES merge",
                                                                           "merge"]
    with pytest.raises(ValidationError, match=r"unknown SAE architecture 'gated' \(registered: standard, topk, "
                                              r"batchtopk"):
        SAEConfig(architecture="gated")
    with pytest.raises(ValidationError, match=r"unknown merge method 'dare' \(registered: slerp, linear, ties"):
        MergeMember(name="m", make="merge", parents=["a", "b"], method="dare")
    for n in ("standard", "topk", "batchtopk"):  # the built-in ones, registered before the config class is made
        assert f"{n}: " in SAEConfig.model_fields["architecture"].description
    for n in ("slerp", "linear", "ties"):
        assert f"{n}: " in MergeMember.model_fields["method"].description
    with pytest.raises(ValueError, match="already registered"):
        saes.register(saes.get("topk"))
    with pytest.raises(ValueError, match="already registered"):
        merges.register(merges.get("slerp"))


def test_the_built_in_merge_methods_are_mergekits_own():
    from mergekit.merge_methods import registry

    for n in merges.names():
        merges.check_mergekit(merges.get(n))  # raises unless mergekit registers the method it runs
        assert registry.get(merges.get(n).mergekit_method).spec.name == merges.get(n).mergekit_method


# ------------------------------------------------------------------------------------ SAE architectures
class ReluNoL1(saes.SAEArchitecture):
    """ReLU without the L1 term: a standard SAE at inference, so saved as SAELens `standard`."""

    name = "test-relu-nol1"
    label = "ReLU, no L1"
    description = "ReLU, MSE only"
    saved_as = "standard"

    def activation(self, pre, k=None, inplace=False):
        return pre.relu()


THETA = 0.05


class FixedJump(saes.SAEArchitecture):
    """JumpReLU with one fixed threshold θ: f = pre · 1[pre > θ], MSE + L1. SAELens has no such architecture,
    so it brings its own SAELens classes, registered with SAELens when an SAE of it is first saved."""

    name = "test-fixed-jump"
    label = "fixed JumpReLU"
    description = "pre where pre > θ"
    saved_as = "ff-test-fixed-jump"
    l1_penalty = True

    def activation(self, pre, k=None, inplace=False):
        return pre * (pre > THETA)

    def saelens_classes(self):
        from sae_lens import StandardSAE, StandardSAEConfig

        @dataclass
        class FixedJumpConfig(StandardSAEConfig):
            @classmethod
            def architecture(cls) -> str:
                return "ff-test-fixed-jump"

        class FixedJumpSAE(StandardSAE):
            def encode(self, x):
                pre = self.hook_sae_acts_pre(self.process_sae_in(x) @ self.W_enc + self.b_enc)
                return self.hook_sae_acts_post(pre * (pre > THETA))

        return FixedJumpSAE, FixedJumpConfig


@pytest.fixture
def toy_architectures():
    from sae_lens.registry import SAE_CLASS_REGISTRY

    archs = [saes.register(ReluNoL1()), saes.register(FixedJump())]
    yield archs
    for a in archs:
        saes.unregister(a.name)
    SAE_CLASS_REGISTRY.pop("ff-test-fixed-jump", None)


def synthetic_batches(d: int, rows: int, seed: int):
    """Endless (rows, d) batches: sparse non-negative codes over 3d random directions, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(3 * d, d, generator=g)
    offset = torch.randn(d, generator=g)
    while True:
        codes = torch.rand(rows, 3 * d, generator=g) * (torch.rand(rows, 3 * d, generator=g) < 0.1)
        yield codes @ dirs + offset


@pytest.mark.parametrize("name", ["test-relu-nol1", "test-fixed-jump"])
def test_a_registered_toy_architecture_trains_saves_and_loads_back(toy_architectures, tmp_path, name):
    from sae_lens import SAE

    from featureflow.pipeline.artifacts import read_json
    from featureflow.pipeline.sae import load_sae, save_sae, train_sae_on

    arch = saes.get(name)
    cfg = SAEConfig(architecture=name, expansion=2, lr=3e-3, block_tokens=1, blocks_per_batch=512,
                    tokens=512 * 80, l1_coefficient=1e-3, resample_dead_every=30)
    tr = train_sae_on(synthetic_batches(16, 512, 0), cfg, seed=1, desc=None)
    assert tr.architecture == name and tr.sae.arch is arch and tr.sae.k is None
    assert tr.log[-1]["mse"] < tr.log[0]["mse"]
    if arch.l1_penalty:
        assert tr.l1_coefficient == 1e-3 and all(r["l1_coefficient"] == 1e-3 for r in tr.log)
        assert all(r["loss"] > r["mse"] for r in tr.log)
    else:  # no L1 term: the loss is the MSE and there is no λ
        assert tr.l1_coefficient is None and all(r["l1_coefficient"] is None for r in tr.log)
        assert all(r["loss"] == r["mse"] for r in tr.log)

    save_sae(tr.sae, tmp_path, cfg.hook, "synthetic", {"recipe": "test"})
    assert read_json(tmp_path / "cfg.json")["architecture"] == arch.saved_as
    lens = SAE.load_from_disk(str(tmp_path), device="cpu")
    ours = load_sae(tmp_path, cfg.hook, 16)
    assert ours.architecture == arch.saved_as == lens.cfg.architecture()
    x = next(synthetic_batches(16, 300, 5))
    with torch.no_grad():
        f = tr.sae.encode(x)
        assert (f > 0).any() and (f == 0).any()
        if name == "test-fixed-jump":
            assert f[f > 0].min() > THETA
        np.testing.assert_allclose(ours.encode(x).numpy(), f.numpy(), atol=1e-5)
        np.testing.assert_allclose(lens.encode(x).numpy(), f.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours(x)[0].numpy(), tr.sae(x)[0].numpy(), atol=1e-5)


def test_the_sparse_backward_pass_holds_for_a_toy_architecture(toy_architectures):
    """The hand-written sparse pass against autograd for FixedJump (f = pre on a selected set, 0 elsewhere)."""
    from featureflow.pipeline.sae import SparseAutoencoder, sae_loss, sparse_sae_loss

    torch.manual_seed(0)
    sae = SparseAutoencoder(16, 64, mean=torch.randn(16), seed=1, architecture="test-fixed-jump").double()
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
        sae.b_dec.normal_()
    x = torch.randn(40, 16, dtype=torch.float64)
    total, _, _ = sae_loss(sae, x, 0.03)
    total.backward()
    dense = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    total2, _, _, l0 = sparse_sae_loss(sae, x, 0.03)
    total2.backward()
    assert torch.allclose(total2, total, atol=1e-12) and 0 < float(l0) < 64
    for n, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, dense[n], rtol=1e-10, atol=1e-12, msg=n)


# ------------------------------------------------------------------------------------ merge methods
class FixedLinear(merges.MergeMethod):
    """mergekit's linear merge with fixed weights (0.25, 0.75), whatever t."""

    name = "test-fixed-linear"
    label = "fixed linear merge"
    description = "weights (0.25, 0.75)"
    mergekit_method = "linear"

    def mergekit_config(self, t, p0, p1, base=None, density=None):
        return {"merge_method": "linear", "models": [{"model": p0, "parameters": {"weight": 0.25}},
                                                      {"model": p1, "parameters": {"weight": 0.75}}],
                "dtype": "float32"}


class NotInMergekit(FixedLinear):
    name = "test-not-in-mergekit"
    mergekit_method = "no-such-method"


@pytest.fixture
def toy_methods():
    ms = [merges.register(FixedLinear()), merges.register(NotInMergekit())]
    yield ms
    for m in ms:
        merges.unregister(m.name)


@pytest.fixture
def two_checkpoints(tmp_path):
    from featureflow.config import ModelShape
    from featureflow.pipeline.family.model import new_model

    shape = ModelShape(hidden=16, d_mlp=32, heads=2, context=16)
    for i, name in enumerate(("p0", "p1")):
        new_model(shape, 64, 0, i + 1).save_pretrained(tmp_path / name)
    return tmp_path / "p0", tmp_path / "p1"


def test_a_registered_toy_merge_method_merges_through_mergekit(toy_methods, two_checkpoints):
    from safetensors.torch import load_file

    from featureflow.pipeline.family.merge import MergeError, MergeRecipe

    m = MergeMember(name="m", make="merge", parents=["a", "b"], method="test-fixed-linear", t=0.5)
    assert m.method == "test-fixed-linear"
    r = MergeRecipe(m.method, two_checkpoints)
    assert r.label == "fixed linear merge" and r.config(0.3)["merge_method"] == "linear"
    a, b = (load_file(str(p / "model.safetensors")) for p in two_checkpoints)
    sd = r.state_dict(0.3)
    assert set(sd) == set(a)
    for k in sd:
        np.testing.assert_allclose(sd[k].numpy(), 0.25 * a[k].numpy() + 0.75 * b[k].numpy(), atol=1e-6, err_msg=k)
    with pytest.raises(MergeError, match="only method 'ties' takes a base"):
        MergeRecipe("test-fixed-linear", two_checkpoints, base=two_checkpoints[0])
    # the mergekit method is checked against mergekit's own registry
    with pytest.raises(MergeError, match="runs mergekit's 'no-such-method', which mergekit does not register"):
        MergeRecipe("test-not-in-mergekit", two_checkpoints)
    with pytest.raises(MergeError, match="unknown merge method 'nope'"):
        MergeRecipe("nope", two_checkpoints)


def test_the_built_in_methods_build_the_same_mergekit_configs():
    """The YAML every built-in method writes, spelled out (the files `mergekit_config.yml` hold)."""
    p0, p1, base = "/m/p0", "/m/p1", "/m/base"
    assert merges.get("slerp").mergekit_config(0.25, p0, p1) == {
        "merge_method": "slerp", "base_model": p0, "models": [{"model": p0}, {"model": p1}],
        "parameters": {"t": 0.25}, "dtype": "float32"}
    assert merges.get("linear").mergekit_config(0.25, p0, p1) == {
        "merge_method": "linear", "models": [{"model": p0, "parameters": {"weight": 0.75}},
                                             {"model": p1, "parameters": {"weight": 0.25}}], "dtype": "float32"}
    assert merges.get("ties").mergekit_config(0.25, p0, p1, base=base, density=0.3) == {
        "merge_method": "ties", "base_model": base,
        "models": [{"model": p0, "parameters": {"weight": 0.75, "density": 0.3}},
                   {"model": p1, "parameters": {"weight": 0.25, "density": 0.3}}], "dtype": "float32"}


# ------------------------------------------------------------------------------------ the explorer
@pytest.mark.parametrize("method,label", [("linear", "linear merge"), ("slerp", "SLERP"), (None, "merge")])
def test_the_merge_page_names_the_method(synthetic_store, tmp_path, method, label):
    """The store keeps no method column: the explorer reads it from the stored config."""
    import json
    import shutil

    import duckdb
    from fastapi.testclient import TestClient

    from featureflow.explorer.app import create_app

    db = tmp_path / "store.duckdb"
    shutil.copy(synthetic_store.path, db)
    cfg = {"name": "synthetic"} if method is None else \
        {"name": "synthetic", "family": [{"name": "merged", "make": "merge", "method": method}]}
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET config_json = ?", [json.dumps(cfg)])
    con.close()
    client = TestClient(create_app(db))
    m = client.get("/api/merge").json()["merges"][0]
    assert m["method"] == method and m["method_label"] == label
    assert m["figure"]["layout"]["title"]["text"].startswith(f"{label} ")
    page = client.get("/merge").text
    assert f"Merged: {label} of left and right" in page
    assert ("SLERP" in page) == (method == "slerp")
