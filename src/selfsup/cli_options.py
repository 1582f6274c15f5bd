"""What the ``selfsup`` sub-commands share: the help texts of model references and tasks, the
``--device`` option, list flags (``a,b`` or repeated), the table / series flags, and how records
and log lines are printed (``--json``: strict JSON last on stdout, log lines on stderr)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

MODEL_REF = ("a run folder or a public model: hf:ORG/NAME, timm:NAME.TAG, open_clip:ARCH/TAG, torchvision:FILE "
             "(?origin=keras), selfsup:series-small (shipped), or a local folder/file of those")
SOURCE_HELP = "run folder, or a public model with no run: " + MODEL_REF.split(" or a public model: ")[1]
DeviceOption = Annotated[str, typer.Option(
    help="where the network runs: auto (the GPU when present, else the CPU), cpu, cuda, cuda:N or mps")]


def csv_list(values: list[str] | None, cast=str) -> list | None:
    """Values of a list flag given as ``a,b`` or repeated, cast; None when none were given."""
    if not values:
        return None
    out = []
    for v in values:
        out += [cast(x) for x in str(v).split(",") if x.strip()]
    return out


def data_options(target: str | None = None, columns: list[str] | None = None, drop: list[str] | None = None,
                 split: str | None = None, window: int | None = None, stride: int | None = None) -> dict:
    """The table / series flags given, as ``config.DataConfig`` fields."""
    given = {"target": target, "columns": csv_list(columns), "drop": csv_list(drop), "split": split, "window": window,
             "stride": stride}
    return {k: v for k, v in given.items() if v is not None}


TASK_HELP = ("classify (default), detect (boxes: COCO .json, Pascal-VOC or YOLO folders; CenterNet head) or "
             "segment (images/ + masks/ folders, MVTec ground_truth/)")


def emit(records: list[dict], as_json: bool) -> None:
    """With ``--json``: the records as strict JSON, the last thing on stdout."""
    if as_json:
        from selfsup.files import json_text

        print(json_text(records, indent=None), end="", flush=True)  # strict JSON: NaN as null


def log_for(as_json: bool):
    """Where log lines go: stderr under ``--json`` (stdout then holds only the JSON), else stdout."""
    return (lambda m: print(m, file=sys.stderr, flush=True)) if as_json else (lambda m: print(m, flush=True))
