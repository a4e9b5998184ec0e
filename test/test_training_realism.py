"""Issue #13 training pieces: road-paint negatives, parked cars and kerb lanes, camera/light
augmentation, shared splits, initial weights and the EMA of the weights."""

import os

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from seg_perception.core.training.augment import photometric, stretch_aspect  # noqa: E402
from seg_perception.core.training.data import (CLASS_ID, IGNORE, PARKING, ROAD, load_split,  # noqa: E402
                                               parse_split)
from seg_perception.core.training.markings import KINDS, paint_road_markings  # noqa: E402
from seg_perception.core.training.parking import (CAR, PAVEMENT, car_cutouts,  # noqa: E402
                                                  paint_parking)
from test_train import street, write_camvid  # noqa: E402

SKY, BUILDING, PEDESTRIAN = CLASS_ID["Sky"], CLASS_ID["Building"], CLASS_ID["Pedestrian"]


def kerb_street(h=240, w=320, seed=0):
    """A street with pavement along both sides of the road, a pedestrian on the road, and a few
    compact cars to cut out."""
    rng = np.random.default_rng(seed)
    image, label = street(h, w, rng, car=False, void=IGNORE)
    horizon = int(h * 0.45)
    for y in range(horizon, h):  # pavement wedges at both sides, widening towards the camera
        edge = int((y - horizon) * 0.6)
        label[y, :edge] = PAVEMENT
        label[y, w - edge:] = PAVEMENT
        image[y, :edge] = (160, 160, 150)
        image[y, w - edge:] = (160, 160, 150)
    label[h - 60:h - 20, w // 2:w // 2 + 10] = PEDESTRIAN
    image[h - 60:h - 20, w // 2:w // 2 + 10] = (200, 40, 40)
    for x in (40, 140, 230):
        label[horizon + 10:horizon + 40, x:x + 50] = CAR
        image[horizon + 10:horizon + 40, x:x + 50] = (30, 60, 180)
    return image, label


def test_road_markings_paint_only_road_and_keep_every_label():
    image, label = kerb_street()
    road = label == ROAD
    seen = set()
    for seed in range(12):
        out, out_label, kinds = paint_road_markings(image, label, np.random.default_rng(seed))
        assert np.array_equal(out_label, label), "a road marking changed a label"
        assert np.array_equal(out[~road], image[~road]), "paint left the road"
        if kinds:
            assert np.any(out[road] != image[road]), f"{kinds} painted nothing"
        seen.update(kinds)
    assert seen == set(KINDS), f"never painted: {set(KINDS) - seen}"


def test_each_marking_kind_shows_on_the_road():
    image, label = kerb_street()
    for kind in KINDS:
        hits = 0
        for seed in range(6):
            out, _, kinds = paint_road_markings(image, label, np.random.default_rng(seed),
                                                kinds=(kind,), count=1)
            hits += kinds == [kind] and np.abs(out.astype(int) - image).max() > 30
        assert hits >= 3, f"{kind} is rarely visible ({hits}/6)"


def test_parked_cars_are_labelled_car_and_stay_behind_people():
    image, label = kerb_street()
    cars = car_cutouts([image], [label], min_pixels=300)
    assert len(cars) == 3 and all(c.mask.any() for c in cars)
    pasted_any = 0
    for seed in range(10):
        out, out_label, painted = paint_parking(image, label, np.random.default_rng(seed),
                                                cars=cars, car_p=1.0)
        new_car = (out_label == CAR) & (label != CAR)
        assert np.array_equal(out_label == PEDESTRIAN, label == PEDESTRIAN), \
            "a pasted car covered the pedestrian in front of it"
        assert not np.any(new_car & ~np.isin(label, (ROAD, PAVEMENT, SKY, BUILDING))), \
            "a car was pasted over a class that stands in front of it"
        if painted and new_car.any():
            pasted_any += 1
            assert np.all(np.any(out[new_car] != image[new_car], axis=1).mean() > 0.5)
            assert np.any(out_label == PARKING)
    assert pasted_any >= 5, f"cars pasted in only {pasted_any}/10 painted frames"


def test_kerb_lanes_lie_along_the_pavement_without_lines():
    image, label = kerb_street()
    beside = cv2.dilate((label == PAVEMENT).astype(np.uint8), np.ones((1, 9), np.uint8)) > 0
    touching = 0
    for seed in range(8):
        out, out_label, painted = paint_parking(image, label, np.random.default_rng(seed),
                                                kerb_p=1.0)
        if not painted:
            continue
        parking = out_label == PARKING
        touching += bool(np.any(parking & beside))
        # Unmarked: inside the lane only a tint, no white paint brighter than the road.
        assert out[parking].mean() <= image[parking].mean() + 1.0
    assert touching >= 5, f"kerb lanes touched the kerb in only {touching}/8 frames"


def test_photometric_changes_light_but_not_shape():
    image, _ = kerb_street()
    assert photometric(image, np.random.default_rng(0), 0.0) is image
    outs = [photometric(image, np.random.default_rng(s), 1.0) for s in range(20)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    means = [o.mean() for o in outs]
    assert min(means) < 0.7 * image.mean(), "no dark (dusk) samples"
    assert sum(not np.array_equal(o, image) for o in outs) >= 15


def test_stretch_aspect_keeps_labels_aligned():
    image, label = kerb_street()
    out, lab = stretch_aspect(image, label, np.random.default_rng(1), (0.75, 1.33))
    assert out.shape[0] == image.shape[0] and lab.shape == out.shape[:2]
    assert out.shape[1] != image.shape[1]
    assert set(np.unique(lab)) <= set(np.unique(label))


def test_split_parts_partition_a_split(tmp_path):
    root = write_camvid(tmp_path / "camvid", 8, 24, 32)
    whole = load_split(root, "camvid", "val")
    head, tail = load_split(root, "camvid", "val[:1]"), load_split(root, "camvid", "val[1:]")
    assert head.names + tail.names == whole.names and len(head) == 1
    assert parse_split("val") == ("val", slice(None))
    with pytest.raises(ValueError, match="START:END"):
        parse_split("val[1]")
    with pytest.raises(ValueError, match="selects no frames"):
        load_split(root, "camvid", "val[5:]")


def test_fine_tuning_starts_from_the_given_weights_and_exports_the_ema(tmp_path):
    from seg_perception.core.export import save_checkpoint
    from seg_perception.core.torch_models import build_wrapped_model
    from seg_perception.core.training.config import TrainConfig, camvid_parking_info
    from seg_perception.core.training.loop import Trainer

    root = write_camvid(tmp_path / "camvid", 8, 48, 64)
    info = camvid_parking_info("tiny_fcn", (48, 64))
    torch.manual_seed(5)
    start = build_wrapped_model(info)
    init = str(tmp_path / "init.pt")
    save_checkpoint(start, info, init)

    def config(steps):
        return TrainConfig(data_root=root, run_dir=str(tmp_path / "run"), architecture="tiny_fcn",
                           input_size=(48, 64), crop=(48, 64), epochs=10, batch_size=4, lr=3e-3,
                           warmup_epochs=0, threads=1, val_every=1, log_every=1000, max_steps=steps,
                           test_split=None, init_from=init, ema=0.5, paint_parking=0.3,
                           paint_markings=0.5, parked_cars=0.5, photometric=1.0)

    trainer = Trainer(config(0), log_line=lambda line: None)
    trainer.cfg.max_steps = 1
    trainer.run()
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"initial weights from {init}" in log
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    key = "colour.weight"
    w0, w1, ema1 = (start.model.state_dict()[key], ckpt["train_state_dict"][key],
                    ckpt["state_dict"][key])
    assert not torch.equal(w0, w1), "no step was taken from the initial weights"
    assert torch.equal(ema1, w1)  # the first EMA update takes the weights as they are
    assert torch.equal(trainer.wrapped.model.state_dict()[key], ema1), "finish() must use the EMA"

    # Resume restores both, does not re-apply the initial weights, and averages on: after one
    # more step the EMA (decay 0.5) lies half way between the old EMA and the new weights.
    Trainer(config(2), resume=True, log_line=lambda line: None).run()
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("initial weights from") == 1 and "resumed from" in log
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    w2, ema2 = ckpt["train_state_dict"][key], ckpt["state_dict"][key]
    assert not torch.equal(w2, w1)
    assert torch.allclose(ema2, 0.5 * ema1 + 0.5 * w2, atol=1e-6)
