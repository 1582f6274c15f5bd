"""Audio (mono waveforms (B, T)): SpecAugment on the log-mel spectrogram as the view.

The audio encoder (``encoders.audio.AudioViT``) reads waveforms or its own normalised log-mel
spectrograms (B, 1, M, M); a view is the spectrogram (a random crop of a longer clip) with one
frequency band and one time band silenced (Park et al. 2019).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.spec import normalize
from selfsup.encoders.audio import spec_augment
from selfsup.modalities import DataType, register


class Audio(DataType):
    name = "audio"

    def views(self, x, count: int, encoder: nn.Module) -> list[torch.Tensor]:
        mel = encoder.frontend(x, random_crop=True)  # (B, 1, M, M) in [0, 1]
        return [normalize(spec_augment(mel)) for _ in range(count)]


register(Audio())
