"""A trained classifier on disk, and predictions with it.

``MODEL_DIR/classifier.safetensors`` holds the weights of ``Classifier`` (``encoder.*`` with
timm names, ``head.*``; for unmerged LoRA also the frozen base weights ``...base_layer.*`` and the
adapters ``...lora_A/B.default.*``) and, in its metadata under "classifier", the JSON needed to
rebuild it: class names, input spec, encoder config, LoRA settings, recipe. ``classifier.json``
is the same JSON, for people. A merged LoRA classifier is a plain one and loads without peft.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from selfsup.adapt.finetune import Classifier
from selfsup.adapt.lora import add_lora, lora_settings, merge_lora
from selfsup.data.sources import SkipCounter
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.files import atomic_path, write_csv, write_text

FORMAT = "selfsup/classifier-v1"
WEIGHTS, CONFIG = "classifier.safetensors", "classifier.json"


def save_classifier(
    model: Classifier,
    out_dir: str | Path,
    *,
    spec: InputSpec,
    encoder_config: EncoderConfig,
    class_names: list[str],
    merge: bool = True,
    info: dict | None = None,
) -> Path:
    """Write ``out_dir/classifier.safetensors`` + ``classifier.json``; returns ``out_dir``.

    With ``merge`` (default) LoRA adapters are folded into a copy of the weights first, so the
    saved classifier is plain; otherwise they are kept apart. ``info`` (recipe, labels used,
    validation scores) is stored as is.
    """
    if len(class_names) != model.head.out_features:
        raise ValueError(f"{len(class_names)} class names for a {model.head.out_features}-way head")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lora = lora_settings(model.encoder)
    if lora and merge:
        model = merge_lora(copy.deepcopy(model))
        lora = {**lora, "merged": True}
    elif lora:
        lora = {**lora, "merged": False}
    config = {
        "format": FORMAT, "class_names": list(class_names), "num_classes": len(class_names),
        "input_spec": {**asdict(spec), "num_classes": len(class_names), "class_names": list(class_names)},
        "encoder_config": encoder_config.model_dump(), "lora": lora,
    }
    config.update({k: v for k, v in (info or {}).items() if k not in config})
    text = json.dumps(config, indent=1, default=_plain)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata={"classifier": text, "format": FORMAT})
    write_text(out / CONFIG, text + "\n")
    return out


def _plain(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_config(model_dir: str | Path) -> dict:
    """The JSON stored in a saved classifier's safetensors metadata."""
    path = Path(model_dir)
    path = path / WEIGHTS if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no classifier at {path}; train one with `selfsup adapt`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a selfsup classifier (format {meta.get('format')!r})")
    return json.loads(meta["classifier"])


def load_classifier(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """(Classifier in eval mode, its stored config) from a folder written by ``save_classifier``."""
    path = Path(model_dir)
    path = path / WEIGHTS if path.is_dir() else path
    config = read_config(path)
    spec = InputSpec(**config["input_spec"])
    encoder = build_encoder(EncoderConfig(**config["encoder_config"]), spec)
    lora = config.get("lora")
    if lora and not lora.get("merged"):
        add_lora(encoder, rank=lora["rank"], alpha=lora["alpha"], modules=lora["modules"])
    model = Classifier(encoder, config["num_classes"])
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), config


@dataclass
class Predictions:
    """What ``predict`` saw: keys (N,), class probabilities (N, C), known labels (N,; -1 unknown)."""

    keys: list[str]
    probs: torch.Tensor
    labels: np.ndarray
    skipped: SkipCounter = field(default_factory=SkipCounter)

    def accuracy(self) -> float | None:
        """Top-1 accuracy over the samples with a known label; None when there are none."""
        known = self.labels >= 0
        if not known.any():
            return None
        return float((self.probs.argmax(1).numpy()[known] == self.labels[known]).mean())


def predict(model: Classifier, batches: Iterable[dict], max_samples: int | None = None,
            input_key: str | tuple[str, ...] = "image") -> Predictions:
    """Run ``model`` over batches (``input_key``: images uint8 (B, C, H, W), or the modality's input keys,
    ``InputSpec.input_keys``: a table's features and categories; ``label``, ``key``, ``skipped``)."""
    keys_in = (input_key,) if isinstance(input_key, str) else tuple(input_key)
    keys, probs, labels, skipped = [], [], [], SkipCounter()
    for batch in batches:
        skipped.add(batch)
        if len(batch["key"]):
            probs.append(model.predict_proba(batch[keys_in[0]] if len(keys_in) == 1 else
                                             {k: batch[k] for k in keys_in}))
            labels.append(batch["label"].numpy())
            keys += list(batch["key"])
        if max_samples is not None and len(keys) >= max_samples:
            break
    n = len(keys) if max_samples is None else min(len(keys), max_samples)
    c = model.head.out_features
    return Predictions(keys[:n], torch.cat(probs)[:n] if probs else torch.empty(0, c),
                       np.concatenate(labels)[:n] if labels else np.empty(0, np.int64), skipped)


def write_predictions(path: str | Path, preds: Predictions, class_names: list[str]) -> Path:
    """CSV: ``key, pred, pred_name`` then ``prob_<class name>`` per class, one row per sample."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred = preds.probs.argmax(1).tolist() if len(preds.keys) else []
    rows = ([key, k, class_names[k], *(f"{v:.6g}" for v in p)]
            for key, k, p in zip(preds.keys, pred, preds.probs.tolist(), strict=True))
    # atomic, and text cells (keys, class names) starting with = + - @ are neutralised (files.safe_cell)
    return write_csv(path, ["key", "pred", "pred_name", *(f"prob_{c}" for c in class_names)], rows)


__all__ = ["CONFIG", "FORMAT", "WEIGHTS", "Predictions", "load_classifier", "predict", "read_config",
           "save_classifier", "write_predictions"]
