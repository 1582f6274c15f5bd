"""Data sources: everything `--data` accepts, opened as a `Source` that yields contract samples.

`open_source(spec)` understands one string:

- an image folder (class subfolders -> labels, or flat images -> label -1),
- WebDataset shards: a `.tar`/`.tar.gz` file, a brace list, a glob, a folder of shards or an
  `http(s)://` URL (streamed, split by rank and worker, never loaded whole),
- an `.npz` file (`file.npz`, `file.npz:train` -> `train_images`/`train_labels`),
- a built-in name: `digits[:train|:test]` (embedded, no download), `cifar10[:train|:test]`,
  `mnist[:train|:test]` (downloaded once into ~/.cache/selfsup),
- a table (CSV, TSV, Parquet, UCI `.data`, an `.npz` with a 2-D `X`) or time series (UCR/UEA
  `.tsv`/`.ts`/`.arff`, an `.npz` of (N, C, T), a long CSV with a time column cut into windows),
  recognised by `structured.data_kind` and read with the options of `structured.open_structured`.

Nothing else: `check_location` refuses every other `scheme:` (`pipe:`, `file:`, `s3:`...), here
and wherever a path is read back from a run folder (`config.DataConfig`), so a data path is
always data and never a command.

One module per kind of source; a new kind is one new file plus one line in `open_source`:

- `base`: the batch contract (`collate`, skip markers), `SkipCounter`, the `Source` base class;
- `split`: rank/worker splitting, resume positions, epoch repeat, the shuffle buffer;
- `folder`, `arrays` (npz and in-memory), `shards` (WebDataset) over the safe `tar` reader;
- `builtins`: the built-in data sets and their downloads;
- `structured` (which files are tables or series), `frame` (files into DataFrames), `table`
  (column kinds, statistics, vocabularies), `series` (sets of series), `windows` (long series).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from selfsup.data.decode import IMAGE_EXTS
from selfsup.data.sources import builtins
from selfsup.data.sources.arrays import ArraySource, open_npz
from selfsup.data.sources.base import SkipCounter, Source, SourceError, collate, skip
from selfsup.data.sources.builtins import BUILTINS, open_builtin
from selfsup.data.sources.folder import FolderSource, images_under
from selfsup.data.sources.shards import SHARD_SUFFIXES, ShardSource, ShardStream
from selfsup.data.sources.split import IndexedSource
from selfsup.data.sources.structured import data_kind, open_structured
from selfsup.data.sources.tar import is_url, tar_samples

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def check_location(spec: str) -> str:
    """``spec`` unchanged if it is a local path, an http(s):// URL, a built-in ``NAME[:SPLIT]`` or
    ``FILE.npz:SPLIT``; else SourceError in one line naming the accepted forms.

    Any other ``scheme:`` prefix is refused whether or not such a file exists (``./pipe:x`` names
    a local file of that name): webdataset, for one, runs ``pipe:`` strings in a shell.
    """
    text = str(spec).strip()
    m = _SCHEME.match(text)
    if m is None:
        return text
    scheme, rest = m.group(1), text[m.end():]
    if (scheme.lower() in ("http", "https") and rest.startswith("//")) or len(scheme) == 1:  # C:\ drives
        return text
    if (scheme in BUILTINS or scheme.lower().endswith(".npz")) and re.fullmatch(r"\w*", rest):
        return text
    raise SourceError(f"data path {text[:60]!r} starts with '{scheme}:', which selfsup does not open: give a local "
                      f"path (./{scheme}:... for a file of that name), an http(s):// URL or a built-in name")


def open_source(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    images_key: str | None = None,
    labels_key: str | None = None,
    **options,
) -> Source:
    """Open a `--data` string (see `describe_sources()`); raises SourceError with a one-line reason.

    `image_size` / `channels` default to the first sample's (short side capped at 224 for files;
    grey -> 1, else 3); every image is converted and resized (short side, centre crop) to them.
    `images_key` / `labels_key` pick the arrays of an .npz. Tables and time series are opened by
    `structured.open_structured` with `options` (`kind`, `target`, `columns`, `drop`, `split`,
    `window`, `stride`, `schema`...; None values are ignored); image options do not apply to them.
    """
    spec = check_location(spec)
    if not is_url(spec) and (structured := open_structured(spec, **options)) is not None:
        return structured
    opts = {"image_size": image_size, "channels": channels}
    if spec.partition(":")[0] in BUILTINS and not Path(spec).exists():
        return open_builtin(spec, **opts)
    if re.fullmatch(r".+\.npz(:\w+)?", spec) and not is_url(spec):
        return open_npz(spec, images_key=images_key, labels_key=labels_key, **opts)
    if is_url(spec) or glob.has_magic(spec) or "{" in spec or spec.endswith(SHARD_SUFFIXES):
        return ShardSource(spec, **opts)
    path = Path(spec).expanduser()
    if path.is_dir():
        if any(f.is_file() and f.name.endswith(SHARD_SUFFIXES) for f in path.iterdir()):
            return ShardSource(spec, **opts)
        return FolderSource(path, **opts)
    if path.exists():
        raise SourceError(f"{spec}: not a folder, shard (.tar, .tar.gz) or .npz")
    if "/" not in spec and os.sep not in spec:
        raise SourceError(f"{spec}: no such file or folder, nor a built-in data set ({', '.join(BUILTINS)})")
    raise SourceError(f"{spec}: no such file or folder")


def describe_sources() -> str:
    """What `--data` accepts, with examples, and the built-in data sets (for `selfsup datasets`)."""
    lines = [
        "--data accepts:",
        "  image folder       photos/                   class subfolders -> labels (sorted names);",
        f"                                               flat images -> unlabeled ({', '.join(IMAGE_EXTS)})",
        "  WebDataset shards  data/train-{000000..000004}.tar.gz   a brace list",
        "                     'data/train-*.tar.gz'     a glob (quote it)",
        "                     data/shards/              every *.tar / *.tar.gz in a folder; one shard",
        "                     https://host/x/train-{0000..0009}.tar   streamed over http(s)",
        "                     (local paths and http(s) only: pipe:, file:, s3: ... are refused)",
        "                     members: KEY.jpg|png|webp image, KEY.cls label, KEY.json metadata",
        "                     ('captions' -> image-text), KEY.wav audio (json 'text' -> audio-text);",
        "                     classes.txt next to the shards names the classes",
        "  npz arrays         xray.npz:train            arrays train_images / train_labels",
        "                     xray.npz                  arrays images / labels (or images_key / labels_key)",
        "  table              adult/adult.data --target class   CSV, TSV, Parquet, UCI .data (+ .names);",
        "                     adbench/44_Wilt.npz       an .npz with a 2-D X (and y: ADBench's layout)",
        "                     numeric and categorical columns, missing values; --target COLUMN (else one",
        "                     named label/target/class/y), --columns / --drop; statistics from the",
        "                     training data, saved in the run and applied to test data",
        "  time series        ECG200_TRAIN.tsv          UCR label-first .tsv; .ts / .arff (UEA, multivariate,",
        "                     GunPoint_TRAIN.ts         unequal lengths padded); an .npz of X (N, C, T) and y",
        "  long series        ETTh1.csv --window 336    a CSV with a date/time column (ETT, weather, NAB) or",
        "                     a .txt of values (UCR anomaly): windows of --window steps every --stride",
        "                     (default 128, 16); data.split=train|test|all (default train: the rows",
        "                     before the benchmark border, e.g. ETT's first 12 months)",
        "  data.split         train|test of a table or series set: ADBench's stratified 70 / 30 split",
        "built-in data sets (NAME or NAME:SPLIT):",
    ]
    for name, (_, splits, default, desc) in BUILTINS.items():
        lines.append(f"  {name:<19} {desc}; splits {', '.join(splits)}; plain = {default or 'all'}")
    lines.append(f"downloads are cached in {builtins.CACHE_DIR} (set SELFSUP_CACHE to move it)")
    return "\n".join(lines)


__all__ = [
    "ArraySource", "BUILTINS", "FolderSource", "IndexedSource", "SHARD_SUFFIXES", "ShardSource", "ShardStream",
    "SkipCounter", "Source", "SourceError", "check_location", "collate", "data_kind", "describe_sources",
    "images_under", "is_url", "open_npz", "open_source", "open_structured", "skip", "tar_samples",
]
