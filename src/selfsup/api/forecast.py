"""Long-horizon forecasting with a series run (``selfsup forecast``): orchestration only.

The protocol of the long-horizon benchmarks (``evaluate.forecast``): the long series is split in
time (ETTh1: 12 / 4 / 4 months; ``data.sources.windows.forecast_borders``), standardised with the
training rows' mean and std, and every window of ``lookback`` steps forecasts the next ``horizon``
steps; MSE and MAE on that scale. Two comparisons, each given the same care on both sides:

- "forecast-linear": a linear head on the frozen pretrained encoder's patch tokens (``ssl``,
  PatchTST's linear probing) vs one linear map from the lookback window (``dlinear``, Zeng et al.
  2023); both solved in closed form with their ridge chosen on the validation months
  (``evaluate.forecast_linear``);
- "forecast-finetune": head and encoder trained together from the pretrained weights (``ssl``) vs
  the same network from random weights (``scratch``); the same Adam steps, learning rate and batch,
  each keeping its weights of lowest validation MSE.

PatchTST's self-supervised ETTh1 result at horizon 96 (MSE ~0.37, Nie et al. 2023, fine-tuned on a
GPU) is the published reference for where a CPU budget stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from selfsup import files, lock, runs
from selfsup.api.common import Log, say
from selfsup.evaluate.records import format_table, merge_records, record
from selfsup.hardware import resolve_device

PROTOCOLS = ("linear", "finetune")


def _leak(run: Path, data: str) -> str | None:
    """A warning when the run was pretrained on this file's test months (not only its training part)."""
    try:
        cfg = runs.load_run_config(run)
    except Exception:  # noqa: BLE001 - a run folder without its config: nothing to check
        return None
    same = Path(cfg.data.path).expanduser().resolve() == Path(data).expanduser().resolve()
    if same and (cfg.data.split or "train") != "train":
        return (f"the run was pretrained on every row of {data} (data.split={cfg.data.split}), the test months "
                "included: its numbers are not held out; pretrain with --split train")
    return None


