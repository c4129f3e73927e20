"""Guidance channels: a clean background plate and/or a person mask as extra network inputs.

The paper's list of improvements asks for auxiliary inputs (a background image as in BGM, a
mask as in DVM). They enter the network in one place: a 3x3 stride-2 convolution of the
guidance channels (:class:`~rvmatte.models.matting.GuidanceStem`) whose output is added to the encoder's stem features
(after the stem's BatchNorm, before its activation), so they reach every encoder stage and,
through the skip connections, the decoder.

Built so that a guided network is the plain one plus something that starts at nothing:

* the convolution is initialised to zero, so the plain network's weights (the bundled ones,
  an official ``.pth``) load unchanged and the output is bit-identical to the plain network's;
* it has no bias, so an absent input (all zeros) contributes exactly nothing, also after
  training: a guided network without guidance is its own plain network.

The inputs are given like the source frames (same shape but the channels, values in [0, 1],
not mean-subtracted, so that zeros mean "absent"): ``plate`` (3 channels) a photo of the empty
scene, ``mask`` (1 channel) the person(s) to matte.

This module is free of PyTorch (:class:`rvmatte.ModelSpec` checks the names with it).
"""

from __future__ import annotations

from typing import Iterable, Union

# Input name -> channels, in the order they are concatenated.
GUIDANCE_CHANNELS = {"plate": 3, "mask": 1}


def guidance_inputs(names: Union[None, str, Iterable[str]]) -> tuple[str, ...]:
    """``None``/``""``/``()`` -> ``()``; ``"plate,mask"`` or ``["mask", "plate"]`` ->
    ``("plate", "mask")`` (the canonical order). ``ValueError`` on an unknown name."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in GUIDANCE_CHANNELS]
    if unknown:
        raise ValueError(f"unknown guidance input {unknown[0]!r}; choose from "
                         f"{', '.join(GUIDANCE_CHANNELS)}")
    return tuple(n for n in GUIDANCE_CHANNELS if n in names)
