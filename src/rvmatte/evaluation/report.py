"""``rvmatte benchmark run``: our model and the peers on a benchmark made by
:mod:`rvmatte.evaluation.benchmark_clips`, scored with :mod:`rvmatte.metrics`.

Writes into a report folder: ``report.md`` (tables), ``results.json`` (all numbers, per clip and
per frame), ``mad_curves_<res>.png`` (per-frame MAD of every method) and ``montage.png``
(input / ground truth / every method, a few frames). Our model is a
:class:`~rvmatte.spec.ModelSpec`, run once per backend (``spec.replace(backend=b)``), only
through :class:`rvmatte.inference.session.Matter`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputError, RvmatteError
from ..spec import ModelSpec
from .evaluate import LABELS
from .frames import list_clips, list_frames, read_alpha, read_rgb, write_alpha
from ..metrics import ALPHA_METRICS, ClipScorer, mean_of_clips
from .peers import PEERS, Peer, available_peers

__all__ = ["run_benchmark", "machine_description", "Method", "build_methods", "missing_peers"]

REPORT_METRICS = (*ALPHA_METRICS, "fgr_mse", "fgr_mse05", "comp_mse")
# fgr MSE over ground-truth alpha > 0.05 (where a foreground's colour shows), and the MSE of a
# composite over a new background against the ground truth's over it (x1e3 both)
EXTRA_LABELS = {"fgr_mse05": "fgr MSE α>.05", "comp_mse": "comp MSE"}
# The post stage's methods (rvmatte.post), run on the first backend: name -> (title, options)
POST_METHODS = {"stabilize": ("stab", "+ stabilise", {"stabilize": True}),
                "foreground": ("fgest", "+ fg estimation", {"refine_foreground": True})}


def machine_description() -> dict:
    """CPU model, core count, OS, torch version and accelerator, for the report."""
    import torch

    from ..hardware import apply_threads

    apply_threads()  # --threads, as the torch runs will have it

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": gpu}


@dataclass
class Method:
    """A thing that mattes a clip: ``run(frames) -> (pha (T,H,W), fgr (T,H,W,3) or None)``."""

    name: str
    title: str
    run: Callable[[list[np.ndarray], Any], tuple[np.ndarray, np.ndarray | None]]


def _ours(name: str, title: str, spec: ModelSpec, benchmark_ratio: bool, chunk: int,
          post: dict | None = None) -> Method:
    """Our model as a method: one session (built now, so a missing backend fails early); each
    clip starts afresh at its ratio -- the benchmark's, or ``spec.downsample`` when
    ``benchmark_ratio`` is false. ``post``: :class:`rvmatte.post.PostOptions` fields; the
    post stage then runs on the network's outputs (fresh state per clip)."""
    from ..inference.session import Matter

    matter = Matter(spec)
    chain = None
    if post:
        from ..post import PostChain, PostOptions, quality_processors

        chain = PostChain(quality_processors(PostOptions(**post)))

    def run(frames: list[np.ndarray], ratio: Any) -> tuple[np.ndarray, np.ndarray]:
        matter.set_downsample_ratio(ratio if benchmark_ratio else spec.downsample)  # new state
        if chain is not None:
            chain.reset()
        phas, fgrs = [], []
        for i in range(0, len(frames), chunk):
            batch = np.stack(frames[i:i + chunk])
            out = matter.process(batch)
            pha, fgr = np.ascontiguousarray(out.pha), np.ascontiguousarray(out.fgr)
            if chain is not None:
                chain(batch, pha, fgr)
            phas.append(pha)
            fgrs.append(fgr)
        return np.concatenate(phas), np.concatenate(fgrs)

    return Method(name, title, run)


def _peer(name: str, model_dir: Path, threads: int | None = None) -> Method:
    peer = Peer(name, model_dir, threads=threads)

    def run(frames: list[np.ndarray], ratio: Any) -> tuple[np.ndarray, None]:
        return np.stack([peer(f) for f in frames]), None

    return Method(name, PEERS[name].title, run)


def _post_methods(spec: ModelSpec, backend: str, post: Sequence[str], benchmark_ratio: bool,
                  chunk: int) -> list[Method]:
    """Our model on ``backend`` with each post-stage option of ``post`` (POST_METHODS)."""
    out = []
    for key in post:
        if key not in POST_METHODS:
            raise InputError(f"unknown post method {key!r} (known: {', '.join(POST_METHODS)})")
        suffix, label, options = POST_METHODS[key]
        base = "rvmatte" if backend == "torch" else f"rvmatte_{backend}"
        out.append(_ours(f"{base}_{suffix}", f"rvmatte {spec.variant} ({backend}) {label}",
                         spec.replace(backend=backend), benchmark_ratio, chunk, post=options))
    return out


