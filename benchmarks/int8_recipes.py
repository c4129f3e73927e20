#!/usr/bin/env python
"""The int8 network's recipes side by side: where the time goes, CPU per frame, and quality.

Each recipe of ``rvmatte.runtime.int8.RECIPES`` named by ``--recipes`` (default: the one
before the current and the current) quantises the bundled weights' float exports into
``--work`` (once per recipe version and graph; delete the folder to make them again), then:

* ``--profile``: ONNX Runtime's own profile of the coefficients graph at each working size
  (``SessionOptions.enable_profiling``; the session as the ``int8`` backend opens it): time per
  frame by operator type and the costliest nodes, and what the optimised graph holds
  (QuantizeLinear / DequantizeLinear nodes left, quantised and float convolutions).
* model stage: ``FusedRunner.matte_uint8`` to the encoder's 4:2:0 composite planes (the live
  and file paths: downsample, the network, the refiner at full size) on real frames (the
  bundled clip upscaled), the state carried, for each recipe and the float ``fused`` path,
  alternating within each round. Reported: **process CPU time per frame** (all threads; the
  machine is shared, so wall time says more about the neighbours), wall time, and the load
  average. ``--split`` also times the stage's parts (downsample / network / refiner).
* ``--bench DIR`` (a ``rvmatte benchmark make`` folder): MAD and dtSSD of each recipe against
  the float network (ratio 1 at the low resolution runs the full graph, quantised too).

    python benchmarks/int8_recipes.py --profile --bench bench/ --rounds 5
    python benchmarks/int8_recipes.py --recipes 1,2 --sizes 1280x720@0.4 --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rvmatte.runtime import cache, int8, kernels
from rvmatte.runtime.fused import FusedRunner
from rvmatte.runtime.ort import OnnxRuntimeRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import parse_size  # noqa: E402  "WxH@R" -> (H, W, R), as speed.py takes sizes

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample_talking_head_640x360.mp4"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def recipe_files(versions: list[int], work: Path, graphs: tuple[str, ...]) -> dict:
    """``{version: {graph: path}}``: each recipe's int8 files, made in ``work`` if missing."""
    files = {}
    for v in versions:
        if v not in int8.RECIPES:
            raise SystemExit(f"no recipe {v}: known {sorted(int8.RECIPES)}")
        files[v] = {}
        for g in graphs:
            path = work / f"recipe{v}_{g}_ort{int8._ort_version()}.onnx"
            if not path.is_file():
                t = time.perf_counter()
                int8.quantize(cache.bundled_onnx(graph=g), path, graph=g, recipe=int8.RECIPES[v])
                print(f"  recipe {v} {g}: quantised in {time.perf_counter() - t:.0f} s",
                      file=sys.stderr)
            files[v][g] = path
    return files


class FileRunner(FusedRunner):
    """:class:`FusedRunner` over given ONNX files (``{graph: path}``; ``None``: the float
    exports)."""

    def __init__(self, files, **kwargs):
        self._files = files
        super().__init__(**kwargs)

    def _open(self, graph: str):
        if self._files is None:
            return super()._open(graph)
        return OnnxRuntimeRunner(device="cpu", onnx_path=self._files[graph], graph=graph,
                                 threads=self.threads)


# -- profile ---------------------------------------------------------------------------------
def profile(path: Path, w: int, h: int, threads: int, frames: int) -> dict:
    """ONNX Runtime's profile of the coefficients graph ``path`` at ``w`` x ``h``: ms per frame
    by operator type and by node, and the optimised graph's operator counts."""
    import onnx
    import onnxruntime as ort

    tmp = Path(tempfile.mkdtemp(prefix="rvmatte-int8-prof-"))
    runner = OnnxRuntimeRunner(device="cpu", onnx_path=path, graph="coefficients",
                               threads=threads)
    opts = runner.session.get_session_options()  # the backend's options, plus profiling
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "p")
    opts.optimized_model_filepath = str(tmp / "opt.onnx")
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    runner.session = session
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    rec = runner.state_arrays(None)
    for _ in range(frames + 1):
        _, _, *rec = runner.coefficients(x, rec)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, by_node, first = collections.Counter(), collections.Counter(), {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][:-len("_kernel_time")]
        if name not in first:  # the first run (allocations) is left out
            first[name] = True
            continue
        by_op[e["args"]["op_name"]] += e["dur"] / frames / 1000
        by_node[name] += e["dur"] / frames / 1000
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp / "opt.onnx")).graph.node)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return {"total_ms": sum(by_op.values()), "by_op": dict(by_op.most_common()),
            "top_nodes": dict(by_node.most_common(8)), "graph_ops": dict(ops)}


