"""Official checkpoint compatibility, the bundled weights and clear errors for bad files."""

from __future__ import annotations

import shutil

import pytest
import torch

import rvmatte
from rvmatte import weights as W
from rvmatte.errors import WeightsError
from rvmatte.models import build_model

OFFICIAL = {  # variant -> (keys, parameters) of the official RVM release with the DGF refiner
    "mobilenetv3": (380, 3_748_633),
    "resnet50": (390, 26_890_461),
}


def _pinned(fixtures_dir, variant):
    lines = (fixtures_dir / f"official_keys_{variant}.txt").read_text().splitlines()
    out = {}
    for line in lines:
        if line.startswith("#"):
            continue
        k, shape = line.split(" ")
        out[k] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return out


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_official_keys_and_shapes(fixtures_dir, variant):
    model = build_model(variant=variant, refiner="deep_guided_filter")
    sd = model.state_dict()
    pinned = _pinned(fixtures_dir, variant)
    assert list(sd) == list(pinned)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == pinned
    keys, params = OFFICIAL[variant]
    assert len(sd) == keys
    assert sum(p.numel() for p in model.parameters()) == params
    for key in ("aspp.aspp1.0.weight", "decoder.decode4.gru.ih.0.weight", "project_mat.conv.weight",
                "refiner.box_filter.weight"):
        assert key in sd


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_official_style_pth_loads_strict(tmp_path, variant):
    """A checkpoint saved like the official release (plain state dict) loads with strict=True."""
    torch.manual_seed(3)
    src_model = build_model(variant=variant, refiner="deep_guided_filter")
    path = tmp_path / f"rvm_{variant}.pth"
    torch.save(src_model.state_dict(), path)
    model = rvmatte.load_model(variant, weights=str(path), device="cpu")
    assert model.refiner_name == "deep_guided_filter"
    for k, v in src_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # The same file also loads into the Fast Guided Filter model (DGF keys are not needed there).
    fgf = rvmatte.load_model(variant, weights=str(path), refiner="fast_guided_filter", device="cpu")
    assert fgf.refiner_name == "fast_guided_filter"


def test_bundled_weights_sha256_and_load():
    path = W.bundled_path("mobilenetv3")
    assert W.sha256_file(path) == W.BUNDLED["mobilenetv3"].sha256
    model = rvmatte.load_model(device="cpu")
    assert not model.training
    assert model.refiner_name == "fast_guided_filter"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)


def test_bundled_weights_corruption_detected(tmp_path, monkeypatch):
    bad = tmp_path / "assets"
    bad.mkdir()
    data = bytearray(W.bundled_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / W.BUNDLED["mobilenetv3"].filename).write_bytes(bytes(data))
    monkeypatch.setattr(W, "bundled_path", lambda variant="mobilenetv3": bad / W.BUNDLED[variant].filename)
    with pytest.raises(WeightsError, match="corrupt"):
        rvmatte.load_model()


def test_random_init_and_no_bundled_resnet():
    model = rvmatte.load_model("resnet50", weights=None, device="cpu")
    assert model.variant == "resnet50" and not model.training
    with pytest.raises(WeightsError, match="no bundled weights"):
        rvmatte.load_model("resnet50")


def test_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        rvmatte.load_model(weights=str(missing))


def test_directory_as_weights(tmp_path):
    with pytest.raises(WeightsError, match="directory"):
        rvmatte.load_model(weights=str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_names_file(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="broken.pth"):
        rvmatte.load_model(weights=str(path))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "trunc.pth"
    shutil.copy(W.bundled_path(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="trunc.pth"):
        rvmatte.load_model(weights=str(path))


def test_wrong_variant_checkpoint(tmp_path):
    path = tmp_path / "mnv3.pth"
    torch.save(build_model(variant="mobilenetv3").state_dict(), path)
    with pytest.raises(WeightsError, match="mobilenetv3"):
        rvmatte.load_model("resnet50", weights=str(path))


def test_pickled_object_refused(tmp_path):
    """weights_only=True: a checkpoint carrying arbitrary objects is refused, not executed."""
    import collections

    path = tmp_path / "evil.pth"
    torch.save({"x": collections.Counter(a=1)}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        rvmatte.load_model(weights=str(path))


def test_mismatched_shapes(tmp_path):
    sd = build_model(variant="mobilenetv3").state_dict()
    sd["project_mat.conv.weight"] = torch.zeros(5, 16, 1, 1)
    path = tmp_path / "shapes.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="shapes.pth"):
        rvmatte.load_model(weights=str(path))


def test_training_checkpoint_with_model_entry(tmp_path):
    sd = build_model(variant="mobilenetv3").state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "step": torch.tensor(3)}, path)
    model = rvmatte.load_model(weights=str(path), device="cpu")
    assert torch.equal(model.state_dict()["project_mat.conv.weight"], sd["project_mat.conv.weight"])


def test_bad_device_and_dtype():
    with pytest.raises(WeightsError):
        rvmatte.load_model(weights=None, device="cuda:0" if not torch.cuda.is_available() else "nonsense")
    with pytest.raises(WeightsError, match="dtype"):
        rvmatte.load_model(weights=None, dtype="float8")
