"""Person selection (rvmatte.post.people): picking by point / box / mask / N, tracking through a
crossing, leaving and coming back, resume, bad input, and the default path left alone."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvmatte.errors import Cancelled, InputError
from rvmatte.post.people import PeopleFilter, Selection

H, W = 144, 256


def blob(cx: float, cy: float, rx: float = 18, ry: float = 50, h: int = H, w: int = W):
    """A soft person-sized ellipse: alpha 1 inside, a 0..1 ramp at the edge."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    return np.clip((1.25 - d) / 0.5, 0, 1).astype(np.float32)


COLOURS = [(220, 60, 60), (60, 60, 220), (60, 200, 60)]


def scene(tracks, n: int, h: int = H, w: int = W):
    """Frames, per-person alphas and the union: ``tracks`` are functions t -> (cx, cy) (None:
    out of the frame). Person k is drawn in COLOURS[k] over grey, later ones in front."""
    frames, people = [], []
    for t in range(n):
        img = np.full((h, w, 3), 120, np.float32)
        alphas = []
        for k, tr in enumerate(tracks):
            pos = tr(t)
            a = blob(*pos, h=h, w=w) if pos is not None else np.zeros((h, w), np.float32)
            img = img * (1 - a[..., None]) + np.array(COLOURS[k], np.float32) * a[..., None]
            alphas.append(a)
        # what a camera sees: the people in front cover those behind
        vis, cover = [], np.zeros((h, w), np.float32)
        for a in alphas[::-1]:
            vis.append(a * (1 - cover))
            cover = cover + a * (1 - cover)
        frames.append(np.round(img).astype(np.uint8))
        people.append(vis[::-1])
    return np.stack(frames), people


def run(pf: PeopleFilter, frames, people):
    out = []
    for img, vis in zip(frames, people):
        pha = np.clip(sum(vis), 0, 1).astype(np.float32)[None]
        pf(img[None], pha)
        out.append(pha[0])
    return out


def iou(a, b):
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def check_kept(out, people, keep: int, frames=None, min_iou=0.95, max_leak=0.01):
    """IoU with person ``keep`` and the others' leakage, on frames where nobody overlaps."""
    checked = 0
    for t, (a, vis) in enumerate(zip(out, people)):
        if frames is not None and t not in frames:
            continue
        masks = [v > 0.02 for v in vis]
        if any((masks[i] & masks[j]).any() for i in range(len(vis)) for j in range(i)):
            continue
        if vis[keep].sum() > 0:
            assert iou(a, vis[keep]) >= min_iou, (t, iou(a, vis[keep]))
        for k, v in enumerate(vis):
            if k != keep and v.sum() > 0:
                leak = float((a * (v > 0.02)).sum() / v.sum())
                assert leak <= max_leak, (t, k, leak)
        checked += 1
    assert checked > 0


TWO_APART = [lambda t: (60 + t, 75), lambda t: (190 - t, 80)]


# ---- the value type ---------------------------------------------------------------------

@pytest.mark.parametrize("kw, msg", [
    (dict(points=("a,b",)), "invalid --select point"),
    (dict(points=((1, 2, 3),)), "invalid --select point"),
    (dict(points=((-1, 2),)), "invalid --select point"),
    (dict(box="10,10,5,20"), "X1,Y1 must be right of"),
    (dict(box="1,2,3"), "invalid --select-box"),
    (dict(people=0), "invalid --people"),
    (dict(people=2, points=((1, 1),)), "use it without"),
    (dict(points=((1, 1),), frame=-1), "invalid --select-frame"),
    (dict(), "empty selection"),
])
def test_bad_selection_is_one_line(kw, msg):
    with pytest.raises(InputError, match=msg) as e:
        Selection(**kw)
    assert "\n" not in str(e.value)


def test_parse_forms():
    assert Selection.parse() is None
    s = Selection.parse(["10,20", "30,40"], frame=3)
    assert s.points == ((10, 20), (30, 40)) and s.frame == 3
    assert Selection.parse(box="1,2,30,40").box == (1, 2, 30, 40)
    assert Selection(points=(5, 6)).points == ((5, 6),)
    with pytest.raises(InputError, match="--select-frame needs"):
        Selection.parse(frame=4)


