"""The baselines users compare a table or series encoder against, on the raw data.

Tables: logistic regression (one-hot categories, missing values as the training mean plus a
"was missing" indicator) and gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``,
which takes missing values and categories natively) on the standardised features of
``data.tabular``. On tables, boosted trees usually win (Grinsztajn et al. 2022, "Why do tree-based
models still outperform deep learning on tabular data?"): the verdict must show it when they do.

Series: MiniRocket + ridge (``evaluate.minirocket``), the strongest fast classifier, and the
classic 1-nearest-neighbour with Euclidean distance on the raw series (Dau et al. 2019, the UCR
archive's reference baseline).

Every function takes training arrays and labels and test arrays, and returns class scores
(M, num_classes) whose argmax is the prediction (probabilities where the model gives them).
"""

from __future__ import annotations

import numpy as np

from selfsup.evaluate.minirocket import fill_series, minirocket_scores


def _full_scores(model, test_x: np.ndarray, num_classes: int) -> np.ndarray:
    """``predict_proba`` widened to every class (a class missing from a few-shot draw gets 0)."""
    out = np.zeros((len(test_x), num_classes), np.float64)
    out[:, model.classes_.astype(int)] = model.predict_proba(test_x)
    return out


def table_design(
    features: np.ndarray, categories: np.ndarray, cardinalities: list[int], missing_columns: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A linear model's inputs: numeric values (NaN -> 0, the training mean after standardisation),
    a 0/1 "was missing" column for each numeric column in ``missing_columns`` (default: those with a
    NaN here), and one-hot categories (index 0, missing, included). Returns (design, missing_columns)."""
    nan = np.isnan(features)
    if missing_columns is None:
        missing_columns = np.flatnonzero(nan.any(0))
    parts = [np.nan_to_num(features, nan=0.0), nan[:, missing_columns].astype(np.float32)]
    for k, card in enumerate(cardinalities):
        onehot = np.zeros((len(categories), card), np.float32)
        onehot[np.arange(len(categories)), np.clip(categories[:, k], 0, card - 1)] = 1.0
        parts.append(onehot)
    return np.concatenate(parts, axis=1), missing_columns


def logistic_regression_scores(
    train: tuple[np.ndarray, np.ndarray], train_y: np.ndarray, test: tuple[np.ndarray, np.ndarray],
    cardinalities: list[int], num_classes: int, seed: int = 0, c: float = 1.0,
) -> np.ndarray:
    """L2 logistic regression (``c`` = inverse strength) on ``table_design`` inputs; class probabilities.

    ``train`` / ``test`` are (features (N, F), categories (N, K)) as ``data.tabular`` gives them."""
    from sklearn.linear_model import LogisticRegression

    x_train, cols = table_design(*train, cardinalities)
    x_test, _ = table_design(*test, cardinalities, cols)
    if len(np.unique(train_y)) == 1:
        out = np.zeros((len(x_test), num_classes))
        out[:, int(train_y[0])] = 1.0
        return out
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, train_y)
    return _full_scores(model, x_test, num_classes)


def gradient_boosting_scores(
    train: tuple[np.ndarray, np.ndarray], train_y: np.ndarray, test: tuple[np.ndarray, np.ndarray],
    cardinalities: list[int], num_classes: int, seed: int = 0,
) -> np.ndarray:
    """``HistGradientBoostingClassifier`` with native missing values and categories; class probabilities.

    Categories go in as categorical columns (missing = NaN) when they fit its 255 bins, else as
    codes. With few labels the leaves shrink (at least n / 20 samples, default 20) so a 5-shot
    task can still split; early stopping is scikit-learn's default (on above 10,000 rows).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    def design(features: np.ndarray, categories: np.ndarray) -> np.ndarray:
        cats = categories.astype(np.float32)
        cats[categories == 0] = np.nan
        return np.concatenate([features, cats], axis=1)

    x_train, x_test = design(*train), design(*test)
    F = train[0].shape[1]
    categorical = np.array([False] * F + [c <= 255 for c in cardinalities], dtype=bool)
    if len(np.unique(train_y)) == 1:
        out = np.zeros((len(x_test), num_classes))
        out[:, int(train_y[0])] = 1.0
        return out
    model = HistGradientBoostingClassifier(
        categorical_features=categorical if categorical.any() else None,
        min_samples_leaf=min(20, max(1, len(train_y) // 20)), random_state=seed,
    ).fit(x_train, train_y)
    return _full_scores(model, x_test, num_classes)


def nearest_neighbour_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                             k: int = 1, batch_size: int = 512) -> np.ndarray:
    """k-nearest-neighbour vote with Euclidean distance on raw series (N, C, T) (or any arrays
    (N, ...)); NaN filled as in ``fill_series``. Scores are the share of the k votes per class."""
    a = fill_series(train_x).reshape(len(train_x), -1) if np.ndim(train_x) == 3 else np.asarray(train_x, np.float32)
    b = fill_series(test_x).reshape(len(test_x), -1) if np.ndim(test_x) == 3 else np.asarray(test_x, np.float32)
    a64, y = a.astype(np.float64), np.asarray(train_y)
    k = min(k, len(a))
    out = np.zeros((len(b), num_classes))
    sq_a = (a64**2).sum(1)
    for i in range(0, len(b), batch_size):
        bb = b[i : i + batch_size].astype(np.float64)
        d = sq_a[None] - 2 * bb @ a64.T + (bb**2).sum(1)[:, None]
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
        for j in range(k):
            np.add.at(out, (np.arange(i, i + len(bb)), y[nearest[:, j]]), 1.0 / k)
    return out


def minirocket_baseline_scores(train_x, train_y, test_x, num_classes: int, seed: int = 0) -> np.ndarray:
    """MiniRocket + ridge (see ``evaluate.minirocket``); decision scores (M, num_classes)."""
    return minirocket_scores(train_x, train_y, test_x, num_classes, seed)


TABLE_BASELINES = {"logreg": logistic_regression_scores, "gbdt": gradient_boosting_scores}
SERIES_BASELINES = {"minirocket": minirocket_baseline_scores, "knn_raw": nearest_neighbour_scores}

__all__ = [
    "SERIES_BASELINES", "TABLE_BASELINES", "gradient_boosting_scores", "logistic_regression_scores",
    "minirocket_baseline_scores", "nearest_neighbour_scores", "table_design",
]
