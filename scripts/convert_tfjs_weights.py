#!/usr/bin/env python3
"""Convert the official RVM MobileNetV3 TensorFlow.js model into an rvmatte state dict.

Run once; the result ships in ``src/rvmatte/assets/`` and its sha256 is pinned in
``rvmatte/weights.py``::

    python scripts/convert_tfjs_weights.py PATH/TO/rvm_mobilenetv3_tfjs \
        --out src/rvmatte/assets/rvm_mobilenetv3_fgf.pth \
        --constants tests/fixtures/tfjs_constants.json

Format (``model.json`` ``weightsManifest``): the tensors follow one another in the binary
shard(s) in manifest order; uint8-quantised tensors decode as ``float32(q * scale + min)``
(double arithmetic, stored as float32, as tfjs does). Kernels are HWIO (conv) or HWC1
(depthwise). The TF.js converter folded batch-norm into the convolutions (a kernel plus an
``_bn_offset``), except for the three dilated depthwise convolutions, which keep a separate
``FusedBatchNormV3/Scaled`` (multiplier) and ``Offset``.

BatchNorm is un-folded so that it is *exactly* ``x * gamma + beta`` in float32: running mean 0
and a running variance chosen so that ``float32(var + eps) == 1`` (then ``1/sqrt(var+eps)`` is
exactly 1). Folded convs get gamma = 1 and beta = offset; the dilated depthwise convs get
gamma = Scaled and beta = Offset. The model has no segmentation head: ``project_seg`` is zeroed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rvmatte.models import build_model  # noqa: E402

PREFIX = "StatefulPartitionedCall/matting_network_wrapper/StatefulPartitionedCall/"
_STORED = {"float32": ("<f4", 4), "int32": ("<i4", 4), "bool": ("u1", 1), "uint8": ("u1", 1),
           "uint16": ("<u2", 2)}


def read_tfjs(model_dir: Path) -> dict[str, np.ndarray]:
    """Decode every tensor of a tfjs graph model (names without the common prefix)."""
    manifest = json.loads((model_dir / "model.json").read_text())["weightsManifest"]
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for spec in group["weights"]:
            shape = tuple(spec["shape"])
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            q = spec.get("quantization")
            dt, size = _STORED[q["dtype"] if q else spec["dtype"]]
            raw = np.frombuffer(buf, dtype=dt, count=n, offset=off)
            off += n * size
            if q:
                val = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            else:
                val = raw.copy()
            # Strip the common prefix (also where the converter nested it under ConstantFolding/).
            name = spec["name"].replace(PREFIX, "", 1)
            out[name] = val.reshape(shape)
        if off != len(buf):
            raise ValueError(f"decoded {off} bytes but the shards hold {len(buf)}")
    return out


def unit_variance(eps: float) -> float:
    """A float32 variance v with float32(v + eps) == 1 exactly."""
    v = np.float32(1.0) - np.float32(eps)
    for _ in range(64):
        s = np.float32(v) + np.float32(eps)
        if s == np.float32(1.0):
            return float(v)
        v = np.nextafter(v, np.float32(2.0) if s < 1 else np.float32(0.0), dtype=np.float32)
    raise RuntimeError("no exact unit variance found")


def conv_kernel(w: np.ndarray, depthwise: bool) -> torch.Tensor:
    # HWIO -> OIHW ; depthwise HWC1 -> C1HW
    return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1) if depthwise else w.transpose(3, 2, 0, 1)))


class Mapper:
    def __init__(self, tf: dict[str, np.ndarray], model: torch.nn.Module) -> None:
        self.tf = tf
        self.used: set[str] = set()
        self.model = model
        self.sd = {k: v.clone() for k, v in model.state_dict().items()}
        self.filled: set[str] = set()

    def take(self, name: str) -> np.ndarray:
        if name not in self.tf:
            raise KeyError(f"TF.js tensor not found: {name}")
        self.used.add(name)
        return self.tf[name]

    def put(self, key: str, value: torch.Tensor) -> None:
        if key not in self.sd:
            raise KeyError(f"no such parameter in our model: {key}")
        if tuple(self.sd[key].shape) != tuple(value.shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} != model {tuple(self.sd[key].shape)}")
        self.sd[key] = value.to(self.sd[key].dtype)
        self.filled.add(key)

    def bn(self, prefix: str, gamma: np.ndarray, beta: np.ndarray) -> None:
        c = beta.shape[0]
        eps = self.model.get_submodule(prefix).eps  # 1e-3 in torchvision's MobileNetV3, else 1e-5
        self.put(f"{prefix}.weight", torch.from_numpy(np.asarray(gamma, np.float32).copy()))
        self.put(f"{prefix}.bias", torch.from_numpy(beta.astype(np.float32).copy()))
        self.put(f"{prefix}.running_mean", torch.zeros(c))
        self.put(f"{prefix}.running_var", torch.full((c,), unit_variance(eps)))
        self.put(f"{prefix}.num_batches_tracked", torch.tensor(0))

    def folded(self, tf_prefix: str, conv_key: str, bn_key: str, depthwise: bool) -> None:
        """``tf_prefix`` + ``_weights`` / ``_bn_offset`` -> conv weight + identity BN with offset."""
        w = self.take(tf_prefix + "_weights")
        off = self.take(tf_prefix + "_bn_offset")
        self.put(f"{conv_key}.weight", conv_kernel(w, depthwise))
        self.bn(bn_key, np.ones_like(off), off)

    def plain(self, tf_prefix: str, conv_key: str, bias: bool) -> None:
        """A conv without BN: ``tf_prefix/Conv2D/ReadVariableOp`` (+ ``BiasAdd``)."""
        self.put(f"{conv_key}.weight", conv_kernel(self.take(f"{tf_prefix}/Conv2D/ReadVariableOp"), False))
        if bias:
            self.put(f"{conv_key}.bias", torch.from_numpy(self.take(f"{tf_prefix}/BiasAdd/ReadVariableOp").copy()))


def _num(s: str) -> int:
    m = re.search(r"_(\d+)$", s)
    return int(m.group(1)) if m else 0


def convert(tf: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict]:
    model = build_model(variant="mobilenetv3", refiner="fast_guided_filter")
    m = Mapper(tf, model)
    enc = "mobile_net_v3_encoder/"

    # Stem: features.0
    m.folded(enc + "conv_bn_activation/conv2d/Conv2D", "backbone.features.0.0", "backbone.features.0.1", False)

    # Inverted residual blocks: TF inverted_residual[_k] -> features[k+1].
    blocks: dict[int, dict] = defaultdict(lambda: {"cba": {}, "se": []})
    for name in tf:
        mm = re.match(rf"{enc}(inverted_residual(?:_\d+)?)/sequential(?:_\d+)?/(.*)$", name)
        if not mm:
            continue
        k = _num(mm.group(1))
        rest = mm.group(2)
        cba = re.match(r"(conv_bn_activation_\d+)/", rest)
        if cba:
            blocks[k]["cba"].setdefault(_num(cba.group(1)), set()).add(name)
        se = re.match(r"(squeeze_excitation(?:_\d+)?)/(conv2d_\d+)/Conv2D/ReadVariableOp$", rest)
        if se:
            blocks[k]["se"].append(name)
    for k in sorted(blocks):
        feat = f"backbone.features.{k + 1}"
        block = model.backbone.features[k + 1].block
        # Conv2dNormActivation children of the block, in order, and the SE module (if any).
        conv_children = [i for i, child in enumerate(block) if child.__class__.__name__ == "Conv2dNormActivation"]
        se_children = [i for i, child in enumerate(block) if child.__class__.__name__ == "SqueezeExcitation"]
        cbas = sorted(blocks[k]["cba"])
        if len(cbas) != len(conv_children):
            raise ValueError(f"block {k}: {len(cbas)} TF convs vs {len(conv_children)} torch convs")
        for n, ci in zip(cbas, conv_children):
            names = blocks[k]["cba"][n]
            conv = block[ci][0]
            depthwise = conv.groups > 1
            folded = [x for x in names if x.endswith("_weights")]
            key = f"{feat}.block.{ci}"
            if folded:
                m.folded(folded[0][: -len("_weights")], f"{key}.0", f"{key}.1", depthwise)
            else:  # dilated depthwise conv: raw kernel + separate BN multiplier/offset
                w = [x for x in names if x.endswith("/depthwise/ReadVariableOp")][0]
                scaled = [x for x in names if x.endswith("FusedBatchNormV3/Scaled")][0]
                offset = [x for x in names if x.endswith("FusedBatchNormV3/Offset")][0]
                m.put(f"{key}.0.weight", conv_kernel(m.take(w), True))
                m.bn(f"{key}.1", m.take(scaled), m.take(offset))
        if se_children:
            se_convs = sorted(blocks[k]["se"], key=lambda x: _num(x.split("/")[-3]))
            if len(se_convs) != 2:
                raise ValueError(f"block {k}: expected 2 SE convs, got {se_convs}")
            for fc, tf_name in zip(("fc1", "fc2"), se_convs):
                m.plain(tf_name[: -len("/Conv2D/ReadVariableOp")], f"{feat}.block.{se_children[0]}.{fc}", True)
    # Last 1x1 conv: features.16
    m.folded(enc + "conv_bn_activation_45/conv2d_46/Conv2D", "backbone.features.16.0", "backbone.features.16.1", False)

    # LR-ASPP
    m.folded("lraspp/sequential_15/conv2d_47/Conv2D", "aspp.aspp1.0", "aspp.aspp1.1", False)
    m.plain("lraspp/conv2d_48", "aspp.aspp2.1", False)

    # Decoder
    dec = "recurrent_decoder/"
    m.plain(dec + "bottleneck_block/conv_gru/conv2d_49", "decoder.decode4.gru.ih.0", True)
    m.plain(dec + "bottleneck_block/conv_gru/conv2d_50", "decoder.decode4.gru.hh.0", True)
    for tf_block, ours, seq, c0, gru in (("upsampling_block", "decode3", 16, 51, 1),
                                         ("upsampling_block_1", "decode2", 17, 54, 2),
                                         ("upsampling_block_2", "decode1", 18, 57, 3)):
        m.folded(f"{dec}{tf_block}/sequential_{seq}/conv2d_{c0}/Conv2D",
                 f"decoder.{ours}.conv.0", f"decoder.{ours}.conv.1", False)
        m.plain(f"{dec}{tf_block}/conv_gru_{gru}/conv2d_{c0 + 1}", f"decoder.{ours}.gru.ih.0", True)
        m.plain(f"{dec}{tf_block}/conv_gru_{gru}/conv2d_{c0 + 2}", f"decoder.{ours}.gru.hh.0", True)
    m.folded(dec + "output_block/sequential_19/conv2d_60/Conv2D", "decoder.decode0.conv.0", "decoder.decode0.conv.1", False)
    m.folded(dec + "output_block/sequential_19/conv2d_61/Conv2D", "decoder.decode0.conv.3", "decoder.decode0.conv.4", False)
    m.plain("conv2d_62", "project_mat.conv", True)

    # No segmentation head in the TF.js model.
    m.put("project_seg.conv.weight", torch.zeros_like(m.sd["project_seg.conv.weight"]))
    m.put("project_seg.conv.bias", torch.zeros_like(m.sd["project_seg.conv.bias"]))

    missing = sorted(set(m.sd) - m.filled)
    if missing:
        raise ValueError(f"parameters left unmapped: {missing[:10]} ({len(missing)})")
    float_params = {n for n, v in tf.items() if v.dtype == np.float32 and v.ndim >= 1 and v.size > 3}
    unused = sorted(n for n in float_params - m.used
                    if not n.endswith("truediv_recip") and not n.endswith("/Const") and "Func/input" not in n)
    constants = {
        "mean": tf[enc + "Const"].tolist(),
        "inv_std": tf["ConstantFolding/" + enc + "truediv_recip"].tolist(),
    }
    return m.sd, {"unused": unused, "constants": constants, "mapped_tf_tensors": len(m.used)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="folder with model.json and the .bin shard")
    ap.add_argument("--out", type=Path, default=ROOT / "src/rvmatte/assets/rvm_mobilenetv3_fgf.pth")
    ap.add_argument("--constants", type=Path, default=None,
                    help="write the graph's (quantised) normalisation constants to this JSON")
    args = ap.parse_args(argv)

    sd, info = convert(read_tfjs(args.model_dir))
    if info["unused"]:
        print("warning: TF.js float tensors not mapped:", *info["unused"], sep="\n  ")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"mapped {info['mapped_tf_tensors']} TF.js tensors onto {len(sd)} state-dict entries")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)\nsha256 {digest}")
    if args.constants:
        args.constants.parent.mkdir(parents=True, exist_ok=True)
        args.constants.write_text(json.dumps(info["constants"], indent=2) + "\n")
        print(f"graph normalisation constants -> {args.constants}: {info['constants']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
