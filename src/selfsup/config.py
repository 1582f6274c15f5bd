"""Run configuration: pydantic models, YAML files and ``key=value`` overrides.

A run is fully described by a ``RunConfig``; the resolved config is written into the run folder
so every number can be reproduced. Any wrong key or value is a one-line ``ConfigError`` naming it
(and, for a misspelt key, the nearest valid one).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfsup.data.sources import SourceError, check_location
from selfsup.encoders import EncoderConfig
from selfsup.files import write_text
from selfsup.methods import METHODS, method_config
from selfsup.train.config import TrainConfig


class ConfigError(ValueError):
    """A bad key or value in a config file or override; the message is one line."""


class DataConfig(BaseModel):
    """What to read. The fields after ``num_workers`` apply to tables and time series only
    (``data.sources.structured``); None leaves the reader's own default."""

    model_config = ConfigDict(extra="forbid")
    path: str = "digits:train"
    image_size: int | None = None
    channels: int | None = None
    images_key: str | None = None
    labels_key: str | None = None
    num_workers: int = 2
    kind: Literal["table", "series", "windows"] | None = Field(
        None, description="how to read a file: table, series (a set of series) or windows (one long series)")
    target: str | None = Field(None, description="label column of a table ('' for none)")
    columns: list[str] | None = Field(None, description="feature (or channel) columns to use")
    drop: list[str] | None = Field(None, description="columns to leave out")
    split: Literal["all", "train", "test"] | None = Field(
        None, description="part of a file that holds both: ADBench's stratified 70/30 split for tables and "
        "sets of series, the benchmark border for a long series (default: all; a long series: train)")
    bad: Literal["missing", "skip"] | None = Field(
        None, description="tables and series: text or an infinite value in a numeric column is read as missing "
        "and counted (default), or its row (a table's) or series (a set's) is skipped and counted; a long series "
        "always reads it as missing")
    window: int | None = Field(None, ge=1, description="long series: steps per window (default 128)")
    stride: int | None = Field(None, ge=1, description="long series: steps between windows (default 16)")

    def reader_options(self) -> dict[str, Any]:
        """The table / series options given, as ``open_source`` keyword arguments."""
        names = ("kind", "target", "columns", "drop", "split", "bad", "window", "stride")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        """A data path is data: local, http(s) or built-in, never a ``pipe:`` or other scheme, also
        when read back from a run folder someone sent (``data.sources.check_location``)."""
        try:
            return check_location(v)
        except SourceError as e:
            raise ValueError(str(e)) from None


class RunConfig(BaseModel):
    """Everything a pretraining run needs. ``method`` holds ``name`` plus that method's options."""

    model_config = ConfigDict(extra="forbid")
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "mae"})
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str | None = None
    init: str | None = None  # continue from these weights: a model reference (encoders.hub) or a run folder

    @field_validator("init")
    @classmethod
    def _init(cls, v: str | None) -> str | None:
        """``init`` is a model reference or a local path: any other ``scheme:`` (``pipe:``, ``file:``,
        ``s3:``...) is refused when the config is read, not only when the weights are loaded."""
        if v is None:
            return v
        from selfsup.encoders.hub import SCHEMES  # noqa: PLC0415

        m = re.match(r"^([A-Za-z][\w+.-]*):", v.strip())
        if m and len(m.group(1)) > 1 and m.group(1) not in SCHEMES:
            raise ValueError(f"init {v[:60]!r} starts with '{m.group(1)}:', which selfsup does not open: give a run "
                             f"folder, a weights file or a model reference ({', '.join(s + ':' for s in SCHEMES)})")
        return v.strip()

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> dict[str, Any]:
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ValueError("give a method name or a mapping of its options with a name")
        v = dict(v)
        name = v.pop("name", "mae")
        if not isinstance(name, str) or name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
        return {"name": name, **method_config(name, v).model_dump()}

    @property
    def method_name(self) -> str:
        return self.method["name"]

    @property
    def method_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.method.items() if k != "name"}


def _fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _known(method_name: Any) -> bool:
    return isinstance(method_name, str) and method_name in METHODS


def _check_key(path: list[str], method_name: str) -> None:
    """Raise ConfigError for a dotted key that names nothing, suggesting the nearest valid key."""
    sections: dict[str, list[str]] = {
        "": _fields(RunConfig),
        "encoder": _fields(EncoderConfig),
        "data": _fields(DataConfig),
        "train": _fields(TrainConfig),
        "method": ["name", *_fields(METHODS[method_name].Config)] if _known(method_name) else ["name"],
    }
    head = path[0]
    if len(path) == 1:
        valid = sections[""]
        if head in valid and head not in ("encoder", "data", "train", "method") or head == "method":
            return
    elif len(path) == 2 and head in sections and head != "":
        valid = sections[head]
        if path[1] in valid:
            return
    valid_all = [k for k in sections[""] if k not in sections] + [
        f"{s}.{k}" for s in ("method", "encoder", "data", "train") for k in sections[s]
    ]
    key = ".".join(path)
    near = difflib.get_close_matches(key, valid_all, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(f"unknown config key {key!r}{hint}")


def _section(value: Any) -> dict[str, Any]:
    """A config section as a fresh dict: a bare string is a name (``method: mae``), junk is empty."""
    return {"name": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else {}


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw config dict."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        path = key.strip().split(".")
        method_name = _section(raw.get("method", "mae")).get("name", "mae")
        _check_key(path, method_name)
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        if len(path) == 1:
            raw[path[0]] = parsed
        else:
            section = _section(raw.get(path[0], {}))
            section[path[1]] = parsed
            raw[path[0]] = section
    return raw


def _explain(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
    if e["type"] == "extra_forbidden":
        section, _, key = loc.rpartition(".")
        section = section or ""
        candidates = {
            "": _fields(RunConfig), "encoder": _fields(EncoderConfig), "data": _fields(DataConfig),
            "train": _fields(TrainConfig), "method": sorted({f for m in METHODS.values() for f in _fields(m.Config)}),
        }.get(section, [])
        near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
        return f"unknown config key {loc!r}" + (f"; did you mean {(section + '.' if section else '') + near[0]!r}?"
                                                  if near else "")
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) and str(got)[:20] not in msg else ""
    return f"bad value for {loc or 'config'!r}: {msg}{shown}"


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Validate a raw dict (+ overrides) into a RunConfig, with one-line errors."""
    raw = apply_overrides(raw or {}, overrides or [])
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:  # a list, since the bad key may itself be None (YAML "?" or "~: 1")
        raise ConfigError(f"config keys are names, not {bad[0]!r}")
    try:
        return RunConfig(**raw)
    except ValidationError as err:
        raise ConfigError(_explain(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **fields: Any) -> RunConfig:
    """Read a YAML file (optional), apply ``fields`` (section dicts) then ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping of config sections")
    for section, values in fields.items():
        if values is None:
            continue
        if isinstance(values, dict):
            merged = _section(raw.get(section))
            merged.update(values)
            raw[section] = merged
        else:
            raw[section] = values
    return build_config(raw, overrides)


def dump_config(cfg: RunConfig, path: Path) -> None:
    data = cfg.model_dump(mode="json")
    write_text(path, yaml.safe_dump(data, sort_keys=False))
