"""seg-perception evaluate on tiny label images whose IoU is worked out by hand below.

The nearest-colour test model predicts exactly the class whose colour a pixel is painted in, and
the images are at the model's own size (80x60), so every prediction is known in advance."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from bag_helpers import run_cli
from models import COLOR

from seg_perception.tools.evaluate import ClassMapping, Scorer, default_mapping, load_mapping

H, W = 60, 80
# dataset label ids of the tiny CamVid-layout set (11 = void, not scored)
SKY, ROAD, SIDEWALK, PERSON, CAR, BUILDING, VOID = 0, 1, 2, 3, 4, 5, 11
MAPPING_YAML = """
name: tiny
classes:
  0: Sky
  1: Road
  2: Sidewalk
  3: Person
  4: Car
  5: Building
  11: null
"""


def paint(regions):
    """[(rows, cols, class name)] -> RGB image in the model's class colours."""
    img = np.zeros((H, W, 3), np.uint8)
    for rows, cols, name in regions:
        img[rows, cols] = COLOR[name]
    return img


def label(regions):
    lab = np.full((H, W), VOID, np.uint8)
    for rows, cols, value in regions:
        lab[rows, cols] = value
    return lab


L, R = slice(0, 40), slice(40, 80)      # left / right half
ALL = slice(0, 80)
# image 1: left half painted Road, right half Sky above Parking
IMG1 = paint([(slice(0, 60), L, "Road"), (slice(0, 30), R, "Sky"), (slice(30, 60), R, "Parking")])
LAB1 = label([
    (slice(0, 10), L, SIDEWALK),    # A: 400 px  truth Sidewalk, predicted Road
    (slice(10, 60), L, ROAD),       # B: 2000 px truth Road,     predicted Road
    (slice(0, 5), R, VOID),         # C: 200 px  not scored (predicted Sky)
    (slice(5, 30), R, SKY),         # D: 1000 px truth Sky,      predicted Sky
    (slice(30, 45), R, ROAD),       # E: 600 px  truth Road,     predicted Parking -> Road
    (slice(45, 60), R, SIDEWALK),   # F: 600 px  truth Sidewalk, predicted Parking -> Road
])
# image 2: top half Person, bottom half Car
IMG2 = paint([(slice(0, 30), ALL, "Person"), (slice(30, 60), ALL, "Car")])
LAB2 = label([
    (slice(0, 30), ALL, PERSON),                 # G: 2400 px Person, predicted Person
    (slice(30, 60), slice(0, 20), PERSON),       # H: 600 px  Person, predicted Car
    (slice(30, 60), slice(20, 80), CAR),         # I: 1800 px Car,    predicted Car
])
A, B, D, E, F, G, Hh, I = 400, 2000, 1000, 600, 600, 2400, 600, 1800
EXPECTED_IOU = {
    "Sky": D / D,                                  # 1.0
    "Road": (B + E) / (A + B + E + F),             # truth B+E inside predicted A+B+E+F: 2600/3600
    "Sidewalk": 0.0 / (A + F),                     # never predicted
    "Person": G / (G + Hh),                        # 2400/3000
    "Car": I / (Hh + I),                           # 1800/2400
    "Building": None,                              # neither in truth nor predicted
}
EXPECTED_MIOU = sum(v for v in EXPECTED_IOU.values() if v is not None) / 5
EXPECTED_ACC = (D + B + E + G + I) / (A + B + D + E + F + G + Hh + I)


def write_camvid(root, split="test"):
    os.makedirs(root / split)
    os.makedirs(root / f"{split}annot")
    for name, img, lab in (("a.png", IMG1, LAB1), ("b.png", IMG2, LAB2)):
        cv2.imwrite(str(root / split / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"{split}annot" / name), lab)


@pytest.fixture
def tiny_camvid(tmp_path):
    root = tmp_path / "tiny"
    write_camvid(root)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING_YAML)
    return root, str(mapping)


