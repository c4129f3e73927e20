#!/usr/bin/env python3
"""Does PyAV's x264 give the same bytes for the same frames every time? (A check, not a test.)

Encodes the same ``--frames`` synthetic frames ``--encodes`` times per thread, in
``--threads`` threads at once (half of them an RGB picture, half a grey one, as rvmatte's
composite and alpha), each encode a fresh libx264 encoder (CRF 18, ``veryfast``, no B-frames,
one thread: rvmatte's segment settings), and counts the encodes whose packets differ from a
first reference encode. ``--convert`` says how each frame becomes 4:2:0, in the encoding
thread: ``encoder`` (default) hands the RGB / grey frame to the encoder, which converts it with
libswscale (what rvmatte did before); ``reformat`` calls ``frame.reformat("yuv420p")`` first;
``rvmatte`` makes the planes with :func:`rvmatte.io.yuv.image_to_yuv420` (what
``SegmentWriter`` does now); ``pre`` converts once with libswscale beforehand and reuses the
planes. ``--no-avx512`` opens x264 as rvmatte does (:func:`rvmatte.io.writers.x264_cpu`: its
own CPU capabilities less AVX-512); ``--x264-params`` passes anything else.

Measured on the 2-core AMD EPYC (AVX-512) with PyAV 18.1.0 (x264 core 165), 4 frames per
encode: the differences come from x264's AVX-512 code, whatever makes the planes::

    size   threads  convert   AVX-512   RGB encodes differing
    64x48  4        encoder   on        2 of 3000, 2 of 3000, 2 of 10000
    64x48  4        rvmatte   on        0 of 3000, 0 of 3000, 0 of 10000
    64x48  4        encoder   off       0 of 10000
    96x48  4        encoder   on        0 of 5000
    96x48  4        rvmatte   on        10 of 5000, 10 of 5000
    96x48  1        rvmatte   on        5 of 5000
    96x48  4 / 2    pre       on        6 of 5000; 5 of 5000, 5 of 5000
    96x48  2        pre       off       0 of 2500, 0 of 5000, 0 of 5000
    96x48  4 / 2    rvmatte   off       0 of 5000; 0 of 5000

(grey encodes: none differed in any run.) One thread differs as well as several, so it is
not a race between encoders; libswscale's converted pixels were the same every time
(``to_ndarray()`` checked against the first: 0 of 120,000 frames, while 4 of those 30,000
encodes differed). Under valgrind (2 encodes) no read of uninitialised memory was reported,
but valgrind does not emulate AVX-512, so x264 ran without it there. ``asm=0`` (no assembly at
all) was exact too (0 of 2500)::

    python scripts/x264_determinism.py --size 96x48 --encodes 2500 --convert pre
    python scripts/x264_determinism.py --size 96x48 --encodes 2500 --convert pre --no-avx512
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from fractions import Fraction

import av
import numpy as np

CONVERSIONS = ("encoder", "reformat", "rvmatte", "pre")


def frames_for(w: int, h: int, n: int) -> list[np.ndarray]:
    """Smooth moving gradients, like the test clips (uint8 RGB)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = (x / max(w - 1, 1) * 255 + 7 * i) % 256
        g = (y / max(h - 1, 1) * 255 + 3 * i) % 256
        b = ((x + y) / max(w + h - 2, 1) * 255 + 11 * i) % 256
        out.append(np.stack([r, g, b], -1).astype(np.uint8))
    return out


def to_frame(picture: np.ndarray, fmt: str, convert: str):
    """The frame handed to the encoder (see the module docstring for ``convert``)."""
    if convert == "pre":
        return av.VideoFrame.from_ndarray(picture, format="yuv420p")
    if convert == "rvmatte":
        from rvmatte.io.yuv import image_to_yuv420

        return av.VideoFrame.from_ndarray(image_to_yuv420(picture), format="yuv420p")
    frame = av.VideoFrame.from_ndarray(picture, format=fmt)
    return frame.reformat(format="yuv420p") if convert == "reformat" else frame


def encode(pictures, fmt: str, w: int, h: int, convert: str, params: str = "") -> str:
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
    cc.options = {"crf": "18", "preset": "veryfast", "bf": "0",
                  **({"x264-params": params} if params else {})}
    cc.thread_count = 1
    digest = hashlib.md5()
    for i, p in enumerate(pictures):
        frame = to_frame(p, fmt, convert)
        frame.pts = i
        for packet in cc.encode(frame):
            digest.update(bytes(packet))
    for packet in cc.encode(None):
        digest.update(bytes(packet))
    return digest.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64x48")
    ap.add_argument("--frames", type=int, default=4, help="frames per encode")
    ap.add_argument("--encodes", type=int, default=500, help="encodes per thread")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--convert", choices=CONVERSIONS, default="encoder",
                    help="how frames become 4:2:0 (module docstring)")
    ap.add_argument("--no-avx512", action="store_true",
                    help="x264 without its AVX-512 code, as rvmatte opens it")
    ap.add_argument("--x264-params", default="", help="libx264's x264-params option")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    params = args.x264_params
    if args.no_avx512:
        from rvmatte.io.writers import x264_cpu

        cpu = x264_cpu()
        params = ":".join(p for p in (params, f"asm={cpu}" if cpu else "") if p)
    rgb = frames_for(w, h, args.frames)
    kinds = {"rgb": ("rgb24", rgb), "gray": ("gray", [np.ascontiguousarray(p[..., 1]) for p in rgb])}
    if args.convert == "pre":
        kinds = {k: (fmt, [av.VideoFrame.from_ndarray(p, format=fmt).reformat(format="yuv420p")
                           .to_ndarray() for p in pics]) for k, (fmt, pics) in kinds.items()}
    ref = {k: encode(pics, fmt, w, h, args.convert, params) for k, (fmt, pics) in kinds.items()}
    differing = {k: 0 for k in kinds}
    total = {k: 0 for k in kinds}
    lock = threading.Lock()

    def work(kind: str) -> None:
        fmt, pics = kinds[kind]
        for _ in range(args.encodes):
            same = encode(pics, fmt, w, h, args.convert, params) == ref[kind]
            with lock:
                total[kind] += 1
                differing[kind] += not same

    threads = [threading.Thread(target=work, args=(list(kinds)[i % 2],)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"PyAV {av.__version__}, {w}x{h}, {args.frames} frames per encode, {args.threads} "
          f"threads, converted by {args.convert}, x264-params {params or '-'}:")
    for k in kinds:
        print(f"  {k:4}: {differing[k]} of {total[k]} encodes differ from the first "
              f"({100 * differing[k] / max(total[k], 1):.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
