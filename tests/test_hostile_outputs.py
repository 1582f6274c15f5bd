"""Hostile input, round 2 (issue 23): wide tables, CSV formulas in outputs, atomic writes, strict
JSON, bounded metadata. Each test builds the attack itself, small."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup import files
from selfsup.data.sources import frame as frame_mod
from selfsup.data.sources.frame import TableError, read_frame

RNG = np.random.default_rng(23)


# --- wide CSV (item 14) --------------------------------------------------------------------------


def test_wide_csv_header_is_parsed_whole_not_from_the_first_64_kib(tmp_path: Path):
    """20,000 unique column names (about 110 KiB of header): was refused as "repeated column names"."""
    names = [f"c{j}" for j in range(20_000)]  # cut at 64 KiB, the last name read ("c1...") repeats
    rows = [",".join(names)] + [",".join(str(v) for v in RNG.integers(0, 9, 20_000)) for _ in range(3)]
    (tmp_path / "wide.csv").write_text("\n".join(rows) + "\n")
    frame = read_frame(tmp_path / "wide.csv")
    assert list(frame.data.columns) == names and len(frame.data) == 3


def test_table_head_is_read_in_bounded_pieces(tmp_path: Path, monkeypatch):
    """The sniffer reads 64 KiB of a long table, not the file; a header with no line break within
    MAX_HEADER_BYTES is refused in one line."""
    path = tmp_path / "long.csv"
    path.write_text("a,b\n" + "1,2\n" * 300_000)  # 1.2 MB
    assert len(frame_mod._head(path)) == 1 << 16
    monkeypatch.setattr(frame_mod, "MAX_HEADER_BYTES", 1 << 20)
    (tmp_path / "endless.csv").write_bytes(b"a," * (1 << 20))
    with pytest.raises(TableError, match="no line break in the first 1 MiB"):
        read_frame(tmp_path / "endless.csv")


# --- atomic writes (item 12) ---------------------------------------------------------------------


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path: Path):
    target = tmp_path / "patchcore.json"
    files.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), files.atomic_open(target) as f:
        f.write('{"v": 2, "half')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["patchcore.json"]  # no temporary file left
    files.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2} and oct(target.stat().st_mode & 0o777) != "0o600"


def test_no_writer_in_the_package_writes_a_result_file_in_place():
    """Every JSON, bank, export, report and table goes through selfsup.files (one home for atomic
    writes): no ``write_text`` / ``write_bytes`` / ``json.dump`` / ``open(..., "w")`` elsewhere, and
    every ``save_file`` / ``onnx.export`` writes to the temporary path ``atomic_path`` hands out."""
    src = Path(files.__file__).parent
    bad = []
    for path in src.rglob("*.py"):
        if path.name == "files.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"(?<!files)\.write_(text|bytes)\(|json\.dump\(|(?<!atomic_)open\([^)]*[\"']w", code):
                bad.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
            if re.search(r"save_file\(|onnx\.export\(", code) and "tmp" not in code and "def " not in code:
                bad.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
    allowed = ("data/sources/builtins.py",)  # a download to its own temporary file, renamed when whole
    assert [b for b in bad if b.split(":")[0] not in allowed] == []


def test_onnx_export_failing_midway_leaves_the_previous_export(tmp_path: Path, monkeypatch):
    import torch

    from selfsup.export import onnx as onnx_mod

    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def half(model, args, path, **kw):
        Path(path).write_bytes(b"half an ONNX graph")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", half)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_mod.export_onnx(torch.nn.Linear(4, 2), torch.zeros(1, 4), target, dynamo=False)
    assert target.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# --- CSV formulas (item 13) ----------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["=cmd|' /C calc'!A0", '=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)",
                                  "\tx", "\r=1"])
def test_formula_cells_are_neutralised(cell: str):
    assert files.safe_cell(cell) == "'" + cell
    assert files.safe_cell("-1.5e3") == "-1.5e3" and files.safe_cell("+7") == "+7" and files.safe_cell(3) == 3
    assert files.safe_cell("cat") == "cat"


def test_predict_csv_neutralises_formulas_in_keys_and_class_names(tmp_path: Path):
    import torch

    from selfsup.adapt.classifier import Predictions, write_predictions

    preds = Predictions(['=cmd|" /C calc"!A0', "ok.png"], torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                        np.array([0, 1]))
    path = write_predictions(tmp_path / "preds.csv", preds, ['=HYPERLINK("http://evil","x")', "@dog"])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["key", "pred", "pred_name", 'prob_=HYPERLINK("http://evil","x")', "prob_@dog"]
    assert rows[1][:3] == ['\'=cmd|" /C calc"!A0', "0", '\'=HYPERLINK("http://evil","x")']
    assert rows[2][:3] == ["ok.png", "1", "'@dog"]
    assert not any(c.startswith(files.FORMULA_START) for row in rows for c in row)


# --- strict JSON (item 15) -----------------------------------------------------------------------


def test_metrics_json_is_strict_with_non_finite_values_as_null_and_the_reason(tmp_path: Path):
    from selfsup.evaluate.records import merge_records

    path = tmp_path / "metrics.json"
    merge_records(path, [{"protocol": "pretrain", "final_loss": float("nan"), "top1": float("inf"),
                          "values": [1.0, float("-inf")]}])
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rec = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))[0]
    assert rec["final_loss"] is None and rec["top1"] is None and rec["values"] == [1.0, None]
    assert rec["non_finite"] == {"final_loss": "nan", "top1": "inf", "values": "in list"}


# --- weights index and metadata (items 10, 11) ---------------------------------------------------


def tiny_vit():
    from selfsup.encoders.vit import vit

    torch.manual_seed(0)
    return vit("custom", img_size=16, patch_size=4, in_chans=3, width=32, depth=1, heads=2)


def hf_folder(tmp_path: Path) -> Path:
    from selfsup.export.hf import export_hf

    return export_hf(tiny_vit(), tmp_path / "hf")


@pytest.mark.parametrize("shard", ["../../../../../../etc/passwd", "/etc/passwd", "model.safetensors.index.json",
                                   "other.index.json", "missing.safetensors"])
def test_weights_index_shards_stay_inside_the_model_folder(tmp_path: Path, shard: str):
    """The issue: an index naming ../../etc/passwd opened it (IndexError traceback); one naming
    itself recursed (RecursionError)."""
    from selfsup.encoders.hub import load_pretrained

    folder = hf_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "part-1.safetensors")
    (folder / "other.index.json").write_text(json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "part-1.safetensors",
                                                                                    "b": shard}}))
    with pytest.raises((ValueError, FileNotFoundError), match="outside the model folder|is an index itself|not found"):
        load_pretrained(f"hf:{folder}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "part-1.safetensors"}}))
    assert load_pretrained(f"hf:{folder}").encoder is not None  # a proper index still loads


def forged_encoder(tmp_path: Path, cfg: dict | None = None, spec: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "encoder.safetensors"
    enc_cfg = {"size": "custom", "width": 32, "depth": 1, "heads": 2, "patch_size": 4, **(cfg or {})}
    in_spec = {"modality": "image", "channels": 3, "image_size": 16, **(spec or {})}
    save_file({"x": torch.zeros(1)}, str(path), metadata={"encoder_config": json.dumps(enc_cfg),
                                                           "input_spec": json.dumps(in_spec)})
    return path


@pytest.mark.parametrize(("cfg", "spec", "said"), [
    ({"width": 4_000_000}, None, r"width=4000000 is out of bounds"),
    (None, {"image_size": 10**9}, r"image_size=1000000000 is out of bounds"),
    (None, {"channels": 10**9}, r"channels=1000000000 is out of bounds"),
    ({"patch_size": -4}, None, r"patch_size=-4 is out of bounds"),
    ({"depth": 0}, None, r"depth=0 is out of bounds"),
    ({"width": 16_384, "depth": 512, "heads": 16}, None, r"needs about .* GiB .* available; refusing"),
    (None, {"evil": 1}, r"unknown key\(s\) in input_spec: evil"),
    (None, {"channels": "3"}, r"channels='3' is not a whole number"),
    ({"width": "wide"}, None, r"encoder_config: width: "),
])
def test_hostile_encoder_metadata_is_refused_in_one_line(tmp_path: Path, cfg, spec, said: str):
    from selfsup.runs import load_encoder

    with pytest.raises(ValueError, match=said) as err:
        load_encoder(forged_encoder(tmp_path, cfg, spec))
    assert "\n" not in str(err.value)


def test_reference_options_and_sidecars_are_bounded(tmp_path: Path):
    from selfsup.encoders.hub import load_pretrained

    folder = hf_folder(tmp_path)
    with pytest.raises(ValueError, match=r"image_size=1000000 is out of bounds"):
        load_pretrained(f"hf:{folder}?image_size=1000000")
    with pytest.raises(ValueError, match=r"image_size='big' is not a whole number"):
        load_pretrained(f"hf:{folder}?image_size=big")
    with pytest.raises(ValueError, match=r"option heads='x'"):
        load_pretrained(f"hf:{folder}?heads=x")
    weights = folder / "w.safetensors"  # beside its config.json
    weights.write_bytes((folder / "model.safetensors").read_bytes())
    weights.with_suffix(".json").write_text(json.dumps({"image_size": 10**7}))
    with pytest.raises(ValueError, match=r"image_size=10000000 is out of bounds"):
        load_pretrained(str(weights))
    weights.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"w.json: should hold a JSON object"):
        load_pretrained(str(weights))


class Boom:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("scheme", ["torchvision", "timm"])
def test_pickled_weights_behind_a_scheme_are_refused_in_one_line(tmp_path: Path, scheme: str, capsys):
    from selfsup.encoders.hub import load_pretrained

    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "boom": Boom()}, path)
    with pytest.raises(ValueError, match="refused: not a plain-tensor weights file") as err:
        load_pretrained(f"{scheme}:{path}")
    assert "\n" not in str(err.value) and "pickled code ran" not in capsys.readouterr().out


# --- config values that name things to open (item 15) --------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("train.monitor", "pipe:touch MARKER"), ("init", "pipe:touch MARKER"),
                                            ("init", "file:///etc/passwd"), ("train.monitor", "s3://b/x.tar")])
def test_config_refuses_commands_in_monitor_and_init_when_read(tmp_path: Path, key: str, value: str):
    import yaml

    from selfsup.config import ConfigError, load_config
    from selfsup.runs import load_run_config

    section, _, name = key.rpartition(".")
    cfg = {section: {name: value}} if section else {name: value}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"which selfsup does not open") as err:
        load_run_config(tmp_path)
    assert "config.yaml" in str(err.value) and "\n" not in str(err.value)
    assert load_config(None, ["init=hf:facebook/dinov2-small", "train.monitor=digits:train"]).init


# --- one line, rc 2, for every refusal from the command line -------------------------------------


@pytest.mark.slow
def test_cli_refusals_are_one_line_rc_2_without_traceback(tmp_path: Path):
    """The attacks above through `selfsup` itself: forged metadata, a lying npz, an escaping index."""
    import subprocess
    import sys

    forged = forged_encoder(tmp_path, {"width": 4_000_000})
    (tmp_path / "npz").mkdir()
    np.savez_compressed(tmp_path / "npz" / "x.npz", images=np.zeros((8, 8, 8), np.uint8))
    lying = tmp_path / "lying.npz"
    head = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with __import__("zipfile").ZipFile(lying, "w", __import__("zipfile").ZIP_DEFLATED) as z:
        z.writestr("images.npy", head.getvalue() + bytes(64))
    folder = hf_folder(tmp_path)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../../etc/passwd"}}))
    (folder / "model.safetensors").unlink()
    cases = {
        "metadata": ["embed", str(forged), "--data", str(tmp_path / "npz" / "x.npz"), "--out", "f.npz"],
        "npz": ["pretrain", "--data", str(lying), "--steps", "1", "--out", "r"],
        "index": ["embed", f"hf:{folder}", "--data", str(tmp_path / "npz" / "x.npz"), "--out", "f.npz"],
    }
    said = {"metadata": "width=4000000 is out of bounds", "npz": "declares", "index": "outside the model folder"}
    for name, args in cases.items():
        proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])
        assert lines[-1].startswith("error: ") and said[name] in lines[-1], (name, proc.stderr[-2000:])


# --- inf in series files (item 7) ----------------------------------------------------------------


SERIES_WITH_INF = {
    "Toy_TRAIN.tsv": "1\t0.1\t0.2\t0.3\n2\t0.5\tinf\t0.7\n1\t1\t2\t3\n2\t-Infinity\t1e39\t1\n",
    "toy.ts": "@problemName toy\n@timeStamps false\n@univariate true\n@classLabel true 1 2\n@data\n"
              "0.1,0.2,0.3:1\n0.5,inf,0.7:2\n1,2,3:1\n-inf,1e39,1:2\n",
}


@pytest.mark.parametrize("name", list(SERIES_WITH_INF))
def test_inf_in_a_set_of_series_is_counted_as_for_tables(tmp_path: Path, name: str):
    """The issue: inf in .tsv / .ts passed silently into training (tables counted it as "not finite").
    1e39 is finite in float64 but not in float32: counted too."""
    from selfsup.data import open_source

    path = tmp_path / name
    path.write_text(SERIES_WITH_INF[name])
    src = open_source(str(path))  # bad=missing, the default: read as missing and said
    assert np.isfinite(src.data.values[~np.isnan(src.data.values)]).all() and len(src) == 4
    assert "3 infinite values in 2 series read as missing" in src.summary()
    skipped = open_source(str(path), bad="skip")
    assert len(skipped) == 2 and skipped.data.skips.by_reason == {"not finite": 2}
    assert "not finite" in skipped.summary()


def test_inf_in_a_long_series_is_read_as_missing_and_counted(tmp_path: Path):
    from selfsup.data.sources.windows import read_long_series

    (tmp_path / "long.txt").write_text("\n".join(["1.0"] * 50 + ["inf", "-inf", "1e39"] + ["2.0"] * 50) + "\n")
    series = read_long_series(tmp_path / "long.txt")
    assert np.isnan(series.values).sum() == 3 and not np.isinf(series.values).any()
    assert "3 infinite values read as missing" in " ".join(series.notes)
    (tmp_path / "long.csv").write_text("a,b\n" + "1,2\n" * 20 + "inf,3\n" + "1,2\n" * 20)
    assert "1 infinite values read as missing" in " ".join(read_long_series(tmp_path / "long.csv").notes)