def test_point_outside_frame_and_bad_masks(tmp_path):
    with pytest.raises(InputError, match="outside the 256x144 frame"):
        PeopleFilter(Selection(points=((300, 10),)), W, H)
    with pytest.raises(InputError, match="selection mask not found"):
        PeopleFilter(Selection(mask=str(tmp_path / "none.png")), W, H)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read selection mask"):
        PeopleFilter(Selection(mask=str(tmp_path / "bad.png")), W, H)
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "square.png")
    with pytest.raises(InputError, match="another aspect ratio"):
        PeopleFilter(Selection(mask=str(tmp_path / "square.png")), W, H)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(InputError, match="is empty"):
        PeopleFilter(Selection(mask=str(tmp_path / "black.png")), W, H)


def test_point_on_nobody_is_an_error():
    frames, people = scene(TWO_APART, 2)
    pf = PeopleFilter(Selection(points=((128, 5),)), W, H)
    with pytest.raises(InputError, match="no person at 128,5 on frame 0"):
        run(pf, frames, people)


# ---- picking ------------------------------------------------------------------------------

@pytest.mark.parametrize("keep, sel", [
    (0, Selection(points=((60, 75),))),
    (1, Selection(points=((190, 80),))),
    (1, Selection(points=((175, 80),))),            # next to the person: the nearest one
    (0, Selection(box=(30, 10, 100, 140))),
    (1, Selection(box=(150, 0, 255, 143))),
])
def test_select_point_and_box(keep, sel):
    frames, people = scene(TWO_APART, 12)
    out = run(PeopleFilter(sel, W, H), frames, people)
    check_kept(out, people, keep)


def test_select_mask_resized(tmp_path):
    frames, people = scene(TWO_APART, 8)
    m = (people[0][1] > 0.5).astype(np.uint8) * 255
    Image.fromarray(m).resize((W * 2, H * 2)).save(tmp_path / "m.png")  # same aspect, 2x
    out = run(PeopleFilter(Selection(mask=str(tmp_path / "m.png")), W, H), frames, people)
    check_kept(out, people, 1)


def test_people_n_keeps_the_largest():
    tracks = [lambda t: (50, 75), lambda t: (128, 75), lambda t: (210, 90)]
    frames, people = scene(tracks, 4)
    # person 2 smaller: scale its alpha down to a smaller ellipse
    people = [[v[0], v[1], v[2] * (blob(210, 90, 10, 30) > 0)] for v in people]
    out = run(PeopleFilter(Selection(people=2), W, H), frames, people)
    a = out[-1]
    assert iou(a, people[-1][0] + people[-1][1]) > 0.95
    assert (a * (people[-1][2] > 0)).sum() == 0
    pf = PeopleFilter(Selection(people=5), W, H)
    run(pf, frames, people)
    assert "only 3 found" in pf.warnings[0]


# ---- tracking ----------------------------------------------------------------------------

def crossing(n=40):
    # 0 walks right, 1 walks left in front of it; they overlap in the middle frames
    return scene([lambda t: (40 + 180 * t / (n - 1), 72), lambda t: (220 - 180 * t / (n - 1), 78)],
                 n)


@pytest.mark.parametrize("keep", [0, 1])
def test_tracking_through_a_crossing(keep):
    frames, people = crossing()
    x = 40 if keep == 0 else 220
    out = run(PeopleFilter(Selection(points=((x, 75),)), W, H), frames, people)
    check_kept(out, people, keep)
    # after the crossing the kept person is still the same one (now on the other side)
    assert iou(out[-1], people[-1][keep]) > 0.95
    # during the overlap the kept person is kept whole (all of its visible alpha)
    for a, vis in zip(out, people):
        assert (a >= vis[keep] - 1e-6).mean() > 0.99


