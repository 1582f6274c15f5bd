"""``selfsup anomaly fit|score``: PatchCore memory banks for images, detectors for tables and series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from selfsup.cli_options import SOURCE_HELP, DeviceOption, csv_list, data_options, emit, log_for

anomaly_app = typer.Typer(no_args_is_help=True, help="Anomaly detection: PatchCore memory banks, image "
                          "scores and pixel heatmaps; per-row / per-window scores for tables and series.\n\n"
                          "Example: selfsup anomaly fit runs/mae --data mvtec/tile; "
                          "selfsup anomaly score runs/mae/anomaly --data mvtec/tile")


@anomaly_app.command("fit")
def anomaly_fit(
    data: Annotated[str, typer.Option(help="normal images: an MVTec-AD root (uses train/good), a folder or "
                                      "any --data source")],
    run: Annotated[str | None, typer.Argument(help="whose encoder gives the patch features: " + SOURCE_HELP)]
    = None,
    raw: Annotated[bool, typer.Option("--raw", help="raw pixel patches instead of a run's encoder (baseline)")] = False,
    out: Annotated[Path | None, typer.Option(help="bank file (default RUN/anomaly/patchcore.safetensors)")] = None,
    image_size: Annotated[int | None, typer.Option(help="image side (default the run's or the model's; with --raw "
                                                   "8x8 patches of --patch, at most the data's short side)")] = None,
    coreset: Annotated[float, typer.Option(help="memory bank as a fraction of all training patches")] = 0.1,
    layers: Annotated[list[str] | None, typer.Option(help="encoder blocks, 0-based (default the two at mid-depth)")]
    = None,
    patch: Annotated[int, typer.Option(help="raw pixel patch side (with --raw)")] = 8,
    normalize: Annotated[str, typer.Option(help="image: per-image brightness/contrast standardisation (also "
                                           "applied when scoring), or none")] = "image",
    max_samples: Annotated[int | None, typer.Option(help="cap on normal images read")] = None,
    split: Annotated[str | None, typer.Option(help="tables and series: the part to fit on (default train: "
                                               "ADBench's stratified 70 %; a long series' training part)")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print a summary as JSON last")] = False,
) -> None:
    """Build a PatchCore memory bank (greedy coreset of patch features) from normal images; with a table or
    series run, keep its training rows (or windows) for the detectors.

    Example: selfsup anomaly fit runs/mae --data mvtec/tile   (MVTec layout: uses train/good)
    """
    if (run is None) == (not raw):
        raise ValueError("give a RUN folder (selfsup anomaly fit runs/mae --data D) or --raw for raw pixel patches, "
                         "not both or neither")
    from selfsup import api

    bank = api.anomaly_fit(None if raw else run, data, out=out, image_size=image_size, coreset=coreset,
                           layers=csv_list(layers, int), pixel_patch=patch, normalize=normalize,
                           max_samples=max_samples, data_options=data_options(split=split), device=device,
                           log=log_for(as_json))
    if as_json:
        print(json.dumps({"bank": str(bank), **json.loads(bank.with_suffix(".json").read_text())}), flush=True)


@anomaly_app.command("score")
def anomaly_score(
    model: Annotated[Path, typer.Argument(help="bank written by `selfsup anomaly fit` (file or its folder)")],
    data: Annotated[str, typer.Option(help="MVTec-AD root (scores test/ against ground_truth/) or an image folder")],
    out: Annotated[Path | None, typer.Option(help="folder for scores.csv and heatmaps (default the bank's)")] = None,
    report: Annotated[bool, typer.Option(help="add the anomaly heatmaps to the run's report.html")] = True,
    split: Annotated[str | None, typer.Option(help="tables and series: the part to score (default test when it "
                                               "is the file the bank was fitted on, else all)")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
) -> None:
    """Image scores and pixel heatmaps; image and pixel AUROC per defect type when masks exist. Tables and
    series: every detector's scores (SSL embedding kNN and reconstruction error, IsolationForest, raw kNN),
    AUROC and AUPRC when the data has anomaly labels.

    Example: selfsup anomaly score runs/mae/anomaly --data mvtec/tile --json
    """
    from selfsup import api

    emit(api.anomaly_score(model, data, out=out, report=report, data_options=data_options(split=split),
                            device=device, log=log_for(as_json)), as_json)
