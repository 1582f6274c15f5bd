"""Few-label evaluation of a trained encoder: kNN, linear probe and fine-tuning against baselines.

``evaluate_few_label`` runs the protocol and returns records; ``merge_records`` writes them into a
run's ``metrics.json``; ``format_table`` prints them.
"""

from selfsup.evaluate.features import cached_features, extract_features, raw_features
from selfsup.evaluate.fewshot import DEFAULT_PROTOCOLS, FEW_LABEL_PROTOCOLS, evaluate_few_label
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import linear_probe
from selfsup.evaluate.records import format_table, load_records, merge_records, record

__all__ = [
    "DEFAULT_PROTOCOLS",
    "FEW_LABEL_PROTOCOLS",
    "cached_features",
    "evaluate_few_label",
    "extract_features",
    "format_table",
    "knn_predict",
    "linear_probe",
    "load_records",
    "merge_records",
    "raw_features",
    "record",
]