def test_leaving_and_coming_back():
    n = 50

    def walker(t):  # walks out on the right, away for frames 20..29, comes back
        if 20 <= t < 30:
            return None
        return (150 + 5 * t, 72) if t < 20 else (260 - 5 * (t - 30), 72)

    frames, people = scene([walker, lambda t: (50, 80)], n)
    pf = PeopleFilter(Selection(points=((150, 72),)), W, H)
    out = run(pf, frames, people)
    check_kept(out, people, 0)
    assert all(out[t].max() == 0 for t in range(21, 30))  # away: nobody kept
    assert iou(out[-1], people[-1][0]) > 0.95               # back and kept again


def test_a_newcomer_is_not_kept():
    frames, people = scene([lambda t: (60, 75), lambda t: None if t < 5 else (200, 80)], 12)
    out = run(PeopleFilter(Selection(points=((60, 75),)), W, H), frames, people)
    check_kept(out, people, 0)


def test_state_round_trip_is_exact():
    frames, people = crossing(30)
    sel = Selection(points=((40, 75),))
    whole = run(PeopleFilter(sel, W, H), frames, people)
    a = PeopleFilter(sel, W, H)
    first = run(a, frames[:13], people[:13])
    b = PeopleFilter(sel, W, H)
    b.load_state([np.array(x) for x in a.state_arrays()])
    rest = run(b, frames[13:], people[13:])
    assert all(np.array_equal(x, y) for x, y in zip(whole, first + rest))


# ---- through convert_video ------------------------------------------------------------------


def fake_matter(alphas, extra=None):
    import torch

    from rvmatte.inference.session import Matter
    from rvmatte.models.outputs import MattingOutput

    class _Fake(Matter):
        def __init__(self):
            super().__init__(device="cpu", backend="fused")

        def uint8_path(self, ratio):
            return False

        def step(self, src, state=None, downsample_ratio=None):
            n = 0 if state is None else int(state[0].reshape(-1)[0])
            T = src.shape[0]
            pha = torch.from_numpy(np.stack(alphas[n:n + T]))[:, None].float()
            if extra is not None:
                pha = torch.maximum(pha, torch.from_numpy(np.stack(extra[n:n + T]))[:, None])
            return MattingOutput(src.float().clone(), pha,
                                 (torch.full((1, 1, 1, 1), float(n + T)),))

    return _Fake()


def write_frames(folder: Path, frames) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:06d}.png")
    return folder


def read_alpha(folder: Path, n: int):
    return [np.asarray(Image.open(folder / f"{i:06d}.png"), np.float32) / 255 for i in range(n)]


def test_convert_video_with_selection(tmp_path):
    from rvmatte.inference.convert import convert_video

    frames, people = crossing(16)
    clip = write_frames(tmp_path / "in", frames)
    alphas = [np.clip(sum(v), 0, 1).astype(np.float32) for v in people]
    r = convert_video(clip, alpha=tmp_path / "a", model=fake_matter(alphas), select=(40, 75),
                      progress=False)
    out = read_alpha(tmp_path / "a", 16)
    assert r.frames == 16
    check_kept(out, people, 0, min_iou=0.94)  # 8-bit alpha


def test_resume_with_selection_is_exact(tmp_path):
    from rvmatte.inference.convert import convert_video

    n = 24
    frames, people = crossing(n)
    clip = write_frames(tmp_path / "in", frames)
    alphas = [np.clip(sum(v), 0, 1).astype(np.float32) for v in people]
    kw = dict(select=Selection(points=((220, 78),)), seq_chunk=2, segment_frames=4)
    convert_video(clip, alpha=tmp_path / "whole", model=fake_matter(alphas), progress=False, **kw)
    cancel = threading.Event()

    def progress(p):
        if p.done >= 13:
            cancel.set()

    with pytest.raises(Cancelled):
        convert_video(clip, alpha=tmp_path / "cut", model=fake_matter(alphas), progress=progress,
                      cancel=cancel, **kw)
    assert (tmp_path / "cut.rvmatte-resume" / "job.json").is_file()
    r = convert_video(clip, alpha=tmp_path / "cut", model=fake_matter(alphas), resume=True,
                      progress=False, **kw)
    assert 0 < r.resumed_from < n and r.frames == n
    for i in range(n):
        assert (Path(tmp_path / "whole" / f"{i:06d}.png").read_bytes()
                == Path(tmp_path / "cut" / f"{i:06d}.png").read_bytes()), i