def _our_methods(spec: ModelSpec, backends: Sequence[str], benchmark_ratio: bool,
                 chunk: int) -> tuple[list[Method], list[str]]:
    """Our model once per backend (``spec.replace(backend=b)``); a backend that cannot run
    here is skipped with a note, except ``torch`` (the reference)."""
    specs = {b: spec.replace(backend=b) for b in backends}  # an unknown name fails here
    methods: list[Method] = []
    notes: list[str] = []
    for backend, s in specs.items():
        name = "rvmatte" if backend == "torch" else f"rvmatte_{backend}"
        title = f"rvmatte {s.variant} ({backend})"
        if ((backend.startswith("onnxruntime") or backend == "fused")
                and importlib.util.find_spec("onnxruntime") is None):
            notes.append(f"{name}: skipped, onnxruntime is not installed")
            continue
        try:
            methods.append(_ours(name, title, s, benchmark_ratio, chunk))
        except RvmatteError as e:
            if backend == "torch":
                raise
            notes.append(f"{name}: skipped, {e}")
    if spec.variant == "mobilenetv3" and spec.weights == "default":
        notes.append("resnet50: not run, no bundled weights "
                     "(run with --variant resnet50 --weights rvm_resnet50.pth)")
    return methods, notes


def missing_peers(peers_dir: Path | None, peers: Sequence[str] | None = None) -> list[str]:
    """The peers of ``peers`` (default: all) whose ONNX file is not in ``peers_dir``."""
    wanted = list(PEERS) if peers is None else list(peers)
    for n in wanted:
        if n not in PEERS:
            raise InputError(f"unknown peer {n!r} (known: {', '.join(PEERS)})")
    have = available_peers(peers_dir) if peers_dir and Path(peers_dir).is_dir() else []
    return [n for n in wanted if n not in have]


def build_methods(spec: ModelSpec | None = None, *,
                  backends: Sequence[str] = ("torch", "onnxruntime"), peers_dir: Path | None,
                  peers: Sequence[str] | None = None, benchmark_ratio: bool = True,
                  chunk: int = 4, post: Sequence[str] = ()
                  ) -> tuple[list[Method], list[str]]:
    """The methods to compare and notes on those skipped (missing backend, peer file...).

    ``spec``: our model (default: :class:`~rvmatte.spec.ModelSpec`'s); it runs once per
    backend in ``backends``. ``benchmark_ratio``: our model runs at each resolution's ratio
    from the benchmark (its recipe's, so runs compare); false: at ``spec.downsample``.
    ``spec.threads``: CPU threads for our model and the peers' ONNX Runtime sessions.
    ``post``: post-stage methods (``"stabilize"``, ``"foreground"``) of our model on the
    first backend that runs, beside it (none by default; ``rvmatte benchmark run`` adds both
    unless ``--post none``).
    """
    spec = spec if spec is not None else ModelSpec()
    missing = missing_peers(peers_dir, peers)
    methods, notes = _our_methods(spec, backends, benchmark_ratio, chunk)
    if post and methods:
        first = "torch" if methods[0].name == "rvmatte" else methods[0].name[len("rvmatte_"):]
        methods += _post_methods(spec, first, post, benchmark_ratio, chunk)
    for n in (list(PEERS) if peers is None else list(peers)):
        if n in missing:
            notes.append(f"{n}: skipped, {PEERS[n].file} not found in {peers_dir}")
        else:
            methods.append(_peer(n, Path(peers_dir), spec.threads))
    return methods, notes


