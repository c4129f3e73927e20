"""Each reader on its tiny fixture (in the published layout) and its errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from rvmatte.errors import InputError
from rvmatte.training import augment as A
from rvmatte.training import data as D


def _bg(f, size=64):
    return D.Backgrounds(D.BackgroundImages(f / "backgrounds", size),
                         D.BackgroundVideos(f / "background_videos", size))


def _check_matting(sample, T, S=64):
    fgr, pha, bgr = sample
    assert fgr.shape == (T, 3, S, S) and pha.shape == (T, 1, S, S) and bgr.shape == (T, 3, S, S)
    for x in sample:
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert 0 < pha.mean() < 1


def test_videomatte(fixtures):
    ds = D.VideoMatteDataset(fixtures / "videomatte", _bg(fixtures), 64, 3,
                             A.videomatte_augmentation((64, 64)), A.FrameSampler())
    assert len(ds) == 4  # 2 clips x ceil(4 frames / T=3)
    _check_matting(ds[(1, 9)], 3)
    a, b = ds[(2, 5)], ds[(2, 5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # a key fixes the sample


def test_imagematte_and_synthetic(fixtures):
    ds = D.ImageMatteDataset(fixtures / "imagematte", _bg(fixtures), 64, 2,
                             A.imagematte_augmentation((64, 64)))
    assert len(ds) == 2
    _check_matting(ds[(0, 1)], 2)
    syn = D.SyntheticMatteDataset(fixtures / "synthetic", 64, 2, A.imagematte_augmentation((64, 64)))
    assert len(syn) == 5
    _check_matting(syn[(4, 3)], 2)
    _check_matting(syn[0], 2)  # no augmentation seed given: still works


def test_background_readers(fixtures):
    rng = np.random.default_rng(0)
    imgs = D.BackgroundImages(fixtures / "backgrounds", 64).sample(rng, 3, A.FrameSampler())
    assert len(imgs) == 3 and imgs[0] is imgs[1]
    vids = D.BackgroundVideos(fixtures / "background_videos", 64).sample(rng, 3, A.FrameSampler())
    assert len(vids) == 3 and len({v.size for v in vids}) == 1


def test_coco_panoptic(fixtures):
    ds = D.CocoPanopticDataset(fixtures / "coco_panoptic", 64)
    img, seg = ds[0]
    assert img.shape == (1, 3, 64, 64) and seg.shape == (1, 1, 64, 64)
    assert 0.05 < seg.mean() < 0.95


def test_supervisely(fixtures):
    ds = D.SuperviselyPersonDataset(fixtures / "spd", 64, A.SegmentationAugmentation((64, 64)))
    assert len(ds) == 2
    img, seg = ds[(1, 4)]
    assert img.shape == (1, 3, 64, 64) and 0.05 < seg.mean() < 0.95


def test_youtubevis(fixtures):
    ds = D.YouTubeVISDataset(fixtures / "youtubevis", 64, 3)
    assert len(ds) == 3
    img, seg = ds[(0, 0)]
    assert img.shape == (3, 3, 64, 64) and seg.shape == (3, 1, 64, 64)
    assert 0.05 < seg.mean() < 0.95
    ds2 = D.YouTubeVISDataset(fixtures / "youtubevis" / "train", 64, 2)  # the train folder itself
    assert len(ds2) == 3


def test_rle_list_and_string_agree(fixtures):
    data = json.loads((fixtures / "youtubevis/train/instances.json").read_text())
    segs = data["annotations"][0]["segmentations"]
    assert isinstance(segs[0]["counts"], list) and isinstance(segs[1]["counts"], str)
    m0, m1 = D.decode_rle(segs[0]), D.decode_rle(segs[1])
    assert m0.shape == m1.shape == tuple(segs[0]["size"])
    assert 0.1 < m1.mean() < 0.9 and (m0 != m1).mean() < 0.2  # neighbouring frames
    assert D.decode_rle({"size": [2, 3], "counts": [1, 2, 3]}).tolist() == [[0, 1, 0], [1, 0, 0]]


def test_files_open_lazily(fixtures, tmp_path):
    root = tmp_path / "vm"
    shutil.copytree(fixtures / "videomatte", root)
    ds = D.VideoMatteDataset(root, _bg(fixtures), 64, 2)
    (root / "fgr/0000/00000.jpg").write_bytes(b"not a jpeg")  # listed, not opened, in __init__
    with pytest.raises(InputError, match="cannot read image"):
        ds[(0, 0)]


@pytest.mark.parametrize("reader, expected", [
    (lambda p, f: D.VideoMatteDataset(p, _bg(f), 64, 2), "VideoMatte240K: root not found"),
    (lambda p, f: D.ImageMatteDataset(p, _bg(f), 64, 2), "ImageMatte: root not found"),
    (lambda p, f: D.SyntheticMatteDataset(p, 64, 2), "synthetic matting set: root not found"),
    (lambda p, f: D.BackgroundImages(p, 64), "background images: root not found"),
    (lambda p, f: D.BackgroundVideos(p, 64), "background videos: root not found"),
    (lambda p, f: D.CocoPanopticDataset(p, 64), "COCO panoptic: root not found"),
    (lambda p, f: D.YouTubeVISDataset(p, 64, 2), "YouTubeVIS: root not found"),
    (lambda p, f: D.SuperviselyPersonDataset(p, 64), "Supervisely Person: root not found"),
])
def test_missing_roots_name_the_layout(reader, expected, tmp_path, fixtures):
    with pytest.raises(InputError, match=expected) as e:
        reader(tmp_path / "missing", fixtures)
    assert "expected" in str(e.value)


def test_malformed_roots(tmp_path, fixtures):
    vm = tmp_path / "vm"
    shutil.copytree(fixtures / "videomatte", vm)
    shutil.rmtree(vm / "pha" / "0001")
    with pytest.raises(InputError, match="no pha/0001/ folder"):
        D.VideoMatteDataset(vm, _bg(fixtures), 64, 2)
    (vm / "pha" / "0001").mkdir()
    with pytest.raises(InputError, match="4 fgr and 0 pha frames"):
        D.VideoMatteDataset(vm, _bg(fixtures), 64, 2)
    im = tmp_path / "im"
    shutil.copytree(fixtures / "imagematte", im)
    (im / "pha" / "person_1.jpg").unlink()
    with pytest.raises(InputError, match="without alpha.*person_1"):
        D.ImageMatteDataset(im, _bg(fixtures), 64, 2)
    spd = tmp_path / "spd"
    shutil.copytree(fixtures / "spd", spd)
    (spd / "seg" / "ds1_0.png").unlink()
    with pytest.raises(InputError, match="without a matching mask"):
        D.SuperviselyPersonDataset(spd, 64)
    coco = tmp_path / "coco"
    shutil.copytree(fixtures / "coco_panoptic", coco)
    (coco / "annotations" / "panoptic_train2017.json").write_text("{broken")
    with pytest.raises(InputError, match="cannot parse"):
        D.CocoPanopticDataset(coco, 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        D.BackgroundImages(empty, 64)
    (tmp_path / "yt" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(InputError, match="annotation file not found.*instances.json"):
        D.YouTubeVISDataset(tmp_path / "yt", 64, 2)