def test_select_frame_later(tmp_path):
    """--select-frame N: the person at the pixel on frame N is kept from frame 0 on (here the
    two have crossed by frame N, so the pixel's person started on the other side)."""
    from rvmatte.inference.convert import convert_video

    frames, people = crossing(20)
    clip = write_frames(tmp_path / "in", frames)
    alphas = [np.clip(sum(v), 0, 1).astype(np.float32) for v in people]
    sel = Selection(points=((40, 78),), frame=19)   # person 1 is on the left at the end
    convert_video(clip, alpha=tmp_path / "a", model=fake_matter(alphas), select=sel,
                  progress=False)
    check_kept(read_alpha(tmp_path / "a", 20), people, 1, min_iou=0.94)
    with pytest.raises(InputError, match="only 20 frames"):
        convert_video(clip, alpha=tmp_path / "b", model=fake_matter(alphas),
                      select=Selection(points=((40, 78),), frame=25), progress=False)


def test_options_off_leave_the_default_path_alone(tmp_path):
    """No guidance: the fingerprint has no guidance key and the pipeline has no post stage
    (byte-identical outputs: tests/inference/test_output_hashes.py pins them; with guidance
    the fused path stays too, the processors running on its float outputs)."""
    from rvmatte.inference.plan import ConvertRequest, plan_outputs, plan_targets

    frames, _ = scene(TWO_APART, 2)
    clip = write_frames(tmp_path / "in", frames)
    req = ConvertRequest.make(clip, tmp_path / "o.mp4")
    assert "guidance" not in req.identity()
    t = plan_targets(req)
    assert plan_outputs(req, t, device_type="cpu", uint8_path=lambda r: True).uint8
    req2 = ConvertRequest.make(clip, tmp_path / "o.mp4", selection=Selection(people=1))
    assert req2.identity()["guidance"]["selection"]["people"] == 1


# ---- the CLI --------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rvmatte", "convert", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("flags, msg", [
    (["--select", "1,2,3"], "invalid --select point"),
    (["--select", "500,10"], "outside the 256x144 frame"),
    (["--select-box", "10,10,5,5"], "must be right of"),
    (["--select-mask", "missing.png"], "selection mask not found"),
    (["--people", "0"], "invalid --people"),
    (["--people", "2", "--select", "3,3"], "use it without"),
    (["--select-frame", "3"], "--select-frame needs"),
    (["--background-plate", "missing.png"], "background plate not found"),
    (["--people", "1", "--split", "2"], "cannot be combined with --split"),
])
def test_cli_bad_guidance_is_one_line(tmp_path, flags, msg):
    frames, _ = scene(TWO_APART, 2)
    clip = write_frames(tmp_path / "in", frames)
    p = _cli(clip, "-o", tmp_path / "o.mp4", *flags, "--quiet", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob("*.rvmatte-resume"))


