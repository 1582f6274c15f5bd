"""Audio front end: waveforms -> log-mel spectrograms that the ViT encodes as 1-channel images.

A clip (B, T) is padded or cut to a fixed length, turned into a power spectrogram by
``torch.stft`` (Hann window), projected onto a mel filterbank computed here (``mel_filterbank``,
HTK or Slaney mel scale, as ``librosa.filters.mel`` / ``torchaudio.functional.melscale_fbanks``),
and compressed to decibels. The decibels are scaled to [0, 1] per clip (the loudest bin is 1,
``top_db`` below it is 0), so a spectrogram is an "image" in the same range as pixels and takes
the same ``normalize``. The output is (B, 1, n_mels, frames); with n_mels == frames it is a
square image of side ``InputSpec.image_size`` (Gong et al. 2021, "AST: Audio Spectrogram
Transformer", feed the ViT spectrogram patches the same way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from selfsup.data.spec import normalize
from selfsup.encoders.trunk import MaskedTokens
from selfsup.encoders.vit import VisionTransformer


def hz_to_mel(f: torch.Tensor | float, scale: str = "htk") -> torch.Tensor:
    """Hertz -> mel. HTK: 2595 log10(1 + f / 700). Slaney: linear (f / (200/3)) below 1 kHz, log above."""
    f = torch.as_tensor(f, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise ValueError(f"unknown mel scale {scale!r}; use htk or slaney")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(f >= min_log_hz, min_log_mel + torch.log(f.clamp(min=1e-10) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m: torch.Tensor | float, scale: str = "htk") -> torch.Tensor:
    """Inverse of ``hz_to_mel``."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"unknown mel scale {scale!r}; use htk or slaney")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "htk",
    norm: str | None = None,
) -> torch.Tensor:
    """Triangular mel filters (n_freqs, n_mels) for a one-sided spectrum of ``n_freqs`` bins.

    Centres are ``n_mels + 2`` points equally spaced in mel between f_min and f_max (default
    Nyquist); filter m rises linearly from centre m - 1 to 1 at centre m and falls to 0 at m + 1
    (in Hz). ``norm="slaney"`` scales each filter by 2 / (f_{m+1} - f_{m-1}) (equal area).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    pts = mel_to_hz(torch.linspace(float(hz_to_mel(f_min, scale)), float(hz_to_mel(f_max, scale)), n_mels + 2,
                                   dtype=torch.float64), scale)
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    up = (freqs[:, None] - lo[None]) / (mid - lo)[None]
    down = (hi[None] - freqs[:, None]) / (hi - mid)[None]
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (hi - lo))[None]
    elif norm is not None:
        raise ValueError(f"unknown filterbank norm {norm!r}; use None or slaney")
    return fb.float()


def pad_or_trim(waves: torch.Tensor | Sequence[torch.Tensor], length: int, offsets: torch.Tensor | None = None):
    """Waveforms (B, T) or a list of (T_i,) -> (B, length): zero-padded at the end or cut.

    ``offsets`` (B,) start each cut there (random crops of long clips); default 0.
    """
    if isinstance(waves, torch.Tensor) and waves.ndim == 2:
        waves = list(waves)
    device = waves[0].device if len(waves) and isinstance(waves[0], torch.Tensor) else None
    out = torch.zeros(len(waves), length, dtype=torch.float32, device=device)
    for i, w in enumerate(waves):  # cheap copies; clips differ in length
        w = torch.as_tensor(w, dtype=torch.float32).reshape(-1)
        start = int(offsets[i]) if offsets is not None else 0
        w = w[start : start + length]
        out[i, : len(w)] = w.to(out.device)
    return out


class LogMel(nn.Module):
    """Waveforms (B, T) at ``sample_rate`` -> log-mel images in [0, 1], (B, 1, n_mels, frames).

    Window 25 ms (Hann; at least the hop), FFT the next power of two, hop chosen so that
    ``frames`` frames span ``clip_seconds``: a clip is padded with silence or cut to that length
    first (``center=True`` STFT framing). Power is mapped to dB, floored ``top_db`` below each clip's maximum, and
    scaled so the floor is 0 and the maximum 1.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        frames: int = 64,
        clip_seconds: float = 1.0,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float = 80.0,
        scale: str = "htk",
    ):
        super().__init__()
        self.sample_rate, self.n_mels, self.frames, self.top_db = sample_rate, n_mels, frames, top_db
        self.hop_length = max(1, round(sample_rate * clip_seconds / frames))
        self.win_length = max(16, round(0.025 * sample_rate), self.hop_length)  # windows cover the clip
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.clip_samples = self.hop_length * (frames - 1)  # center=True gives 1 + T // hop frames
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        fb = mel_filterbank(self.n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max, scale)
        self.register_buffer("filterbank", fb, persistent=False)

    def power_spectrogram(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) -> |STFT|^2 (B, n_fft // 2 + 1, 1 + T // hop)."""
        spec = torch.stft(waves, self.n_fft, self.hop_length, self.win_length, self.window.to(waves.dtype),
                          center=True, pad_mode="reflect", return_complex=True)
        return spec.abs().pow(2)

    def forward(
        self,
        waves: torch.Tensor | Sequence[torch.Tensor],
        lengths: torch.Tensor | None = None,
        random_crop: bool = False,
    ) -> torch.Tensor:
        """Waveforms (B, T) (zero-padded, true ``lengths`` (B,) if known) or a list of (T_i,)
        -> (B, 1, n_mels, frames) in [0, 1].

        ``random_crop`` cuts clips longer than ``clip_seconds`` at a random start (training).
        """
        offsets = None
        if random_crop:
            if lengths is None:
                lengths = torch.tensor([w.shape[-1] if isinstance(w, torch.Tensor) else len(w) for w in waves])
            lengths = torch.as_tensor(lengths).cpu()
            offsets = (torch.rand(len(lengths)) * (lengths - self.clip_samples + 1).clamp(min=0)).long()
        x = pad_or_trim(waves, self.clip_samples, offsets).to(self.filterbank.device)
        with torch.autocast(x.device.type, enabled=False):  # decibels want float32
            mel = self.power_spectrogram(x).transpose(1, 2) @ self.filterbank  # (B, frames, n_mels)
            db = 10.0 * torch.log10(mel.clamp(min=1e-10))
            peak = db.amax(dim=(1, 2), keepdim=True)
            x = (db.clamp(min=peak - self.top_db) - (peak - self.top_db)) / self.top_db
        return x.transpose(1, 2).unsqueeze(1)


def spec_augment(spec: torch.Tensor, freq_mask: int = 8, time_mask: int = 8) -> torch.Tensor:
    """SpecAugment masking (Park et al. 2019): per clip one band of up to ``freq_mask`` mel bins
    and one of up to ``time_mask`` frames set to 0 (silence). (B, 1, n_mels, frames), batched."""
    B, _, M, T = spec.shape
    dev = spec.device
    out = spec
    for width, size, axis in ((freq_mask, M, 2), (time_mask, T, 3)):
        if width <= 0:
            continue
        w = torch.randint(0, width + 1, (B,), device=dev)
        start = (torch.rand(B, device=dev) * (size - w + 1)).long()
        pos = torch.arange(size, device=dev)
        band = (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])  # (B, size)
        shape = (B, 1, size, 1) if axis == 2 else (B, 1, 1, size)
        out = out.masked_fill(band.view(shape), 0.0)
    return out