def print_profile(name: str, size: str, p: dict) -> None:
    ops = p["graph_ops"]
    print(f"  {name:9} {size:>8}: {p['total_ms']:6.1f} ms/frame in nodes; optimised graph: "
          f"{ops.get('QuantizeLinear', 0)} Q, {ops.get('DequantizeLinear', 0)} DQ, "
          f"{ops.get('QLinearConv', 0)} QLinearConv, {ops.get('Conv', 0)} float Conv, "
          f"{ops.get('Transpose', 0)} Transpose")
    print("      by op: " + ", ".join(f"{k} {v:.1f}" for k, v in list(p["by_op"].items())[:9]))
    print("      nodes: " + ", ".join(f"{k} {v:.1f}" for k, v in p["top_nodes"].items()))


# -- model stage -----------------------------------------------------------------------------
def clip_frames(w: int, h: int, n: int) -> np.ndarray:
    import av

    with av.open(str(SAMPLE)) as c:
        frames = [f.reformat(width=w, height=h, interpolation="BICUBIC").to_ndarray(format="rgb24")
                  for _, f in zip(range(n), c.decode(video=0))]
    return np.stack(frames)


def stage(runner: FusedRunner, frames: np.ndarray, ratio: float, split: bool) -> dict:
    """CPU and wall ms per frame of the model stage over ``frames`` (state from zero)."""
    cpu, wall = time.process_time(), time.perf_counter()
    coefs, _ = runner.network(frames, None, ratio)
    net_cpu = time.process_time() - cpu
    runner.finish(frames, coefs, outputs=["composite_yuv"], background=(0.0, 1.0, 0.0))
    n = len(frames)
    out = {"cpu_ms": 1000 * (time.process_time() - cpu) / n,
           "wall_ms": 1000 * (time.perf_counter() - wall) / n}
    if split:
        cpu = time.process_time()
        for f in frames:
            kernels.downsample(f, ratio)
        down = 1000 * (time.process_time() - cpu) / n
        out.update(downsample_ms=down, network_ms=1000 * net_cpu / n - down,
                   refiner_ms=out["cpu_ms"] - 1000 * net_cpu / n)
    return out


def time_stages(runners: dict, sizes: list[str], args) -> list[dict]:
    rows = []
    for size in sizes:
        h, w, ratio = parse_size(size)
        frames = clip_frames(w, h, args.frames)
        for r in runners.values():  # warm-up: kernels, allocations
            r.matte_uint8(frames[:2], None, ratio, outputs=["composite_yuv"])
        runs = {k: [] for k in runners}
        for k in range(args.rounds):
            before = load()
            order = list(runners.items())
            order = order[k % len(order):] + order[:k % len(order)]
            for name, r in order:
                runs[name].append(stage(r, frames, ratio, args.split))
            print(f"  {size} round {k + 1}: " + ", ".join(
                f"{n} {runs[n][-1]['cpu_ms']:.1f}" for n in runners)
                + f" ms CPU/frame; load {before} -> {load()}", file=sys.stderr)
        for name, got in runs.items():
            row = {"size": size, "runner": name, "threads": args.threads, "runs": got}
            for key in got[0]:
                row[key] = statistics.median(x[key] for x in got)
            rows.append(row)
    return rows


def print_stages(rows: list[dict], base: str) -> None:
    print(f"\nmodel stage (median of rounds), CPU ms per frame; {base} = the reference")
    for size in dict.fromkeys(r["size"] for r in rows):
        ref = next((r for r in rows if r["size"] == size and r["runner"] == base), None)
        for r in (x for x in rows if x["size"] == size):
            rel = f"{r['cpu_ms'] / ref['cpu_ms']:.2f}x {base}" if ref else ""
            parts = (f"  (downsample {r['downsample_ms']:.1f} / network {r['network_ms']:.1f} / "
                     f"refiner {r['refiner_ms']:.1f})" if "network_ms" in r else "")
            print(f"  {size:>13} {r['runner']:9} CPU {r['cpu_ms']:6.1f}  wall {r['wall_ms']:6.1f}"
                  f"  {rel}{parts}")