def test_fused_path_selection_resume_exact(tmp_path):
    """The bundled network on the fused CPU path (uint8 in and out, the processors on its
    float outputs): the sample clip's one person kept, cancel + resume writes the same bytes."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("numba")
    from rvmatte.inference.convert import convert_video

    sample = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"
    if not sample.exists():
        pytest.skip("sample clip missing")
    kw = dict(backend="fused", device="cpu", downsample_ratio=0.5, seq_chunk=2,
              segment_frames=4, encode_workers=1, start="0f", end="12f",
              select=Selection(people=1))
    whole = convert_video(sample, tmp_path / "w.mp4", alpha=tmp_path / "wa", **kw)
    plain = convert_video(sample, alpha=tmp_path / "pa", **{**kw, "select": None})
    assert whole.frames == plain.frames == 12
    # one person in the clip: selection keeps the network's matte as it was
    for i in range(12):
        a = np.asarray(Image.open(tmp_path / "wa" / f"{i:06d}.png"), np.float32)
        b = np.asarray(Image.open(tmp_path / "pa" / f"{i:06d}.png"), np.float32)
        assert iou(a, b) > 0.98
    ev = threading.Event()
    with pytest.raises(Cancelled):
        convert_video(sample, tmp_path / "c.mp4", alpha=tmp_path / "ca", cancel=ev,
                      progress=lambda p: p.done >= 6 and ev.set(), **kw)
    r = convert_video(sample, tmp_path / "c.mp4", alpha=tmp_path / "ca", resume=True, **kw)
    assert r.resumed_from in (4, 8)
    for i in range(12):
        assert ((tmp_path / "wa" / f"{i:06d}.png").read_bytes()
                == (tmp_path / "ca" / f"{i:06d}.png").read_bytes())
    assert (tmp_path / "w.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()


def test_benchmark_guidance_scenes(tmp_path):
    """`rvmatte benchmark make` renders the guidance scenes of a recipe: per-person ground
    truth that adds up to the union, a pixel on each person, the plate and the poster."""
    import json

    from rvmatte.evaluation.benchmark_clips import load_recipe, make_benchmark

    for k in range(3):
        rgba = np.zeros((60, 30, 4), np.uint8)
        rgba[..., :3] = COLOURS[k]
        rgba[..., 3] = (blob(15, 30, 12, 28, 60, 30) * 255).astype(np.uint8)
        Image.fromarray(rgba).save(tmp_path / f"p{k}.png")
    wall = np.random.default_rng(0).integers(0, 255, (90, 160, 3)).astype(np.uint8)
    Image.fromarray(wall).save(tmp_path / "wall.png")
    recipe = {"seed": 1, "resolutions": [{"name": "low", "width": 64, "height": 48, "clips": 1,
                                           "frames": 1}],
              "foregrounds": [{"name": f"p{k}", "rgba": f"p{k}.png"} for k in range(3)],
              "backgrounds": [{"name": "wall", "image": "wall.png"}],
              "guidance": {"width": 160, "height": 90,
                           "people": {"foregrounds": ["p0", "p1", "p2"], "background": "wall",
                                      "frames": 5},
                           "plate": {"foreground": "p0", "poster": "p1", "background": "wall",
                                     "frames": 3}}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    m = make_benchmark(load_recipe(tmp_path / "r.json"), tmp_path / "b",
                       resolutions=["guidance"])
    g = m["guidance"]
    assert g["people"]["frames"] == 5 and len(g["people"]["select"]) == 3
    root = tmp_path / "b" / "guidance"
    for t in range(5):
        vis = [np.asarray(Image.open(root / "people" / f"person{k}" / f"{t:04d}.png"), float)
               for k in range(3)]
        union = np.asarray(Image.open(root / "people" / "pha" / f"{t:04d}.png"), float)
        assert np.abs(sum(vis) - union).max() <= 3  # rounding of the three parts
    for k, (x, y) in enumerate(g["people"]["select"]):
        assert np.asarray(Image.open(root / "people" / f"person{k}" / "0000.png"))[y, x] > 250
    assert (root / "plate" / "plate.png").is_file()
    assert np.asarray(Image.open(root / "plate" / "poster" / "0000.png")).max() > 200
    assert "guidance" in json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert not (tmp_path / "b" / "low").exists()  # only what was asked


def test_without_a_first_pass_everyone_stays_until_the_selection_frame():
    """A live stream cannot look ahead: a selection on frame 3 keeps everyone before it."""
    frames, people = scene(TWO_APART, 8)
    out = run(PeopleFilter(Selection(points=((63, 75),), frame=3), W, H), frames, people)
    for t in range(3):
        assert np.array_equal(out[t], np.clip(sum(people[t]), 0, 1))
    check_kept(out, people, 0, frames=range(3, 8))