__all__ = ["LogMel", "mel_filterbank", "hz_to_mel", "mel_to_hz", "pad_or_trim", "spec_augment"]


class AudioViT(VisionTransformer):
    """A ViT on log-mel spectrograms: the audio tokenizer is ``LogMel`` + the ViT's patches.

    Reads waveforms (B, T) (or a batch dict with ``audio`` and ``audio_length``), turns them into
    (B, 1, n_mels, frames) spectrograms in [0, 1] (``LogMel``), normalises them like grey images and
    encodes them as a 1-channel ViT (Gong et al. 2021, AST). The front end has no weights, so the
    state dict is the ViT's (timm names) and exports like one. Masked modelling predicts the
    spectrogram patches.
    """

    modality = "audio"  # what it reads: ``encoders.to_input`` passes waveforms through

    def __init__(self, sample_rate: int, n_mels: int, clip_seconds: float = 1.0, **vit_options):
        super().__init__(img_size=n_mels, in_chans=1, **vit_options)
        self.frontend = LogMel(sample_rate, n_mels, n_mels, clip_seconds)

    def spectrogram(self, x) -> torch.Tensor:
        """Waveforms (B, T), a list of them, or a batch dict -> normalised log-mel (B, 1, n_mels, n_mels);
        a 4-D tensor is taken to be a spectrogram already."""
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            return x
        if isinstance(x, dict):
            x = self.frontend(x["audio"], x.get("audio_length"), random_crop=self.training)
        else:
            x = self.frontend(x)
        return normalize(x)

    def grid_for(self, x) -> tuple[int, int]:
        return self.grid if not (isinstance(x, torch.Tensor) and x.ndim == 4) else super().grid_for(x)

    def embed_patches(self, x, keep: torch.Tensor | None = None) -> torch.Tensor:
        return super().embed_patches(self.spectrogram(x), keep)

    def token_shape(self, x) -> tuple[int, int]:
        return len(x["audio"] if isinstance(x, dict) else x), self.num_patches

    def masked_tokens(self, x, keep: torch.Tensor) -> MaskedTokens:
        """Waveforms -> the ``keep`` spectrogram patch tokens and every patch's values as targets."""
        return super().masked_tokens(self.spectrogram(x), keep)


__all__ += ["AudioViT"]
