"""Weight files read safely: safetensors (also sharded, with every shard kept inside the model's
folder), else ``torch.load(weights_only=True)``; the JSON beside them. ``encoders.hub`` reads every
public model's files through here, so a pickle with code or an index that escapes its folder is
refused in one line wherever a reference is read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors (also a sharded ``*.index.json``), else
    ``torch.load(weights_only=True)``; unwraps ``{"state_dict"|"model": ...}`` and a ``module.`` prefix."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        state = {}
        for shard in index_shards(path):
            state |= _read_weights(shard)
        return state
    return _read_weights(path)


def index_shards(path: Path) -> list[Path]:
    """The shard files a sharded-weights index (``model.safetensors.index.json``) names, each checked:
    inside the index's own folder (no ``..``, absolute paths or links out of it), a weights file that
    exists, and not an index itself (an index naming itself or another index is refused, not followed)."""
    try:
        weight_map = json.loads(path.read_text()).get("weight_map")
    except (ValueError, AttributeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a weights index (a JSON object with a weight_map): {e}") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{path}: weight_map should map tensor names to shard file names")
    folder = path.parent.resolve()
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = (path.parent / name).resolve()
        if not shard.is_relative_to(folder) or Path(name).is_absolute():
            raise ValueError(f"{path}: shard {name[:80]!r} is outside the model folder {folder}; refused")
        if shard.name.endswith(".index.json"):
            raise ValueError(f"{path}: shard {name[:80]!r} is an index itself; nested indexes are refused")
        if not shard.is_file():
            raise FileNotFoundError(f"{path}: shard {name[:80]!r} not found in {folder}")
        shards.append(shard)
    return shards


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """One weights file (safetensors or a weights-only torch file), unwrapped as ``read_state_dict`` says."""
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own kinds for a bad header
            raise ValueError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a pickle with code, a torn file, not a torch file at all
            raise ValueError(f"{path}: refused: not a plain-tensor weights file; selfsup loads weights with "
                             f"torch.load(weights_only=True) and never unpickles objects ({_unpickler_reason(e)})") \
                from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    while isinstance(state, dict) and len(state) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in ("state_dict", "model", "model_state_dict", "module") if k in state), None)
        if key is None:
            raise ValueError(f"{path}: no tensors at the top level and no state_dict/model entry to unwrap")
        state = state[key]
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _unpickler_reason(e: BaseException) -> str:
    """The line of torch's weights-only refusal that says what was refused ("Unsupported global:
    GLOBAL builtins.print ..."), without its advice to load the file unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    line = next((x.strip() for x in text.splitlines() if "WeightsUnpickler error" in x), None)
    return line.split("WeightsUnpickler error:", 1)[1].split(". ")[0].strip()[:160] if line else _first_line(e)


def json_beside(path: Path) -> dict:
    """A JSON object beside the weights ({} when absent); ValueError in one line when it is not one."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: should hold a JSON object, not a {type(data).__name__}")
    return data


def weights_in(folder: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` that is a file in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: none of {', '.join(names)}")