def test_evaluate_numbers_by_hand(tiny_camvid, colour_model, tmp_path):
    root, mapping = tiny_camvid
    model, labels = colour_model
    out_json, out_png = tmp_path / "eval.json", tmp_path / "cm.png"
    code, stdout, stderr = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels,
                                    "--mapping", mapping, "--json", str(out_json), "--picture", str(out_png)])
    assert code == 0, stderr
    res = json.loads(out_json.read_text())
    assert res["layout"] == "camvid" and res["split"] == "test" and res["images"] == 2
    assert list(res["per_class_iou"]) == ["Sky", "Road", "Sidewalk", "Person", "Car", "Building"]
    for name, want in EXPECTED_IOU.items():
        assert res["per_class_iou"][name] == (None if want is None else pytest.approx(want)), name
    assert res["miou"] == pytest.approx(EXPECTED_MIOU)
    assert res["pixel_accuracy"] == pytest.approx(EXPECTED_ACC)
    assert res["pixels_scored"] == A + B + D + E + F + G + Hh + I  # void (C) left out
    # masks from the label file's groups; the dataset labels no parking: parking -> road
    assert res["mask_iou"]["road"] == pytest.approx(EXPECTED_IOU["Road"])
    assert res["mask_iou"]["pedestrian"] == pytest.approx(EXPECTED_IOU["Person"])
    assert res["mask_iou"]["parking"] is None
    assert res["mapping"]["predictions"] == {"Parking": "Road"}
    assert any("Parking predictions count as Road" in n for n in res["notes"])
    cm = res["confusion_matrix"]
    assert cm["rows_truth"] == cm["columns_prediction"]   # every model class is scored or mapped
    road = cm["rows_truth"].index("Road")
    sidewalk = cm["rows_truth"].index("Sidewalk")
    assert cm["counts"][sidewalk][road] == A + F
    # the printed table and the picture
    assert "Road" in stdout and f"{100 * EXPECTED_IOU['Road']:.1f}" in stdout
    assert f"{100 * EXPECTED_MIOU:.1f}" in stdout
    pic = cv2.imread(str(out_png))
    assert pic is not None and pic.shape[0] > 300 and pic.shape[1] > 300
    # the heat map cell of truth Sky / predicted Sky is the top colour of the map (100 %)
    top = cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0]
    assert (np.abs(pic.astype(int) - top.astype(int)).sum(2) < 10).sum() > 100


def test_scorer_pools_images(colour_model):
    """The Scorer on the class maps directly: pooled over both images it gives the hand numbers;
    a class absent from the images seen so far is None (not 0), and comes in when it appears."""
    names = ["Sky", "Road", "Sidewalk", "Parking", "Person", "Car", "Building"]
    ids = {n: i for i, n in enumerate(names)}
    pred1 = np.zeros((H, W), np.uint8)
    pred1[:, L] = ids["Road"]
    pred1[:30, R] = ids["Sky"]
    pred1[30:, R] = ids["Parking"]
    pred2 = np.full((H, W), ids["Car"], np.uint8)
    pred2[:30] = ids["Person"]
    scorer = Scorer(load_mapping_text(MAPPING_YAML), names, groups=_groups())
    scorer.update(LAB1, pred1)
    assert scorer.results()["per_class_iou"]["Person"] is None
    scorer.update(LAB2, pred2)
    res = scorer.results()
    for name, want in EXPECTED_IOU.items():
        assert res["per_class_iou"][name] == (None if want is None else pytest.approx(want)), name
    with pytest.raises(ValueError, match="differ in size"):
        scorer.update(LAB1[:10], pred1)


def load_mapping_text(text):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return load_mapping(f.name)
    finally:
        os.remove(f.name)


def _groups():
    import yaml

    from models import TEST_LABEL_YAML, TEST_CLASSES
    from seg_perception.core.labels import parse_label_groups

    return parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), [n for n, _ in TEST_CLASSES])


def test_unscored_model_class_counts_as_a_miss():
    """A model class the dataset does not label and nothing maps: an 'other' column, a miss."""
    mapping = ClassMapping("m", {0: "A", 1: "B"})
    scorer = Scorer(mapping, ["A", "B", "C"])
    scorer.update(np.array([[0, 0, 1, 1]], np.uint8), np.array([[0, 2, 1, 2]], np.uint8))
    res = scorer.results()
    assert res["confusion_matrix"]["columns_prediction"] == ["A", "B", "other"]
    assert res["per_class_iou"] == {"A": 0.5, "B": 0.5}
    assert res["pixel_accuracy"] == 0.5


def test_cityscapes_layout_with_parking(tmp_path, colour_model):
    """Cityscapes labelIds (7 road, 8 sidewalk, 9 parking, 24 person, 26 car; 0 unlabelled) on a
    dataset that labels parking: the parking mask is scored."""
    root = tmp_path / "cs"
    city = "aachen"
    os.makedirs(root / "leftImg8bit" / "val" / city)
    os.makedirs(root / "gtFine" / "val" / city)
    img = paint([(slice(0, 30), ALL, "Road"), (slice(30, 60), ALL, "Parking")])
    lab = np.zeros((H, W), np.uint8)
    lab[:30] = 7            # road, predicted road: 2400
    lab[30:, :60] = 9       # parking, predicted parking: 1800
    lab[30:, 60:] = 8       # sidewalk, predicted parking: 600
    stem = f"{city}_000000_000019"
    cv2.imwrite(str(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"), lab)
    mapping = tmp_path / "cs.yaml"
    mapping.write_text("classes: {7: Road, 8: Sidewalk, 9: Parking, 24: Person, 26: Car, 23: Sky}\n")
    model, labels = colour_model
    out = tmp_path / "cs.json"
    code, stdout, stderr = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels,
                                    "--mapping", str(mapping), "--json", str(out)])
    assert code == 0, stderr
    res = json.loads(out.read_text())
    assert res["layout"] == "cityscapes" and res["split"] == "val" and res["images"] == 1
    assert res["per_class_iou"]["Road"] == 1.0
    assert res["per_class_iou"]["Parking"] == pytest.approx(1800 / 2400)
    assert res["per_class_iou"]["Sidewalk"] == 0.0
    assert res["mask_iou"]["parking"] == pytest.approx(1800 / 2400)
    assert res["mapping"]["predictions"] == {}
    # Building is in the model but no label id maps to it: predictions of it would be misses
    assert res["confusion_matrix"]["columns_prediction"][-1] == "other"


