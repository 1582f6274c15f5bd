"""The strong supervised baselines users compare a table or series encoder against, on the raw input.

Each is a whole model trained on the labels of a draw, not a probe on features, and each chooses
its hyper-parameters on those labels only, as the SSL encoder's protocols do (``evaluate.fewshot``
records them under the protocol "supervised"; ``evaluate.verdict`` compares every SSL protocol
with them):

- ``gbdt`` (tables): gradient-boosted trees, scikit-learn's ``HistGradientBoostingClassifier``
  (native missing values and categories), with leaf size, tree size and learning rate chosen by
  stratified k-fold cross-validation on the labelled draw and the number of trees by early
  stopping on a held-out tenth when there are enough labels. On tables boosted trees usually win
  (Grinsztajn et al. 2022, "Why do tree-based models still outperform deep learning on tabular
  data?"), and the verdict says so when they do.
- ``minirocket`` (series): MiniRocket features (Dempster et al. 2021; ``evaluate.minirocket``)
  fitted on the unlabelled pool, as the SSL encoder was pretrained without labels, then the
  paper's classifier: standardised features and a ridge classifier with the penalty chosen by
  leave-one-out cross-validation over 10 values in [1e-3, 1e3] (``RidgeClassifierCV``).

The logistic regression on raw table features (C by cross-validation) and the raw-window kNN (k by
leave-one-out) are the "raw" encoder under the linear and kNN protocols (``features.raw_pair``).
A baseline is ``prepare(pool, test)`` once (inputs as ``data.inputs`` holds them), then
``predict(idx, labels, num_classes, seed)`` per draw: class probabilities (M, C) of the test set
and what was chosen.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from selfsup.data.inputs import as_inputs

GBDT_GRID = {"min_samples_leaf": (2, 10), "max_leaf_nodes": (7, 31), "learning_rate": (0.05, 0.2)}
GBDT_TREES = 200  # at most; early stopping picks fewer when 200+ labels allow a held-out tenth
EARLY_STOPPING_LABELS = 200
RIDGE_ALPHAS = np.logspace(-3, 3, 10)  # Dempster et al. 2021


def _full(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``predict_proba`` widened to every class (a class missing from a draw gets 0)."""
    out = np.zeros((len(x), num_classes), np.float64)
    out[:, model.classes_.astype(int)] = model.predict_proba(x)
    return out


def _one_class(y: np.ndarray, m: int, num_classes: int) -> torch.Tensor:
    out = torch.zeros(m, num_classes, dtype=torch.float64)
    out[:, int(y[0])] = 1.0
    return out


