"""What a drive's frames say about the model, for a person choosing which drives to look at:
per frame (from its FrameOutcome) how unsure the network was, whether the grid saw drivable
ground ahead, whether a pedestrian was near; per drive the shares of such frames and its worst
seconds. process-bags collects them, the fleet report ranks the drives by them."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

# A frame is "unsure" when more than this share of its pixels is below min_confidence.grid.
UNSURE_SHARE = 0.3
# The corridor ahead the vehicle drives into: x from 1 to 15 m, |y| up to 1.5 m (grid frame).
AHEAD_X, AHEAD_HALF_WIDTH = (1.0, 15.0), 1.5
# "No drivable area ahead": under this share of the corridor's known cells the grid calls
# drivable; a corridor with under MIN_KNOWN_AHEAD of its cells known says nothing either way.
MIN_DRIVABLE_AHEAD = 0.2
MIN_KNOWN_AHEAD = 0.2
# "Pedestrian near": the pedestrian mask covers at least this share of the image's lower 40%
# (what is close to a forward-looking camera).
PEDESTRIAN_NEAR_SHARE = 0.002


@dataclasses.dataclass(frozen=True)
class FrameFigures:
    t: float                      # the frame's receive time in the recording, s
    camera: str
    mean_confidence: Optional[float]
    unsure_share: Optional[float]  # pixels below min_confidence.grid
    drivable_ahead: Optional[float]  # share of the corridor's known cells that are drivable (None: no grid)
    pedestrian_near: bool
    shares: Dict[str, float]       # road / pedestrian / parking mask shares of the frame

    @property
    def unsure(self) -> bool:
        return self.unsure_share is not None and self.unsure_share > UNSURE_SHARE

    @property
    def no_drivable_ahead(self) -> bool:
        return self.drivable_ahead is not None and self.drivable_ahead < MIN_DRIVABLE_AHEAD

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def frame_figures(camera: str, outcome, t: float) -> FrameFigures:
    """The figures of one frame's outcome (core/finish.FrameOutcome) at the model's resolution."""
    from .pipeline import confidence_level

    result = outcome.result
    labels = result.labels_small
    conf = result.confidence_small
    mean_conf = unsure = None
    if conf is not None:
        mean_conf = float(conf.mean()) / 255.0
        unsure = float(np.mean(conf < confidence_level(result.outputs.min_confidence.get("grid", 0.0))))
    groups = result.post.groups
    shares = {g: float(groups.member(g)[labels].mean()) for g in ("road", "pedestrian", "parking")}
    lower = labels[int(labels.shape[0] * 0.6):]
    near = bool(groups.member("pedestrian")[lower].mean() >= PEDESTRIAN_NEAR_SHARE) if lower.size else False
    return FrameFigures(t, camera, mean_conf, unsure, _drivable_ahead(outcome), near, shares)


def _drivable_ahead(outcome) -> Optional[float]:
    grid, spec = outcome.grid, outcome.grid_spec
    if grid is None or grid.cells is None or spec is None:
        return None
    xs = spec.x_min + (np.arange(grid.cells.shape[1]) + 0.5) * spec.resolution
    ys = spec.y_min + (np.arange(grid.cells.shape[0]) + 0.5) * spec.resolution
    cols = (xs >= AHEAD_X[0]) & (xs <= AHEAD_X[1])
    rows = np.abs(ys) <= AHEAD_HALF_WIDTH
    corridor = grid.cells[np.ix_(rows, cols)]
    known = corridor >= 0
    if corridor.size == 0 or known.mean() < MIN_KNOWN_AHEAD:
        return None  # the grid does not reach ahead, or sees too little of it (near ground below the view)
    return float(np.mean(corridor[known] == 0))


@dataclasses.dataclass
class DriveFigures:
    """A drive's figures over its frames."""
    frames: int
    unsure: float                 # share of frames
    no_drivable_ahead: float      # share of the frames whose grid reaches ahead
    pedestrian_near: float        # share of frames
    mean_confidence: Optional[float]
    worst_seconds: List[Dict[str, object]]  # the seconds of the drive most worth a look
    look_first: float             # the ranking score: higher, look earlier

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def drive_figures(figures: Sequence[FrameFigures], worst: int = 3) -> DriveFigures:
    """Shares over the frames, and the ``worst`` seconds (1 s windows of receive time) with the
    most unsure pixels, counting frames with no drivable area ahead as unsure as can be."""
    n = len(figures)
    if n == 0:
        return DriveFigures(0, 0.0, 0.0, 0.0, None, [], 0.0)
    ahead = [f for f in figures if f.drivable_ahead is not None]
    conf = [f.mean_confidence for f in figures if f.mean_confidence is not None]
    unsure = sum(f.unsure for f in figures) / n
    no_ahead = (sum(f.no_drivable_ahead for f in ahead) / len(ahead)) if ahead else 0.0
    near = sum(f.pedestrian_near for f in figures) / n
    t0 = min(f.t for f in figures)
    seconds: Dict[int, List[FrameFigures]] = {}
    for f in figures:
        seconds.setdefault(int(f.t - t0), []).append(f)

    def badness(frames: Iterable[FrameFigures]) -> float:
        frames = list(frames)
        return float(np.mean([1.0 if f.no_drivable_ahead else (f.unsure_share or 0.0) for f in frames]))

    ranked = sorted(seconds.items(), key=lambda kv: -badness(kv[1]))[:worst]
    worst_seconds = [{"second": s, "t": t0 + s, "badness": round(badness(fr), 4),
                      "unsure_share": round(float(np.mean([f.unsure_share or 0.0 for f in fr])), 4),
                      "no_drivable_ahead": any(f.no_drivable_ahead for f in fr),
                      "pedestrian_near": any(f.pedestrian_near for f in fr)} for s, fr in ranked]
    score = unsure + no_ahead + 0.5 * near
    return DriveFigures(n, round(unsure, 4), round(no_ahead, 4), round(near, 4),
                        round(float(np.mean(conf)), 4) if conf else None, worst_seconds, round(score, 4))
