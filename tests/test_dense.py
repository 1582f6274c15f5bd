"""Dense tasks: readers, CenterNet and NMS, segmenters, metrics, the few-label protocol and the commands.

Synthetic images made here (bright rectangles of two colours on grey, boxes and masks known) keep the
tests fast; NEU-DET and CamVid from ../shared run as slow tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.dense import IGNORE, DenseSet, dense_kind, draw_labels, read_coco, read_dense, read_voc, read_yolo
from selfsup.data.spec import InputSpec
from selfsup.dense.boxes import box_iou, centernet_targets, decode, nms
from selfsup.dense.heads import CenterNet, Segmenter
from selfsup.dense.metrics import box_map, confusion, mask_scores
from selfsup.dense.train import DenseRecipe, fit_dense, make_model, score
from selfsup.encoders import EncoderConfig, build_encoder

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dense"


def shapes(n: int, S: int = 32, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """n images (n, 3, S, S) uint8 with 1-2 rectangles: class 0 red, class 1 green; boxes, labels, masks (0 bg)."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, 3, S, S), 40, np.uint8)
    masks = np.zeros((n, S, S), np.int64)
    boxes, labels = [], []
    for i in range(n):
        b, lab = [], []
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(0, 2))
            w, h = (int(v) for v in rng.integers(S // 4, S // 2, 2))
            x, y = int(rng.integers(0, S - w)), int(rng.integers(0, S - h))
            imgs[i, c, y:y + h, x:x + w] = 230
            masks[i, y:y + h, x:x + w] = c + 1
            b.append([x, y, x + w, y + h])
            lab.append(c)
        boxes.append(np.array(b, np.float32))
        labels.append(np.array(lab, np.int64))
    return imgs, boxes, labels, masks


def det_set(n: int, seed: int, S: int = 64) -> DenseSet:
    imgs, boxes, labels, _ = shapes(n, S, seed)
    return DenseSet("detect", torch.from_numpy(imgs), [(S, S)] * n, [f"{i}.png" for i in range(n)], ["red", "green"],
                    boxes, labels)


def seg_set(n: int, seed: int, S: int = 64) -> DenseSet:
    imgs, _, _, masks = shapes(n, S, seed)
    return DenseSet("segment", torch.from_numpy(imgs), [(S, S)] * n, [str(i) for i in range(n)],
                    ["background", "red", "green"], masks=torch.from_numpy(masks))


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=8),
                         InputSpec(channels=3, image_size=32))