class GradientBoosting:
    """Gradient-boosted trees on a table's raw features; hyper-parameters by cross-validation."""

    name = "gbdt"
    modality = "table"

    def __init__(self, folds: int = 3) -> None:
        self.folds = folds

    @staticmethod
    def design(table: dict) -> np.ndarray:
        """``{"features" (N, F), "categories" (N, K)}`` -> (N, F + K): numbers (NaN = missing, which the
        trees route on their own) and category codes (0, missing, as NaN)."""
        t = as_inputs(table)
        cats = t["categories"].numpy().astype(np.float32)
        cats[cats == 0] = np.nan
        return np.concatenate([t["features"].numpy().astype(np.float32), cats], axis=1)

    def prepare(self, pool: dict, test: dict) -> None:
        self.pool, self.test = self.design(pool), self.design(test)
        F = as_inputs(pool)["features"].shape[1]
        widths = np.nanmax(np.concatenate([self.pool[:, F:], self.test[:, F:]]), axis=0, initial=0)
        self.categorical = np.array([False] * F + [w < 255 for w in widths], dtype=bool)  # 255 bins at most

    def _model(self, n: int, params: dict, seed: int):
        from sklearn.ensemble import HistGradientBoostingClassifier

        early = n >= EARLY_STOPPING_LABELS
        return HistGradientBoostingClassifier(
            max_iter=GBDT_TREES if early else 100, early_stopping=early, validation_fraction=0.1,
            n_iter_no_change=10, categorical_features=self.categorical if self.categorical.any() else None,
            random_state=seed, **params)

    def choose(self, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
        """The grid point with the best k-fold (accuracy, then log-loss); defaults with a one-label class."""
        counts = np.bincount(y)
        k = min(self.folds, int(counts[counts > 0].min()))
        grid = [dict(zip(GBDT_GRID, v, strict=True)) for v in itertools.product(*GBDT_GRID.values())]
        if k < 2:
            return {**grid[0], "selection": "none (a class has one label): defaults"}
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
        best = None
        for params in grid:
            accs, losses = [], []
            for tr, va in splits:
                if len(np.unique(y[tr])) < 2:
                    continue
                p = _full(self._model(len(tr), params, seed).fit(x[tr], y[tr]), x[va], counts.size)
                accs.append(float((p.argmax(1) == y[va]).mean()))
                losses.append(float(-np.log(np.clip(p[np.arange(len(va)), y[va]], 1e-12, None)).mean()))
            score = (float(np.mean(accs)), -float(np.mean(losses))) if accs else (0.0, -np.inf)
            if best is None or score > best[0]:
                best = (score, params)
        return {**best[1], "selection": f"{k}-fold cross-validation on {len(y)} labels", "cv_top1": best[0][0]}

    def predict(self, idx: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> tuple[torch.Tensor, dict]:
        x, y = self.pool[idx], np.asarray(labels)
        if len(np.unique(y)) == 1:
            return _one_class(y, len(self.test), num_classes), {"selection": "one class"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-label folds: sklearn's small-class warnings
            chosen = self.choose(x, y, seed)
            params = {k: chosen[k] for k in GBDT_GRID}
            model = self._model(len(y), params, seed).fit(x, y)
        chosen["max_iter"] = int(model.n_iter_)
        return torch.from_numpy(_full(model, self.test, num_classes)), chosen


class MiniRocketRidge:
    """MiniRocket features of the pool (fitted without labels) + the paper's ridge classifier."""

    name = "minirocket"
    modality = "series"

    def __init__(self, num_features: int = 10_000, seed: int = 0) -> None:
        self.num_features, self.seed = num_features, seed

    def prepare(self, pool: torch.Tensor, test: torch.Tensor) -> None:
        from selfsup.evaluate.features import raw_pair  # equal lengths, gaps filled
        from selfsup.evaluate.minirocket import MiniRocket

        channels = as_inputs(pool).shape[1]
        a, b = (x.reshape(len(x), channels, -1).numpy() for x in raw_pair(pool, test))
        mr = MiniRocket(num_features=self.num_features, seed=self.seed).fit(a)
        self.pool, self.test = mr.transform(a), mr.transform(b)

    def predict(self, idx: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> tuple[torch.Tensor, dict]:
        from sklearn.linear_model import RidgeClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(labels)
        if len(np.unique(y)) == 1:
            return _one_class(y, len(self.test), num_classes), {"selection": "one class"}
        model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=RIDGE_ALPHAS)).fit(self.pool[idx], y)
        d = model.decision_function(self.test)
        d = np.stack([-d, d], axis=1) if d.ndim == 1 else d
        scores = np.full((len(self.test), num_classes), -np.inf)
        scores[:, model.classes_.astype(int)] = d
        alpha = float(model[-1].alpha_)
        return torch.from_numpy(scores).softmax(1), {
            "alpha": alpha, "selection": f"leave-one-out cross-validation on {len(y)} labels"}


SUPERVISED = {"gbdt": GradientBoosting, "minirocket": MiniRocketRidge}


def default_supervised(modality: str) -> list[str]:
    """The supervised baselines that run by default on ``modality``'s data."""
    return [name for name, cls in SUPERVISED.items() if cls.modality == modality]


def supervised_baselines(names, modality: str) -> list:
    """Baseline objects for ``names`` (unknown or unsuited names raise, with the ones that fit)."""
    out = []
    for name in names:
        cls = SUPERVISED.get(name)
        if cls is None or cls.modality != modality:
            fits = ", ".join(default_supervised(modality)) or "none"
            raise ValueError(f"baseline {name!r} does not apply to {modality} data (supervised baselines here: {fits})")
        out.append(cls())
    return out


__all__ = [
    "GBDT_GRID", "SUPERVISED", "GradientBoosting", "MiniRocketRidge", "default_supervised", "supervised_baselines",
]
