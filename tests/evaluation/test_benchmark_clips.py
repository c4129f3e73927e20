import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvmatte.errors import InputError, OutputError
from rvmatte.evaluation.benchmark_clips import (clip_plan, estimate_foreground, load_recipe,
                                                make_benchmark)

from .conftest import REPO, tiny_recipe_dict


def test_estimate_foreground_recovers_known_colours():
    h, w = 40, 60
    # A hair-like soft edge: alpha ramps from 0 to 1 over three pixels.
    alpha = np.tile(np.clip(np.linspace(-10, 11, w), 0, 1), (h, 1))
    fg = np.array([0.9, 0.2, 0.1])
    bg = np.array([0.1, 0.3, 0.8])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    est = estimate_foreground(image, alpha, r1=15, r2=3)
    sel = alpha > 0.1
    assert np.abs(est[sel] - fg).max() < 0.05
    assert np.abs(image[sel] - fg).max() > 0.3  # the image itself is far off at the edge
    # The estimate re-composites to the image.
    recon = alpha[..., None] * est + (1 - alpha[..., None]) * bg
    assert np.abs(recon - image).max() < 0.02


def _bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): zlib.crc32(p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_is_deterministic_and_laid_out(sources, tiny_bench, tmp_path):
    again = tmp_path / "again"
    make_benchmark(load_recipe(sources / "recipe.json"), again)
    assert _bytes(tiny_bench) == _bytes(again)
    for kind in ("com", "pha", "fgr"):
        assert sorted(p.name for p in (tiny_bench / "tiny" / kind).iterdir()) == ["0000", "0001"]
        assert len(list((tiny_bench / "tiny" / kind / "0000").glob("*.png"))) == 5
    manifest = json.loads((tiny_bench / "benchmark.json").read_text())
    assert manifest["recipe"]["seed"] == 7
    assert len(manifest["resolutions"]["tiny"]["plan"]) == 2


def test_other_seed_gives_other_motion(sources):
    a = clip_plan(load_recipe(sources / "recipe.json"), load_recipe(sources / "recipe.json").resolutions[0])
    r2 = load_recipe(sources / "recipe.json", seed=8)
    b = clip_plan(r2, r2.resolutions[0])
    assert a != b and a == clip_plan(load_recipe(sources / "recipe.json"),
                                     load_recipe(sources / "recipe.json").resolutions[0])


def test_ground_truth_is_exact_and_motion_smooth(tiny_bench):
    d = tiny_bench / "tiny"
    centroids = []
    for i in range(5):
        com = np.asarray(Image.open(d / "com" / "0000" / f"{i:04d}.png")).astype(int)
        pha = np.asarray(Image.open(d / "pha" / "0000" / f"{i:04d}.png")).astype(int)
        fgr = np.asarray(Image.open(d / "fgr" / "0000" / f"{i:04d}.png")).astype(int)
        assert com.shape == (36, 64, 3) and pha.shape == (36, 64)
        opaque = pha == 255
        assert opaque.any() and (pha == 0).any()
        assert np.array_equal(com[opaque], fgr[opaque])  # composite = foreground where alpha = 1
        ys, xs = np.nonzero(pha)
        w = pha[ys, xs]
        centroids.append((np.average(xs, weights=w), np.average(ys, weights=w)))
    steps = np.hypot(*np.diff(np.array(centroids), axis=0).T)
    assert steps.max() < 3.0          # smooth: at most a few pixels per frame at 64x36
    assert np.ptp(np.array(centroids)[:, 0]) > 0  # but it moves


def test_rgba_folder_and_video_sources(sources, tmp_path):
    import av

    fd, pd = tmp_path / "vm" / "fgr", tmp_path / "vm" / "pha"
    fd.mkdir(parents=True)
    pd.mkdir(parents=True)
    for i in range(3):
        Image.open(sources / "fg.png").save(fd / f"{i:04d}.png")
        Image.open(sources / "fg_alpha.png").save(pd / f"{i:04d}.png")
    video = tmp_path / "bg.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        for i in range(3):
            img = np.full((32, 48, 3), 40 * i, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    rec = tiny_recipe_dict(clips=2, frames=4)
    rec["foregrounds"] = [{"name": "vm", "fgr_dir": str(fd), "pha_dir": str(pd)},
                          {"name": "rgba", "rgba": str(sources / "fg_rgba.png")}]
    rec["backgrounds"] = [{"name": "v", "video": str(video)}]
    (tmp_path / "r.json").write_text(json.dumps(rec))
    make_benchmark(load_recipe(tmp_path / "r.json"), tmp_path / "out")
    assert len(list((tmp_path / "out" / "tiny" / "com" / "0001").glob("*.png"))) == 4


def test_existing_output_and_bad_recipes(sources, tiny_bench, tmp_path):
    recipe = load_recipe(sources / "recipe.json")
    with pytest.raises(OutputError, match="overwrite"):
        make_benchmark(recipe, tiny_bench)
    (tmp_path / "notbench").mkdir()
    with pytest.raises(OutputError, match="not a benchmark"):
        make_benchmark(recipe, tmp_path / "notbench", overwrite=True)
    with pytest.raises(InputError, match="unknown resolution"):
        make_benchmark(recipe, tmp_path / "x", resolutions=["huge"])
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="malformed"):
        load_recipe(tmp_path / "bad.json")
    rec = tiny_recipe_dict()
    rec["backgrounds"] = [{"name": "gone", "image": "nope.png"}]
    (sources / "gone.json").write_text(json.dumps(rec))
    with pytest.raises(InputError, match="not found"):
        make_benchmark(load_recipe(sources / "gone.json"), tmp_path / "y")
    assert not (tmp_path / "y").exists()  # nothing half-written


def test_default_recipe_sources_are_in_the_repo():
    recipe = load_recipe(REPO / "benchmarks" / "default_benchmark.json")
    assert {r.name: (r.width, r.height) for r in recipe.resolutions} == {
        "low": (512, 288), "high": (1920, 1080)}
    for spec in (*recipe.foregrounds, *recipe.backgrounds):
        for key in ("image", "alpha"):
            if key in spec:
                assert (recipe.root / spec[key]).is_file(), spec[key]
