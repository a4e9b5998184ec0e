"""ConfusionMatrix: numbers checked against counts worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.core.metrics import ConfusionMatrix, binary_iou


def test_iou_accuracy_by_hand():
    truth = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(truth, pred)
    # class 0: tp 2, truth 3, pred 3 -> 2 / 4; class 1: tp 3, truth 3, pred 4 -> 3 / 4;
    # class 2: tp 1, truth 2, pred 1 -> 1 / 2
    np.testing.assert_allclose(cm.iou(), [0.5, 0.75, 0.5])
    assert cm.miou() == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(6 / 8)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]


def test_accumulated_over_frames_not_averaged():
    """Frame A: class 1 is 1 pixel, predicted wrong (IoU 0); frame B: 9 pixels, all right
    (IoU 1). Dataset IoU = 9 / 10, not the per-frame mean 0.5."""
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 0, 0, 0]), np.array([0, 0, 0, 0]))
    cm.update(np.ones(9, int), np.ones(9, int))
    assert cm.iou()[1] == pytest.approx(9 / 10)
    assert cm.iou()[0] == pytest.approx(3 / 4)


def test_ignore_and_out_of_range_truth_not_scored():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([0, 1, 255, 7]), np.array([0, 0, 1, 1]))
    assert cm.total == 2
    assert cm.matrix.tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="prediction ids"):
        cm.update(np.array([0]), np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(2, int), np.zeros(3, int))


def test_absent_class_is_nan_and_left_out_of_miou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    iou = cm.iou()
    assert math.isnan(iou[2])
    assert cm.miou() == 1.0
    assert math.isnan(ConfusionMatrix(2).miou())
    assert math.isnan(ConfusionMatrix(2).pixel_accuracy())


def test_extra_prediction_column_counts_as_miss():
    """Column 2 is 'a model class the dataset cannot label': a miss for the truth class."""
    cm = ConfusionMatrix(2, extra_predictions=1)
    cm.update(np.array([0, 0, 0, 1, 1]), np.array([0, 2, 0, 1, 2]))
    # class 0: tp 2, truth 3, pred 2 -> 2/3; class 1: tp 1, truth 2, pred 1 -> 1/2
    np.testing.assert_allclose(cm.iou(), [2 / 3, 1 / 2])
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.matrix.shape == (2, 3)
    s = cm.summary(["a", "b"], ["other"])
    assert s["prediction_names"] == ["a", "b", "other"]
    assert s["per_class_iou"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(0.5)}


def test_group_iou_matches_binary_masks():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, (20, 30))
    pred = rng.integers(0, 4, (20, 30))
    cm = ConfusionMatrix(4)
    cm.update(truth, pred)
    for ids in ([1], [1, 3], [0, 2, 3]):
        want = binary_iou(np.isin(truth, ids), np.isin(pred, ids))
        assert cm.group_iou(ids) == pytest.approx(want)
    assert math.isnan(cm.group_iou([]))
    with pytest.raises(ValueError):
        cm.group_iou([4])


def test_recall_matrix_and_merge():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    b.update(np.array([0]), np.array([1]))
    a.merge(b)
    np.testing.assert_allclose(a.recall_matrix(), [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(3))