@lock.writes
def forecast(
    run: str | Path,
    data: str,
    *,
    horizons: Sequence[int] = (96, 336),
    lookback: int = 336,
    protocols: Sequence[str] = PROTOCOLS,
    steps: int = 5000,
    lr: float = 1e-3,
    batch_size: int = 32,
    scheme: str | None = None,
    seed: int = 0,
    device: str = "auto",
    log: Log = say,
) -> list[dict]:
    """Forecasting records of a series run on the long series ``data`` (a CSV with a time column).

    ``horizons``: steps ahead; ``lookback``: steps seen; ``scheme``: the split ("ett_hour",
    "ett_minute", "ratio"; default from the file: ETTh* / ETTm* of full length, else 70 / 10 / 20 %).
    ``protocols``: "linear" (closed-form heads) and / or "finetune" (Adam on ``batch_size`` windows
    at ``lr`` for ssl and scratch alike, each until its validation MSE stops improving, at most
    ``steps``). Records (task = the file's name,
    ``horizon``, ``lookback``) are merged into the run's ``metrics.json`` and returned; the first
    horizon's forecasts of three test windows go to ``RUN/figures/forecast.png``. The encoder and
    the fine-tunes run on ``device`` (``hardware.resolve_device``) under ``hardware.autocast``, the rule
    every fine-tune and feature extraction follows.
    """
    from selfsup.data.sources.windows import forecast_borders, forecast_scheme, read_long_series
    from selfsup.encoders import build_encoder
    from selfsup.evaluate.forecast import (
        PatchForecaster,
        forecast_errors,
        forecast_windows,
        predict,
        standardize,
        train_forecaster,
    )
    from selfsup.evaluate.forecast_linear import fit_linear_heads, frozen_tokens, raw_windows
    from selfsup.evaluate.minirocket import fill_series

    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown forecasting protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    encoder, spec, enc_cfg = runs.load_encoder(run, device=device)
    device = resolve_device(device)
    if spec.modality != "series":
        raise ValueError(f"{run}: forecasting needs a series run, not a {spec.modality} one")
    home = runs.results_dir(run, log)  # the run folder; for a public model a fresh results folder
    lock.hold(home)
    channels = (spec.schema or {}).get("channels")
    series = read_long_series(data, columns=channels)
    if series.values.shape[0] != spec.channels:
        raise ValueError(f"{data}: {series.values.shape[0]} channels, the run's encoder reads {spec.channels}")
    scheme = scheme or forecast_scheme(series)
    borders = forecast_borders(len(series), lookback, scheme)
    values, _, _ = standardize(fill_series(series.values[None])[0], borders["train"][1])
    if warning := _leak(run, data):
        log(f"warning: {warning}")
    horizons = sorted({int(h) for h in horizons})
    log(f"forecasting {series.name} ({len(series)} steps, {spec.channels} channels, {scheme} split "
        f"{borders}) from {lookback} steps, horizons {', '.join(map(str, horizons))}")
    extra = {"lookback": lookback, "split": scheme, "n_channels": spec.channels}
    recs, shown = [], {}
    if "linear" in protocols:
        for name, featurize in (("ssl", frozen_tokens(encoder)), ("dlinear", raw_windows)):
            fits = fit_linear_heads(featurize, values, borders, lookback, horizons)
            for h, r in fits.items():
                for metric in ("mse", "mae"):
                    recs.append(record(series.name, "forecast-linear", name, metric, [r[metric]], horizon=h,
                                       **extra, ridge=r["ridge"], val_mse=r["val_mse"], n_train=r["n_train"],
                                       n_test=r["n_test"]))
                log(f"{series.name} H={h} linear/{name}: mse {r['mse']:.4f} mae {r['mae']:.4f} (ridge {r['ridge']:g})")
                if h == horizons[0] and r["examples"] is not None:
                    shown.setdefault("inputs", r["examples"][0])
                    shown.setdefault("truth", r["examples"][1])
                    shown[f"{name} (linear)"] = r["examples"][2]
    if "finetune" in protocols:
        for h in horizons:
            x, y = forecast_windows(values, *borders["train"], lookback, h)
            xv, yv = forecast_windows(values, *borders["val"], lookback, h)
            xt, yt = forecast_windows(values, *borders["test"], lookback, h)
            pick = np.linspace(0, len(xv) - 1, min(len(xv), 512)).round().astype(int)  # a cheap early stop
            for name in ("ssl", "scratch"):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    body = build_encoder(enc_cfg, spec) if name == "scratch" else _copy(encoder)
                    model = PatchForecaster(body, lookback, h)
                log(f"{series.name} H={h} finetune/{name}: training until the validation mse stops improving "
                    f"(at most {steps} steps)")
                model, fit = train_forecaster(model, x, y, steps=steps, lr=lr, batch_size=batch_size,
                                              val=(xv[pick], yv[pick]), seed=seed, device=device, progress=log)
                err = forecast_errors(predict(model, xt, device=device), yt)
                for metric in ("mse", "mae"):
                    recs.append(record(series.name, "forecast-finetune", name, metric, [err[metric]], horizon=h,
                                       **extra, steps=fit["steps"], lr=lr, batch_size=batch_size,
                                       best_step=fit["best_step"], val_mse=fit["val_mse"], n_train=len(x),
                                       n_test=len(xt), **({"hit_cap": True} if fit["hit_cap"] else {})))
                log(f"{series.name} H={h} finetune/{name}: mse {err['mse']:.4f} mae {err['mae']:.4f} "
                    f"(best at step {fit['best_step']} of {fit['steps']}"
                    + (", still improving at the cap" if fit["hit_cap"] else ", then stopped improving") + ")")
    merge_records(home / runs.METRICS, recs)
    log(format_table(recs))
    if shown:
        _figure(home, series.name, horizons[0], shown, log)
    return recs


def _copy(encoder: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(encoder).train()


def _figure(run: Path, name: str, horizon: int, shown: dict, log: Log) -> None:
    from selfsup.interpret.structured import plot_forecasts

    c = shown["inputs"].shape[1] - 1  # the last channel: ETT's target, oil temperature
    preds = {k: v[:, c] for k, v in shown.items() if k not in ("inputs", "truth")}
    png = plot_forecasts(shown["inputs"][:, c], shown["truth"][:, c], preds, f"{name}: horizon {horizon}, channel {c}")
    folder = run / runs.FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    files.write_bytes(folder / "forecast.png", png)
    log(f"forecasts drawn to {folder / 'forecast.png'}")


__all__ = ["PROTOCOLS", "forecast"]
