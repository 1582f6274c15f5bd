"""The public Python API; each function mirrors a ``selfsup`` command.

    import selfsup.api as ss

    run = ss.pretrain("images/", "mae", budget="10m")
    records = ss.evaluate(run, "labelled/", protocols=["linear"], shots=[5])
    encoder, spec, _ = ss.load_encoder(run)

One module per job, each orchestration only: ``pretrain`` (pretraining, the demo), ``evaluate``
(few-label evaluation, the curve, zero-shot, retrieval, embeddings, the report), ``adapt``
(classifiers and predictions), ``anomaly`` (PatchCore fit and score; tables and series go to
``outliers``), ``forecast`` (long-horizon forecasting with a series run), ``export``. The run-folder
format lives in ``selfsup.runs``.
"""

from selfsup.api.adapt import adapt, predict
from selfsup.api.anomaly import ANOMALY_BANK, ANOMALY_NORMALIZE, anomaly_fit, anomaly_score, load_anomaly
from selfsup.api.common import Log, say
from selfsup.api.embedder import Embedder, from_pretrained
from selfsup.api.evaluate import (
    CURVE_FRACTIONS,
    CURVE_SHOTS,
    embed,
    evaluate,
    evaluate_curve,
    report,
    retrieve,
    zero_shot,
)
from selfsup.api.export import EXPORT_FORMATS, export
from selfsup.api.forecast import forecast
from selfsup.api.outliers import outlier_fit, outlier_score
from selfsup.api.pretrain import DEMO_FINETUNE, DEMO_OVERRIDES, demo, pretrain
from selfsup.runs import load_encoder, load_method, load_run_config, new_run_dir, save_encoder

__all__ = [
    "Embedder", "from_pretrained",
    "ANOMALY_BANK", "ANOMALY_NORMALIZE", "CURVE_FRACTIONS", "CURVE_SHOTS", "DEMO_FINETUNE", "DEMO_OVERRIDES",
    "EXPORT_FORMATS", "Log", "adapt", "anomaly_fit", "anomaly_score", "demo", "embed", "evaluate", "evaluate_curve",
    "export", "forecast", "load_anomaly", "load_encoder", "load_method", "load_run_config", "new_run_dir",
    "outlier_fit", "outlier_score", "predict", "pretrain", "report", "retrieve", "save_encoder", "say", "zero_shot",
]
