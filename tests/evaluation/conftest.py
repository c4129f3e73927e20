"""Tiny sources, recipe and benchmark shared by the evaluation tests (made once per session)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO / "benchmarks" / "peers"


def _write_sources(d: Path) -> None:
    rng = np.random.default_rng(0)
    h, w = 60, 40
    yy, xx = np.mgrid[0:h, 0:w]
    # A soft-edged "person": an ellipse body, alpha ramps over 3 px; cut by the bottom edge.
    r = np.sqrt(((xx - 20) / 14) ** 2 + ((yy - 38) / 30) ** 2)
    alpha = np.clip((1.0 - r) * 10, 0, 1)
    img = (rng.random((h, w, 3)) * 80 + np.array([150, 60, 40])).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(d / "fg.png")
    Image.fromarray((alpha * 255).round().astype(np.uint8), mode="L").save(d / "fg_alpha.png")
    rgba = np.dstack([img, (alpha * 255).round().astype(np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(d / "fg_rgba.png")
    bg = (rng.random((50, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(bg).save(d / "bg.png")


def tiny_recipe_dict(**res) -> dict:
    r = {"name": "tiny", "width": 64, "height": 36, "clips": 2, "frames": 5, "downsample_ratio": 1.0}
    r.update(res)
    return {
        "name": "tiny", "seed": 7, "resolutions": [r],
        "foregrounds": [{"name": "blob", "image": "fg.png", "alpha": "fg_alpha.png"},
                        {"name": "blob_rgba", "rgba": "fg_rgba.png"}],
        "backgrounds": [{"name": "noise", "image": "bg.png"}],
    }


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sources")
    _write_sources(d)
    (d / "recipe.json").write_text(json.dumps(tiny_recipe_dict()))
    return d


@pytest.fixture(scope="session")
def tiny_bench(sources, tmp_path_factory) -> Path:
    from rvmatte.evaluation.benchmark_clips import load_recipe, make_benchmark

    out = tmp_path_factory.mktemp("bench") / "b"
    make_benchmark(load_recipe(sources / "recipe.json"), out)
    return out
