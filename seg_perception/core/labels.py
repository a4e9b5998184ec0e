"""Label files: which of the model's classes form the road, pedestrian, parking, drivable, ground
and obstacle groups. Class ids never appear in code or in label files: groups name classes, and
names are resolved against the class list in the model's own metadata at start.

Label file (YAML)::

    groups:
      road: [Road]
      pedestrian: [Pedestrian]
      parking: [Parking]
      drivable: [Road, Parking]      # free to drive on (grid value 0); must be ground classes
      ground: [Road, Pavement, Parking]  # lie on the ground plane (grid: known cells)
      obstacle: [Car, Pedestrian]    # stand on the ground; their lowest pixel is a contact point
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import yaml

GROUPS = ("road", "pedestrian", "parking", "drivable", "ground", "obstacle")
MASK_GROUPS = ("road", "pedestrian", "parking")
# Class id of a pixel the network is not sure enough about (confidence below the threshold):
# in no group, so no mask shows it, and the grid makes the cells it sees unknown (-1). A model
# has at most 255 classes (ids 0..254), so 255 is never a real class.
UNKNOWN_ID = 255


class LabelFileError(ValueError):
    """The label file is unreadable, malformed, or names classes the model does not have."""


@dataclasses.dataclass(frozen=True)
class LabelGroups:
    class_names: Tuple[str, ...]
    groups: Dict[str, Tuple[str, ...]]
    source: str = ""

    def ids(self, group: str) -> List[int]:
        index = {n: i for i, n in enumerate(self.class_names)}
        return [index[n] for n in self.groups[group]]

    def lut(self, group: str) -> np.ndarray:
        """256-entry uint8 table: 255 for the group's class ids, 0 elsewhere (for cv2.LUT)."""
        table = np.zeros(256, np.uint8)
        table[self.ids(group)] = 255
        return table

    def member(self, group: str) -> np.ndarray:
        """256-entry bool table: True for the group's class ids."""
        table = np.zeros(256, bool)
        table[self.ids(group)] = True
        return table


def parse_label_groups(data: object, class_names: Sequence[str], source: str = "") -> LabelGroups:
    where = f" in {source}" if source else ""
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise LabelFileError(f"label file{where} must be a mapping with a 'groups' mapping")
    raw = data["groups"]
    unknown_groups = sorted(set(raw) - set(GROUPS))
    if unknown_groups:
        raise LabelFileError(f"unknown group(s) {unknown_groups}{where}; known groups: {list(GROUPS)}")
    missing_groups = [g for g in GROUPS if g not in raw]
    if missing_groups:
        raise LabelFileError(f"label file{where} lacks group(s) {missing_groups} (use [] for none)")
    known = set(class_names)
    groups: Dict[str, Tuple[str, ...]] = {}
    for g in GROUPS:
        names = raw[g] if raw[g] is not None else []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LabelFileError(f"group {g!r}{where} must be a list of class names, got {names!r}")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LabelFileError(
                f"group {g!r}{where} names class(es) {unknown} that the model does not have; "
                f"model classes: {list(class_names)}")
        groups[g] = tuple(names)
    not_ground = sorted(set(groups["drivable"]) - set(groups["ground"]))
    if not_ground:
        raise LabelFileError(f"drivable classes {not_ground}{where} must also be listed under ground")
    both = sorted(set(groups["ground"]) & set(groups["obstacle"]))
    if both:
        raise LabelFileError(f"classes {both}{where} are both ground and obstacle")
    return LabelGroups(tuple(class_names), groups, source)


def load_label_file(path: str, class_names: Sequence[str]) -> LabelGroups:
    if not os.path.isfile(path):
        raise LabelFileError(f"label file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise LabelFileError(f"cannot read label file {path}: {exc}") from exc
    return parse_label_groups(data, class_names, source=path)