def _load_manifest(bench: Path) -> dict:
    try:
        return json.loads((bench / "benchmark.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{bench} is not a benchmark folder (no benchmark.json); make one with "
                         "`rvmatte benchmark make`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {bench / 'benchmark.json'}: {e}") from None


def run_benchmark(bench: str | os.PathLike, out: str | os.PathLike, *, methods: list[Method],
                  notes: Sequence[str] = (), resolutions: Sequence[str] | None = None,
                  max_frames: int | None = None, save_predictions: bool = False,
                  montage_frames: int = 2, overwrite: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Score ``methods`` on every clip of the benchmark folder ``bench``; write the report.

    Returns the ``results.json`` object.
    """
    bench, out = Path(bench), Path(out)
    manifest = _load_manifest(bench)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} exists and is not empty (pass --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    res_names = [r for r in manifest["resolutions"] if (bench / r).is_dir()]
    if resolutions is not None:
        missing = [r for r in resolutions if r not in res_names]
        if missing:
            raise InputError(f"resolution(s) {missing} not in {bench} (has: {', '.join(res_names)})")
        res_names = [r for r in res_names if r in resolutions]
    results: dict = {"machine": machine_description(), "benchmark": {
        "name": manifest["recipe"]["name"], "seed": manifest["recipe"]["seed"], "path": str(bench)},
        "methods": {m.name: m.title for m in methods}, "notes": list(notes), "resolutions": {}}
    montage: list[dict] = []
    for res in res_names:
        info = manifest["resolutions"][res]
        ratio = info.get("downsample_ratio", "auto")
        per_method: dict[str, dict] = {m.name: {"clips": {}, "per_frame_mad": {}, "seconds": 0.0,
                                                "frames": 0} for m in methods}
        clips = list_clips(bench / res / "com")
        warm = read_rgb(bench / res / "com" / clips[0] / list_frames(bench / res / "com" / clips[0])[0])
        for m in methods:  # untimed warm-up (first-call allocations, ONNX session setup)
            m.run([warm], ratio)
        for ci, clip in enumerate(clips):
            names = list_frames(bench / res / "com" / clip)[:max_frames]
            frames = [read_rgb(bench / res / "com" / clip / n) for n in names]
            gts = [read_alpha(bench / res / "pha" / clip / n) for n in names]
            fgr_dir = bench / res / "fgr" / clip
            gt_fgr = [read_rgb(fgr_dir / n).astype(np.float64) / 255 for n in names] \
                if fgr_dir.is_dir() else None
            picks = [len(names) // 2] if ci < montage_frames else []  # the middle frame
            shots = {"res": res, "clip": clip, "frame": names[picks[0]] if picks else None,
                     "input": frames[picks[0]] if picks else None,
                     "gt": gts[picks[0]] if picks else None, "preds": {}}
            for m in methods:
                if progress:
                    progress(f"{res} {clip}: {m.name}")
                t0 = time.perf_counter()
                pha, fgr = m.run(frames, ratio)
                dt = time.perf_counter() - t0
                with_fgr = fgr is not None and gt_fgr is not None
                scorer = ClipScorer(metrics=(*ALPHA_METRICS, "fgr_mse") if with_fgr
                                    else ALPHA_METRICS)
                extra: dict[str, list[float]] = {"fgr_mse05": [], "comp_mse": []}
                for t, g in enumerate(gts):
                    scorer.add(pha[t], g, None if fgr is None else fgr[t],
                               None if gt_fgr is None else gt_fgr[t])
                    if with_fgr:
                        for k, v in foreground_errors(pha[t], fgr[t], g, gt_fgr[t]).items():
                            extra[k].append(v)
                pm = per_method[m.name]
                pm["clips"][clip] = {**scorer.means(), **{k: float(np.nanmean(v))
                                                         for k, v in extra.items() if v}}
                pm.setdefault("motion", {})[clip] = _clip_motion(info, clip)
                pm["per_frame_mad"][clip] = scorer.frames["mad"]
                pm["seconds"] += dt
                pm["frames"] += len(frames)
                if picks:
                    shots["preds"][m.name] = pha[picks[0]]
                if save_predictions:
                    d = out / "predictions" / res / m.name / clip
                    d.mkdir(parents=True, exist_ok=True)
                    for t, n in enumerate(names):
                        write_alpha(d / n, pha[t])
            if picks:
                montage.append(shots)
        for pm in per_method.values():
            pm["mean"] = mean_of_clips(pm["clips"].values())
            kinds = sorted(set(pm.get("motion", {}).values()))
            if len(kinds) > 1:
                pm["by_motion"] = {k: mean_of_clips(c for n, c in pm["clips"].items()
                                                    if pm["motion"][n] == k) for k in kinds}
            pm["fps"] = pm["frames"] / pm["seconds"] if pm["seconds"] > 0 else None
        h, w = gts[0].shape
        results["resolutions"][res] = {"width": w, "height": h, "clips": len(clips),
                                       "frames_per_clip": len(names), "downsample_ratio": ratio,
                                       "methods": per_method}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(format_report(results))
    from .plots import plot_mad_curves, save_montage

    for res, r in results["resolutions"].items():
        plot_mad_curves(r["methods"], results["methods"], out / f"mad_curves_{res}.png",
                        title=f"Per-frame MAD, {res} ({r['width']}x{r['height']})")
    if montage:
        save_montage(montage, [m.name for m in methods], out / "montage.png")
    return results


def _clip_motion(info: dict, clip: str) -> str:
    """A clip's motion kind from the manifest ("smooth" unless its plan says otherwise)."""
    for p in info.get("plan", ()):
        if p.get("clip") == clip:
            return p.get("motion", "smooth")
    return "smooth"


def new_background(h: int, w: int) -> np.ndarray:
    """The composite metric's new background: a fixed colour ramp with a fine checker, unlike
    any clip's (so the old background's colour in a foreground shows)."""
    y = np.linspace(0, 1, h, dtype=np.float64)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float64)[None, :]
    checker = (((np.arange(h)[:, None] // 8) + (np.arange(w)[None, :] // 8)) % 2) * 0.15
    zero = np.zeros((h, w))
    return np.stack([zero + 0.8 * x + checker, zero + 0.3 + 0.4 * y,
                     zero + 0.9 - 0.6 * x + checker], -1).clip(0, 1)


def foreground_errors(pha: np.ndarray, fgr: np.ndarray, gt_pha: np.ndarray,
                      gt_fgr: np.ndarray) -> dict:
    """``fgr_mse05``: foreground MSE over ground-truth alpha > 0.05; ``comp_mse``: MSE of the
    composite over :func:`new_background` against the ground truth's (both x1e3)."""
    mask = gt_pha > 0.05
    f05 = float(((fgr[mask] - gt_fgr[mask]) ** 2).mean() * 1e3) if mask.any() else float("nan")
    bg = new_background(*gt_pha.shape)
    a, g = pha[..., None].astype(np.float64), gt_pha[..., None]
    comp = fgr * a + bg * (1 - a)
    gt = gt_fgr * g + bg * (1 - g)
    return {"fgr_mse05": f05, "comp_mse": float(((comp - gt) ** 2).mean() * 1e3)}


def format_report(results: dict) -> str:
    """The markdown report of a :func:`run_benchmark` result."""
    m = results["machine"]
    b = results["benchmark"]
    lines = [f"# rvmatte quality benchmark: {b['name']} (seed {b['seed']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['arch']}), GPU: {m['gpu']}; "
             f"{m['os']}, Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads).",
             "", "MAD, MSE, fgr MSE x1e3; Grad, Conn /1e3; dtSSD x1e2 (lower is better). "
             "Peers are segmentation models: they have no foreground output and no temporal memory.",
             ""]
    for res, r in results["resolutions"].items():
        lines += [f"## {res}: {r['width']}x{r['height']}, {r['clips']} clips x {r['frames_per_clip']} "
                  f"frames, our downsample ratio {r['downsample_ratio']}", "",
                  "| method | " + " | ".join({**LABELS, **EXTRA_LABELS}[k]
                                               for k in REPORT_METRICS) + " | FPS |",
                  "|---|" + "---:|" * (len(REPORT_METRICS) + 1)]
        for name, pm in r["methods"].items():
            cells = [f"{pm['mean'][k]:.2f}" if k in pm["mean"] else "–" for k in REPORT_METRICS]
            fps = f"{pm['fps']:.1f}" if pm.get("fps") else "–"
            lines.append(f"| {results['methods'][name]} | " + " | ".join(cells) + f" | {fps} |")
        lines.append("")
        lines += _motion_table(results, r)
    if results["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in results["notes"]], ""]
    lines += ["Files: `results.json` (per clip and per frame), `mad_curves_<res>.png`, `montage.png`.", ""]
    return "\n".join(lines)


def _motion_table(results: dict, r: dict) -> list[str]:
    """Per motion kind (still / smooth / fast clips): MAD, MSE, Grad, dtSSD of each method."""
    keys = ("mad", "mse", "grad", "dtssd")
    rows = [(n, pm["by_motion"]) for n, pm in r["methods"].items() if "by_motion" in pm]
    if not rows:
        return []
    kinds = list(rows[0][1])
    lines = ["By clip motion (" + ", ".join(kinds) + "): " + ", ".join(LABELS[k] for k in keys),
             "", "| method | " + " | ".join(f"{kd} {LABELS[k]}" for kd in kinds for k in keys)
             + " |", "|---|" + "---:|" * (len(kinds) * len(keys))]
    for name, by in rows:
        cells = [f"{by[kd][k]:.2f}" if k in by.get(kd, {}) else "–" for kd in kinds for k in keys]
        lines.append(f"| {results['methods'][name]} | " + " | ".join(cells) + " |")
    return lines + [""]