def write_coco(root: Path, n: int = 6, S: int = 40, seed: int = 3) -> Path:
    imgs, boxes, labels, _ = shapes(n, S, seed=seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(imgs[i].transpose(1, 2, 0)).save(root / "images" / f"im{i}.png")
        images.append({"id": 10 + i, "file_name": f"im{i}.png", "width": S, "height": S})
        for b, c in zip(boxes[i], labels[i], strict=True):
            anns.append({"id": len(anns) + 1, "image_id": 10 + i, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    images.append({"id": 99, "file_name": "missing.png"})
    (root / "images" / "broken.png").write_bytes(b"not a png")
    images.append({"id": 100, "file_name": "broken.png"})
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return path


def test_coco_reader_scales_boxes_and_counts_bad_files(tmp_path):
    path = write_coco(tmp_path)
    ds = read_coco(path, image_size=20)
    assert dense_kind(path) == "coco" and len(ds) == 6 and ds.skipped == 2
    assert ds.images.shape == (6, 3, 20, 20) and ds.class_names == ["red", "green"]
    _, boxes, labels, _ = shapes(6, 40, seed=3)
    np.testing.assert_allclose(ds.boxes[0], boxes[0] / 2, atol=1e-4)
    assert (ds.labels[0] == labels[0]).all()


def test_voc_and_yolo_readers_agree(tmp_path):
    imgs, boxes, labels, _ = shapes(4, 40, seed=5)
    names = ["red", "green"]
    (tmp_path / "voc").mkdir()
    (tmp_path / "yolo" / "images").mkdir(parents=True)
    (tmp_path / "yolo" / "labels").mkdir()
    (tmp_path / "yolo" / "classes.txt").write_text("red\ngreen\n")
    for i in range(4):
        Image.fromarray(imgs[i].transpose(1, 2, 0)).save(tmp_path / "voc" / f"a{i}.png")
        Image.fromarray(imgs[i].transpose(1, 2, 0)).save(tmp_path / "yolo" / "images" / f"a{i}.png")
        objs = "".join(f"<object><name>{names[c]}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                       f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                       for b, c in zip(boxes[i], labels[i], strict=True))
        (tmp_path / "voc" / f"a{i}.xml").write_text(f"<annotation><filename>a{i}.png</filename>{objs}</annotation>")
        rows = [f"{c} {(b[0] + b[2]) / 80} {(b[1] + b[3]) / 80} {(b[2] - b[0]) / 40} {(b[3] - b[1]) / 40}"
                for b, c in zip(boxes[i], labels[i], strict=True)]
        (tmp_path / "yolo" / "labels" / f"a{i}.txt").write_text("\n".join(rows))
    (tmp_path / "voc" / "bad.xml").write_text("<annotation><object>")
    voc, yolo = read_voc(tmp_path / "voc", image_size=40), read_yolo(tmp_path / "yolo", image_size=40)
    assert voc.skipped == 1 and len(voc) == 4 and voc.class_names == ["green", "red"]  # VOC: sorted names
    assert yolo.class_names == names and len(yolo) == 4
    for i in range(4):
        order = np.argsort(voc.boxes[i][:, 0] * 1000 + voc.boxes[i][:, 1])
        order_y = np.argsort(yolo.boxes[i][:, 0] * 1000 + yolo.boxes[i][:, 1])
        np.testing.assert_allclose(voc.boxes[i][order], yolo.boxes[i][order_y], atol=1e-3)


def test_mask_folder_void_and_split(tmp_path):
    imgs, _, _, masks = shapes(6, 24, seed=1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(6):
        Image.fromarray(imgs[i].transpose(1, 2, 0)).save(tmp_path / "images" / f"s{i}.jpg")
        Image.fromarray(masks[i].astype(np.uint8)).save(tmp_path / "masks" / f"s{i}.png")
    (tmp_path / "classes.txt").write_text("void\nred\ngreen\n")
    (tmp_path / "train.txt").write_text("s0\ns1\ns2\ns3\nnope\n")
    (tmp_path / "test.txt").write_text("s4\ns5\n")
    tr, te = read_dense(tmp_path, split="train", image_size=24), read_dense(tmp_path, split="test", image_size=24)
    assert len(tr) == 4 and tr.skipped == 1 and len(te) == 2 and tr.class_names == ["red", "green"]
    assert ((tr.masks == IGNORE) == torch.from_numpy(masks[:4] == 0)).all()  # id 0 named void is ignored
    assert (tr.masks[torch.from_numpy(masks[:4] == 2)] == 1).all()


def test_draws_are_seeded_and_stratified():
    ds = det_set(40, seed=0)
    a, b = draw_labels(ds, fraction=0.25, seed=1), draw_labels(ds, fraction=0.25, seed=1)
    assert (a == b).all() and 8 <= len(a) <= 12
    assert not np.array_equal(a, draw_labels(ds, fraction=0.25, seed=2))
    assert len(draw_labels(ds, shots=2, seed=0)) == 4


def test_nms_and_iou():
    b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert torch.allclose(box_iou(b[:1], b[1:2]), torch.tensor([[81 / 100]]))
    assert nms(b, s, 0.5).tolist() == [0, 2]
    assert nms(b, s, 0.5, classes=torch.tensor([0, 0, 0, 1])).tolist() == [0, 2, 3]  # other class kept


def test_centernet_targets_decode_back_to_the_boxes():
    boxes = [np.array([[4, 8, 20, 16], [18, 2, 30, 30]], np.float32)]
    t = centernet_targets(boxes, [np.array([0, 1])], 2, (8, 8), 4.0)
    logits = torch.where(t["heat"] == 1, torch.tensor(8.0), torch.tensor(-8.0))
    dets = decode(logits, t["size"], t["offset"], 4.0, 32)[0]
    assert len(dets["boxes"]) == 2
    got = dets["boxes"][torch.argsort(dets["labels"])]
    assert torch.allclose(got, torch.from_numpy(boxes[0]), atol=1e-4)


def test_box_map_perfect_and_wrong_predictions():
    ds = det_set(6, seed=2)
    perfect = [{"boxes": torch.from_numpy(b), "scores": torch.ones(len(b)), "labels": torch.from_numpy(lab)}
               for b, lab in zip(ds.boxes, ds.labels, strict=True)]
    m = box_map(ds, perfect)
    assert m["map"] > 0.99 and m["map50"] > 0.99 and m["per_class"]["red"]["ap50"] > 0.99
    wrong = [{**p, "labels": 1 - p["labels"]} for p in perfect]
    assert box_map(ds, wrong)["map50"] < 0.01


def test_mask_scores():
    t = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    p = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    s = mask_scores(confusion(p, t, 3), ["a", "b", "c"])
    assert s["per_class"]["a"]["iou"] == pytest.approx(0.5) and s["per_class"]["b"]["iou"] == pytest.approx(0.75)
    assert s["per_class"]["c"]["iou"] == 1.0 and s["miou"] == pytest.approx((0.5 + 0.75 + 1) / 3)
    assert s["per_class"]["a"]["dice"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["vit", "resnet18", "mobilenetv2"])
def test_heads_on_every_encoder(name):
    cfg = EncoderConfig(name=name, size="custom", width=32, depth=1, heads=2, patch_size=8, width_mult=0.35)
    enc = build_encoder(cfg, InputSpec(channels=3, image_size=32))
    x = torch.rand(2, 3, 32, 32)
    heat, size, off = CenterNet(enc, 3)(x)
    s = int(CenterNet(enc, 3).stride)
    assert heat.shape == (2, 3, 32 // s, 32 // s) and size.shape == off.shape == (2, 2, 32 // s, 32 // s)
    for kind in ("linear", "fpn"):
        assert Segmenter(enc, 4, kind)(x).shape == (2, 4, 32, 32)


@pytest.mark.slow
def test_detector_learns_shapes():
    """A tiny ViT detector fine-tuned on 32 synthetic images finds held-out rectangles (chance is ~0)."""
    torch.manual_seed(0)
    model, info = fit_dense(lambda: make_model("detect", tiny_vit(), 2, width=32), det_set(32, 0),
                            DenseRecipe(lr=3e-3, lr_grid=(1.0,), max_steps=120, eval_every=40, batch_size=16),
                            "finetune", seed=0)
    s = score(model, det_set(16, 1))
    assert info["lr"] == pytest.approx(3e-3) and info["steps"] >= 40
    assert s["map50"] > 0.3, s


@pytest.mark.slow
def test_segmenter_learns_shapes_frozen():
    """Frozen random tiny ViT + FPN decoder (the linear protocol) separates the colours well above chance."""
    model, _ = fit_dense(lambda: make_model("segment", tiny_vit(), 3, width=32), seg_set(24, 0),
                         DenseRecipe(lr=1e-2, lr_grid=(1.0,), max_steps=80, eval_every=40), "linear", seed=0)
    s = score(model, seg_set(8, 1))
    assert s["miou"] > 0.5, s


def _encoder_file(tmp_path: Path) -> Path:
    from selfsup import runs

    enc = tiny_vit()
    cfg = EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=8)
    return runs.write_encoder(enc.state_dict(), cfg, InputSpec(channels=3, image_size=32), tmp_path / "enc.safetensors")


def test_evaluate_adapt_predict_detect(tmp_path):
    """The API end to end on tiny COCO files: records with the vocabulary, a verdict, a saved model whose
    predictions form a COCO results list with the file's image ids."""
    from selfsup.api.dense import adapt_dense, evaluate_dense, predict_dense

    enc = _encoder_file(tmp_path)
    train, test = write_coco(tmp_path / "tr", n=8), write_coco(tmp_path / "te", n=4, seed=4)
    recipe = DenseRecipe(max_steps=4, eval_every=2, lr_grid=(1.0,), batch_size=4)
    recs = evaluate_dense(enc, str(test), task="detect", train_data=str(train), protocols=["finetune"],
                          label_fractions=[0.5], seeds=2, image_size=32, recipe=recipe, out=tmp_path / "out",
                          log=lambda s: None)
    got = {(r["encoder"], r["metric"]) for r in recs}
    assert {("ssl", "map"), ("ssl", "map50"), ("scratch", "map50"), ("ssl", "map50_difference")} <= got
    r = next(r for r in recs if r["metric"] == "map50" and r["encoder"] == "ssl")
    assert r["task"] == "detect/te" and r["n_seeds"] == 2 and r["label_fraction"] == 0.5 and "verdict" not in r
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())
    with pytest.raises(ValueError, match="also in the labelled pool"):
        evaluate_dense(enc, str(train), task="detect", train_data=str(train), recipe=recipe, log=lambda s: None)
    model = adapt_dense(enc, str(train), task="detect", image_size=32, recipe=recipe, out=tmp_path / "m",
                        test_data=str(test), log=lambda s: None)
    assert (model / "figures" / "dense_examples.png").stat().st_size > 1000
    meta = json.loads((model / "dense.json").read_text())
    assert set(meta["test"]["per_class"]) == {"red", "green"} and 0 <= meta["test"]["map50"] <= 1
    summary = predict_dense(model, str(test), tmp_path / "preds.json", min_score=0.0, log=lambda s: None)
    res = json.loads((tmp_path / "preds.json").read_text())
    assert summary["images"] == 4 and res and {r["image_id"] for r in res} <= {10, 11, 12, 13}
    assert all(len(r["bbox"]) == 4 and 0 <= r["category_id"] - 1 < 2 for r in res)
    pytest.importorskip("onnxruntime")
    from selfsup.api.export import export

    onnx = export(model, "onnx", log=lambda s: None)  # raises unless onnxruntime matches torch
    assert onnx.is_file() and onnx.name == "model.onnx"


def test_adapt_predict_segment_masks(tmp_path):
    from selfsup.api.dense import adapt_dense, predict_dense

    imgs, _, _, masks = shapes(4, 32, seed=1)
    for d in ("images", "masks"):
        (tmp_path / "seg" / d).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(imgs[i].transpose(1, 2, 0)).save(tmp_path / "seg" / "images" / f"s{i}.png")
        Image.fromarray(masks[i].astype(np.uint8)).save(tmp_path / "seg" / "masks" / f"s{i}.png")
    model = adapt_dense(_encoder_file(tmp_path), str(tmp_path / "seg"), task="segment", head="linear",
                        image_size=32, recipe=DenseRecipe(max_steps=4, eval_every=2, lr_grid=(1.0,)),
                        out=tmp_path / "m", test_data=str(tmp_path / "seg"), log=lambda s: None)
    assert (model / "figures" / "dense_examples.png").is_file()
    predict_dense(model, str(tmp_path / "seg" / "images"), tmp_path / "pm", log=lambda s: None)
    out = sorted((tmp_path / "pm").glob("*.png"))
    assert len(out) == 4 and np.asarray(Image.open(out[0])).shape == (32, 32)
    assert np.asarray(Image.open(out[0])).max() < 3


def test_wrong_task_for_the_data_is_one_line_error(tmp_path):
    from selfsup.api.dense import evaluate_dense

    with pytest.raises(ValueError, match="does not fit --task segment"):
        evaluate_dense(_encoder_file(tmp_path), str(write_coco(tmp_path / "c")), task="segment", log=lambda s: None)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "neu_det").is_dir(), reason="../shared/data/dense/neu_det is absent")
def test_neu_det_reads_with_its_counts():
    train = read_dense(SHARED / "neu_det" / "instances_train.json", image_size=64)
    test = read_dense(SHARED / "neu_det" / "instances_test.json", image_size=64, class_names=train.class_names)
    assert (len(train), len(test)) == (1440, 360) and train.skipped == test.skipped == 0
    assert sum(len(b) for b in train.boxes) + sum(len(b) for b in test.boxes) == 4189
    assert len(train.class_names) == 6


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "camvid_subset").is_dir(), reason="../shared/data/dense/camvid_subset is absent")
def test_camvid_cli_evaluate_segment(tmp_path):
    """The command on real masks with its defaults (capped here: 8 images, 2 steps), records and a verdict."""
    from typer.testing import CliRunner

    from selfsup import runs
    from selfsup.cli import app

    enc = build_encoder(EncoderConfig(name="resnet18", cifar_stem=False), InputSpec(channels=3, image_size=64))
    path = runs.write_encoder(enc.state_dict(), EncoderConfig(name="resnet18", cifar_stem=False),
                              InputSpec(channels=3, image_size=64), tmp_path / "enc.safetensors")
    res = CliRunner().invoke(app, ["evaluate", str(path), "--task", "segment", "--data", str(SHARED / "camvid_subset"),
                                   "--max-samples", "8", "--max-steps", "2", "--seeds", "2", "--image-size", "64",
                                   "--protocol", "finetune", "--json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout.strip().splitlines()[-1])
    assert {(r["encoder"], r["metric"]) for r in recs} >= {("ssl", "miou"), ("scratch", "dice"),
                                                          ("ssl", "miou_difference")}
    assert all(0 <= r["mean"] <= 1 for r in recs if r["metric"] in ("miou", "dice"))


def test_dense_refuses_a_protocol_it_does_not_have_before_reading_data(tmp_path):
    """`adapt --task detect --protocol lora` used to fine-tune silently; now one line, nothing written."""
    from selfsup.api.dense import adapt_dense, evaluate_dense

    missing = str(tmp_path / "nowhere.json")  # never read: the protocol is checked first
    with pytest.raises(ValueError, match="lora is not available"):
        adapt_dense("selfsup:series-small", missing, task="detect", protocol="lora", out=tmp_path / "m")
    with pytest.raises(ValueError, match="knn is not available"):
        evaluate_dense("selfsup:series-small", missing, task="segment", protocols=("linear", "knn"))
    assert not (tmp_path / "m").exists()