# -- quality ---------------------------------------------------------------------------------
def quality(bench: Path, files: dict, threads: int, work: Path) -> dict:
    """MAD and dtSSD of each recipe and the float network on the benchmark ``bench``."""
    import torch

    from rvmatte.evaluation.report import Method, run_benchmark

    def method(name, graphs):
        r = FileRunner(graphs, threads=threads)

        def run(frames, ratio):
            src = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)[None]
            out = r(src, None, float(ratio))
            return out.pha[0, :, 0].numpy(), out.fgr[0].permute(0, 2, 3, 1).numpy()

        return Method(name, name, run)

    methods = [method("float", None)] + [method(f"recipe{v}", g) for v, g in files.items()]
    res = run_benchmark(bench, work / "report", methods=methods, overwrite=True)
    out = {}
    for res_name, r in res["resolutions"].items():
        base = r["methods"]["float"]["mean"]
        for m in methods:
            v = r["methods"][m.name]["mean"]
            out[f"{res_name}/{m.name}"] = {k: v[k] for k in ("mad", "dtssd")} | {
                f"{k}_vs_float": v[k] / base[k] - 1 for k in ("mad", "dtssd")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=f"{int8.RECIPE_VERSION - 1},{int8.RECIPE_VERSION}")
    ap.add_argument("--sizes", default="1280x720@0.4,1280x720@0.25,1920x1080@0.25")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime / kernel threads")
    ap.add_argument("--frames", type=int, default=20, help="frames per timed run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-float", action="store_true", help="leave out the float fused path")
    ap.add_argument("--split", action="store_true", help="time downsample/network/refiner too")
    ap.add_argument("--profile", action="store_true", help="ONNX Runtime's per-node profile")
    ap.add_argument("--bench", type=Path, help="a `rvmatte benchmark make` folder: quality")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rvmatte-int8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    versions = [int(v) for v in args.recipes.split(",") if v]
    sizes = [s for s in args.sizes.split(",") if s]
    args.work.mkdir(parents=True, exist_ok=True)
    from rvmatte.runtime.choose import cpu_name

    print(f"int8_recipes: {cpu_name()}, {os.cpu_count()} CPUs, onnxruntime "
          f"{int8._ort_version()}; recipes {versions}; {args.threads} threads; load {load()}")
    files = recipe_files(versions, args.work, ("coefficients", "full") if args.bench
                         else ("coefficients",))
    out: dict = {"load_start": load(), "threads": args.threads, "recipes": {
        v: int8.RECIPES[v].kept_float for v in versions}}
    if args.profile:
        out["profile"] = {}
        print("\nONNX Runtime profile of the coefficients graph (ms per frame, summed per node)")
        named = {"float": cache.bundled_onnx(graph="coefficients")} | {
            f"recipe{v}": f["coefficients"] for v, f in files.items()}
        for size in sizes:
            h, w, ratio = parse_size(size)
            ws, hs = round(w * ratio), round(h * ratio)
            for name, path in named.items():
                p = profile(path, ws, hs, args.threads, max(5, args.frames // 2))
                out["profile"][f"{ws}x{hs}/{name}"] = p
                print_profile(name, f"{ws}x{hs}", p)
    runners = {} if args.no_float else {"float": FileRunner(None, threads=args.threads)}
    runners |= {f"recipe{v}": FileRunner(f, threads=args.threads) for v, f in files.items()}
    out["stages"] = time_stages(runners, sizes, args)
    print_stages(out["stages"], f"recipe{versions[0]}")
    if args.bench:
        out["quality"] = quality(args.bench, files, args.threads, args.work)
        print("\nquality against the float network")
        for k, v in out["quality"].items():
            print(f"  {k:16} MAD {v['mad']:.4f} ({v['mad_vs_float']:+.2%})  dtSSD "
                  f"{v['dtssd']:.4f} ({v['dtssd_vs_float']:+.2%})")
    out["load_end"] = load()
    print(f"\nload average: {out['load_start']} at the start, {out['load_end']} at the end")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
