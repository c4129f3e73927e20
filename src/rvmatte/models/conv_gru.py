"""Convolutional GRU, the recurrent unit of RVM's decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvGRU(nn.Module):
    """ConvGRU over ``channels`` feature maps.

    ``forward(x, h)``: ``x`` is ``(N, C, H, W)`` (one step) or ``(B, T, C, H, W)`` (steps along
    T); ``h`` is ``(B, C, H, W)`` or ``None`` (zeros). Returns ``(out, h_last)`` where ``out`` has
    the shape of ``x``.
        r, z = sigmoid(conv([x, h]));  c = tanh(conv([x, r*h]));  h' = (1 - z) h + z c
    """

    def __init__(self, channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, kernel_size, padding=padding), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, kernel_size, padding=padding), nn.Tanh())

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * c

    def forward(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        if h is None:
            h = x.new_zeros((x.size(0), x.size(-3), x.size(-2), x.size(-1)))
        if x.ndim == 4:
            h = self.step(x, h)
            return h, h
        out = []
        for xt in x.unbind(dim=1):
            h = self.step(xt, h)
            out.append(h)
        return torch.stack(out, dim=1), h
