"""Training (issue #6): painted parking, dataset layouts, a few real optimisation steps, and the
shipped default model's accuracy on the CamVid test frames (when ../shared is present)."""

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from seg_perception.core.datasets import CAMVID_PARKING_CLASSES  # noqa: E402
from seg_perception.core.training.data import (IGNORE, PARKING, ROAD, load_split)  # noqa: E402
from seg_perception.core.training.loss import class_weights  # noqa: E402
from seg_perception.core.training.parking import paint_parking, random_camera  # noqa: E402

CAMVID = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                       "shared", "data", "camvid"))
# Measured for the shipped model on the 62 test frames (docs/model_card.md); the floor sits a
# few points below so a retrained or re-exported model that got worse fails here.
# Measured: mIoU 51.8, road IoU 89.2, pedestrian IoU 42.2 (ONNX Runtime, 11 classes, Parking
# counted as Road); at the default min_confidence: pedestrian precision 48.3% / recall 78.2%,
# parking mask over 1000 px on 1.6% of the frames (CamVid has no parking: all false alarms).
SHIPPED_MIN_MIOU = 0.49
SHIPPED_MIN_ROAD_IOU = 0.86
SHIPPED_MIN_PEDESTRIAN_IOU = 0.39
SHIPPED_MIN_PEDESTRIAN_PRECISION = 0.45
SHIPPED_MIN_PEDESTRIAN_RECALL = 0.74
SHIPPED_MAX_PARKING_ALARM_FRAMES = 0.05
# Road + Parking ("drivable") IoU on the project's synthetic sample drive; measured 0.95.
SAMPLE_MIN_DRIVABLE_IOU = 0.85

SKY, BUILDING, CAR, UNLABELLED = 0, 1, 8, 11


