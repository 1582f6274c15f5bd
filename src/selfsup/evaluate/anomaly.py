"""Visual anomaly detection with PatchCore (Roth et al. 2022, "Towards Total Recall in Industrial
Anomaly Detection", CVPR).

Fit: every patch of every normal image becomes a feature vector (mid-level ViT tokens or CNN stage
maps, locally averaged over a 3x3 neighbourhood of patches); a greedy coreset keeps a small subset that still
covers them all, the memory bank. Score: a test patch's anomaly score is its distance to the
nearest bank entry; an image's score is its highest patch score; the pixel heatmap is the patch
scores upsampled to the image and smoothed with a Gaussian (sigma 4, as in the paper).

``pixel_patch_features`` is the baseline: raw pixels of each patch (and its 3x3 neighbours)
instead of an encoder's features. Metrics are image AUROC and pixel AUROC as in MVTec-AD.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.spec import as_tensor, normalize, to_float
from selfsup.encoders.inference import encode_images
from selfsup.evaluate.records import record
from selfsup.files import atomic_path

# ----------------------------------------------------------------------------- preprocessing


def standardize_images(images: torch.Tensor | np.ndarray, mean: float = 0.5, std: float = 0.125) -> torch.Tensor:
    """Per-image brightness and contrast normalisation: each image (N, C, H, W), uint8 or uint16,
    shifted and scaled to pixel mean ``mean`` and standard deviation ``std`` (over all its pixels,
    as fractions of the full scale: 128 and 32 for 8 bits), clipped, and returned in its dtype.
    Removes exposure differences between shots, which otherwise dominate patch distances."""
    x = as_tensor(images)
    dtype = x.dtype
    x = to_float(x)
    m, s = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
    y = (mean + std * (x - m) / (s + 1e-5)).clamp(0.0, 1.0)
    if dtype in (torch.uint8, torch.uint16):
        top = float(torch.iinfo(dtype).max)
        return (y * top).round().to(dtype)
    return y


# ----------------------------------------------------------------------------- patch features


def default_layers(depth: int) -> tuple[int, ...]:
    """The two blocks around mid-depth (0-based), PatchCore's "mid-level" features: 12 -> (5, 6)."""
    return (max(depth // 2 - 1, 0), depth // 2) if depth > 1 else (0,)


def num_levels(encoder: nn.Module) -> int:
    """Levels ``forward_intermediates`` can return: a ViT's blocks, a CNN's stages (``encoders.levels``)."""
    return len(encoder.blocks) if hasattr(encoder, "blocks") else int(encoder.num_levels)


def vit_block_tokens(encoder: nn.Module, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
    """Normalised images (B, C, H, W) -> patch features after each level in ``layers``, (B, gh, gw, D) each.

    ``forward_intermediates`` runs the encoder only up to the deepest level asked for: ViT blocks, or
    CNN stages, whose maps are resized (bilinear) to the grid of the finest one asked for, as
    PatchCore upsamples layer3 to layer2. Features are layer-normalised without affine parameters
    (a ViT's final ``norm`` is trained for the last block only), which also puts the chosen levels on
    one scale before they are concatenated.
    """
    maps = encoder.forward_intermediates(x, layers, output_fmt="NHWC", intermediates_only=True)
    grid = max((tuple(m.shape[1:3]) for m in maps), key=lambda g: g[0] * g[1])
    maps = [m if tuple(m.shape[1:3]) == grid else
            F.interpolate(m.permute(0, 3, 1, 2), size=grid, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            for m in maps]
    return [F.layer_norm(t, t.shape[-1:]) for t in maps]


def aggregate_3x3(feats: torch.Tensor) -> torch.Tensor:
    """Local neighbourhood aggregation: 3x3 average over the patch grid, (B, gh, gw, F) -> same."""
    x = feats.permute(0, 3, 1, 2)
    x = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return x.permute(0, 2, 3, 1)


def patch_features(
    encoder: nn.Module,
    images_uint8: np.ndarray | torch.Tensor,
    layers: tuple[int, ...] | None = None,
    batch_size: int = 64,
    aggregate: bool = True,
    l2_normalize: bool = False,
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> patch features (N, gh, gw, F) of a ViT or CNN, float32 on the CPU.

    F = len(layers) * D: the tokens of each block in ``layers`` (default ``default_layers``),
    each optionally 3x3-averaged over the grid, concatenated, optionally L2-normalised.
    Images reach the encoder as ``encoders.to_input`` makes them (grey repeated when it wants three channels).
    """
    layers = tuple(layers) if layers is not None else default_layers(num_levels(encoder))

    def features(x: torch.Tensor) -> torch.Tensor:
        feats = vit_block_tokens(encoder, x, layers)
        if aggregate:
            feats = [aggregate_3x3(f) for f in feats]
        f = torch.cat(feats, dim=-1).float()
        return F.normalize(f, dim=-1) if l2_normalize else f

    return encode_images(encoder, images_uint8, features, batch_size=batch_size)


@torch.no_grad()
def pixel_patch_features(
    images_uint8: np.ndarray | torch.Tensor, patch_size: int = 8, neighbourhood: bool = True
) -> torch.Tensor:
    """The raw-pixel baseline: uint8 (N, C, H, W) -> (N, H/p, W/p, F), each p x p patch flattened.

    With ``neighbourhood`` a patch's vector also holds its 3x3 neighbours (edges replicated),
    F = 9 * C * p * p, the pixel analogue of PatchCore's local aggregation; else F = C * p * p.
    """
    x = normalize(to_float(as_tensor(images_uint8)))
    N, C, H, W = x.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
    if neighbourhood:
        x = F.unfold(F.pad(x, (p, p, p, p), mode="replicate"), kernel_size=3 * p, stride=p)
    else:
        x = F.unfold(x, kernel_size=p, stride=p)
    return x.transpose(1, 2).reshape(N, H // p, W // p, -1).contiguous()


# ----------------------------------------------------------------------------- coreset


@torch.no_grad()
def coreset(
    features: torch.Tensor,
    size: float | int = 0.1,
    seed: int = 0,
    proj_dim: int | None = 128,
    batch: int = 64,
) -> torch.Tensor:
    """Greedy k-center coreset (PatchCore Alg. 1): indices (n,) of rows of ``features`` (M, F).

    ``size`` is a fraction of M (float in (0, 1]) or a count (int). Starting from a random row,
    each step adds the row farthest from everything chosen so far, which keeps the largest
    distance from any row to its nearest chosen row within twice the optimum. Distances are
    squared Euclidean in a random projection to ``proj_dim`` dimensions (Johnson-Lindenstrauss,
    as PatchCore; None keeps F). Memory is O(M * proj_dim): no M x M matrix.

    Batched, still exact: a round takes the 4 * ``batch`` rows farthest from the coreset as
    candidates and runs the greedy among them while the best candidate is at least as far as the
    nearest-ranked candidate was (no row outside can then be farther, since distances only
    shrink), up to ``batch`` picks; one (M, proj_dim) @ (proj_dim, picks) product then updates all
    M distances. That reads the M rows once per round instead of once per pick.
    """
    M, D = features.shape
    n = int(round(size * M)) if isinstance(size, float) else int(size)
    n = max(1, min(n, M))
    if n == M:
        return torch.arange(M)
    g = torch.Generator().manual_seed(seed)
    x = features.float()
    if proj_dim is not None and proj_dim < D:
        x = x @ (torch.randn(D, proj_dim, generator=g) / proj_dim**0.5)
    sq = (x * x).sum(1)
    start = torch.randint(M, (1,), generator=g)
    min_d = sq - 2 * x @ x[start[0]] + sq[start]
    min_d[start] = float("-inf")  # chosen rows are never picked again, even among duplicates
    chosen, count = [start], 1
    while count < n:
        b = min(batch, n - count)
        top, cand = min_d.topk(min(4 * b, M))
        xc, sqc, cand_d, picks = x[cand], sq[cand], top.clone(), []
        while len(picks) < b:
            j = int(torch.argmax(cand_d))
            if picks and cand_d[j] < top[-1]:
                break
            picks.append(j)
            torch.minimum(cand_d, sqc - 2 * xc @ xc[j] + sqc[j], out=cand_d)
            cand_d[j] = float("-inf")
        new = cand[picks]
        d = (sq[:, None] - 2 * x @ x[new].T + sq[new]).min(dim=1).values
        torch.minimum(min_d, d, out=min_d)
        min_d[new] = float("-inf")
        chosen.append(new)
        count += len(new)
    return torch.cat(chosen)


# ----------------------------------------------------------------------------- scoring


@torch.no_grad()
def nearest(query: torch.Tensor, bank: torch.Tensor, chunk_elems: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (Q,) and index (Q,) of each query row's nearest bank row; cdist in query chunks."""
    rows = max(1, chunk_elems // max(len(bank), 1))
    dists, idx = [], []
    for i in range(0, len(query), rows):
        d, j = torch.cdist(query[i : i + rows], bank).min(dim=1)
        dists.append(d)
        idx.append(j)
    return torch.cat(dists), torch.cat(idx)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of maps (N, H, W), truncated at 4 sigma, edges replicated."""
    if sigma <= 0:
        return x
    r = int(4 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x)
    y = F.pad(x[:, None], (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y[:, 0]


def heatmaps_from_patches(patch_scores: torch.Tensor, size: tuple[int, int], sigma: float = 4.0) -> torch.Tensor:
    """Patch scores (N, gh, gw) -> pixel heatmaps (N, H, W): bilinear upsampling, Gaussian blur."""
    up = F.interpolate(patch_scores[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(up, sigma)


# ----------------------------------------------------------------------------- PatchCore


class PatchCore:
    """PatchCore anomaly detector over an encoder's patch features (ViT tokens, CNN feature maps), or raw
    pixel patches (encoder None).

    ``fit(encoder, normal_images)`` builds the memory bank; ``score(images)`` gives image scores
    (N,) and heatmaps (N, H, W). ``coreset_size`` is a fraction (float) or count (int) of all
    training patches; ``reweight`` > 0 applies the paper's image-score reweighting (Eq. 7) over
    that many bank neighbours (0: image score = max patch distance). ``save``/``load`` keep the
    bank and this configuration in one safetensors file; the encoder is passed to ``load``.
    """

    def __init__(
        self,
        layers: tuple[int, ...] | None = None,
        aggregate: bool = True,
        l2_normalize: bool = False,
        pixel_patch: int = 8,
        neighbourhood: bool = True,
        coreset_size: float | int = 0.1,
        proj_dim: int | None = 128,
        sigma: float = 4.0,
        reweight: int = 0,
        seed: int = 0,
        batch_size: int = 64,
    ):
        self.layers = tuple(layers) if layers is not None else None
        self.aggregate, self.l2_normalize = aggregate, l2_normalize
        self.pixel_patch, self.neighbourhood = pixel_patch, neighbourhood
        self.coreset_size, self.proj_dim = coreset_size, proj_dim
        self.sigma, self.reweight, self.seed, self.batch_size = sigma, reweight, seed, batch_size
        self.encoder: nn.Module | None = None
        self.memory_bank: torch.Tensor | None = None

    def config(self) -> dict:
        keys = ("layers", "aggregate", "l2_normalize", "pixel_patch", "neighbourhood", "coreset_size",
                "proj_dim", "sigma", "reweight", "seed", "batch_size")
        cfg = {k: getattr(self, k) for k in keys}
        cfg["layers"] = list(self.layers) if self.layers is not None else None
        cfg["backbone"] = "pixels" if self.encoder is None else "vit" if hasattr(self.encoder, "blocks") else "cnn"
        return cfg

    def features(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> patch features (N, gh, gw, F) from the encoder or raw pixels."""
        if self.encoder is None:
            return pixel_patch_features(images, self.pixel_patch, self.neighbourhood)
        return patch_features(self.encoder, images, self.layers, self.batch_size, self.aggregate,
                              self.l2_normalize)

    def fit(self, encoder: nn.Module | None, images: np.ndarray | torch.Tensor) -> PatchCore:
        """Memory bank from normal uint8 images (N, C, H, W): all patch features, coreset-subsampled."""
        self.encoder = encoder
        if encoder is not None and self.layers is None:
            self.layers = default_layers(num_levels(encoder))
        feats = self.features(images)
        feats = feats.reshape(-1, feats.shape[-1])
        self.memory_bank = feats[coreset(feats, self.coreset_size, self.seed, self.proj_dim)].contiguous()
        return self

    @torch.no_grad()
    def score(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) -> image scores (N,) and pixel heatmaps (N, H, W), float32."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.score before fit (or load)")
        images = as_tensor(images)
        scores, maps = [], []
        for i in range(0, len(images), self.batch_size):
            feats = self.features(images[i : i + self.batch_size])
            B, gh, gw, D = feats.shape
            flat = feats.reshape(B, gh * gw, D)
            dist, idx = nearest(flat.reshape(-1, D), self.memory_bank)
            dist, idx = dist.view(B, gh * gw), idx.view(B, gh * gw)
            top, where = dist.max(dim=1)
            if self.reweight > 0:
                top = top * self._weights(flat[torch.arange(B), where], idx[torch.arange(B), where])
            scores.append(top)
            maps.append(heatmaps_from_patches(dist.view(B, gh, gw), tuple(images.shape[-2:]), self.sigma))
        return torch.cat(scores), torch.cat(maps)

    def _weights(self, patch: torch.Tensor, nn_idx: torch.Tensor) -> torch.Tensor:
        """PatchCore Eq. 7: 1 - softmax over the distances of the worst patch (B, F) to its nearest
        bank entry m* and m*'s ``reweight`` nearest bank neighbours, taken at m*."""
        bank = self.memory_bank
        m_star = bank[nn_idx]
        k = min(self.reweight, len(bank))
        neighbours = torch.cdist(m_star, bank).topk(k, dim=1, largest=False).indices  # m* itself first
        d = (patch[:, None] - bank[neighbours]).norm(dim=-1)
        return 1 - torch.softmax(d, dim=1)[:, 0]

    def save(self, path: str | Path) -> None:
        """Memory bank as tensor "memory_bank", configuration as JSON in metadata "patchcore_config"."""
        from safetensors.torch import save_file

        if self.memory_bank is None:
            raise RuntimeError("nothing to save: fit first")
        with atomic_path(path) as tmp:
            save_file({"memory_bank": self.memory_bank.contiguous()}, str(tmp),
                      metadata={"patchcore_config": json.dumps(self.config())})

    @classmethod
    def load(cls, path: str | Path, encoder: nn.Module | None = None) -> PatchCore:
        """The detector saved at ``path``; give the same ``encoder`` it was fitted with (None: pixels)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            cfg = json.loads(f.metadata()["patchcore_config"])
            bank = f.get_tensor("memory_bank")
        backbone = cfg.pop("backbone")
        if (backbone != "pixels") != (encoder is not None):
            raise ValueError(f"{path} was fitted on {backbone!r} features; pass the matching encoder")
        model = cls(**cfg)
        model.encoder, model.memory_bank = encoder, bank
        return model


# ----------------------------------------------------------------------------- metrics


def auroc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) identity, ties at mid-rank.

    Equals ``sklearn.metrics.roc_auc_score``; NaN when only one class is present.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score
    rank_sum = mid_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def image_auroc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float:
    """Image-level AUROC: labels (N,) 0 normal / 1 defect against image scores (N,)."""
    return auroc(labels, scores)


def pixel_auroc(
    masks: np.ndarray | torch.Tensor,
    heatmaps: np.ndarray | torch.Tensor,
    max_pixels: int | None = 1 << 25,
    seed: int = 0,
) -> float:
    """Pixel-level AUROC over every pixel of every image: masks (N, H, W) against heatmaps (N, H, W).

    Above ``max_pixels`` pixels (32 Mi by default; None: never) a fixed-seed uniform sample of that
    many pixels is used instead, with a warning, to bound memory.
    """
    m = np.asarray(masks).reshape(-1)
    h = np.asarray(heatmaps, dtype=np.float32).reshape(-1)
    if max_pixels is not None and len(m) > max_pixels:
        warnings.warn(f"pixel AUROC on a seeded sample of {max_pixels} of {len(m)} pixels", stacklevel=2)
        keep = np.random.default_rng(seed).choice(len(m), size=max_pixels, replace=False)
        m, h = m[keep], h[keep]
    return auroc(m, h)


def anomaly_records(
    task: str,
    test_set,
    image_scores: np.ndarray | torch.Tensor,
    heatmaps: np.ndarray | torch.Tensor,
    encoder_name: str,
) -> list[dict]:
    """``metrics.json`` records: image and pixel AUROC overall ("defect": "all") and per defect type.

    ``test_set`` has ``labels`` (N,), ``masks`` (N, H, W) and ``defect`` names (an ``MVTecSet``);
    a defect type is scored on its own images against all good test images.
    """
    labels = np.asarray(test_set.labels).astype(bool)
    masks = np.asarray(test_set.masks)
    scores, maps = np.asarray(image_scores), np.asarray(heatmaps)
    defect = np.asarray(test_set.defect)
    groups = {"all": np.ones(len(labels), dtype=bool)}
    for name in sorted(set(defect[labels])):
        groups[str(name)] = ~labels | (defect == name)
    out = []
    for name, sel in groups.items():
        values = {"image_auroc": image_auroc(labels[sel], scores[sel]),
                  "pixel_auroc": pixel_auroc(masks[sel], maps[sel])}
        for metric, value in values.items():
            out.append(record(task, "anomaly", encoder_name, metric, [value], defect=name))
    return out


__all__ = [
    "PatchCore", "patch_features", "pixel_patch_features", "vit_block_tokens", "aggregate_3x3",
    "default_layers", "coreset", "nearest", "gaussian_blur", "heatmaps_from_patches",
    "auroc", "image_auroc", "pixel_auroc", "anomaly_records",
]
