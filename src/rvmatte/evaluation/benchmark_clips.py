"""Composited benchmark clips with exact ground truth (``rvmatte benchmark make``).

A *recipe* (JSON, see ``benchmarks/default_benchmark.json``) lists foreground sources,
backgrounds, resolutions and a seed. Each clip puts one foreground over one background and moves
it smoothly over time: translation, scale and rotation of the person, pan of the background.
Everything random comes from ``numpy.random.default_rng`` seeded by the recipe, so the same
recipe gives byte-identical frames.

The ground truth is exact by construction: the stored alpha (8-bit) and foreground (8-bit) are
the very values the composite was made from, ``com = fgr * pha + bgr * (1 - pha)`` (the only
approximation is rounding the composite to 8 bits). Where a source gives only an image and an
alpha, its foreground colours are estimated (:func:`estimate_foreground`); the estimate is then
*defined* as the clip's true foreground, so it is exact for the composite too.

Output layout::

    OUT/benchmark.json                 recipe, seed and per-clip parameters
    OUT/<res>/com/<clip>/0000.png      composite (the model input), RGB
    OUT/<res>/pha/<clip>/0000.png      ground-truth alpha, 8-bit grayscale
    OUT/<res>/fgr/<clip>/0000.png      ground-truth foreground, RGB

Foreground sources (recipe ``foregrounds``):
``{"name", "image", "alpha"}`` image + alpha (foreground estimated),
``{"name", "rgba"}`` an RGBA image whose colours are the foreground,
``{"name", "fgr_dir", "pha_dir"}`` VideoMatte240K-style folders of frames.
Backgrounds: ``{"name", "image"}`` or ``{"name", "video"}``. Paths are relative to the recipe.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from ..errors import InputError, OutputError
from .frames import read_alpha, read_rgb

__all__ = ["Resolution", "Recipe", "load_recipe", "estimate_foreground", "make_benchmark",
           "clip_plan"]

FPS = 30.0  # motion speeds are given per second of a 30 fps clip
_VIDEO_EXT = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}


@dataclass(frozen=True)
class Resolution:
    """One resolution of the benchmark: ``clips`` clips of ``frames`` frames at width x height.

    ``downsample_ratio`` is the ratio the benchmark runs our model with ("auto" or a number).
    """

    name: str
    width: int
    height: int
    clips: int
    frames: int
    downsample_ratio: Any = "auto"
    # the motion of each clip, cycled: "smooth" (sway and pan), "still" (nothing moves; the
    # camera's noise only: flicker shows), "fast" (fast sway: lag shows)
    motions: tuple = ("smooth",)


@dataclass(frozen=True)
class Motion:
    """Amplitude ranges of the smooth motion (fractions of the frame, degrees, per second)."""

    person_height: tuple[float, float] = (0.75, 0.95)   # of frame height
    center_x: tuple[float, float] = (0.35, 0.65)        # of frame width
    translate: tuple[float, float] = (0.04, 0.12)       # sway amplitude, of frame width
    scale: tuple[float, float] = (0.03, 0.08)           # relative zoom amplitude
    rotate_deg: tuple[float, float] = (1.5, 4.0)        # rotation amplitude about the feet
    frequency_hz: tuple[float, float] = (0.2, 0.5)      # of each sinusoid
    pan: tuple[float, float] = (0.03, 0.08)             # background pan speed, of frame width / s
    background_zoom: float = 1.25                       # room for the pan
    noise: float = 2.0                                  # camera noise of "still" clips, levels
    fast: float = 4.0                                   # "fast" clips: sway amplitude x this


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    resolutions: tuple[Resolution, ...]
    foregrounds: tuple[dict, ...]
    backgrounds: tuple[dict, ...]
    motion: Motion = field(default_factory=Motion)
    root: Path = Path(".")  # folder the source paths are relative to
    guidance: dict = field(default_factory=dict)  # the guidance scenes (issue 19), see below

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("root")
        d["resolutions"] = [asdict(r) for r in self.resolutions]
        return d


# The default recipe and the peer models live in the source repository, not in the pip package:
# several of the recipe's media are licensed for research use only (benchmarks/media/README.md).
DEFAULT_RECIPE = "benchmarks/default_benchmark.json"
DEFAULT_PEERS = "benchmarks/peers"


def find_repo_path(relative: str) -> Path | None:
    """``relative`` (a path of the source repository) under the current folder, else in the
    checkout this package runs from (an editable install, ``src/rvmatte``); None if neither."""
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        if (base / relative).exists():
            return base / relative
    return None


def default_recipe() -> Path:
    """The default recipe, ``benchmarks/default_benchmark.json`` of the source checkout."""
    path = find_repo_path(DEFAULT_RECIPE)
    if path is None:
        raise InputError(f"the default recipe ({DEFAULT_RECIPE}) and its media come with the "
                         "rvmatte source repository, not the pip package: run from a checkout "
                         "or pass --recipe FILE")
    return path


def load_recipe(path: str | os.PathLike, *, seed: int | None = None,
                frames: int | None = None, clips: int | None = None) -> Recipe:
    """Read a recipe JSON; ``seed``/``frames``/``clips`` override the file's values."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"recipe not found: {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read recipe {path}: {e}") from None
    try:
        res = []
        for r in data["resolutions"]:
            r = dict(r)
            if "motions" in r:
                r["motions"] = tuple(r["motions"])
            if frames is not None:
                r["frames"] = frames
            if clips is not None:
                r["clips"] = clips
            res.append(Resolution(**r))
        motion = Motion(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in data.get("motion", {}).items()})
        recipe = Recipe(name=data.get("name", path.stem), seed=int(data["seed"] if seed is None else seed),
                        resolutions=tuple(res), foregrounds=tuple(data["foregrounds"]),
                        backgrounds=tuple(data["backgrounds"]), motion=motion, root=path.parent,
                        guidance=dict(data.get("guidance", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"recipe {path} is malformed: {e!r}") from None
    if not recipe.foregrounds or not recipe.backgrounds:
        raise InputError(f"recipe {path} needs at least one foreground and one background")
    for r in recipe.resolutions:
        if r.width < 16 or r.height < 16 or r.clips < 1 or r.frames < 1:
            raise InputError(f"recipe {path}: resolution {r.name!r} needs width, height >= 16 and "
                             "clips, frames >= 1")
    return recipe


# -- foreground colour estimation ---------------------------------------------------------

def _box(a: np.ndarray, r: int) -> np.ndarray:
    size = (r, r) + (1,) * (a.ndim - 2)
    return ndimage.uniform_filter(a, size=size, mode="mirror")


def _blur_fusion(image, fg, bg, alpha, r):
    a = alpha[..., None]
    blur_a = _box(alpha, r)[..., None]
    blur_f = _box(fg * a, r) / (blur_a + 1e-5)
    blur_b = _box(bg * (1 - a), r) / ((1 - blur_a) + 1e-5)
    f = blur_f + a * (image - a * blur_f - (1 - a) * blur_b)
    return np.clip(f, 0, 1), blur_b


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, r1: int = 90, r2: int = 6) -> np.ndarray:
    """Foreground colours from an image and its alpha by *blur fusion* (Forte & Pitié,
    "Approximate fast foreground colour estimation", ICIP 2021).

    Local means of foreground and background, weighted by alpha and 1 - alpha in a box window,
    are corrected so that the compositing equation holds:
    ``F = F_blur + a * (I - a F_blur - (1 - a) B_blur)``; run once with a large window (r1) and
    refined once with a small one (r2). No linear system is solved (no closed-form matting).

    ``image``: (H, W, 3) float in [0, 1]; ``alpha``: (H, W) in [0, 1]. Returns (H, W, 3).
    """
    image = np.asarray(image, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    f, blur_b = _blur_fusion(image, image, image, alpha, r1)
    f, _ = _blur_fusion(image, f, blur_b, alpha, r2)
    return f


# -- sources --------------------------------------------------------------------------------

def _resolve(recipe: Recipe, p: str) -> Path:
    path = Path(p)
    path = path if path.is_absolute() else recipe.root / path
    if not path.exists():
        raise InputError(f"recipe source not found: {path}")
    return path


class _Foreground:
    """Frames of one foreground source: ``frame(i) -> (fgr (H,W,3), pha (H,W))`` float."""

    def __init__(self, recipe: Recipe, spec: dict) -> None:
        self.name = spec.get("name") or "fg"
        self.frames: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.dirs: tuple[list[Path], list[Path]] | None = None
        if "image" in spec and "alpha" in spec:
            img = read_rgb(_resolve(recipe, spec["image"])).astype(np.float64) / 255
            pha = read_alpha(_resolve(recipe, spec["alpha"]))
            if pha.shape != img.shape[:2]:
                raise InputError(f"foreground {self.name!r}: image and alpha sizes differ")
            self.frames = [_crop_to_subject(estimate_foreground(img, pha), pha)]
            self.anchor = _anchor(pha)
        elif "rgba" in spec:
            with Image.open(_resolve(recipe, spec["rgba"])) as im:
                if "A" not in im.getbands():
                    raise InputError(f"foreground {self.name!r}: {spec['rgba']} has no alpha channel")
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255
            self.frames = [_crop_to_subject(rgba[..., :3], rgba[..., 3])]
            self.anchor = _anchor(rgba[..., 3])
        elif "fgr_dir" in spec and "pha_dir" in spec:
            fd, pd = _resolve(recipe, spec["fgr_dir"]), _resolve(recipe, spec["pha_dir"])
            fnames = sorted(p for p in fd.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            pnames = sorted(p for p in pd.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if not fnames or len(fnames) != len(pnames):
                raise InputError(f"foreground {self.name!r}: fgr/ and pha/ must hold the same "
                                 "number of frames (at least one)")
            self.dirs = (fnames, pnames)
            self.anchor = "bottom"
        else:
            raise InputError(f"foreground {self.name!r}: give image+alpha, rgba, or fgr_dir+pha_dir")

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.frames is not None:
            return self.frames[i % len(self.frames)]
        fnames, pnames = self.dirs
        j = i % len(fnames)
        return (read_rgb(fnames[j]).astype(np.float64) / 255, read_alpha(pnames[j]))


def _anchor(pha: np.ndarray) -> str:
    """Which edge of the frame the subject is cut by: "top" if only the top edge, else "bottom"."""
    top, bottom = (pha[:2] > 0.5).any(), (pha[-2:] > 0.5).any()
    return "top" if top and not bottom else "bottom"


def _crop_to_subject(fgr: np.ndarray, pha: np.ndarray, margin: int = 4):
    ys, xs = np.nonzero(pha > 0.01)
    if len(ys) == 0:
        raise InputError("a foreground alpha is empty")
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, pha.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, pha.shape[1])
    return fgr[y0:y1, x0:x1], pha[y0:y1, x0:x1]


class _Background:
    def __init__(self, recipe: Recipe, spec: dict) -> None:
        self.name = spec.get("name") or "bg"
        key = "image" if "image" in spec else "video" if "video" in spec else None
        if key is None:
            raise InputError(f"background {self.name!r}: give image or video")
        self.path = _resolve(recipe, spec[key])
        self.is_video = key == "video" or self.path.suffix.lower() in _VIDEO_EXT

    def frames(self, n: int) -> list[np.ndarray]:
        """``n`` RGB uint8 frames (a still image repeats; a short video loops)."""
        if not self.is_video:
            return [read_rgb(self.path)] * n
        import av

        out: list[np.ndarray] = []
        try:
            with av.open(str(self.path)) as c:
                for fr in c.decode(video=0):
                    out.append(fr.to_ndarray(format="rgb24"))
                    if len(out) >= n:
                        break
        except av.error.FFmpegError as e:
            raise InputError(f"cannot decode background video {self.path}: {e}") from None
        if not out:
            raise InputError(f"background video {self.path} has no frames")
        return [out[i % len(out)] for i in range(n)]


# -- motion and rendering -------------------------------------------------------------------

def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def clip_plan(recipe: Recipe, res: Resolution) -> list[dict]:
    """The per-clip choices (sources and motion parameters) for one resolution, from the seed."""
    rng = np.random.default_rng([recipe.seed, zlib.crc32(res.name.encode())])
    m = recipe.motion
    bg_order = rng.permutation(len(recipe.backgrounds))
    plan = []
    for i in range(res.clips):
        sign = lambda: float(rng.choice([-1.0, 1.0]))  # noqa: E731
        plan.append({
            "clip": f"{i:04d}",
            "foreground": recipe.foregrounds[i % len(recipe.foregrounds)].get("name", str(i)),
            "fg_index": i % len(recipe.foregrounds),
            "bg_index": int(bg_order[i % len(bg_order)]),
            "background": recipe.backgrounds[int(bg_order[i % len(bg_order)])].get("name", ""),
            "flip": bool(rng.random() < 0.5),
            "person_height": _uniform(rng, m.person_height),
            "center_x": _uniform(rng, m.center_x),
            "translate": _uniform(rng, m.translate), "translate_hz": _uniform(rng, m.frequency_hz),
            "translate_phase": _uniform(rng, (0, 2 * math.pi)),
            "scale": _uniform(rng, m.scale), "scale_hz": _uniform(rng, m.frequency_hz),
            "scale_phase": _uniform(rng, (0, 2 * math.pi)),
            "rotate_deg": _uniform(rng, m.rotate_deg), "rotate_hz": _uniform(rng, m.frequency_hz),
            "rotate_phase": _uniform(rng, (0, 2 * math.pi)),
            "pan": sign() * _uniform(rng, m.pan),
        })
        _apply_motion_kind(plan[-1], res.motions[i % len(res.motions)], m)
    return plan


def _apply_motion_kind(p: dict, kind: str, m: Motion) -> None:
    """A "still" clip: nothing moves, camera noise is added; a "fast" one: the sway is
    ``m.fast`` times larger and twice as frequent, a third more rotation. "smooth": as drawn."""
    if kind == "smooth":
        return
    p["motion"] = kind
    if kind == "still":
        p.update(translate=0.0, scale=0.0, rotate_deg=0.0, pan=0.0, noise=m.noise)
    elif kind == "fast":
        p.update(translate=p["translate"] * m.fast, translate_hz=p["translate_hz"] * 2,
                 rotate_deg=p["rotate_deg"] * 1.3)
    else:
        raise InputError(f"unknown clip motion {kind!r} (smooth, still, fast)")


def _resize(a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(C,H,W) float -> (C,h,w), antialiased when shrinking."""
    return F.interpolate(a[None], size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def _sample(src: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear lookup of (C,Hs,Ws) at pixel coordinates (pixel centres at integers)."""
    hs, ws = src.shape[-2:]
    grid = torch.stack(((2 * xs + 1) / ws - 1, (2 * ys + 1) / hs - 1), dim=-1)[None]
    return F.grid_sample(src[None], grid, mode="bilinear", padding_mode=padding,
                         align_corners=False)[0]


def _render_clip(fg: _Foreground, bg: _Background, p: dict, res: Resolution, motion: Motion):
    """Yield ``(com uint8 (H,W,3), pha uint8 (H,W), fgr uint8 (H,W,3))`` per frame."""
    W, H = res.width, res.height
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    bgs = bg.frames(res.frames)
    zoom = motion.background_zoom
    fg_cache: dict[int, torch.Tensor] = {}
    bg_cache: dict[int, torch.Tensor] = {}
    for t in range(res.frames):
        s = t / FPS
        key = t if fg.frames is None else 0
        if key not in fg_cache:
            f_np, a_np = fg.frame(t)
            # Shrink the source once (antialiased) to about its largest on-screen size, so the
            # per-frame warp never minifies much (no aliasing of fine hair).
            src = torch.from_numpy(np.concatenate([f_np, a_np[..., None]], axis=-1)).float()
            src = src.permute(2, 0, 1)
            if p["flip"]:
                src = src.flip(-1)
            k0 = min(1.0, max(p["person_height"], 1.0) * H * (1 + p["scale"]) / src.shape[1])
            fg_cache = {key: _resize(src, max(2, round(src.shape[1] * k0)),
                                     max(2, round(src.shape[2] * k0)))}
        src = fg_cache[key]
        hs, ws = src.shape[1:]
        # A subject cut at the top (head out of frame) reaches down to about the frame bottom.
        height = p["person_height"] if fg.anchor == "bottom" else 1.0 / (1 + p["scale"])
        scale = height * H / hs * (1 + p["scale"] * math.sin(
            2 * math.pi * p["scale_hz"] * s + p["scale_phase"]))
        theta = math.radians(p["rotate_deg"] * math.sin(
            2 * math.pi * p["rotate_hz"] * s + p["rotate_phase"]))
        cx = W * (p["center_x"] + p["translate"] * math.sin(
            2 * math.pi * p["translate_hz"] * s + p["translate_phase"]))
        # The subject's cut-off edge (or its feet) sits a little outside the frame.
        if fg.anchor == "top":
            cy, ay = -0.04 * H, 0.0
        else:
            cy, ay = 1.04 * H, hs - 1.0
        # Output -> source: p_s = anchor_s + R(-theta) (p_o - anchor_o) / scale
        c, sn = math.cos(theta) / scale, math.sin(theta) / scale
        dx, dy = xx - cx, yy - cy
        warped = _sample(src, (ws - 1) / 2 + c * dx + sn * dy, ay - sn * dx + c * dy, "zeros")
        warped = warped.clamp_(0, 1).mul_(255).round_()
        fgr8, pha8 = warped[:3], warped[3]

        bkey = t if bg.is_video else 0
        if bkey not in bg_cache:
            b = torch.from_numpy(np.array(bgs[t])).permute(2, 0, 1).float() / 255
            k = max(W * zoom / b.shape[2], H * zoom / b.shape[1])
            bg_cache = {bkey: _resize(b, max(H, round(b.shape[1] * k)), max(W, round(b.shape[2] * k)))}
        b = bg_cache[bkey]
        bh, bw = b.shape[1:]
        room = bw - W
        pan = p["pan"] * W * (s - res.frames / FPS / 2)  # centred on the clip's middle frame
        ox = room / 2 + max(-room / 2, min(room / 2, pan))
        bgr8 = _sample(b, xx + ox, yy + (bh - H) / 2, "border").clamp_(0, 1).mul_(255).round_()

        a = pha8 / 255
        com = fgr8 * a + bgr8 * (1 - a)
        if p.get("noise"):  # camera noise (the ground truth stays clean)
            g = torch.Generator().manual_seed(zlib.crc32(f"{p['clip']}/{t}".encode()))
            com += torch.randn(com.shape, generator=g) * p["noise"]
        com = com.round_().clamp_(0, 255)
        yield (com.permute(1, 2, 0).to(torch.uint8).numpy(), pha8.to(torch.uint8).numpy(),
               fgr8.permute(1, 2, 0).to(torch.uint8).numpy())


def make_benchmark(recipe: Recipe, out: str | os.PathLike, *, resolutions: Sequence[str] | None = None,
                   overwrite: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Render every clip of ``recipe`` into ``out`` (written to a temp folder, then renamed).

    ``resolutions``: names to render (default all). Returns the manifest written to
    ``out/benchmark.json``.
    """
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out} exists (pass --overwrite to replace it)")
        if not (out / "benchmark.json").is_file():
            raise OutputError(f"{out} exists and is not a benchmark folder; refusing to replace it")
    guidance = bool(recipe.guidance) and (resolutions is None or GUIDANCE in resolutions)
    resolutions = None if resolutions is None else [r for r in resolutions if r != GUIDANCE]
    wanted = [r for r in recipe.resolutions if resolutions is None or r.name in resolutions]
    if resolutions is not None and len(wanted) != len(set(resolutions)):
        known = ", ".join(r.name for r in recipe.resolutions)
        raise InputError(f"unknown resolution in {list(resolutions)} (recipe has: {known})")
    fgs: dict[int, _Foreground] = {}  # loaded on first use (estimation takes a moment)

    def fg(i: int) -> _Foreground:
        if i not in fgs:
            fgs[i] = _Foreground(recipe, recipe.foregrounds[i])
        return fgs[i]

    bgs = [_Background(recipe, spec) for spec in recipe.backgrounds]  # checks the paths early
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest: dict = {"recipe": recipe.to_json(), "resolutions": {}}
        for res in wanted:
            plan = clip_plan(recipe, res)
            manifest["resolutions"][res.name] = {**asdict(res), "plan": plan}
            for p in plan:
                if progress:
                    progress(f"{res.name} {p['clip']}: {p['foreground']} over {p['background']}")
                dirs = {k: tmp / res.name / k / p["clip"] for k in ("com", "pha", "fgr")}
                for d in dirs.values():
                    d.mkdir(parents=True)
                frames = _render_clip(fg(p["fg_index"]), bgs[p["bg_index"]], p, res, recipe.motion)
                for t, (com, pha, fgr) in enumerate(frames):
                    name = f"{t:04d}.png"
                    # Fast zlib level: the frames are regenerated, not archived.
                    Image.fromarray(com, mode="RGB").save(dirs["com"] / name, compress_level=1)
                    Image.fromarray(pha, mode="L").save(dirs["pha"] / name, compress_level=1)
                    Image.fromarray(fgr, mode="RGB").save(dirs["fgr"] / name, compress_level=1)
        if guidance:
            manifest[GUIDANCE] = make_guidance_scenes(recipe, tmp / GUIDANCE, fg, bgs, progress)
        (tmp / "benchmark.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# -- guidance scenes (issue 19: person selection, background plate) ----------------------------
#
# Recipe key "guidance" (optional): {"width", "height", "people": {...}, "plate": {...}}.
# OUT/guidance/people/: com/ (several people crossing), pha/ (everyone), person<k>/ (what is
# visible of person k: the alpha the network should keep when k is selected); the manifest
# gives for each person a pixel on them on frame 0 ("select").
# OUT/guidance/plate/: com/ (one person in front of a wall holding a photo of a person, camera
# noise and shake), pha/, fgr/ (ground truth of the live person), poster/ (the photo's person
# in each frame: its alpha should be 0), plate.png (the empty scene as a camera would take it:
# the unshifted wall, noise averaged over 16 frames).

GUIDANCE = "guidance"


def _layer(fg: "_Foreground", height: float, H: int, W: int, flip: bool) -> torch.Tensor:
    """(4,h,w) RGBA of a foreground scaled to ``height`` x H."""
    f_np, a_np = fg.frame(0)
    src = torch.from_numpy(np.concatenate([f_np, a_np[..., None]], -1)).float().permute(2, 0, 1)
    if flip:
        src = src.flip(-1)
    k = height * H / src.shape[1]
    return _resize(src, max(2, round(src.shape[1] * k)), max(2, round(src.shape[2] * k)))


def _place(layer: torch.Tensor, cx: float, bottom: float, yy, xx) -> torch.Tensor:
    """The layer with its bottom centre at (cx, bottom) of the frame, (4,H,W), sub-pixel."""
    h, w = layer.shape[1:]
    out = _sample(layer, xx - cx + (w - 1) / 2, yy - bottom + (h - 1), "zeros")
    return out.clamp_(0, 1)


def _background(bg: "_Background", H: int, W: int) -> torch.Tensor:
    b = torch.from_numpy(np.array(bg.frames(1)[0])).permute(2, 0, 1).float() / 255
    k = max(W / b.shape[2], H / b.shape[1])
    b = _resize(b, max(H, round(b.shape[1] * k)), max(W, round(b.shape[2] * k)))
    y0, x0 = (b.shape[1] - H) // 2, (b.shape[2] - W) // 2
    return b[:, y0:y0 + H, x0:x0 + W].contiguous()


def _noise(shape, sigma: float, key: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(shape, generator=g) * sigma


def _save(dirs: dict, t: int, **arrays) -> None:
    for k, a in arrays.items():
        a = a.clamp(0, 1).mul(255).round().to(torch.uint8)
        img = a.permute(1, 2, 0).numpy() if a.ndim == 3 else a.numpy()
        dirs[k].mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dirs[k] / f"{t:04d}.png", compress_level=1)


def _named(items, name: str, what: str) -> int:
    for i, spec in enumerate(items):
        if spec.get("name") == name:
            return i
    raise InputError(f"recipe guidance: unknown {what} {name!r}")


def render_people_scene(recipe: Recipe, out: Path, fg, bgs, spec: dict, W: int, H: int) -> dict:
    """Two or three people walking across one another (person k crosses the frame from
    ``start_x[k]`` to ``end_x[k]`` of the width; later people are in front)."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    n = int(spec.get("frames", 48))
    people = spec["foregrounds"]
    heights = spec.get("heights", [0.7, 0.62, 0.55][:len(people)])
    starts, ends = spec.get("start_x", [0.2, 0.8, 0.5]), spec.get("end_x", [0.75, 0.25, 0.5])
    bottoms = spec.get("bottom", [1.02, 1.0, 0.98])
    layers = [_layer(fg(_named(recipe.foregrounds, name, "foreground")), heights[k], H, W,
                     flip=k % 2 == 1) for k, name in enumerate(people)]
    back = _background(bgs[_named(recipe.backgrounds, spec["background"], "background")], H, W)
    noise = float(spec.get("noise", 1.5))
    dirs = {k: out / k for k in ["com", "pha"] + [f"person{i}" for i in range(len(people))]}
    select = []
    for t in range(n):
        s = t / max(n - 1, 1)
        img, cover, vis = back.clone(), torch.zeros(H, W), []
        placed = [_place(L, W * (starts[k] + (ends[k] - starts[k]) * s), H * bottoms[k], yy, xx)
                  for k, L in enumerate(layers)]
        for p in placed:  # back to front
            a = p[3]
            img = p[:3] * a + img * (1 - a)
        for p in placed[::-1]:  # what is visible of each: those in front cover it
            vis.append(p[3] * (1 - cover))
            cover = cover + p[3] * (1 - cover)
        vis = vis[::-1]
        img = img + _noise(img.shape, noise / 255, f"people/{t}")
        _save(dirs, t, com=img, pha=cover, **{f"person{i}": v for i, v in enumerate(vis)})
        if t == 0:
            for v in vis:  # a pixel well inside each person
                ys, xs = np.nonzero(ndimage.binary_erosion(v.numpy() > 0.99, iterations=3))
                k = len(ys) // 2
                select.append([int(xs[k]), int(ys[k])] if len(ys) else None)
    return {"frames": n, "people": list(people), "select": select, "width": W, "height": H}


def render_plate_scene(recipe: Recipe, out: Path, fg, bgs, spec: dict, W: int, H: int) -> dict:
    """One person swaying in front of a wall with a photo of a person on it; camera noise
    and a small shake (a random sub-pixel translation of the whole frame per frame)."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    n = int(spec.get("frames", 24))
    rng = np.random.default_rng([recipe.seed, zlib.crc32(b"plate")])
    live = _layer(fg(_named(recipe.foregrounds, spec["foreground"], "foreground")),
                  spec.get("height", 0.8), H, W, flip=False)
    photo = _layer(fg(_named(recipe.foregrounds, spec["poster"], "foreground")),
                   spec.get("poster_height", 0.3), H, W, flip=True)
    back = _background(bgs[_named(recipe.backgrounds, spec["background"], "background")], H, W)
    px, py = spec.get("poster_at", [0.82, 0.45])
    poster = _place(photo, W * px, H * py, yy, xx)
    wall = poster[:3] * poster[3] + back * (1 - poster[3])
    noise, shake = float(spec.get("noise", 2.0)), float(spec.get("shake", 1.0))
    dirs = {k: out / k for k in ("com", "pha", "fgr", "poster")}
    for t in range(n):
        dx, dy = (rng.uniform(-shake, shake, 2) if t else (0.0, 0.0))
        scene = torch.cat([wall, poster[3:]], 0)
        moved = _sample(scene, xx - dx, yy - dy, "border")
        cx = W * (0.35 + 0.08 * math.sin(2 * math.pi * t / max(n, 1)))
        person = _place(live, cx, H * 1.02, yy, xx)
        a = person[3]
        img = person[:3] * a + moved[:3] * (1 - a)
        img = img + _noise(img.shape, noise / 255, f"plate/{t}")
        _save(dirs, t, com=img, pha=a, fgr=person[:3], poster=moved[3] * (1 - a))
    plate = wall + _noise(wall.shape, noise / 255 / 4, "plate/plate")  # 16 frames averaged
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(plate.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                    ).save(out / "plate.png")
    return {"frames": n, "width": W, "height": H, "plate": "plate.png"}


def make_guidance_scenes(recipe: Recipe, out: Path, fg, bgs, progress=None) -> dict:
    """Render the recipe's guidance scenes into ``out``; returns their manifest entry."""
    g = recipe.guidance
    W, H = int(g.get("width", 960)), int(g.get("height", 540))
    made = {"width": W, "height": H,
            "downsample_ratio": g.get("downsample_ratio", "auto")}
    if "people" in g:
        if progress:
            progress(f"{GUIDANCE} people: {', '.join(g['people']['foregrounds'])}")
        made["people"] = render_people_scene(recipe, out / "people", fg, bgs, g["people"], W, H)
    if "plate" in g:
        if progress:
            progress(f"{GUIDANCE} plate: {g['plate']['foreground']} before a photo of "
                     f"{g['plate']['poster']}")
        made["plate"] = render_plate_scene(recipe, out / "plate", fg, bgs, g["plate"], W, H)
    return made
