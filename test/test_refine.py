"""CamVid's labels in Cityscapes' classes (core/training/refine.py): a partial label resolved by the
teacher within what it may be, an unlabelled pixel labelled only where the teacher is sure, and
painting on the CamVid labels carried into the refined ones."""

from __future__ import annotations

import numpy as np

from seg_perception.core.class_sets import CLASS_SETS
from seg_perception.core.datasets import CAMVID_PARKING_CLASSES, CAMVID_TO_CITYSCAPES, CITYSCAPES_TO_CAMVID
from seg_perception.core.training.data import IGNORE
from seg_perception.core.training.refine import allowed_classes, primary_class, refine

NAMES = [n for n, _ in CLASS_SETS["cityscapes_parking"]]
CAMVID = {n: i for i, (n, _) in enumerate(CAMVID_PARKING_CLASSES)}
CS = {n: i for i, n in enumerate(NAMES)}


def probs_for(h, w, cls_probs):
    """[C, H, W]: the same distribution {class: p} at every pixel."""
    p = np.zeros((len(NAMES), h, w), np.float32)
    for name, v in cls_probs.items():
        p[CS[name]] = v
    return p


def test_every_camvid_class_maps_into_cityscapes_and_back():
    assert set(CAMVID_TO_CITYSCAPES) == set(CAMVID)
    assert set(CITYSCAPES_TO_CAMVID) == set(NAMES)  # every model class scores as a CamVid class
    for camvid, many in CAMVID_TO_CITYSCAPES.items():
        assert all(CITYSCAPES_TO_CAMVID[c] == camvid for c in many)


def test_a_partial_label_takes_the_teachers_likeliest_class_within_it():
    allowed = allowed_classes(NAMES)
    label = np.full((2, 3), CAMVID["Car"], np.uint8)
    # the teacher says truck over car, and road more than either: road is not a car
    p = probs_for(2, 3, {"road": 0.5, "truck": 0.3, "car": 0.2})
    out = refine(label, p, allowed, 0.7)
    assert (out == CS["truck"]).all()
    # a singleton label is kept whatever the teacher says
    label[:] = CAMVID["Road"]
    assert (refine(label, probs_for(2, 3, {"car": 1.0}), allowed, 0.7) == CS["road"]).all()


def test_an_unlabelled_pixel_takes_the_teachers_class_only_where_it_is_sure():
    allowed = allowed_classes(NAMES)
    label = np.full((1, 2), IGNORE, np.uint8)
    p = np.concatenate([probs_for(1, 1, {"terrain": 0.8, "vegetation": 0.2}),
                        probs_for(1, 1, {"wall": 0.5, "building": 0.5})], axis=2)
    out = refine(label, p, allowed, 0.7)
    assert out[0, 0] == CS["terrain"] and out[0, 1] == IGNORE
    # never the painted parking: the teacher has no parking class
    assert not allowed[IGNORE, CS["parking"]]
    p = probs_for(1, 2, {"parking": 0.9, "road": 0.1})
    assert (refine(label, p, allowed, 0.05) == CS["road"]).all()


def test_painting_goes_into_the_refined_labels():
    """SegmentationTrainSet.sample: what the painters change in the CamVid labels (parking bays
    on road) becomes the target's primary class; the rest keeps the refined labels."""
    import pytest

    pytest.importorskip("torchvision")
    from test_train import street
    from seg_perception.core.training.augment import SegmentationTrainSet, train_transforms
    from seg_perception.core.training.data import LabelledSet

    rng = np.random.default_rng(0)
    image, label = street(240, 320, rng, void=IGNORE)
    refined = np.where(label == CAMVID["Car"], CS["bus"], primary_class(NAMES)[label]).astype(np.uint8)
    refined[label == IGNORE] = IGNORE
    data = LabelledSet([image], [label], ["f"])
    ds = SegmentationTrainSet(data, train_transforms((240, 320), 240), paint_parking_p=1.0, seed=3,
                              targets=[refined], primary=primary_class(NAMES))
    for _ in range(20):
        _, target = ds.sample(0, paint=True)
        if (target == CS["parking"]).any():
            break
    assert (target == CS["parking"]).any()
    kept = target != CS["parking"]
    assert (target[kept] == refined[kept]).all()  # the bus stayed a bus, the rest as refined
    assert (target == CS["bus"]).any()


def test_the_teacher_runs_at_its_own_input_size_for_a_student_of_another(tmp_path):
    """A student trained at a smaller size gets the labels the teacher makes at the teacher's
    size (the frame brought to it), resized to the student's labels."""
    from seg_perception.core.class_sets import load_classes
    from seg_perception.core.export import fresh_model, save_checkpoint
    from seg_perception.core.training.data import LabelledSet
    from seg_perception.core.training.loop import teacher_probabilities
    from seg_perception.core.training.refine import refine_set

    net, info = fresh_model("tiny_fcn", 48, 64, classes=load_classes("cityscapes_parking"))
    path = str(tmp_path / "teacher.pt")
    save_checkpoint(net, info, path)
    teacher = teacher_probabilities(path, NAMES)
    images = np.random.default_rng(0).integers(0, 255, (2, 24, 32, 3), dtype=np.uint8)
    probs = teacher(images)
    assert probs.shape == (2, len(NAMES), 48, 64)  # at the teacher's 64x48, not the frames' 32x24
    data = LabelledSet(list(images), [np.full((24, 32), IGNORE, np.uint8)] * 2, ["a", "b"])
    out = refine_set(data, teacher, NAMES, min_confidence=0.0)
    assert [o.shape for o in out] == [(24, 32)] * 2
