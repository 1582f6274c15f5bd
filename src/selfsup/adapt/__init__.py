"""Adaptation: turn a pretrained encoder into a classifier with few labels.

``adapt_classifier`` trains one (full fine-tuning with layer-wise lr decay, or LoRA adapters on
the attention projections), early-stopping on a held-out part of the labelled set;
``save_classifier`` / ``load_classifier`` move it to and from disk; ``predict`` runs it.
"""

from selfsup.adapt.classifier import load_classifier, predict, read_config, save_classifier, write_predictions
from selfsup.adapt.finetune import ADAPT_RECIPES, Classifier, FinetuneRecipe, train_classifier
from selfsup.adapt.lora import add_lora, lora_modules, lora_settings, merge_lora
from selfsup.adapt.tune import adapt_classifier, fit_tuned

__all__ = [
    "ADAPT_RECIPES",
    "Classifier",
    "FinetuneRecipe",
    "adapt_classifier",
    "fit_tuned",
    "add_lora",
    "load_classifier",
    "lora_modules",
    "lora_settings",
    "merge_lora",
    "predict",
    "read_config",
    "save_classifier",
    "train_classifier",
    "write_predictions",
]
