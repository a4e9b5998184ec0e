"""Class sets a model can carry: the packaged ones by name (cityscapes, camvid, camvid_parking),
optionally with classes appended (``cityscapes+background``: many Cityscapes models from their
authors' repositories output the 19 train ids and a background or ignore class last), or a
YAML/JSON file of the user's; and the packaged label file that fits a model's classes.

A class file is a list of names, a list of {name, color}, or a mapping with such a list under
``classes``; a class without a colour gets one from a fixed palette.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .datasets import CAMVID_CLASSES, CAMVID_PARKING_CLASSES
from .model_info import ClassInfo, ModelInfoError, _color

# Cityscapes' 19 train ids with the benchmark's own colours (cityscapesScripts labels.py).
CITYSCAPES_CLASSES: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)), ("rider", (255, 0, 0)), ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
)

CLASS_SETS: Dict[str, Tuple[Tuple[str, Tuple[int, int, int]], ...]] = {
    "cityscapes": CITYSCAPES_CLASSES,
    # the default model's: Cityscapes' 19 and the project's painted Parking (Cityscapes' colour)
    "cityscapes_parking": CITYSCAPES_CLASSES + (("parking", (250, 170, 160)),),
    "camvid": CAMVID_CLASSES,
    "camvid_parking": CAMVID_PARKING_CLASSES,
}


# Names of a class a model outputs but that stands for nothing (a training set's ignore label).
# A packaged label file fits a model whose classes are the file's plus such classes at the end:
# they are in no group, so no mask shows them and the grid leaves what they cover unknown.
IGNORE_CLASS_NAMES = ("background", "ignore", "void", "unlabeled", "unlabelled")


class ClassSetError(ValueError):
    """An unknown class set name, or a class file that cannot be read."""


def load_classes(name_or_path: str) -> Tuple[ClassInfo, ...]:
    """The classes of a packaged set (by name, ``SET+NAME...`` with classes appended) or of a
    YAML/JSON class file."""
    if name_or_path in CLASS_SETS:
        return tuple(ClassInfo(n, c) for n, c in CLASS_SETS[name_or_path])
    base, *extra = name_or_path.split("+")
    if extra and base in CLASS_SETS and not os.path.isfile(name_or_path):
        known = [{"name": n, "color": list(c)} for n, c in CLASS_SETS[base]]
        added = [{"name": n, "color": [0, 0, 0] if n.lower() in IGNORE_CLASS_NAMES else
                  list(palette_color(len(known) + i))} for i, n in enumerate(extra)]
        if not all(extra):
            raise ClassSetError(f"--classes {name_or_path!r}: an empty class name after '+'")
        return parse_classes(known + added, name_or_path)
    if not os.path.isfile(name_or_path):
        raise ClassSetError(f"--classes {name_or_path!r} is neither a packaged class set "
                            f"({', '.join(CLASS_SETS)}) nor a file")
    try:
        with open(name_or_path, "r", encoding="utf-8") as f:
            text = f.read()
        data = json.loads(text) if name_or_path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ClassSetError(f"cannot read class file {name_or_path}: {exc}") from exc
    return parse_classes(data, name_or_path)


def parse_classes(data: Any, source: str = "") -> Tuple[ClassInfo, ...]:
    where = f" in {source}" if source else ""
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list) or not data:
        raise ClassSetError(f"a class file{where} is a list of class names or of {{name, color}} "
                            "(or a mapping with such a list under 'classes')")
    classes: List[ClassInfo] = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            name, color = entry, None
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, color = entry["name"], entry.get("color")
        else:
            raise ClassSetError(f"class {i}{where} must be a name or {{name, color}}, got {entry!r}")
        try:
            classes.append(ClassInfo(name, _color(color) if color is not None else palette_color(i)))
        except (ModelInfoError, TypeError, ValueError) as exc:
            raise ClassSetError(f"class {name!r}{where}: {exc}") from exc
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ClassSetError(f"duplicate class names{where}: {names}")
    if len(classes) > 255:
        raise ClassSetError(f"at most 255 classes fit a uint8 class map, {source or 'the list'} has {len(classes)}")
    return tuple(classes)


def palette_color(i: int) -> Tuple[int, int, int]:
    """PASCAL VOC's colour map: distinct, stable colours for class ids without one."""
    r = g = b = 0
    c = i + 1  # id 0 would be black
    for shift in range(7, -1, -1):
        r |= ((c >> 0) & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return (r, g, b)


# ---------------------------------------------------------------- packaged label files

def packaged_label_files() -> Dict[str, str]:
    from .resources import DATA_DIR

    folder = os.path.join(DATA_DIR, "labels")
    return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.endswith(".yaml")}


def label_file_for(class_names: Sequence[str]) -> Optional[str]:
    """The packaged label file written for these classes (its ``classes`` list), also for a
    model that has ignore classes (IGNORE_CLASS_NAMES) after them; or None."""
    names = list(class_names)
    while names and names[-1].lower() in IGNORE_CLASS_NAMES and not _exact_file(names):
        names.pop()
    return _exact_file(names)


def ignored_classes(class_names: Sequence[str], label_path: str) -> List[str]:
    """The model's trailing ignore classes that the packaged file ``label_path`` does not list."""
    with open(label_path, "r", encoding="utf-8") as f:
        listed = list((yaml.safe_load(f) or {}).get("classes") or [])
    names = list(class_names)
    return names[len(listed):] if names[:len(listed)] == listed else []


def _exact_file(class_names: Sequence[str]) -> Optional[str]:
    for path in packaged_label_files().values():
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict) and list(data.get("classes") or []) == list(class_names):
            return path
    return None


def packaged_label_file(class_names: Sequence[str], model_path: str = "") -> str:
    """label_file "": the packaged label file of the model's class set; LabelFileError naming
    the classes when none matches."""
    from .labels import LabelFileError

    path = label_file_for(class_names)
    if path is None:
        known = ", ".join(packaged_label_files())
        raise LabelFileError(
            f"label_file is empty and no packaged label file ({known}) is written for the "
            f"{len(class_names)} classes of {model_path or 'the model'} {list(class_names)}: write one "
            "that names its road, pedestrian, parking, drivable, ground and obstacle classes "
            "(docs/models.md) and set label_file")
    return path
