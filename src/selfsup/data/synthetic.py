"""Synthetic series for pretraining a series generalist: Gaussian-process samples of random kernel
compositions, as Chronos' KernelSynth (Ansari et al. 2024, "Chronos: Learning the Language of Time
Series", Algorithm 2).

Each series draws 1 to ``max_kernels`` kernels from a bank (``KERNEL_BANK``: squared-exponential
at several length scales, periodic (exp-sine-squared) at periods from a few steps to half the
series, rational quadratic, linear (trends), constant and white noise), joins them one by one with
a random ``+`` or ``*``, and is one sample of the zero-mean GP with that covariance on ``length``
evenly spaced points of [0, 1] (Cholesky with a small jitter). Nothing here comes from a data set,
so a model pretrained on it has seen none of the evaluation archives (UCR/UEA, ADBench).

``synthetic_classes`` is a labelled task from the same family (a class is a fixed kernel recipe,
its parameters jittered per series), the validation that chooses a generalist's objective without
touching any real evaluation set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Kernel = Callable[[np.ndarray], np.ndarray]  # t (L,) in [0, 1] -> covariance (L, L)


def rbf(ls: float) -> Kernel:
    return lambda t: np.exp(-0.5 * ((t[:, None] - t[None, :]) / ls) ** 2)


def periodic(period: float, ls: float = 1.0) -> Kernel:
    return lambda t: np.exp(-2.0 * np.sin(np.pi * np.abs(t[:, None] - t[None, :]) / period) ** 2 / ls ** 2)


def rational_quadratic(ls: float, alpha: float) -> Kernel:
    return lambda t: (1.0 + (t[:, None] - t[None, :]) ** 2 / (2 * alpha * ls ** 2)) ** -alpha


def linear(c: float, scale: float = 1.0) -> Kernel:
    return lambda t: scale * (t[:, None] - c) * (t[None, :] - c)


def constant(v: float = 1.0) -> Kernel:
    return lambda t: np.full((len(t), len(t)), v)


def white(v: float) -> Kernel:
    return lambda t: v * np.eye(len(t))


PERIODS = (1 / 64, 1 / 32, 1 / 24, 1 / 16, 1 / 12, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2)  # of the series' span
LENGTH_SCALES = (0.005, 0.01, 0.03, 0.1, 0.3, 1.0)


def random_kernel(rng: np.random.Generator) -> Kernel:
    """One kernel of the bank with random parameters (KernelSynth's bank, slightly simplified)."""
    kind = rng.choice(["rbf", "periodic", "rq", "linear", "constant", "white"], p=[0.25, 0.35, 0.15, 0.1, 0.05, 0.1])
    if kind == "rbf":
        return rbf(float(rng.choice(LENGTH_SCALES)))
    if kind == "periodic":
        return periodic(float(rng.choice(PERIODS)), float(rng.choice([0.5, 1.0, 2.0])))
    if kind == "rq":
        return rational_quadratic(float(rng.choice(LENGTH_SCALES)), float(rng.choice([0.1, 1.0, 10.0])))
    if kind == "linear":
        return linear(float(rng.uniform(0, 1)), float(rng.choice([0.3, 1.0, 3.0])))
    if kind == "constant":
        return constant(float(rng.uniform(0.1, 1.0)))
    return white(float(rng.choice([0.01, 0.1, 0.3])))


def add(a: Kernel, b: Kernel) -> Kernel:
    return lambda t: a(t) + b(t)


def mul(a: Kernel, b: Kernel) -> Kernel:
    return lambda t: a(t) * b(t)


def compose(rng: np.random.Generator, max_kernels: int) -> Kernel:
    """1 to ``max_kernels`` random kernels joined by random + and *."""
    k = random_kernel(rng)
    for _ in range(int(rng.integers(0, max_kernels))):
        other, op = random_kernel(rng), rng.integers(2)
        k = add(k, other) if op == 0 else mul(k, other)
    return k


def gp_sample(kernel: Kernel, length: int, rng: np.random.Generator, jitter: float = 1e-4) -> np.ndarray:
    """One sample (length,) of the zero-mean GP with covariance ``kernel`` on [0, 1]."""
    t = np.linspace(0.0, 1.0, length)
    cov = kernel(t) + jitter * np.eye(length)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        chol = v * np.sqrt(np.clip(w, 0, None))
    return chol @ rng.standard_normal(length)


def kernel_synth(n: int, length: int = 256, seed: int = 0, max_kernels: int = 5) -> np.ndarray:
    """(n, 1, length) float32 KernelSynth series, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 1, length), np.float32)
    for i in range(n):
        out[i, 0] = gp_sample(compose(rng, max_kernels), length, rng)
    return out


# Class recipes of the validation task: (kernel builders from jittered parameters)
RECIPES: tuple[Callable[[np.random.Generator], Kernel], ...] = (
    lambda r: rbf(r.uniform(0.05, 0.15)),
    lambda r: rbf(r.uniform(0.008, 0.02)),
    lambda r: periodic(r.uniform(0.09, 0.11)),
    lambda r: periodic(r.uniform(0.03, 0.04)),
    lambda r: add(linear(r.uniform(0, 1), 3.0), white(0.05)),
    lambda r: mul(rbf(r.uniform(0.2, 0.4)), periodic(r.uniform(0.06, 0.08))),
    lambda r: add(periodic(r.uniform(0.2, 0.3)), rbf(r.uniform(0.01, 0.02))),
    lambda r: rational_quadratic(r.uniform(0.02, 0.05), 0.1),
)


def synthetic_classes(n_per_class: int, length: int = 256, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A labelled validation task: series (N, 1, length) float32, labels (N,) int64 (``RECIPES``)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, recipe in enumerate(RECIPES):
        for _ in range(n_per_class):
            xs.append(gp_sample(recipe(rng), length, rng) * rng.uniform(0.5, 2.0) + rng.normal())
            ys.append(c)
    order = rng.permutation(len(ys))
    return np.asarray(xs, np.float32)[order, None, :], np.asarray(ys, np.int64)[order]


__all__ = ["kernel_synth", "synthetic_classes", "random_kernel", "gp_sample", "RECIPES"]
