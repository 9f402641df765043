"""Merges equal mergekit's own CLI (`mergekit-yaml`), tensor for tensor; the t sweep; merge errors.

Parents are built here (a random root and two perturbed children, tiny shape) rather than trained, so
every test runs in seconds; the member folder is built by the real `build_member`, with a stand-in for
the pipeline that serves the parent folders, a tokenizer folder and validation windows.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_dict
from safetensors.torch import load_file

from featureflow.config import ModelShape, parse_config
from featureflow.pipeline.family.build import MemberInputs, build_member, merge_base, merge_recipe
from featureflow.pipeline.family.merge import MergeError, MergeRecipe, find_crossing
from featureflow.pipeline.family.model import load_model, new_model

SHAPE = ModelShape(hidden=32, d_mlp=64, heads=2, context=32)
VOCAB = 512
CURVE_KEYS = {"parents", "t_direction", "curve_domains", "t", "t_mode", "t_star", "crossed", "t_grid_interpolated",
              "grid_step", "tolerance", "points", "baselines", "method", "base", "density", "mergekit_config"}


def save_perturbed(root, folder: Path, seed: int, scale: float) -> None:
    """A child of `root`: every tensor plus Gaussian noise of `scale` times its own RMS."""
    g = torch.Generator().manual_seed(seed)
    m = new_model(SHAPE, VOCAB, 0, 0)
    sd = {k: v + scale * v.pow(2).mean().sqrt().clamp_min(1e-3) * torch.randn(v.shape, generator=g)
          for k, v in root.state_dict().items()}
    m.load_state_dict(sd)
    m.save_pretrained(folder)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Folders for babypython (root), its two children lua and tinystories, and the family tokenizer."""
    d = tmp_path_factory.mktemp("merge_family")
    root = new_model(SHAPE, VOCAB, 0, 0)
    root.save_pretrained(d / "babypython")
    save_perturbed(root, d / "lua", 1, 0.6)
    save_perturbed(root, d / "tinystories", 2, 0.6)
    tok = d / "tok" / "tokenizer"
    tok.mkdir(parents=True)
    (tok / "tokenizer.json").write_text('{"family": "tokenizer"}')
    (tok / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    return d


class StandIn:
    """What `build_member` / `merge_member` ask of a Pipeline: config, parent folders, tokenizer, windows.

    The parents' own-domain windows are greedy continuations by that parent, so each parent predicts its
    own domain perfectly and the sweep's two accuracy curves really cross."""

    device = "cpu"

    def __init__(self, cfg, root: Path):
        self.cfg, self.root, self._windows = cfg, root, {}

    def member(self, name: str) -> Path:
        return self.root / name

    def tokenizer(self) -> Path:
        return self.root / "tok"

    def inputs(self) -> MemberInputs:
        return MemberInputs(cfg=self.cfg, member=self.member, tokenizer_dir=self.tokenizer() / "tokenizer",
                            hf_tokenizer=lambda: None, device=self.device, stream=None,
                            val_windows=self.val_windows, documents=None)

    def val_windows(self, domains, n_tokens):
        return {d: self._window(d, n_tokens) for d in domains}

    def _window(self, domain: str, n_tokens: int) -> torch.Tensor:
        if (domain, n_tokens) not in self._windows:
            n, ctx = n_tokens // SHAPE.context, SHAPE.context
            g = torch.Generator().manual_seed(len(domain))
            x = torch.randint(0, VOCAB, (n, 1), generator=g)
            owner = {"lua": "lua", "tinystories": "tinystories"}.get(domain)
            if owner is None:
                x = torch.randint(0, VOCAB, (n, ctx), generator=g)
            else:
                model = load_model(self.member(owner))
                with torch.no_grad():
                    while x.shape[1] < ctx:
                        x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
            self._windows[(domain, n_tokens)] = x
        return self._windows[(domain, n_tokens)]


def tiny_cfg(tmp: Path, merge_member: dict, family: list | None = None, grid_step=0.25, tolerance=0.05):
    fam = family or [
        {"name": "babypython", "make": "train", "domains": ["babylm", "python"], "tokens": 1000},
        {"name": "lua", "make": "finetune", "parents": ["babypython"], "domains": ["lua"], "tokens": 1000},
        {"name": "tinystories", "make": "finetune", "parents": ["babypython"], "domains": ["tinystories"],
         "tokens": 1000},
    ]
    return parse_config(tiny_dict(tmp, family=fam + [merge_member],
                                  merge={"grid_step": grid_step, "tolerance": tolerance, "eval_tokens": 256},
                                  training={"batch_size": 8, "eval_tokens": 256}))


def build_merge(family: Path, tmp: Path, **member):
    spec = {"name": "luastories", "make": "merge", "parents": ["lua", "tinystories"]} | member
    coarse = member.get("t", "auto") != "auto"  # a fixed t still records the curve: a coarse one will do here
    cfg = tiny_cfg(tmp, spec, grid_step=0.5 if coarse else 0.25, tolerance=0.5 if coarse else 0.05)
    pl = StandIn(cfg, family)
    out = tmp / "luastories"
    out.mkdir()
    m = cfg.member("luastories")
    t0 = time.time()
    build_member(pl.inputs(), m, {p: family / p for p in m.parents}, out)
    return pl, m, out, time.time() - t0


def mergekit_cli(config_text: str, tmp: Path) -> Path:
    """`mergekit-yaml config.yml out` as a subprocess, offline."""
    exe = Path(sys.executable).parent / "mergekit-yaml"
    exe = str(exe) if exe.exists() else shutil.which("mergekit-yaml")
    assert exe, "mergekit-yaml (mergekit's CLI) is not installed"
    cfg_file, out = tmp / "cli.yml", tmp / "cli_out"
    cfg_file.write_text(config_text)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([exe, str(cfg_file), str(out), "--no-copy-tokenizer"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def max_diff_to_cli(member_dir: Path, cli_dir: Path) -> float:
    ours, theirs = load_file(str(member_dir / "model.safetensors")), load_file(str(cli_dir / "model.safetensors"))
    assert set(ours) == set(theirs) and len(ours) >= 10
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype == torch.float32 and ours[k].shape == theirs[k].shape, k
    return max((ours[k] - theirs[k]).abs().max().item() for k in ours)


# ------------------------------------------------------------------- equal to mergekit's own CLI
@pytest.mark.parametrize("method,t", [("slerp", "auto"), ("slerp", 0.58), ("linear", 0.3), ("ties", 0.6)])
def test_member_equals_mergekit_cli(family, tmp_path, method, t):
    pl, m, out, seconds = build_merge(family, tmp_path, method=method, t=t)
    curve = json.loads((out / "merge_curve.json").read_text())
    assert set(curve) == CURVE_KEYS
    assert curve["method"] == method and curve["t_mode"] == ("auto" if t == "auto" else "fixed")
    if t == "auto":  # the chosen t is where the sweep's curves cross, found by bisection
        assert curve["crossed"] and curve["t"] == curve["t_star"] and 0 < curve["t"] < 1
        assert any(p["source"] == "bisection" for p in curve["points"])
    else:
        assert curve["t"] == t
    assert curve["base"] == ("babypython" if method == "ties" else None)
    assert curve["density"] == (0.5 if method == "ties" else None)

    # the YAML a user would give mergekit-yaml: the parents' folders, the method, t, float32
    cfg = yaml.safe_load(curve["mergekit_config"])
    assert cfg["merge_method"] == method and cfg["dtype"] == "float32"
    assert [x["model"] for x in cfg["models"]] == [str((family / p).resolve()) for p in ("lua", "tinystories")]
    if method == "slerp":
        assert cfg["base_model"] == str((family / "lua").resolve()) and cfg["parameters"]["t"] == curve["t"]
    else:
        assert [x["parameters"]["weight"] for x in cfg["models"]] == [1 - curve["t"], curve["t"]]
    if method == "ties":
        assert cfg["base_model"] == str((family / "babypython").resolve())
        assert [x["parameters"]["density"] for x in cfg["models"]] == [0.5, 0.5]

    cli = mergekit_cli(curve["mergekit_config"], tmp_path)
    diff = max_diff_to_cli(out, cli)
    print(f"{method} t={curve['t']:.4f}: max |member - mergekit-yaml| = {diff:.3g}; build {seconds:.1f}s")
    assert diff <= 1e-6
    assert json.loads((out / "config.json").read_text()) == json.loads((cli / "config.json").read_text())

    # not trivially a parent: the merge moved every parent's weights
    merged = load_file(str(out / "model.safetensors"))
    for p in ("lua", "tinystories"):
        sd = load_file(str(family / p / "model.safetensors"))
        assert max((merged[k] - sd[k]).abs().max().item() for k in sd) > 1e-2

    # the member folder: loads, keeps the family tokenizer, records the merge
    model = load_model(out)
    assert model.config.hidden_size == SHAPE.hidden and model.config.vocab_size == VOCAB
    for f in (family / "tok" / "tokenizer").iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()
    info = json.loads((out / "member.json").read_text())
    assert info["t"] == curve["t"] and info["method"] == method and set(info["eval"]) == set(pl.cfg.corpora.domains)
    assert (out / "mergekit_config.yml").read_text() == curve["mergekit_config"]


def test_slerp_ends_are_the_parents_and_methods_differ(family):
    lua, ts = (load_file(str(family / p / "model.safetensors")) for p in ("lua", "tinystories"))
    r = MergeRecipe("slerp", (family / "lua", family / "tinystories"))
    assert all(torch.equal(v, lua[k]) for k, v in r.state_dict(0.0).items())  # t = 0 is parents[0], exactly
    assert all(torch.equal(v, ts[k]) for k, v in r.state_dict(1.0).items())  # and t = 1 is parents[1]
    lin = MergeRecipe("linear", (family / "lua", family / "tinystories")).state_dict(0.5)
    sl = r.state_dict(0.5)
    for k in lin:
        np.testing.assert_allclose(lin[k].numpy(), 0.5 * lua[k].numpy() + 0.5 * ts[k].numpy(), atol=1e-6, err_msg=k)
    assert max((sl[k] - lin[k]).abs().max().item() for k in lin) > 1e-3  # slerp is not linear here


# ------------------------------------------------------------------- whole-tensor SLERP, closed form
def closed_form_slerp(a: np.ndarray, b: np.ndarray, t: float, thr: float = 0.9995) -> np.ndarray:
    """SLERP of two whole tensors, flattened: one angle per tensor."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    c = np.clip(np.dot(x / np.linalg.norm(x), y / np.linalg.norm(y)), -1, 1)
    if abs(c) > thr:
        return ((1 - t) * x + t * y).reshape(a.shape)
    th = math.acos(c)
    return ((math.sin((1 - t) * th) * x + math.sin(t * th) * y) / math.sin(th)).reshape(a.shape)


def test_slerp_of_whole_tensors_of_known_angle(tmp_path):
    """Two checkpoints whose embedding matrices are at a known angle theta as whole (Frobenius) vectors,
    while their rows sit at many different angles: the merge follows the one great circle of the whole
    tensor, and mergekit's kernel applied row by row (the old behaviour) would not."""
    theta = math.pi / 3
    g = torch.Generator().manual_seed(0)
    a = torch.randn(VOCAB, SHAPE.hidden, generator=g, dtype=torch.float64)
    b = torch.randn(VOCAB, SHAPE.hidden, generator=g, dtype=torch.float64)
    a /= a.norm()
    b -= (b * a).sum() * a
    b /= b.norm()  # a, b orthonormal as whole tensors; row angles vary
    e0, e1 = 3.0 * a, 5.0 * (math.cos(theta) * a + math.sin(theta) * b)
    for name, emb, seed in (("p0", e0, 1), ("p1", e1, 2)):
        m = new_model(SHAPE, VOCAB, 0, seed)
        m.model.embed_tokens.weight.data = emb.float()
        m.save_pretrained(tmp_path / name)
    from mergekit.merge_methods.slerp import slerp as kernel  # per-row when given a 2-D weight directly

    r = MergeRecipe("slerp", (tmp_path / "p0", tmp_path / "p1"))
    p0, p1 = (load_file(str(tmp_path / p / "model.safetensors")) for p in ("p0", "p1"))
    for t in (0.25, 0.5, 0.8):
        sd = r.state_dict(t)
        want = (math.sin((1 - t) * theta) * e0 + math.sin(t * theta) * e1) / math.sin(theta)
        got = sd["model.embed_tokens.weight"].double()
        assert (got - want).abs().max().item() < 1e-6, t
        rows = kernel(torch.tensor(t), e0.float(), e1.float()).double()
        assert (rows - want).abs().max().item() > 1e-3
        # and every other tensor of the pair follows the same rule, one angle each
        for k in sd:
            np.testing.assert_allclose(sd[k].numpy(), closed_form_slerp(p0[k].numpy(), p1[k].numpy(), t),
                                       atol=1e-6, err_msg=k)


# ------------------------------------------------------------------- errors
def test_merge_errors(family, tmp_path):
    other = ModelShape(hidden=16, d_mlp=64, heads=2, context=32)
    new_model(other, VOCAB, 0, 3).save_pretrained(tmp_path / "narrow")
    with pytest.raises(MergeError, match=r"'lua' and 'narrow' have different shapes \(tensor '.*'"):
        MergeRecipe("slerp", (family / "lua", tmp_path / "narrow"), labels=("lua", "narrow"))
    r = MergeRecipe("linear", (family / "lua", family / "tinystories"))
    with pytest.raises(MergeError, match=r"t must lie in \[0, 1\], got 1.2"):
        r.state_dict(1.2)
    with pytest.raises(MergeError, match="method 'ties' needs a base model"):
        MergeRecipe("ties", (family / "lua", family / "tinystories"))
    with pytest.raises(MergeError, match="not a local model folder"):
        MergeRecipe("slerp", (family / "lua", tmp_path / "absent"))
    with pytest.raises(MergeError, match="only method 'ties' takes a base"):
        MergeRecipe("slerp", (family / "lua", family / "tinystories"), base=family / "babypython")

    # ties with no base and parents that share no ancestor: the member's error names them
    two_roots = [
        {"name": "lua", "make": "train", "domains": ["lua"], "tokens": 1000},
        {"name": "tinystories", "make": "train", "domains": ["tinystories"], "tokens": 1000},
    ]
    cfg = tiny_cfg(tmp_path, {"name": "luastories", "make": "merge", "parents": ["lua", "tinystories"],
                              "method": "ties", "t": 0.5}, family=two_roots)
    m = cfg.member("luastories")
    with pytest.raises(MergeError, match="member 'luastories': method 'ties' needs a base.*'lua' and "
                                         "'tinystories' share no ancestor"):
        merge_base(cfg, m)
    # an explicit base is used as given
    cfg = tiny_cfg(tmp_path, {"name": "luastories", "make": "merge", "parents": ["lua", "tinystories"],
                              "method": "ties", "t": 0.5, "base": "babypython", "density": 0.3})
    rec = merge_recipe(StandIn(cfg, family).inputs(), cfg.member("luastories"))
    assert rec.base == (family / "babypython").resolve() and rec.density == 0.3


# ------------------------------------------------------------------- the sweep
def test_crossing_on_synthetic_curves():
    calls = []

    def f(t):
        calls.append(t)
        return 1 - t, t * t  # meet at (sqrt(5) - 1) / 2

    c = find_crossing(f, 0.05, 0.005)
    golden = (math.sqrt(5) - 1) / 2
    assert c.crossed and abs(c.t_star - golden) < 0.005
    assert abs(c.t_grid_interpolated - golden) < 0.01
    bis = [p for p in c.points if p["source"] == "bisection"]
    assert len(bis) >= 3  # 0.05 -> below 0.005 needs four halvings
    assert all(0.6 <= p["t"] <= 0.65 for p in bis)


def test_no_crossing_reports_closest_approach():
    c = find_crossing(lambda t: (2.0 - t, 0.5 * t), 0.1, 0.01)
    assert not c.crossed and c.t_star == 1.0


def _old_find_crossing(evaluate_at, grid_step, tolerance):
    """The hand-written bisection merge.py had before it called scipy (the reference): (t*, t_interp, points).
    One change, the stopping rule: scipy stops once the halved bracket is below the tolerance plus 4 ulp of t
    (its rtol); the old loop recomputed `hi - lo` by subtraction, which can land an ulp above the tolerance
    (0.55 - 0.54 > 0.01) and bisect once more than the tolerance asks."""
    grid = list(np.round(np.arange(0.0, 1.0 + 1e-9, grid_step), 10))
    if grid[-1] < 1.0:
        grid.append(1.0)
    seen, points = {}, []

    def ev(t, source):
        t = float(round(t, 10))
        if t not in seen:
            seen[t] = evaluate_at(t)
            points.append((t, source))
        return seen[t][0] - seen[t][1]

    diffs = [ev(t, "grid") for t in grid]
    bracket = next((i for i in range(len(grid) - 1) if diffs[i] * diffs[i + 1] < 0), None)
    assert bracket is not None and 0 not in diffs
    lo, hi, d_lo, d_hi = grid[bracket], grid[bracket + 1], diffs[bracket], diffs[bracket + 1]
    t_interp = lo + (hi - lo) * d_lo / (d_lo - d_hi)
    width = hi - lo
    while width > tolerance:
        mid = (lo + hi) / 2
        d_mid = ev(mid, "bisection")
        if d_mid == 0:
            return mid, t_interp, sorted(points)
        if d_lo * d_mid < 0:
            hi, d_hi = mid, d_mid
        else:
            lo, d_lo = mid, d_mid
        width /= 2
        if width < tolerance + 4 * np.finfo(float).eps * abs(mid):
            break
    return lo + (hi - lo) * d_lo / (d_lo - d_hi), t_interp, sorted(points)


def test_crossing_search_is_unchanged_by_scipy():
    """Same evaluations (t and source), same t* and grid interpolation as the hand-written bisection, on random
    crossing curves (several roots included) and grids."""
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(300):
        c = rng.normal(size=4)
        step, tol = float(rng.choice([0.05, 0.1, 0.04, 0.25])), float(rng.choice([0.005, 0.01, 0.001]))

        def f(t, c=c):
            return float(np.polyval(c, t)), float(np.sin(3 * t) * c[0])

        try:
            want = _old_find_crossing(f, step, tol)
        except AssertionError:
            continue  # no strict sign change on the grid: not a bisection case
        got = find_crossing(f, step, tol)
        assert got.crossed and got.t_star == pytest.approx(want[0], abs=1e-12)
        assert got.t_grid_interpolated == pytest.approx(want[1], abs=1e-12)
        assert sorted((p["t"], p["source"]) for p in got.points) == want[2]
        checked += 1
    assert checked > 100
