import math

import numpy as np
import pytest
import torch

from backend.family.merge import MergeError, find_crossing, slerp_state_dicts


def numpy_slerp_rows(a: np.ndarray, b: np.ndarray, t: float, thr: float = 0.9995) -> np.ndarray:
    """Independent closed form: SLERP of every output row (mergekit 0.1.5's convention)."""
    a2, b2 = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    out = np.empty_like(a2)
    for i in range(a2.shape[0]):
        x, y = a2[i], b2[i]
        nx, ny = np.linalg.norm(x) or 1.0, np.linalg.norm(y) or 1.0
        dot = np.clip(np.dot(x / nx, y / ny), -1, 1)
        if abs(dot) > thr:
            out[i] = (1 - t) * x + t * y
        else:
            th = math.acos(dot)
            out[i] = (math.sin((1 - t) * th) * x + math.sin(t * th) * y) / math.sin(th)
    return out.reshape(a.shape)


def test_closed_form_on_vectors_of_known_angle():
    theta = math.pi / 3
    v0 = torch.tensor([[1.0, 0.0]])
    v1 = torch.tensor([[math.cos(theta), math.sin(theta)]])
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        got = slerp_state_dicts({"w": v0}, {"w": v1}, t)["w"][0]
        want = torch.tensor([math.cos(t * theta), math.sin(t * theta)])  # unit circle: angle t*theta
        assert torch.allclose(got, want, atol=1e-6), (t, got, want)


def test_near_parallel_falls_back_to_linear():
    v0 = torch.tensor([[1.0, 0.0]])
    v1 = torch.tensor([[2.0, 1e-4]])
    got = slerp_state_dicts({"w": v0}, {"w": v1}, 0.3)["w"]
    assert torch.allclose(got, 0.7 * v0 + 0.3 * v1, atol=1e-7)


def test_mergekit_semantics_on_every_tensor_of_real_checkpoints(tiny_pipeline):
    import mergekit.merge_methods.slerp  # noqa: F401  (the semantics we claim)

    from backend.family.model import load_model

    sd0 = load_model(tiny_pipeline.member("lua")).state_dict()
    sd1 = load_model(tiny_pipeline.member("tinystories")).state_dict()
    for t in (0.0, 0.37, 1.0):
        merged = slerp_state_dicts(sd0, sd1, t)
        assert set(merged) == set(sd0)
        for k, v in merged.items():
            want = numpy_slerp_rows(sd0[k].numpy(), sd1[k].numpy(), t)
            np.testing.assert_allclose(v.numpy(), want, atol=1e-6, err_msg=k)
        if t == 0.0:
            assert all(torch.equal(merged[k], sd0[k]) for k in sd0)


def test_shape_mismatch_names_the_tensor():
    with pytest.raises(MergeError, match="tensor 'w'.*different shapes"):
        slerp_state_dicts({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 3)}, 0.5)
    with pytest.raises(MergeError, match=r"t must lie in \[0, 1\]"):
        slerp_state_dicts({"w": torch.zeros(2, 3)}, {"w": torch.zeros(2, 3)}, 1.2)


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