def test_default_mappings_and_errors(tiny_camvid, colour_model, tmp_path):
    camvid = default_mapping("camvid")
    assert camvid.classes[3] == "Road" and 11 not in camvid.classes and camvid.predictions == {"Parking": "Road"}
    assert default_mapping("cityscapes").classes[9] == "Parking"
    root, mapping = tiny_camvid
    model, labels = colour_model
    # the built-in CamVid mapping names classes the test model does not have: said clearly
    code, _, err = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels, "--quiet"])
    assert code == 2 and "Pavement" in err and "--mapping" in err
    code, _, err = run_cli(["evaluate", str(tmp_path / "nowhere"), "--model", model, "--label-file", labels])
    assert code == 2 and "no camvid test images" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: {0: Sky}\npredictions: {Sky: Road}\n")
    code, _, err = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels, "--mapping", str(bad)])
    assert code == 2 and "predictions" in err
    bad.write_text("classes: [Sky]\n")
    code, _, err = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels, "--mapping", str(bad)])
    assert code == 2 and "classes" in err and str(bad) in err
    # a label image of another size than its image
    cv2.imwrite(str(root / "testannot" / "a.png"), np.zeros((10, 10), np.uint8))
    code, _, err = run_cli(["evaluate", str(root), "--model", model, "--label-file", labels, "--mapping", mapping])
    assert code == 2 and "a.png" in err


CAMVID = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "camvid")


@pytest.mark.skipif(not os.path.isdir(os.path.join(CAMVID, "testannot")), reason="CamVid not in ../shared/data")
def test_default_model_on_real_camvid_runs(tmp_path):
    """The packaged model with the built-in CamVid mapping on 2 real test images (numbers not
    checked: the model is trained elsewhere; the 11 classes, the parking rule and the files are)."""
    from seg_perception.core import resources

    if not os.path.isfile(resources.DEFAULT_MODEL):
        pytest.skip("no packaged model")
    out = tmp_path / "camvid.json"
    code, stdout, stderr = run_cli(["evaluate", CAMVID, "--limit", "2", "--json", str(out), "--quiet",
                                    "--picture", str(tmp_path / "cm.png")])
    assert code == 0, stderr
    res = json.loads(out.read_text())
    assert res["images"] == 2 and res["pixels_scored"] > 0.8 * 2 * 360 * 480
    assert len(res["per_class_iou"]) == 11 and res["mapping"]["predictions"] == {"Parking": "Road"}
    assert res["mask_iou"]["parking"] is None and res["mask_iou"]["road"] is not None
    assert os.path.getsize(tmp_path / "cm.png") > 1000


def test_camvid_labels_score_a_model_of_cityscapes_classes():
    """The default model's classes are Cityscapes': CamVid's Car is scored as car, truck, bus or
    train, its Bicyclist as rider, bicycle or motorcycle; parking predictions count as road."""
    from seg_perception.core.class_sets import CLASS_SETS
    from seg_perception.core.labels import load_label_file

    names = [n for n, _ in CLASS_SETS["cityscapes_parking"]]
    mapping = default_mapping("camvid", names)
    assert mapping.classes[8] == "car" and mapping.classes[9] == "person" and mapping.classes[3] == "road"
    assert mapping.predictions["truck"] == "car" and mapping.predictions["motorcycle"] == "rider"
    groups = load_label_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "seg_perception", "data", "labels", "cityscapes_parking.yaml"), names)
    scorer = Scorer(mapping, names, groups)
    label = np.array([[8, 8, 3, 3]], np.uint8)          # CamVid: Car Car Road Road
    pred = np.array([[names.index("truck"), names.index("car"), names.index("parking"),
                      names.index("sidewalk")]], np.uint8)
    scorer.update(label, pred)
    res = scorer.results()
    assert res["per_class_iou"]["car"] == 1.0            # a truck on a CamVid Car is right
    assert res["per_class_iou"]["road"] == 0.5           # parking counts as road, sidewalk does not
    assert default_mapping("cityscapes", names).classes[9] == "parking"
