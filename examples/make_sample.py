# Cut the demo sample: first 3 s of talking_head_woman_long_hair_1280x720.mp4, scaled to 640x360,
# H.264 CRF 20, plus a generated audio track (880 Hz beep, 0.1 s at every full second).
import sys
import av, numpy as np, fractions
src = av.open(sys.argv[1] if len(sys.argv) > 1 else '../shared/media/talking_head_woman_long_hair_1280x720.mp4')
vs = src.streams.video[0]
out = av.open('examples/sample_talking_head_640x360.mp4', 'w')
ov = out.add_stream('libx264', rate=vs.average_rate); ov.width=640; ov.height=360; ov.pix_fmt='yuv420p'
ov.options = {'crf': '20', 'preset': 'slow'}
oa = out.add_stream('aac', rate=48000); oa.layout = 'mono'
n = 0
for f in src.decode(vs):
    if n >= 90: break
    g = f.reformat(width=640, height=360, format='yuv420p', interpolation='AREA')
    g.pts = n; g.time_base = fractions.Fraction(1, 30)
    for p in ov.encode(g): out.mux(p)
    n += 1
for p in ov.encode(): out.mux(p)
sr = 48000; ns = int(n / 30 * sr); t = np.arange(ns) / sr
sig = np.where((t % 1.0) < 0.1, 0.3 * np.sin(2 * np.pi * 880 * t), 0.0).astype(np.float32)
for k in range(0, ns, 1024):
    af = av.AudioFrame.from_ndarray(sig[None, k:k + 1024].copy(), format='fltp', layout='mono')
    af.sample_rate = sr; af.pts = k
    for p in oa.encode(af): out.mux(p)
for p in oa.encode(): out.mux(p)
out.close()
print(n)
