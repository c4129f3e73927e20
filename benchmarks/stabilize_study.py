"""Stabiliser variants on the post-stage benchmark without rerunning the network per variant
(issue 18, "Motion-compensated stabilisation (tried)" in docs/BENCHMARKS.md).

    python benchmarks/stabilize_study.py BENCH [BENCH ...] [--cache DIR] [--variants a,b]
                                         [--clips 0000,0003]
    python benchmarks/stabilize_study.py BENCH --cost

BENCH: a folder of `rvmatte benchmark make --recipe benchmarks/post_benchmark.json` (e.g.
/tmp/bench_post_low, /tmp/bench_post). The network (onnxruntime backend, the benchmark's
ratio, chunks of 4 frames as `rvmatte benchmark run`) runs once per clip; its alpha is cached
as .npy under --cache. Each variant then stabilises the cached alpha (frames as uint8, fresh
state per clip) and is scored with rvmatte's own metrics (MAD, MSE, Grad, dtSSD; Conn left
out, it is slow and the targets do not name it), per motion kind (still / smooth / fast) and
over all clips (the mean of the clip means, as the report). Printed as a markdown table with
the change against the plain network.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

METRICS = ("mad", "mse", "grad", "dtssd")


# ---- the motion-compensated stabiliser (a prototype: numba kernels + numpy) -----------------
#
# The change-aware stabiliser of :mod:`rvmatte.post.stabilize` blends each pixel with the
# previous output where the image did not change. Here the previous frame and the previous
# output are first warped by the motion between the frames, so that a moving rigid region is
# held too::
#
#     v   = motion field t -> t-1 (block matching over a luma pyramid, block vectors
#           median-filtered and interpolated to every pixel)
#     I'  = warp(I_t-1, v),  s' = warp(s_t-1, v)
#     D   = box_(2r+1)( mean_c |I_t - I'| ),  dA = a_t - s'
#     q   = (D / tau_i)^2 + (dA / tau_a)^2,   w = w_max (1 - q)^2 for q < 1, else 0
#     s_t = a_t + w (s' - a_t)
#
# Where the warp does not explain the image (occlusion, a wrong vector at a boundary), D is
# large and the network's value passes.

jit = njit(nogil=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")


@jit
def luma_down(img, f):
    """uint8 (H,W,3) -> float32 luma (H//f, W//f) in [0, 1], f x f box means."""
    H, W = img.shape[0] // f, img.shape[1] // f
    out = np.zeros((H, W), np.float32)
    s = np.float32(1.0 / (255.0 * f * f))
    for y in range(H):
        for yy in range(y * f, y * f + f):
            for x in range(W):
                acc = np.float32(0.0)
                for xx in range(x * f, x * f + f):
                    acc += (np.float32(0.299) * img[yy, xx, 0] + np.float32(0.587) * img[yy, xx, 1]
                            + np.float32(0.114) * img[yy, xx, 2])
                out[y, x] += acc * s
    return out


@jit
def alpha_down(a, f):
    """float32 (H,W) -> (H//f, W//f) f x f box means."""
    H, W = a.shape[0] // f, a.shape[1] // f
    out = np.zeros((H, W), np.float32)
    s = np.float32(1.0 / (f * f))
    for y in range(H):
        for yy in range(y * f, y * f + f):
            for x in range(W):
                acc = np.float32(0.0)
                for xx in range(x * f, x * f + f):
                    acc += a[yy, xx]
                out[y, x] += acc * s
    return out


@jit
def half(a):
    H, W = a.shape[0] // 2, a.shape[1] // 2
    out = np.empty((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            out[y, x] = np.float32(0.25) * (a[2 * y, 2 * x] + a[2 * y + 1, 2 * x]
                                            + a[2 * y, 2 * x + 1] + a[2 * y + 1, 2 * x + 1])
    return out


@jit
def _sad(cur, prev, wgt, y0, x0, dy, dx, B, m):
    """Sum |cur - prev shifted| over the block at (y0, x0) of size B widened by m each side;
    samples outside either image are skipped (mean over those inside); each sample weighs
    ``wgt[y, x]`` (the current alpha plus a floor: the matte's own motion wins in a block
    that holds the person's edge and the background)."""
    H, W = cur.shape
    acc = np.float32(0.0)
    n = np.float32(0.0)
    for y in range(y0 - m, y0 + B + m):
        py = y + dy
        if y < 0 or y >= H or py < 0 or py >= H:
            continue
        for x in range(x0 - m, x0 + B + m):
            px = x + dx
            if x < 0 or x >= W or px < 0 or px >= W:
                continue
            acc += wgt[y, x] * abs(cur[y, x] - prev[py, px])
            n += wgt[y, x]
    return acc / n if n > 0 else np.float32(1e9)


@jit
def block_match(cur, prev, wgt, guess, B, R, m):
    """Per B x B block of ``cur``: the integer shift (dy, dx) within ``R`` of ``guess`` (the
    coarser level's vector, (nby, nbx, 2) float32, in this level's pixels) minimising the
    SAD against ``prev``, refined to subpixel by a parabola through the neighbours. Ties go
    to the smaller shift (a zero vector wins on flat regions). Returns (nby, nbx, 2)."""
    nby, nbx = guess.shape[0], guess.shape[1]
    out = np.empty((nby, nbx, 2), np.float32)
    costs = np.empty((2 * R + 1, 2 * R + 1), np.float32)
    for by in range(nby):
        for bx in range(nbx):
            gy, gx = int(np.round(guess[by, bx, 0])), int(np.round(guess[by, bx, 1]))
            best = np.float32(1e30)
            bi, bj = R, R
            for i in range(2 * R + 1):
                for j in range(2 * R + 1):
                    c = _sad(cur, prev, wgt, by * B, bx * B, gy + i - R, gx + j - R, B, m)
                    # a tiny bias towards short vectors: flat blocks keep no motion
                    dy, dx = gy + i - R, gx + j - R
                    c += np.float32(1e-4) * (abs(dy) + abs(dx))
                    costs[i, j] = c
                    if c < best:
                        best, bi, bj = c, i, j
            fy, fx = np.float32(0.0), np.float32(0.0)
            if 0 < bi < 2 * R:
                a, b, c = costs[bi - 1, bj], costs[bi, bj], costs[bi + 1, bj]
                den = a - 2 * b + c
                if den > 0:
                    fy = np.float32(0.5) * (a - c) / den
            if 0 < bj < 2 * R:
                a, b, c = costs[bi, bj - 1], costs[bi, bj], costs[bi, bj + 1]
                den = a - 2 * b + c
                if den > 0:
                    fx = np.float32(0.5) * (a - c) / den
            out[by, bx, 0] = gy + bi - R + fy
            out[by, bx, 1] = gx + bj - R + fx
    return out


@jit
def median3(v):
    """3x3 component-wise median of a vector field (nby, nbx, 2) (outlier blocks)."""
    nby, nbx = v.shape[0], v.shape[1]
    out = np.empty_like(v)
    buf = np.empty(9, np.float32)
    for by in range(nby):
        for bx in range(nbx):
            for k in range(2):
                n = 0
                for yy in range(max(by - 1, 0), min(by + 2, nby)):
                    for xx in range(max(bx - 1, 0), min(bx + 2, nbx)):
                        buf[n] = v[yy, xx, k]
                        n += 1
                out[by, bx, k] = np.sort(buf[:n])[n // 2]
    return out


@jit
def dense_field(v, B, f, H, W):
    """Block vectors (nby, nbx, 2) of a level of pixel size ``f`` (full-res pixels per level
    pixel) and block ``B`` -> a per-pixel field (H, W, 2) in full-res pixels, bilinear between
    block centres."""
    nby, nbx = v.shape[0], v.shape[1]
    out = np.empty((H, W, 2), np.float32)
    cell = np.float32(B * f)
    for y in range(H):
        gy = (np.float32(y) + np.float32(0.5)) / cell - np.float32(0.5)
        gy = min(max(gy, np.float32(0.0)), np.float32(nby - 1))
        y0 = min(int(gy), nby - 2) if nby > 1 else 0
        ty = gy - y0 if nby > 1 else np.float32(0.0)
        y1 = y0 + 1 if nby > 1 else 0
        for x in range(W):
            gx = (np.float32(x) + np.float32(0.5)) / cell - np.float32(0.5)
            gx = min(max(gx, np.float32(0.0)), np.float32(nbx - 1))
            x0 = min(int(gx), nbx - 2) if nbx > 1 else 0
            tx = gx - x0 if nbx > 1 else np.float32(0.0)
            x1 = x0 + 1 if nbx > 1 else 0
            for k in range(2):
                a = v[y0, x0, k] + tx * (v[y0, x1, k] - v[y0, x0, k])
                b = v[y1, x0, k] + tx * (v[y1, x1, k] - v[y1, x0, k])
                out[y, x, k] = (a + ty * (b - a)) * np.float32(f)
    return out


@jit
def warp(src, field, out):
    """out[y, x] = src at (y, x) + field[y, x] (bilinear, clamped at the border); src and out
    (H, W, C) float32."""
    H, W, C = src.shape
    for y in range(H):
        for x in range(W):
            sy = min(max(np.float32(y) + field[y, x, 0], np.float32(0.0)), np.float32(H - 1))
            sx = min(max(np.float32(x) + field[y, x, 1], np.float32(0.0)), np.float32(W - 1))
            y0, x0 = min(int(sy), H - 2), min(int(sx), W - 2)
            ty, tx = sy - y0, sx - x0
            for c in range(C):
                a = src[y0, x0, c] + tx * (src[y0, x0 + 1, c] - src[y0, x0, c])
                b = src[y0 + 1, x0, c] + tx * (src[y0 + 1, x0 + 1, c] - src[y0 + 1, x0, c])
                out[y, x, c] = a + ty * (b - a)


@dataclass(frozen=True)
class MotionParams:
    radius: int = 1
    tau_image: float = 0.05
    tau_alpha: float = 0.25
    w_max: float = 0.85
    cut: float = 0.12
    compensate: bool = True   # False: today's formula (no warp), for comparison
    work_width: int = 480     # the matching level's width (about; integer factor of W)
    block: int = 8            # block size at each pyramid level
    search: int = 3           # search radius per level (level pixels)
    margin: int = 2           # the SAD window: the block widened by this many pixels
    min_width: int = 48       # the coarsest level's width
    alpha_floor: float = 1.0  # SAD weight = alpha_t + this (large: plain SAD)
    affine: bool = False      # one affine motion fitted to the person's block vectors


class MotionStabilizer:
    """Streaming, numpy frames uint8 (T,H,W,3), alpha float32 (T,H,W) stabilised in place."""

    def __init__(self, params: MotionParams = MotionParams()) -> None:
        self.p = params
        self.reset()

    def reset(self) -> None:
        self.prev_img = self.prev_pha = self.prev_pyr = None

    def __call__(self, frames: np.ndarray, pha: np.ndarray) -> None:
        for t in range(frames.shape[0]):
            self._frame(np.ascontiguousarray(frames[t]), pha[t])

    def pyramid(self, img: np.ndarray) -> list:
        f = max(1, img.shape[1] // self.p.work_width)
        levels = [luma_down(img, f)]
        while levels[-1].shape[1] // 2 >= self.p.min_width:
            levels.append(half(levels[-1]))
        return [f, levels]

    def weights(self, pha: np.ndarray, f: int, n: int) -> list:
        """Per level: the SAD weights ``alpha_t + alpha_floor`` (the person's motion first)."""
        w = [alpha_down(np.ascontiguousarray(pha, np.float32), f)]
        for _ in range(n - 1):
            w.append(half(w[-1]))
        return [x + np.float32(self.p.alpha_floor) for x in w]

    def field(self, pyr, prev_pyr, H: int, W: int, pha=None) -> np.ndarray:
        """The motion t -> t-1, (H, W, 2) full-res pixels (dy, dx)."""
        p = self.p
        f, cur, prev = pyr[0], pyr[1], prev_pyr[1]
        wgt = (self.weights(pha, f, len(cur)) if pha is not None
               else [np.ones_like(c) for c in cur])
        v = None
        for lv in range(len(cur) - 1, -1, -1):
            c, q = cur[lv], prev[lv]
            nby, nbx = -(-c.shape[0] // p.block), -(-c.shape[1] // p.block)
            if v is None:
                guess = np.zeros((nby, nbx, 2), np.float32)
            else:
                iy = np.minimum(np.arange(nby) // 2, v.shape[0] - 1)
                ix = np.minimum(np.arange(nbx) // 2, v.shape[1] - 1)
                guess = np.ascontiguousarray(2 * v[iy][:, ix])
            v = median3(block_match(c, q, wgt[lv], guess, p.block, p.search, p.margin))
        if p.affine and pha is not None:
            return self.affine_field(v, wgt[0] - np.float32(p.alpha_floor), f, H, W)
        return dense_field(v, p.block, f, H, W)

    def affine_field(self, v, a, f, H, W):
        """A weighted least-squares affine fit of the block vectors (weights: the blocks'
        mean alpha) evaluated at every full-res pixel."""
        B = self.p.block
        nby, nbx = v.shape[:2]
        pad = np.zeros((nby * B, nbx * B), np.float32)
        pad[:a.shape[0], :a.shape[1]] = a
        wb = pad.reshape(nby, B, nbx, B).mean((1, 3)).ravel()
        wb = wb * (wb > 0.5)
        cy, cx = np.meshgrid((np.arange(nby) + 0.5) * B * f, (np.arange(nbx) + 0.5) * B * f,
                             indexing="ij")
        X = np.stack([np.ones(cy.size), cy.ravel(), cx.ravel()], 1)
        sw = np.sqrt(wb)[:, None]
        coef = np.linalg.lstsq(X * sw, v.reshape(-1, 2) * f * sw, rcond=None)[0]
        yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        return np.ascontiguousarray(np.stack([coef[0, k] + coef[1, k] * yy + coef[2, k] * xx
                                              for k in range(2)], -1).astype(np.float32))

    def _frame(self, img: np.ndarray, pha: np.ndarray) -> None:
        from scipy.ndimage import uniform_filter

        p = self.p
        H, W = pha.shape
        pyr = self.pyramid(img) if p.compensate else None
        fresh = self.prev_img is None or self.prev_img.shape != img.shape
        if not fresh:
            plain = np.abs(img.astype(np.float32) - self.prev_img).mean(-1) / 255
            fresh = float(plain.mean()) > p.cut
        if fresh:
            self.prev_img = img.astype(np.float32)
            self.prev_pha = pha.astype(np.float32).copy()
            self.prev_pyr = pyr
            return
        if p.compensate:
            fld = self.field(pyr, self.prev_pyr, H, W, pha)
            wimg = np.empty_like(self.prev_img)
            warp(self.prev_img, fld, wimg)
            wpha = np.empty((H, W, 1), np.float32)
            warp(self.prev_pha[..., None], fld, wpha)
            wpha = wpha[..., 0]
            d = np.abs(img.astype(np.float32) - wimg).mean(-1) / 255
        else:
            wpha, d = self.prev_pha, plain
        D = uniform_filter(d, 2 * p.radius + 1, mode="nearest")
        q = (D / p.tau_image) ** 2 + ((pha - wpha) / p.tau_alpha) ** 2
        w = p.w_max * np.clip(1 - q, 0, None) ** 2
        pha += w * (wpha - pha)
        self.prev_img = img.astype(np.float32)
        self.prev_pha = pha.astype(np.float32).copy()
        self.prev_pyr = pyr


def network_alpha(bench: Path, res: str, clip: str, cache: Path) -> np.ndarray:
    """The network's alpha (T,H,W) float32 of one clip, from the cache or computed."""
    f = cache / bench.name / res / f"{clip}.npy"
    if f.is_file():
        return np.load(f)
    from rvmatte.evaluation.frames import list_frames, read_rgb
    from rvmatte.inference.session import Matter
    from rvmatte.spec import ModelSpec

    info = json.loads((bench / "benchmark.json").read_text())["resolutions"][res]
    matter = Matter(ModelSpec(backend="onnxruntime"))
    matter.set_downsample_ratio(info.get("downsample_ratio", "auto"))
    d = bench / res / "com" / clip
    frames = np.stack([read_rgb(d / n) for n in list_frames(d)])
    phas = [matter.process(frames[i:i + 4]).pha for i in range(0, len(frames), 4)]
    f.parent.mkdir(parents=True, exist_ok=True)
    pha = np.ascontiguousarray(np.concatenate(phas), np.float32)
    np.save(f, pha)
    return pha


def load_clip(bench: Path, res: str, clip: str, cache: Path):
    from rvmatte.evaluation.frames import list_frames, read_alpha, read_rgb

    d = bench / res / "com" / clip
    names = list_frames(d)
    frames = np.stack([read_rgb(d / n) for n in names])
    gts = np.stack([read_alpha(bench / res / "pha" / clip / n) for n in names])
    return frames, gts, network_alpha(bench, res, clip, cache)


def score(pha: np.ndarray, gts: np.ndarray) -> dict:
    from rvmatte.metrics import ClipScorer

    s = ClipScorer(metrics=METRICS)
    for p, g in zip(pha, gts):
        s.add(p, g)
    return s.means()


def clip_motions(bench: Path, res: str) -> dict:
    info = json.loads((bench / "benchmark.json").read_text())["resolutions"][res]
    return {p["clip"]: p.get("motion", "smooth") for p in info.get("plan", ())}


# ---- variants: (frames uint8 (T,H,W,3), network alpha (T,H,W), ground truth (T,H,W))
# -> stabilised alpha; only the oracle reads the ground truth -----------------------------------

def _plain(frames, pha, gts):
    return pha


def _stabilizer(**kw):
    def run(frames, pha, gts):
        from rvmatte.post.stabilize import StabilizeParams, Stabilizer

        out = pha.copy()
        Stabilizer(StabilizeParams(**kw))(frames, out)
        return out
    return run


def _motion(**kw):
    def run(frames, pha, gts):
        out = pha.copy()
        MotionStabilizer(MotionParams(**kw))(frames, out)
        return out
    return run


def _oracle(beta: float):
    """A ceiling, not a method: the previous output's error carried along the estimated
    motion (alpha-weighted block matching) and mixed with the network's,
    ``e_t = beta warp(e_t-1) + (1 - beta) (a_t - g_t)``: a motion-compensated blend whose warp
    is exact (it reads the ground truth)."""
    def run(frames, pha, gts):
        m = MotionStabilizer(MotionParams(alpha_floor=0.05))
        out = pha.copy()
        H, W = pha.shape[1:]
        for t in range(1, len(frames)):
            fld = m.field(m.pyramid(frames[t]), m.pyramid(frames[t - 1]), H, W, pha[t])
            err = np.ascontiguousarray((out[t - 1] - gts[t - 1])[..., None], np.float32)
            carried = np.empty_like(err)
            warp(err, fld, carried)
            out[t] = gts[t] + beta * carried[..., 0] + (1 - beta) * (pha[t] - gts[t])
        return out
    return run


VARIANTS = {
    "network": _plain,
    "stabilise (today)": _stabilizer(),
}


def register_motion_variants() -> None:
    """The motion-compensated variants (and the oracle)."""
    VARIANTS.update({
        "no warp (prototype)": _motion(compensate=False),
        "no warp + tuned (w .7 tau_i .1 tau_a .5)": _motion(compensate=False, w_max=0.7,
                                                             tau_image=0.1, tau_alpha=0.5),
        "motion-compensated": _motion(),
        "mc + alpha-weighted matching": _motion(alpha_floor=0.05),
        "mc + alpha-weighted + tuned": _motion(alpha_floor=0.05, w_max=0.7, tau_image=0.1,
                                             tau_alpha=0.5),
        "mc + affine person motion + tuned": _motion(alpha_floor=0.05, affine=True, w_max=0.7,
                                                   tau_image=0.1, tau_alpha=0.5),
        "mc + affine + constant w 0.5": _motion(alpha_floor=0.05, affine=True, w_max=0.5,
                                              tau_image=1e3, tau_alpha=0.5),
        "oracle: exact warp w 0.5 (reads GT)": _oracle(0.5),
    })


def run(args) -> None:
    register_motion_variants()
    cache = Path(args.cache)
    names = list(VARIANTS) if not args.variants else ["network", *args.variants.split(",")]
    for b in args.bench:
        bench = Path(b)
        for res in json.loads((bench / "benchmark.json").read_text())["resolutions"]:
            if not (bench / res).is_dir():
                continue
            motions = clip_motions(bench, res)
            clips = [c for c in sorted(motions) if not args.clips or c in args.clips.split(",")]
            per: dict = {n: {} for n in names}
            for clip in clips:
                frames, gts, pha = load_clip(bench, res, clip, cache)
                for n in names:
                    per[n][clip] = score(VARIANTS[n](frames, pha, gts), gts)
                print(f"{res} {clip} ({motions[clip]}): " + ", ".join(
                    f"{n} {per[n][clip]['dtssd']:.3f}" for n in names), file=sys.stderr)
            print(table(res, per, motions))


def table(res: str, per: dict, motions: dict) -> str:
    from rvmatte.metrics import mean_of_clips

    kinds = sorted({motions[c] for c in per["network"]})
    head = ("| " + res + " | dtSSD all | " + " | ".join(f"{k} dtSSD" for k in kinds)
            + " | MAD | MSE | Grad |")
    lines = [head, "|---|" + "---:|" * (4 + len(kinds))]
    base = mean_of_clips(per["network"].values())
    for n, clips in per.items():
        m = mean_of_clips(clips.values())
        by = {k: mean_of_clips(v for c, v in clips.items() if motions[c] == k)["dtssd"]
              for k in kinds}
        bk = {k: mean_of_clips(v for c, v in per["network"].items() if motions[c] == k)["dtssd"]
              for k in kinds}

        def cell(v, b):
            return f"{v:.3f} ({100 * (v / b - 1):+.1f} %)" if n != "network" else f"{v:.3f}"
        lines.append(f"| {n} | {cell(m['dtssd'], base['dtssd'])} | "
                     + " | ".join(cell(by[k], bk[k]) for k in kinds)
                     + f" | {cell(m['mad'], base['mad'])} | {cell(m['mse'], base['mse'])} | "
                     f"{cell(m['grad'], base['grad'])} |")
    return "\n".join(lines)


def cost(bench: Path, cache: Path) -> None:
    """CPU ms per frame of the motion estimate and the warps (alpha-weighted matching) on the
    first clip of ``bench``'s "high" resolution (1080p), one thread, median over its frames."""
    import time

    frames, _, pha = load_clip(bench, "high", "0000", cache)
    H, W = pha.shape[1:]
    m = MotionStabilizer(MotionParams(alpha_floor=0.05))
    times: dict = {"pyramid": [], "matching + field": [], "warps": []}
    prev_pyr = m.pyramid(frames[0])
    for t in range(1, len(frames)):
        c0 = time.process_time()
        pyr = m.pyramid(frames[t])
        c1 = time.process_time()
        fld = m.field(pyr, prev_pyr, H, W, pha[t])
        c2 = time.process_time()
        out = np.empty((H, W, 3), np.float32)
        warp(frames[t - 1].astype(np.float32), fld, out)
        warp(np.ascontiguousarray(pha[t - 1][..., None]), fld, out[..., :1].copy())
        c3 = time.process_time()
        if t > 1:  # the first round compiles
            for k, d in zip(times, (c1 - c0, c2 - c1, c3 - c2)):
                times[k].append(d * 1e3)
        prev_pyr = pyr
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(", ".join(f"{k} {v:.1f}" for k, v in med.items())
          + f"; total {sum(med.values()):.1f} ms CPU per {W}x{H} frame")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", nargs="+")
    ap.add_argument("--cache", default="/tmp/rvmatte_stabilize_study")
    ap.add_argument("--variants", default="", help="comma-separated names (default: all)")
    ap.add_argument("--clips", default="", help="comma-separated clip names (default: all)")
    ap.add_argument("--cost", action="store_true",
                    help="time the motion estimate and warps on BENCH's 1080p clip instead")
    args = ap.parse_args(argv)
    if args.cost:
        cost(Path(args.bench[0]), Path(args.cache))
    else:
        run(args)


if __name__ == "__main__":
    main()
