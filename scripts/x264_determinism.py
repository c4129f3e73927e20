#!/usr/bin/env python3
"""Does PyAV's x264 give the same bytes for the same frames every time? (A check, not a test.)

Encodes the same ``--frames`` synthetic frames ``--encodes`` times per thread, in
``--threads`` threads at once (half of them an RGB picture, half a grey one, as rvmatte's
composite and alpha), each encode a fresh libx264 encoder (CRF 18, ``veryfast``, no B-frames,
one thread: rvmatte's segment settings), and counts the encodes whose packets differ from a
first reference encode. Each frame is converted to 4:2:0 in the encoding thread (``--pre``:
converted once beforehand and reused).

Measured on the 2-core EPYC with PyAV 18.1.0 (x264 core 165), docs/SPEED.md: at 64x48 and
96x48, 0.1-2 % of encodes differ (a few levels in one or two frames); none seen at 128x48,
64x64, 192x108, 640x360 or 1920x1080, nor with ``--pre``::

    python scripts/x264_determinism.py --size 64x48 --encodes 750 --threads 4
    # rgb : 2 of 1500 encodes differ from the first (0.13 %)
    python scripts/x264_determinism.py --size 64x48 --encodes 750 --threads 4 --pre
    # rgb : 0 of 1500 encodes differ from the first (0.00 %)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from fractions import Fraction

import av
import numpy as np


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


def encode(pictures, fmt: str, w: int, h: int, pre: bool) -> str:
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
    cc.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
    cc.thread_count = 1
    digest = hashlib.md5()
    for i, p in enumerate(pictures):
        frame = (av.VideoFrame.from_ndarray(p, format="yuv420p") if pre
                 else av.VideoFrame.from_ndarray(p, format=fmt))
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
    ap.add_argument("--pre", action="store_true", help="convert to 4:2:0 once, beforehand")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    rgb = frames_for(w, h, args.frames)
    kinds = {"rgb": ("rgb24", rgb), "gray": ("gray", [np.ascontiguousarray(p[..., 1]) for p in rgb])}
    if args.pre:
        kinds = {k: (fmt, [av.VideoFrame.from_ndarray(p, format=fmt).reformat(format="yuv420p")
                           .to_ndarray() for p in pics]) for k, (fmt, pics) in kinds.items()}
    ref = {k: encode(pics, fmt, w, h, args.pre) for k, (fmt, pics) in kinds.items()}
    differing = {k: 0 for k in kinds}
    total = {k: 0 for k in kinds}
    lock = threading.Lock()

    def work(kind: str) -> None:
        fmt, pics = kinds[kind]
        for _ in range(args.encodes):
            same = encode(pics, fmt, w, h, args.pre) == ref[kind]
            with lock:
                total[kind] += 1
                differing[kind] += not same

    threads = [threading.Thread(target=work, args=(list(kinds)[i % 2],)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"PyAV {av.__version__}, {w}x{h}, {args.frames} frames per encode, {args.threads} "
          f"threads{', pre-converted' if args.pre else ''}:")
    for k in kinds:
        print(f"  {k:4}: {differing[k]} of {total[k]} encodes differ from the first "
              f"({100 * differing[k] / max(total[k], 1):.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
