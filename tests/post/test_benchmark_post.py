"""The benchmark's additions for the post stage: still / fast clips, foreground metrics."""

import numpy as np

from rvmatte.evaluation.benchmark_clips import Motion, Recipe, Resolution, clip_plan
from rvmatte.evaluation.report import POST_METHODS, foreground_errors


def test_motion_kinds_cycle_and_keep_smooth_clips():
    fg, bg = ({"name": "f", "rgba": "x.png"},), ({"name": "b", "image": "y.jpg"},)
    plain = Recipe("r", 1, (Resolution("low", 64, 48, 3, 4),), fg, bg, Motion())
    mixed = Recipe("r", 1, (Resolution("low", 64, 48, 3, 4,
                                       motions=("smooth", "still", "fast")),), fg, bg, Motion())
    a, b = clip_plan(plain, plain.resolutions[0]), clip_plan(mixed, mixed.resolutions[0])
    assert a[0] == b[0]  # smooth clips as before
    assert b[1]["motion"] == "still" and b[1]["translate"] == 0 and b[1]["noise"] > 0
    assert b[2]["motion"] == "fast" and b[2]["translate"] == a[2]["translate"] * Motion().fast


def test_foreground_errors():
    rng = np.random.default_rng(0)
    a = rng.random((16, 20))
    f = rng.random((16, 20, 3))
    e = foreground_errors(a, f, a, f)
    assert e == {"fgr_mse05": 0.0, "comp_mse": 0.0}
    worse = foreground_errors(a, np.clip(f + 0.1, 0, 1), a, f)
    assert worse["fgr_mse05"] > 0 and worse["comp_mse"] > 0
    assert set(POST_METHODS) == {"stabilize", "foreground"}