def street(h, w, rng, car=True, void=UNLABELLED):
    """A crude street frame and its label: sky, building, textured road, maybe a car, and a void
    border: CamVid's file id 11 by default, IGNORE for labels already in model classes (where
    11 is Parking)."""
    image = np.empty((h, w, 3), np.uint8)
    label = np.empty((h, w), np.uint8)
    horizon, roofline = int(h * 0.45), int(h * 0.2)
    image[:roofline] = (150, 190, 235)
    label[:roofline] = SKY
    image[roofline:horizon] = (140, 90, 70)
    label[roofline:horizon] = BUILDING
    image[horizon:] = (95, 95, 100)
    label[horizon:] = ROAD
    if car:
        x = int(rng.integers(0, w * 3 // 4))
        y = int(rng.integers(horizon, h - h // 6))
        image[y:y + h // 6, x:x + w // 4] = (40, 60, 170)
        label[y:y + h // 6, x:x + w // 4] = CAR
    label[:, :2] = void
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), label


def write_camvid(root, count, h, w, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", max(2, count // 4))):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        os.makedirs(os.path.join(root, split + "annot"), exist_ok=True)
        for i in range(n):
            image, label = street(h, w, rng)
            cv2.imwrite(os.path.join(root, split, f"f{i:03d}.png"), image[..., ::-1])
            cv2.imwrite(os.path.join(root, split + "annot", f"f{i:03d}.png"), label)
    return str(root)


# ---------------------------------------------------------------- parking painter

def test_painter_paints_parking_only_on_road():
    rng = np.random.default_rng(3)
    painted_frames = 0
    for seed in range(6):
        image, label = street(180, 240, rng, void=IGNORE)
        road = label == ROAD
        out_image, out_label, painted = paint_parking(image, label, np.random.default_rng(seed))
        parking = out_label == PARKING
        assert not np.any(parking & ~road), "Parking painted on a pixel that was not Road"
        assert np.array_equal(out_label[~parking], label[~parking]), "other labels changed"
        assert np.array_equal(out_image[~road], image[~road]), "pixels off the road changed"
        if painted:
            painted_frames += 1
            assert parking.sum() >= 0.004 * parking.size
            assert parking.sum() < road.sum(), "some road must stay road beside the bays"
            changed = np.any(out_image != image, axis=2)
            assert changed[parking].mean() > 0.5, "bay interiors were not tinted"
        else:
            assert np.array_equal(out_label, label) and np.array_equal(out_image, image)
    assert painted_frames >= 4, "a frame with a wide road should nearly always get bays"


def test_painter_leaves_frames_without_road_alone():
    image = np.full((120, 160, 3), 128, np.uint8)
    label = np.full((120, 160), BUILDING, np.uint8)
    out_image, out_label, painted = paint_parking(image, label, np.random.default_rng(0))
    assert not painted
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)


def test_camera_ground_point_round_trip():
    cam = random_camera(np.random.default_rng(1), 360, 480)
    point = cam.ground_point(250.0, 300.0)
    assert point is not None and abs(point[2]) < 1e-9 and point[0] > 0
    uv = cam.project(cam.to_camera(point[None]))[0]
    assert np.allclose(uv, (250.0, 300.0), atol=1e-6)
    assert cam.ground_point(240.0, 0.0) is None  # above the horizon


# ---------------------------------------------------------------- data layouts, loss

def test_camvid_unlabelled_is_ignored_not_parking(tmp_path):
    root = write_camvid(tmp_path / "camvid", 2, 36, 48)
    data = load_split(root, "camvid", "train")
    raw = cv2.imread(os.path.join(root, "trainannot", "f000.png"), cv2.IMREAD_UNCHANGED)
    assert np.all(data.labels[0][raw == UNLABELLED] == IGNORE)
    assert not np.any(data.labels[0] == PARKING)
    assert np.array_equal(data.labels[0][raw < UNLABELLED], raw[raw < UNLABELLED])


def test_cityscapes_layout_maps_label_ids(tmp_path):
    city = "aachen"
    img_dir = tmp_path / "leftImg8bit" / "train" / city
    gt_dir = tmp_path / "gtFine" / "train" / city
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    ids = np.zeros((64, 128), np.uint8)  # 0 = unlabelled
    ids[40:, :] = 7      # road
    ids[40:, 64:] = 9    # parking
    ids[:20, :] = 23     # sky
    ids[20:40, :10] = 24  # person
    ids[20:40, 10:20] = 27  # truck
    cv2.imwrite(str(img_dir / "a_000001_000019_leftImg8bit.png"), np.zeros((64, 128, 3), np.uint8))
    cv2.imwrite(str(gt_dir / "a_000001_000019_gtFine_labelIds.png"), ids)
    data = load_split(str(tmp_path), "cityscapes", "train", size=(32, 64))
    lab = data.labels[0]
    assert lab.shape == (32, 64) and data.images[0].shape == (32, 64, 3)
    name = {n: i for i, (n, _) in enumerate(CAMVID_PARKING_CLASSES)}
    assert lab[25, 5] == name["Road"] and lab[25, 40] == name["Parking"]
    assert lab[2, 30] == name["Sky"] and lab[12, 2] == name["Pedestrian"]
    assert lab[12, 7] == name["Car"] and lab[12, 40] == IGNORE
    with pytest.raises(FileNotFoundError, match="gtFine_labelIds"):
        load_split(str(tmp_path), "cityscapes", "val")


def test_class_weights_favour_rare_classes():
    freq = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    for mode in ("isqrt", "median", "enet"):
        w = class_weights(freq, mode)
        assert np.all(np.diff(w[:4]) > 0), mode
        assert w[4] >= w[3]  # absent class: weighted like the rarest present one
        assert np.isclose((w * freq).sum() / freq.sum(), 1.0, rtol=1e-6) or w.max() == 50.0
    assert np.all(class_weights(freq, "none") == 1.0)


# ---------------------------------------------------------------- training

def test_a_few_training_steps_lower_the_loss_and_resume(tmp_path):
    from seg_perception.core.training.config import TrainConfig
    from seg_perception.core.training.loop import Trainer

    root = write_camvid(tmp_path / "camvid", 8, 48, 64)
    cfg = TrainConfig(data_root=root, run_dir=str(tmp_path / "run"), input_size=(48, 64),
                      crop=(48, 64), scale=(0.9, 1.2), epochs=20, batch_size=4, lr=3e-3,
                      warmup_epochs=0, paint_parking=0.5, threads=1, val_every=100, log_every=1000,
                      max_steps=30, test_split=None)
    result = Trainer(cfg, log_line=lambda line: None).run()
    losses = result["step_losses"]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert os.path.isfile(tmp_path / "run" / "last.pt") and os.path.isfile(tmp_path / "run" / "best.pt")
    assert result["best_val_miou"] is not None  # validated at the stop

    # Resume continues from the saved step instead of starting again.
    cfg.max_steps = 34
    resumed = Trainer(cfg, resume=True, log_line=lambda line: None).run()
    assert len(resumed["step_losses"]) == 4
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed from" in log and "step 30" in log


def test_train_command_exports_a_model_the_segmenter_loads(tmp_path):
    from seg_perception.core.segmenter import Segmenter
    from seg_perception.tools.cli import main

    root = write_camvid(tmp_path / "camvid", 4, 48, 64)
    onnx_path = tmp_path / "out" / "tiny.onnx"
    rc = main(["train", "--data", root, "--run-dir", str(tmp_path / "run"), "--input-size", "48x64",
               "--crop", "48x64", "--epochs", "1", "--batch-size", "2", "--max-steps", "2",
               "--test-split", "", "--export", str(onnx_path)])
    assert rc == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["exported"] == [str(onnx_path), str(onnx_path.with_suffix(".pt"))]
    seg = Segmenter.from_file(str(onnx_path), backend="onnxruntime")
    assert seg.info.class_names == [n for n, _ in CAMVID_PARKING_CLASSES]
    assert (seg.info.input_height, seg.info.input_width) == (48, 64)
    assert seg.info.source["recipe"]["paint_parking"] == 0.3 and seg.info.source["steps"] == 2
    labels = seg.segment(np.zeros((96, 128, 3), np.uint8))
    assert labels.shape == (96, 128) and labels.max() < len(CAMVID_PARKING_CLASSES)


def test_data_pack_round_trip_keeps_labels_exact_and_images_close(tmp_path):
    from seg_perception.core.training import pack

    root = write_camvid(tmp_path / "camvid", 4, 48, 64)
    manifest = pack.pack(root, str(tmp_path / "p.tar"), splits=("train", "val"))
    assert manifest["frames"] == {"train": 4, "val": 2} and manifest["bytes"] < pack.CARRY_LIMIT
    pack.unpack(str(tmp_path / "p.tar"), str(tmp_path / "back"))
    for split in ("train", "val"):
        a, b = load_split(root, "camvid", split), load_split(str(tmp_path / "back"), "camvid", split)
        assert a.names == b.names
        assert all(np.array_equal(x, y) for x, y in zip(a.labels, b.labels))
        # these frames carry pixel noise JPEG smooths away (real CamVid frames: 1.7 on average)
        assert max(np.abs(x.astype(int) - y).mean() for x, y in zip(a.images, b.images)) < 8


def test_gpu_script_trains_from_a_pack_on_cpu_and_its_run_exports_here(tmp_path):
    """scripts/gpu_train.sh as the device runs it, on the CPU with a few steps and two data
    workers; then the documented way back: resume its run directory here and export."""
    import subprocess
    import sys

    from seg_perception.core.segmenter import Segmenter
    from seg_perception.core.training import pack
    from seg_perception.tools.cli import main

    from seg_perception.core.class_sets import load_classes
    from seg_perception.core.export import fresh_model, save_checkpoint

    root = write_camvid(tmp_path / "camvid", 8, 48, 64)
    pack.pack(root, str(tmp_path / "p.tar"), splits=("train", "val"))
    # the authors' weights stand-in: a tiny Cityscapes-class model (init and teacher, as the recipe)
    teacher_net, teacher_info = fresh_model("tiny_fcn", 48, 64, classes=load_classes("cityscapes+background"))
    teacher = str(tmp_path / "teacher.pt")
    save_checkpoint(teacher_net, teacher_info, teacher)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "OUT"
    env = dict(os.environ, DEVICE="cpu", WORKERS="2", MINUTES="1", PYTHON=sys.executable, RECIPE="default",
               INIT=teacher)
    proc = subprocess.run(
        ["bash", os.path.join(repo, "scripts", "gpu_train.sh"), str(tmp_path / "p.tar"), str(out),
         "--architecture", "tiny_fcn", "--train-splits", "train", "--val-split", "val", "--test-split", "",
         "--input-size", "48x64", "--crop", "48x64", "--batch-size", "2", "--epochs", "1", "--max-steps", "3",
         "--threads", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "gpu_train.log").read_text()
    assert "cpu, 2 data workers" in log and "initial weights from" in log and "refined" in log
    bad = subprocess.run(["bash", os.path.join(repo, "scripts", "gpu_train.sh"), str(tmp_path / "p.tar"), str(out)],
                         capture_output=True, text=True, timeout=60, env=dict(env, RECIPE="huge"))
    assert bad.returncode == 2 and "default or fast" in bad.stderr
    ckpt = torch.load(str(out / "run" / "last.pt"), map_location="cpu", weights_only=True)
    assert ckpt["step"] == 3 and json.loads(ckpt["config"])["workers"] == 2
    onnx_path = tmp_path / "model.onnx"
    assert main(["train", "--data", root, "--run-dir", str(out / "run"), "--input-size", "48x64",
                 "--architecture", "tiny_fcn", "--classes", "cityscapes_parking", "--teacher", teacher,
                 "--epochs", "1", "--test-split", "", "--resume", "--export", str(onnx_path)]) == 0
    seg = Segmenter.from_file(str(onnx_path), backend="onnxruntime")
    assert seg.info.source["steps"] == 3 and seg.has_confidence


def test_train_command_refuses_a_bad_parking_probability(tmp_path, capsys):
    from seg_perception.tools.cli import main

    assert main(["train", "--data", str(tmp_path), "--paint-parking", "1.5"]) == 2
    assert "--paint-parking" in capsys.readouterr().out


# ---------------------------------------------------------------- the shipped model

def test_shipped_checkpoint_matches_the_onnx_metadata():
    from seg_perception.core.export import load_checkpoint
    from seg_perception.core.model_info import ModelInfo, read_onnx_metadata
    from seg_perception.core.resources import DEFAULT_CHECKPOINT, DEFAULT_MODEL

    for path in (DEFAULT_MODEL, DEFAULT_CHECKPOINT):
        assert os.path.getsize(path) < 15e6, f"{path} must stay under 15 MB"
    onnx_info = ModelInfo.from_json(read_onnx_metadata(DEFAULT_MODEL))
    _, pt_info = load_checkpoint(DEFAULT_CHECKPOINT)
    # the confidence output is the exported graph's (the torch backend computes it from logits)
    assert onnx_info.confidence_name == "confidence" and pt_info.confidence_name == ""
    assert onnx_info == dataclasses.replace(pt_info, confidence_name="confidence")
    assert onnx_info.class_names == [n for n, _ in CAMVID_PARKING_CLASSES]
    assert (onnx_info.input_height, onnx_info.input_width, onnx_info.fit) == (360, 480, "stretch")
    assert onnx_info.architecture == "lraspp_mobilenet_v3_large"
    assert onnx_info.source["epochs"] > 0 and "camvid" in onnx_info.source["dataset"]


@pytest.mark.skipif(not os.path.isdir(os.path.join(CAMVID, "testannot")),
                    reason="CamVid test frames (../shared/data/camvid) not present")
def test_shipped_model_reaches_its_stated_miou_on_camvid_test():
    from seg_perception.core.resources import DEFAULT_MODEL
    from seg_perception.core.segmenter import Segmenter
    from seg_perception.core.training.scoring import evaluate_predictions

    data = load_split(CAMVID, "camvid", "test")
    assert len(data) == 62
    seg = Segmenter.from_file(DEFAULT_MODEL, backend="onnxruntime", num_threads=2)
    summary = evaluate_predictions(lambda images: seg.backend.infer(images), data)
    assert summary["miou"] >= SHIPPED_MIN_MIOU, summary["per_class_iou"]
    assert summary["road_iou"] >= SHIPPED_MIN_ROAD_IOU
    assert summary["pedestrian_iou"] >= SHIPPED_MIN_PEDESTRIAN_IOU


@pytest.mark.skipif(not os.path.isdir(os.path.join(CAMVID, "testannot")),
                    reason="CamVid test frames (../shared/data/camvid) not present")
def test_shipped_model_masks_at_the_default_confidence_hold_their_measured_figures():
    from seg_perception.core.resources import DEFAULT_MODEL
    from seg_perception.core.training.mask_report import camvid_masks
    from seg_perception.tools.street_pictures import default_thresholds

    t = default_thresholds()
    report = camvid_masks(DEFAULT_MODEL, CAMVID, "test", (0.0, t["pedestrian"], t["parking"]))
    ped, parking_alarms = report["pedestrian"][1], report["parking_alarm_frames"]
    assert ped["precision"] >= SHIPPED_MIN_PEDESTRIAN_PRECISION, ped
    assert ped["recall"] >= SHIPPED_MIN_PEDESTRIAN_RECALL, ped
    assert parking_alarms[2] <= SHIPPED_MAX_PARKING_ALARM_FRAMES, parking_alarms
    # the threshold is what removes the false parking: without it, half the frames have some
    assert parking_alarms[0] > 4 * parking_alarms[2]


def test_shipped_model_segments_the_sample_drive():
    from seg_perception.core.resources import DEFAULT_MODEL
    from seg_perception.core.sample import SampleCamera, render_frame
    from seg_perception.core.segmenter import Segmenter

    from seg_perception.core.metrics import binary_iou

    cam = SampleCamera(width=640, height=360)
    seg = Segmenter.from_file(DEFAULT_MODEL, backend="onnxruntime", num_threads=1)
    for index in (0, 12):
        rgb, truth = render_frame(index, cam)
        labels = seg.segment(rgb)
        assert labels.shape == truth.shape and labels.dtype == np.uint8
        assert labels.max() < len(CAMVID_PARKING_CLASSES)
        drivable = binary_iou(np.isin(truth, [ROAD, PARKING]), np.isin(labels, [ROAD, PARKING]))
        assert drivable >= SAMPLE_MIN_DRIVABLE_IOU, f"frame {index}: drivable IoU {drivable:.3f}"


def test_a_cityscapes_class_model_trains_on_camvid_labels_refined_by_a_teacher(tmp_path):
    """--classes cityscapes_parking: CamVid's labels go through the teacher (cached once in the
    run directory), the model has Cityscapes' 19 classes and parking, and it is scored on
    CamVid's classes. The teacher here is a random tiny model with the pretrained weights'
    20 classes (cityscapes+background)."""
    from seg_perception.core.class_sets import load_classes
    from seg_perception.core.export import fresh_model, save_checkpoint
    from seg_perception.core.segmenter import Segmenter
    from seg_perception.tools.cli import main

    root = write_camvid(tmp_path / "camvid", 4, 48, 64)
    teacher_net, teacher_info = fresh_model("tiny_fcn", 48, 64, classes=load_classes("cityscapes+background"))
    teacher = str(tmp_path / "teacher.pt")
    save_checkpoint(teacher_net, teacher_info, teacher)
    onnx_path = tmp_path / "out" / "cs.onnx"
    argv = ["train", "--data", root, "--run-dir", str(tmp_path / "run"), "--input-size", "48x64",
            "--crop", "48x64", "--epochs", "1", "--batch-size", "2", "--max-steps", "2", "--test-split", "",
            "--classes", "cityscapes_parking", "--teacher", teacher, "--init-from", teacher,
            "--architecture", "tiny_fcn", "--export", str(onnx_path)]
    assert main(argv) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "refined 4 frames' labels" in log and "tensors of another shape" not in log
    cached = list((tmp_path / "run").glob("refined_*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (4, 48, 64)
    assert "val mIoU" in log  # scored on CamVid's classes
    seg = Segmenter.from_file(str(onnx_path), backend="onnxruntime")
    assert seg.info.class_names[-1] == "parking" and seg.info.num_classes == 20
    assert "refined by teacher.pt" in seg.info.source["dataset"]
    # a second run takes the cached labels: no teacher pass
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "run")
    assert main(argv + ["--resume"]) == 0
    assert (tmp_path / "run" / "train.log").read_text().count("refined 4 frames' labels") == 1
    # without a teacher it says what it needs
    assert main(["train", "--data", root, "--run-dir", str(tmp_path / "run2"), "--input-size", "48x64",
                 "--crop", "48x64", "--classes", "cityscapes_parking", "--architecture", "tiny_fcn",
                 "--max-steps", "1"]) == 2
