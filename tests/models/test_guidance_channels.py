"""The guidance option (issue 19): a plate and/or a person mask as extra network inputs.

The invariant: the guidance convolution starts at zero and has no bias, so a guided network
loads the plain network's weights and gives *bit-identical* outputs (torch.equal) on real
frames whether the guidance is absent, zero or (before training) anything at all -- at full
resolution and through both refiners, over several recurrent steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rvmatte.errors import WeightsError
from rvmatte.models import build_model
from rvmatte.spec import ModelSpec
from rvmatte.weights import bundled_path, load_model, read_checkpoint

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"
BOTH = ("plate", "mask")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """Six real frames of the sample clip, (1, 6, 3, 360, 640) in [0, 1]."""
    import av

    with av.open(str(SAMPLE)) as c:
        imgs = [f.to_ndarray(format="rgb24") for _, f in zip(range(6), c.decode(video=0))]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)[None].float() / 255


def _plate_and_mask(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in plate (the first frame, blurred) and mask (a centre box): something non-zero."""
    lead = frames.shape[:2]
    plate = F.avg_pool2d(frames.flatten(0, 1), 5, 1, 2).unflatten(0, lead)
    mask = torch.zeros(*lead, 1, *frames.shape[-2:])
    mask[..., 60:300, 200:440] = 1
    return plate, mask


def _run(model, frames, ratio, **guidance):
    """The clip in chunks of 2 frames with the state carried (the recurrent path)."""
    outs, state = [], None
    with torch.inference_mode():
        for t in range(0, frames.shape[1], 2):
            g = {k: v[:, t:t + 2] for k, v in guidance.items()}
            out = model(frames[:, t:t + 2], state, downsample_ratio=ratio, **g)
            state = out.state
            outs.append(out)
    return outs


def _assert_identical(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.pha, y.pha)
        assert torch.equal(x.fgr, y.fgr)
        assert all(torch.equal(r, s) for r, s in zip(x.state, y.state))


def _plain_and_guided(refiner: str):
    """The bundled weights in the plain network and in a guided one (DGF: the bundled weights
    plus a seeded random Deep Guided Filter, loaded into both)."""
    if refiner == "fast_guided_filter":
        return load_model(device="cpu"), load_model(device="cpu", guidance=BOTH)
    torch.manual_seed(3)
    dgf = build_model(refiner="deep_guided_filter").refiner.state_dict()
    sd = {**read_checkpoint(bundled_path()), **{f"refiner.{k}": v for k, v in dgf.items()}}
    plain = build_model(refiner=refiner)
    plain.load_state_dict(sd)
    guided = build_model(refiner=refiner, guidance=BOTH)
    missing = guided.load_state_dict(sd, strict=False).missing_keys
    assert missing == ["guidance.conv.weight"]
    return plain.eval(), guided.eval()


@pytest.mark.parametrize("refiner,ratio,size", [
    ("fast_guided_filter", 1.0, (192, 320)),     # the LR path: no refiner
    ("fast_guided_filter", 0.25, None),          # the bundled refiner
    ("deep_guided_filter", 0.25, None),
])
def test_zero_or_absent_guidance_is_the_plain_network(frames, refiner, ratio, size):
    if size is not None:
        frames = F.interpolate(frames[0], size, mode="area")[None]
    plain, guided = _plain_and_guided(refiner)
    assert torch.count_nonzero(guided.guidance.conv.weight) == 0
    ref = _run(plain, frames, ratio)
    _assert_identical(ref, _run(guided, frames, ratio))                       # absent
    zeros = {"plate": torch.zeros_like(frames), "mask": torch.zeros_like(frames[:, :, :1])}
    _assert_identical(ref, _run(guided, frames, ratio, **zeros))              # zero
    plate, mask = _plate_and_mask(frames)
    _assert_identical(ref, _run(guided, frames, ratio, plate=plate))          # zero-init weights
    _assert_identical(ref, _run(guided, frames, ratio, plate=plate, mask=mask))


def test_trained_guidance_is_used_and_absent_guidance_still_contributes_nothing(frames):
    frames = F.interpolate(frames[0, :2], (192, 320), mode="area")[None]
    plain, guided = _plain_and_guided("fast_guided_filter")
    with torch.no_grad():
        guided.guidance.conv.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    plate, mask = _plate_and_mask(frames)
    ref = _run(plain, frames, 1.0)
    _assert_identical(ref, _run(guided, frames, 1.0))          # no bias: absent is nothing
    _assert_identical(ref, _run(guided, frames, 1.0, plate=torch.zeros_like(plate)))
    with_mask = _run(guided, frames, 1.0, mask=mask)
    with_plate = _run(guided, frames, 1.0, plate=plate)
    for out in (with_mask, with_plate):  # the channels are wired in
        d = (out[0].pha - ref[0].pha).abs()
        assert float(d.max()) > 0.05  # measured: 0.15 (mask), 0.32 (plate)


def test_plain_network_has_no_guidance_parameters():
    plain = build_model()
    assert plain.guidance is None and plain.guidance_inputs == ()
    assert not any(k.startswith("guidance.") for k in plain.state_dict())
    guided = build_model(guidance="mask, plate")
    assert guided.guidance_inputs == BOTH
    assert guided.guidance.conv.weight.shape == (16, 4, 3, 3)
    r50 = build_model(variant="resnet50", refiner="fast_guided_filter", guidance=["mask"])
    assert r50.guidance.conv.weight.shape == (64, 1, 3, 3)
    with torch.inference_mode():  # the stem sizes match for odd sizes too
        out = r50.eval()(torch.rand(1, 3, 45, 67), mask=torch.ones(1, 1, 45, 67))
    assert out.pha.shape == (1, 1, 45, 67)


def test_bad_guidance_input_is_one_clear_error():
    plain = build_model().eval()
    src = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="has no plate input"):
        plain(src, plate=torch.rand(1, 3, 32, 32))
    masked = build_model(guidance=("mask",)).eval()
    with pytest.raises(ValueError, match="has no plate input"):
        masked(src, plate=torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 1, 32, 32\)"):
        masked(src, mask=torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown guidance input 'depth'"):
        build_model(guidance=("depth",))
    with pytest.raises(WeightsError, match="unknown guidance input"):
        ModelSpec(guidance="plate,trimap")


def test_guided_checkpoints_round_trip(tmp_path):
    guided = load_model(device="cpu", guidance=("plate",))
    with torch.no_grad():
        guided.guidance.conv.weight.fill_(0.01)
    path = tmp_path / "guided.pth"
    torch.save(guided.state_dict(), path)
    again = load_model(weights=path, device="cpu")               # the guidance comes with it
    assert again.guidance_inputs == ("plate",)
    assert torch.equal(again.guidance.conv.weight, guided.guidance.conv.weight)
    plain = load_model(weights=path, device="cpu", guidance=())  # dropped: same outputs
    assert plain.guidance is None
    with pytest.raises(WeightsError, match="do not fit"):        # another set of inputs
        load_model(weights=path, device="cpu", guidance=BOTH)
    spec = ModelSpec(weights=str(path), device="cpu")
    assert spec.load_model().guidance_inputs == ("plate",)
    assert ModelSpec(guidance=["mask", "plate"]).guidance == BOTH


def test_spec_identity():
    assert ModelSpec().bundled() and ModelSpec(guidance=()).bundled()
    assert not ModelSpec(guidance="mask").bundled()
    assert "guidance" not in ModelSpec().fingerprint()  # checkpoints of plain runs unchanged
    assert ModelSpec(guidance="mask").fingerprint()["guidance"] == ["mask"]
