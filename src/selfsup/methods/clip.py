"""Contrastive language-image (and audio-text) pretraining: CLIP and SigLIP.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") embeds images and their captions in one space and trains both encoders with a
symmetric InfoNCE loss over the batch: image i must pick caption i among all captions and vice
versa, with a learnable temperature (logit scale, clamped at 100). SigLIP (Zhai et al. 2023,
"Sigmoid Loss for Language Image Pre-Training") replaces the softmax by an independent binary
decision per (image, caption) pair, with a learnable temperature and bias.

The same code does audio-text: for an audio ``InputSpec`` the "image" is the log-mel
spectrogram of ``batch["audio"]`` (``encoders.audio.LogMel``), and the same encoder (a ViT by
default) reads it as a 1-channel image. The text tower is a small transformer over a BPE
tokenizer fitted on the run's captions in ``prepare`` and carried inside the state dict.

Continuing a public CLIP / SigLIP (``pretrain --init``, ``methods.warmstart``) builds both towers
from its configs (``text``, ``image_projection``) and keeps its tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from tokenizers import Tokenizer
from torch import nn

from selfsup import distributed
from selfsup.data.augment import horizontal_flip, random_resized_crop
from selfsup.data.spec import InputSpec, captions_of, to_float
from selfsup.encoders import EncoderConfig, build_encoder, to_input
from selfsup.encoders.audio import LogMel, spec_augment
from selfsup.encoders.text import TextConfig, TextTransformer, build_text, train_tokenizer
from selfsup.methods.base import Method
from selfsup.methods.gather import gather_offset, gather_with_grad


class CLIPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = 256
    vocab_size: int = 4096
    context_length: int = 32
    text_width: int = 256
    text_depth: int = 4
    text_heads: int = 4
    text_causal: bool = True
    text_pool: Literal["eot", "mean", "cls"] = "eot"
    init_logit_scale: float = math.log(1 / 0.07)  # log of the inverse temperature
    max_logit_scale: float = 100.0
    gather: bool = True  # negatives from all processes under DDP
    crop_scale: tuple[float, float] = (0.5, 1.0)  # image training crops; (1, 1) turns them off
    flip: bool = False  # captions say "left" and "right"
    clip_seconds: float = 1.0  # audio: the spectrogram spans this long
    spec_augment: bool = True  # audio: one frequency and one time mask per clip in training
    tokenizer_samples: int = 200_000  # samples read to fit the tokenizer
    # -- continuing a public model (methods.warmstart fills these from it)
    text: TextConfig | None = None  # the whole text tower's config; replaces the text_* fields and vocab_size
    image_projection: bool = True  # False: pooled image features are the joint embedding (SigLIP)
    projection_bias: bool = False


class SigLIPConfig(CLIPConfig):
    init_logit_scale: float = math.log(10.0)  # t' with t = exp(t') = 10
    init_logit_bias: float = -10.0


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor | float, gather: bool = False):
    """Symmetric InfoNCE (Radford et al. 2021, Figure 3): mean of image->text and text->image CE.

    img, txt (n, E), L2-normalised, row i of each a matching pair; ``logit_scale`` the multiplier
    (exp of the learnable log scale). logits = scale * img @ txt.T, targets the diagonal. With
    ``gather`` the other side comes from all processes (local rows, global columns).
    """
    n = img.shape[0]
    all_img, all_txt = (gather_with_grad(img), gather_with_grad(txt)) if gather else (img, txt)
    target = torch.arange(n, device=img.device) + (gather_offset(n) if gather else 0)
    loss_i = F.cross_entropy(logit_scale * img @ all_txt.T, target)
    loss_t = F.cross_entropy(logit_scale * txt @ all_img.T, target)
    return (loss_i + loss_t) / 2


def siglip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    t: torch.Tensor | float,
    b: torch.Tensor | float,
    gather: bool = False,
) -> torch.Tensor:
    """Pairwise sigmoid loss (Zhai et al. 2023, Algorithm 1).

    img, txt (n, E), L2-normalised; ``t`` the temperature multiplier (exp of the learnable t'),
    ``b`` the bias. logits_ij = t img_i . txt_j + b, z_ij = 1 on matching pairs and -1 elsewhere;
    loss = -(1/n) sum_ij log sigmoid(z_ij logits_ij). Symmetric in img and txt. With ``gather``
    local images meet the captions of all processes, which covers every pair once.
    """
    n = img.shape[0]
    all_txt = gather_with_grad(txt) if gather else txt
    logits = t * img @ all_txt.T + b  # (n, N)
    offset = gather_offset(n) if gather else 0
    z = -torch.ones_like(logits)
    z[torch.arange(n, device=img.device), offset + torch.arange(n, device=img.device)] = 1.0
    return -F.logsigmoid(z * logits).sum() / n


def iter_captions(source, limit: int | None = None) -> Iterator[str]:
    """Caption strings from a source (``dataset()`` of sample dicts), an iterable of samples or of str.

    Every caption of a sample (``data.spec.captions_of``); at most ``limit`` samples. A source is
    read whole by every process (``ranks=(0, 1)``), so all fit the same tokenizer on the same captions.
    """
    samples = source.dataset(ranks=(0, 1)) if hasattr(source, "dataset") else source
    for i, s in enumerate(samples):
        if limit is not None and i >= limit:
            break
        if isinstance(s, str):
            yield s
        elif isinstance(s, dict) and "__skip__" not in s:
            yield from captions_of(s)


class CLIP(Method):
    """Image (or audio) encoder + text transformer in a joint space; ``forward`` returns the loss."""

    Config = CLIPConfig

    def __init__(self, cfg: CLIPConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        self.cfg = cfg
        self.audio = spec.modality.startswith("audio")
        if self.audio:  # a log-mel "image" of side image_size: n_mels = frames = image_size
            spec = dataclasses.replace(spec, channels=1)
            self.frontend = LogMel(spec.sample_rate or 16000, spec.image_size, spec.image_size, cfg.clip_seconds)
        self.spec = spec
        # the front end above makes the spectrograms: the encoder is the plain ViT that reads them
        self.encoder = build_encoder(encoder, dataclasses.replace(spec, modality="image") if self.audio else spec)
        if cfg.image_projection:
            self.image_projection = nn.Linear(self.encoder.num_features, cfg.embed_dim, bias=cfg.projection_bias)
            nn.init.normal_(self.image_projection.weight, std=self.encoder.num_features**-0.5)
            if cfg.projection_bias:
                nn.init.zeros_(self.image_projection.bias)
        else:
            self.image_projection = nn.Identity()
        if cfg.text is not None:
            self.text = build_text(cfg.text)
        else:
            self.text = TextTransformer(
                cfg.vocab_size, cfg.context_length, cfg.text_width, cfg.text_depth, cfg.text_heads,
                cfg.embed_dim, causal=cfg.text_causal, pool=cfg.text_pool,
            )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    # -- continuing a public model ----------------------------------------------------------------
    @staticmethod
    def warm_start_options(ws) -> dict:
        """Options that rebuild the public model's towers (``methods.warmstart``)."""
        t = ws.towers
        proj = t.image_projection
        options = {"text": t.text_config.model_dump(), "image_projection": proj is not None,
                   "projection_bias": proj is not None and proj.bias is not None,
                   "embed_dim": proj.out_features if proj is not None else t.vision.num_features,
                   "init_logit_scale": float(t.logit_scale),
                   "max_logit_scale": max(CLIPConfig().max_logit_scale, math.exp(float(t.logit_scale)))}
        if t.logit_bias is not None:
            options["init_logit_bias"] = float(t.logit_bias)
        return options

    def warm_start(self, ws) -> None:
        """The text tower (with its tokenizer), the image projection, logit scale and bias of ``ws.towers``."""
        from selfsup.methods.warmstart import load_weights

        t = ws.towers
        load_weights(self.text, t.text.state_dict(), "text tower", ws.ref)
        self.text.missing_tokenizer_reason = t.text.missing_tokenizer_reason
        if t.image_projection is not None:
            load_weights(self.image_projection, t.image_projection.state_dict(), "image projection", ws.ref)
        with torch.no_grad():
            self.logit_scale.fill_(float(t.logit_scale))
            if t.logit_bias is not None and hasattr(self, "logit_bias"):
                self.logit_bias.fill_(float(t.logit_bias))

    # -- tokenizer ------------------------------------------------------------------------------
    def prepare(self, source, run_dir: str | Path | None = None) -> None:
        """Fit the BPE tokenizer on the source's captions (or reuse ``run_dir/tokenizer.json``).

        A text tower continued from a public model keeps that model's tokenizer (saved to
        ``run_dir/tokenizer.json`` for a resume); a public tower without one cannot be trained on text.
        """
        path = Path(run_dir) / "tokenizer.json" if run_dir is not None else None
        if self.text.tokenizer_json.numel():  # a public model's own tokenizer
            if path is not None and not path.exists() and distributed.is_global_zero():
                path.parent.mkdir(parents=True, exist_ok=True)
                self.text.tokenizer.save(str(path))
            return
        if path is not None and path.exists():
            tok = Tokenizer.from_file(str(path))
        elif self.cfg.text is not None:
            raise ValueError(self.text.missing_tokenizer_reason or "this text tower comes from a public model and "
                             "needs that model's tokenizer.json; a new tokenizer would not match its vocabulary")
        else:
            tok = train_tokenizer(iter_captions(source, self.cfg.tokenizer_samples), self.cfg.vocab_size)
            if distributed.is_initialized():  # one tokenizer for all: rank 0's
                obj = [tok.to_str()]
                dist.broadcast_object_list(obj, src=0)
                tok = Tokenizer.from_str(obj[0])
            if path is not None and distributed.is_global_zero():
                path.parent.mkdir(parents=True, exist_ok=True)
                tok.save(str(path))
        self.text.set_tokenizer(tok)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.text.tokenizer

    # -- towers ---------------------------------------------------------------------------------
    def _inputs(self, x) -> torch.Tensor:
        """Images or waveforms (or a batch dict) -> the encoder's normalised input (B, C, H, W)."""
        if isinstance(x, dict):
            if self.audio:
                return self.frontend(x["audio"], x.get("audio_length"), random_crop=self.training)
            x = x["image"]
        if self.audio:
            return self.frontend(x)
        return to_float(x)

    def embed(self, x) -> torch.Tensor:
        """Images / waveforms / batch -> joint-space embeddings (B, E), not normalised, no augmentation."""
        return self.image_projection(self.encoder(to_input(self.encoder, self._inputs(x))))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training augmentation of images in [0, 1] or log-mel spectrograms (B, C, H, W)."""
        if self.audio:
            return spec_augment(x) if self.cfg.spec_augment else x
        if tuple(self.cfg.crop_scale) != (1.0, 1.0):
            x = random_resized_crop(x, scale=self.cfg.crop_scale)
        return horizontal_flip(x) if self.cfg.flip else x

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def contrastive_loss(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return clip_loss(img, txt, self.scale(), gather=self.cfg.gather)

    def forward(self, batch: dict) -> dict:
        x = self._inputs(batch)
        if self.training:
            x = self.augment(x)
        img = F.normalize(self.image_projection(self.encoder(to_input(self.encoder, x))), dim=-1)
        txt = F.normalize(self.text.encode(batch["text"]), dim=-1)
        loss = self.contrastive_loss(img, txt)
        with torch.no_grad():
            acc = ((img @ txt.T).argmax(dim=1) == torch.arange(len(img), device=img.device)).float().mean()
        return {"loss": loss, "logit_scale": self.scale().detach(), "batch_i2t_acc": acc}

    def on_train_batch_end(self, step: int, total_steps: int) -> None:
        """Keep the learnable log scale in [0, log max_logit_scale] (open_clip does the same)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.cfg.max_logit_scale))

    # -- zero-shot and retrieval ------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> L2-normalised embeddings (B, E)."""
        return F.normalize(self.text.encode(list(texts)), dim=-1)

    def encode_image(self, images) -> torch.Tensor:
        """uint8 or [0, 1] float images (B, C, H, W), or a batch dict -> L2-normalised (B, E)."""
        return F.normalize(self.embed(images), dim=-1)

    def encode_audio(self, waves) -> torch.Tensor:
        """Waveforms (B, T) or a list of (T_i,), or a batch dict -> L2-normalised (B, E)."""
        if not self.audio:
            raise TypeError("this model encodes images; use encode_image")
        return F.normalize(self.embed(waves), dim=-1)

    def encode_inputs(self, x) -> torch.Tensor:
        """``encode_audio`` or ``encode_image``, whichever this model's modality is."""
        return self.encode_audio(x) if self.audio else self.encode_image(x)


class SigLIP(CLIP):
    """CLIP with the pairwise sigmoid loss and a learnable bias ``logit_bias``."""

    Config = SigLIPConfig

    def __init__(self, cfg: SigLIPConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__(cfg, encoder, spec)
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))

    def contrastive_loss(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return siglip_loss(img, txt, self.scale(), self.logit_bias, gather=self.cfg.gather)

    def forward(self, batch: dict) -> dict:
        out = super().forward(batch)
        out["logit_bias"] = self.logit_bias.detach()
        return out


__all__ = ["CLIP", "CLIPConfig", "SigLIP", "SigLIPConfig", "clip_loss", "siglip_loss", "iter_captions"]
