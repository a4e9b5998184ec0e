"""The drivable map against the truth (issue #17): the ray-cast sample drive with its known
motion, synthetic grids for what moves, and the odometry faults."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.core import sample
from seg_perception.core.class_sets import packaged_label_file
from seg_perception.core.datasets import CAMVID_PARKING_CLASSES
from seg_perception.core.drivable_map import DrivableMap, MapBuilder, MapSpec
from seg_perception.core.camera_model import CameraModel, camera_pose
from seg_perception.core.grid import GridSpec, GroundGrid
from seg_perception.core.labels import load_label_file
from seg_perception.core.odometry import PoseHistory, yaw_of_quaternion

CAM = sample.SampleCamera(width=480, height=270)
GRID = GridSpec(resolution=0.1, x_min=0.0, x_max=30.0, y_min=-15.0, y_max=15.0, max_range=30.0)
SPEC = MapSpec(resolution=0.1, size_x=60.0, size_y=60.0, decay_time=5.0)


@pytest.fixture(scope="module")
def drive():
    """50 frames (5 s) of the sample drive: (poses, per-frame grids from the true labels)."""
    names = [n for n, _ in CAMVID_PARKING_CLASSES]
    groups = load_label_file(packaged_label_file(names), names)
    grid = GroundGrid(GRID, groups)
    info = sample.camera_info_dict(CAM)
    model = CameraModel.from_fields(info["width"], info["height"], info["k"], info["d"], info["distortion_model"])
    assert grid.configure(model, camera_pose(CAM.pose_xyz, CAM.pose_rpy), CAM.height, CAM.width)
    frames = []
    for i in range(50):
        _, labels = sample.render_frame(i, CAM)
        pose = (CAM.speed * i / CAM.rate, 0.0, 0.0)  # the sample camera drives along x
        frames.append((i / CAM.rate, pose, grid.compute(labels)))
    return frames


def map_cells(m: DrivableMap):
    """(x, y) of every map cell centre in the map frame."""
    xs = m.origin[0] + (np.arange(m.cols) + 0.5) * m.spec.resolution
    ys = m.origin[1] + (np.arange(m.rows) + 0.5) * m.spec.resolution
    return np.meshgrid(xs, ys)


def objects(X, Y, frames=50, margin=0.5):
    """Cells the sample's parked car or crossing pedestrian stood on during the drive (world
    frame, as sample.render_frame places them), widened by ``margin``."""
    on = (X > 30.0 - margin) & (X < 34.5 + margin) & (Y > -8.5 - margin) & (Y < -6.5 + margin)
    for i in range(frames):
        t = i / CAM.rate
        travelled = CAM.speed * t
        px = travelled + 14.0 - math.fmod(travelled * 0.25, 6.0)
        py = 2.5 - math.fmod(t * 1.2, 5.0)
        on |= (X > px - margin) & (X < px + 0.4 + margin) & (np.abs(Y - py) < 0.3 + margin)
    return on


def truth(X, Y):
    """The sample street's layout: drivable road |y| <= 3.5 and parking bays -9 < y < -4, not
    drivable pavement up to the buildings at |y| = 11; near a boundary or where the car and the
    pedestrian stood: not judged (the map rightly holds them)."""
    drivable = (np.abs(Y) <= 3.5) | ((Y > -9.0) & (Y < -4.0))
    edges = np.array([-11.0, -9.0, -4.0, -3.5, 3.5, 11.0])
    judged = (np.min(np.abs(Y[..., None] - edges), axis=-1) > 0.3) & (np.abs(Y) < 11.0) & ~objects(X, Y)
    return drivable, judged


def agreement(occ, X, Y):
    drivable, judged = truth(X, Y)
    known = judged & (occ != -1)
    return float(((occ[known] < 50) == drivable[known]).mean()), known


def test_five_seconds_of_driving_know_twice_the_road_and_agree_as_well(drive):
    fused = DrivableMap(SPEC)
    for t, pose, cells in drive:
        fused.update(cells, GRID, pose, t)
    single = DrivableMap(SPEC)
    t, pose, cells = drive[-1]
    single.origin = fused.origin  # the same window
    single.update(cells, GRID, pose, t)
    X, Y = map_cells(fused)
    road = np.abs(Y) <= 3.2
    occ_map, occ_single = fused.occupancy(), single.occupancy()
    known_map = (occ_map[road] != -1).mean()
    known_single = (occ_single[road] != -1).mean()
    assert known_single > 0.05 and known_map >= 2.0 * known_single, (known_map, known_single)
    agree_map, n_map = agreement(occ_map, X, Y)
    agree_single, n_single = agreement(occ_single, X, Y)
    assert n_map.sum() > 2 * n_single.sum()
    assert agree_map >= agree_single and agree_map > 0.97, (agree_map, agree_single)
    # values are occupancy probabilities: the road well seen is sure drivable
    assert np.median(occ_map[road & (occ_map != -1)]) <= 15


def test_a_parked_car_stays_not_drivable_after_it_leaves_the_view_until_it_decays(drive):
    m = DrivableMap(SPEC)
    for t, pose, cells in drive[:20]:  # the parked car (world x 30..34.5, y -8.5..-6.5) in view
        m.update(cells, GRID, pose, t)
    X, Y = map_cells(m)
    car = (X > 29.7) & (X < 34.8) & (Y > -8.8) & (Y < -6.2)
    seen_car = car & (m.occupancy() >= 65)
    assert seen_car.sum() >= 20
    for t, pose, cells in drive[20:]:  # it passes by: from frame ~40 behind the camera
        m.update(cells, GRID, pose, t)
    assert drive[-1][1][0] > 35.0  # the camera is past the car
    still = m.occupancy()
    X2, Y2 = map_cells(m)
    car2 = (X2 > 29.7) & (X2 < 34.8) & (Y2 > -8.8) & (Y2 < -6.2)
    assert (still[car2] >= 65).sum() >= 0.8 * seen_car.sum()
    # nobody sees it for decay_time: back to unknown, never drivable on an old guess
    t_end, pose_end = drive[-1][0], drive[-1][1]
    blind = np.full((GRID.height, GRID.width), -1, np.int8)
    m.update(blind, GRID, pose_end, t_end + SPEC.decay_time + 0.1)
    assert (m.occupancy() == -1).all()


def synthetic(obstacle_xy=None, radius=0.5):
    """A grid that sees free road 2..20 m ahead, |y| < 4, with an obstacle's foot at obstacle_xy."""
    xs, ys = GRID.cell_centres()
    X, Y = np.meshgrid(xs, ys)
    cells = np.full(X.shape, -1, np.int8)
    cells[(X > 2) & (X < 20) & (np.abs(Y) < 4)] = 0
    if obstacle_xy is not None:
        cells[np.hypot(X - obstacle_xy[0], Y - obstacle_xy[1]) < radius] = 100
    return cells


def value_at(m: DrivableMap, x, y):
    j = int((x - m.origin[0]) / m.spec.resolution)
    i = int((y - m.origin[1]) / m.spec.resolution)
    return int(m.occupancy()[i, j])


def test_a_crossing_pedestrian_frees_its_cells_and_an_obstacle_is_not_drivable_at_once():
    m = DrivableMap(SPEC)
    pose = (100.0, -20.0, 0.3)  # standing still, somewhere in odom, turned
    c, s = math.cos(pose[2]), math.sin(pose[2])

    def world(bx, by):
        return pose[0] + c * bx - s * by, pose[1] + s * bx + c * by

    t = 0.0
    for _ in range(30):  # 3 s of free road: the map is sure it is drivable
        m.update(synthetic(), GRID, pose, t)
        t += 0.1
    assert 0 <= value_at(m, *world(10.0, 0.0)) <= 15
    # a pedestrian steps in: not drivable in the very first frame that sees it
    m.update(synthetic((10.0, 0.0)), GRID, pose, t)
    assert value_at(m, *world(10.0, 0.0)) >= 65
    for _ in range(20):  # ... and stands there 2 s: the map gets sure of it
        t += 0.1
        m.update(synthetic((10.0, 0.0)), GRID, pose, t)
    assert value_at(m, *world(10.0, 0.0)) >= 95
    # it walks on: its old cells are drivable again well within decay_time, the new ones are not
    t_left = t
    while value_at(m, *world(10.0, 0.0)) > 35 and t - t_left < SPEC.decay_time:
        t += 0.1
        m.update(synthetic((10.0, 3.0)), GRID, pose, t)
    assert t - t_left < SPEC.decay_time / 2, t - t_left
    assert value_at(m, *world(10.0, 3.0)) >= 65


def test_trinary_form_and_the_window_rolls_with_the_vehicle():
    m = DrivableMap(MapSpec(resolution=0.1, size_x=20.0, size_y=20.0, trinary=True))
    m.update(synthetic((6.0, 0.0)), GRID, (0.0, 0.0, 0.0), 0.0)
    assert set(np.unique(m.occupancy())) <= {-1, 0, 100}
    origin = m.origin
    blind = np.full((GRID.height, GRID.width), -1, np.int8)
    m.update(blind, GRID, (1.5, 0.0, 0.0), 0.1)  # less than a tenth of the window off centre: no shift
    assert m.origin == origin
    m.update(blind, GRID, (8.0, 0.0, 0.0), 0.2)  # further: the window follows
    assert m.origin[0] == pytest.approx(origin[0] + 8.0, abs=0.11)
    # what it saw at x = 6 (an obstacle) is still where it was in the map frame
    assert value_at(m, 6.0, 0.0) == 100


def test_odometry_interpolates_and_its_faults_clear_or_stop_the_map():
    h = PoseHistory(jump_distance=2.0, max_speed=40.0, tolerance=0.1)
    assert h.add(0.0, (0.0, 0.0, math.pi - 0.1)) is None
    assert h.add(0.1, (1.0, 0.0, -math.pi + 0.1)) is None
    x, y, yaw = h.at(0.05)
    assert x == pytest.approx(0.5) and abs(abs(yaw) - math.pi) < 1e-6  # the short way round
    assert h.at(0.15) == (1.0, 0.0, -math.pi + 0.1) and h.at(0.3) is None and h.at(-0.1) is None
    assert yaw_of_quaternion(0.0, 0.0, math.sin(0.4), math.cos(0.4)) == pytest.approx(0.8)

    b = MapBuilder(SPEC, PoseHistory(jump_distance=2.0, max_speed=40.0), odom_timeout=0.5)
    assert b.on_grid(synthetic(), GRID, 0.0).state == "warn" and b.not_updated == 1  # no odometry yet
    b.on_odometry(0.0, (0.0, 0.0, 0.0))
    b.on_odometry(0.1, (0.5, 0.0, 0.0))
    assert b.on_grid(synthetic(), GRID, 0.05).state == "ok" and b.map.updates == 1
    # a frame from before the history: skipped and counted
    assert b.on_grid(synthetic(), GRID, -0.5).state == "warn" and b.skipped == 1
    # odometry stopped: the map stops, the reason says stale
    out = b.on_grid(synthetic(), GRID, 1.0)
    assert out.state == "warn" and "stale" in out.status and b.map.updates == 1
    # a jump of 10 m in 0.1 s: the map is cleared and says why
    assert b.on_odometry(0.2, (10.5, 0.0, 0.0)).startswith("odometry jumped 10.0 m")
    assert (b.map.occupancy() == -1).all() and b.map.clears == 1
    assert "jumped" in b.on_grid(synthetic(), GRID, 0.2).status
    # time going backwards (a bag looping) clears it too
    assert "backwards" in b.on_odometry(0.0, (0.0, 0.0, 0.0))
    assert b.map.clears == 2


def test_confidence_weights_scale_each_observation_but_never_soften_an_obstacle():
    pose = (0.0, 0.0, 0.0)
    full = DrivableMap(SPEC)
    full.update(synthetic(), GRID, pose, 0.0, np.full((GRID.height, GRID.width), 255, np.uint8))
    plain = DrivableMap(SPEC)
    plain.update(synthetic(), GRID, pose, 0.0)
    np.testing.assert_array_equal(full.occupancy(), plain.occupancy())  # sure everywhere: unweighted
    half = DrivableMap(SPEC)
    weight = np.full((GRID.height, GRID.width), 128, np.uint8)
    half.update(synthetic((10.0, 0.0)), GRID, pose, 0.0, weight)
    # an unsure "drivable" counts half: 45 instead of 40 after one frame
    assert value_at(half, 5.0, 0.0) == round(100 / (1 + math.exp(-0.5 * math.log(0.4 / 0.6) * 128 / 127.5)))
    assert value_at(half, 5.0, 0.0) > value_at(plain, 5.0, 0.0)
    # an obstacle is not drivable at once however unsure the model is of it
    barely = DrivableMap(SPEC)
    barely.update(synthetic((10.0, 0.0)), GRID, pose, 0.0, np.full((GRID.height, GRID.width), 3, np.uint8))
    assert value_at(barely, 10.0, 0.0) >= 70


@pytest.mark.parametrize("yaw,res", [(0.0, 0.1), (math.pi / 4, 0.1), (0.3, 0.1), (0.0, 0.2), (math.pi / 4, 0.25)])
def test_no_single_cell_obstacle_is_lost_on_a_turned_or_coarser_map(yaw, res):
    """Nearest sampling alone skipped up to 16% of one-cell obstacles at 45 degrees and most on a
    coarser map: obstacles are max-pooled into the map, each one stays not drivable."""
    rng = np.random.default_rng(0)
    cells = np.zeros((GRID.height, GRID.width), np.int8)
    rows, cols = rng.integers(10, GRID.height - 10, 300), rng.integers(10, GRID.width - 10, 300)
    cells[rows, cols] = 100
    m = DrivableMap(MapSpec(resolution=res, size_x=80.0, size_y=80.0))
    pose = (3.0, -2.0, yaw)
    m.update(cells, GRID, pose, 0.0)
    xs, ys = GRID.cell_centres()
    c, s = math.cos(yaw), math.sin(yaw)
    occ = m.occupancy()
    lost = 0
    for r, k in zip(rows, cols):
        x, y = pose[0] + c * xs[k] - s * ys[r], pose[1] + s * xs[k] + c * ys[r]
        i, j = int((y - m.origin[1]) / res), int((x - m.origin[0]) / res)
        lost += occ[i, j] < 65
    assert lost == 0


@pytest.mark.parametrize("yaw,res", [(0.0, 0.1), (math.pi / 4, 0.1), (0.3, 0.1), (0.0, 0.2), (math.pi / 4, 0.25)])
def test_only_the_known_part_of_a_grid_is_fused_and_none_of_its_edge_is_lost(yaw, res):
    """The map warps only the part of the grid a frame knows: obstacles on that part's very
    edge still reach the map, and the map learns every known cell and nothing else."""
    cells = np.full((GRID.height, GRID.width), -1, np.int8)
    r0, r1, c0, c1 = 40, 71, 120, 161
    cells[r0:r1, c0:c1] = 0
    edge = [(r, c) for r in range(r0, r1) for c in range(c0, c1)
            if r in (r0, r1 - 1) or c in (c0, c1 - 1)][::3]
    for r, c in edge:
        cells[r, c] = 100
    m = DrivableMap(MapSpec(resolution=res, size_x=80.0, size_y=80.0))
    pose = (3.0, -2.0, yaw)
    seen = m.update(cells, GRID, pose, 0.0)
    xs, ys = GRID.cell_centres()
    c, s = math.cos(yaw), math.sin(yaw)
    occ = m.occupancy()
    lost = 0
    for r, k in edge:
        x, y = pose[0] + c * xs[k] - s * ys[r], pose[1] + s * xs[k] + c * ys[r]
        i, j = int((y - m.origin[1]) / res), int((x - m.origin[0]) / res)
        lost += occ[i, j] < 65
    assert lost == 0
    # every map cell it knows lies on the known part (within the max-pool's reach of it)
    area = (r1 - r0) * (c1 - c0) * GRID.resolution ** 2
    assert 0.8 * area <= seen * res * res <= area + 2 * (r1 - r0 + c1 - c0) * GRID.resolution * 2 * res


def test_several_cameras_posed_by_tf_in_any_stamp_order_do_not_clear_the_map():
    b = MapBuilder(SPEC, odom_timeout=0.5)
    for t in (10.033, 10.020, 10.041, 10.000):  # four unsynchronised cameras, taken in fair order
        assert b.on_grid(synthetic(), GRID, t, pose=(t, 0.0, 0.0)).state == "ok"
    assert b.map.clears == 0 and b.map.updates == 4
    b.on_grid(synthetic(), GRID, 5.0, pose=(5.0, 0.0, 0.0))  # seconds back: a bag looping
    assert b.map.clears == 1 and "backwards" in b.map.last_clear


def test_odometry_in_the_wrong_frames_is_named_and_a_frame_without_pose_is_counted():
    from seg_perception.core.drivable_map import odometry_frames_problem

    assert odometry_frames_problem("odom", "base_link", "odom", "base_link") == ""
    assert "map.frame_id is 'map'" in odometry_frames_problem("odom", "base_link", "map", "base_link")
    assert "grid.frame_id is 'base_footprint'" in odometry_frames_problem("odom", "base_link", "odom",
                                                                          "base_footprint")
    b = MapBuilder(SPEC)
    outcome = b.skip("no transform odom <- base_link at 10.0")
    assert b.skipped == 1 and outcome.state == "warn" and "no transform" in outcome.status
    assert b.outcome is outcome and b.map.updates == 0


def test_odometry_that_is_not_a_number_is_ignored():
    h = PoseHistory()
    h.add(0.0, (0.0, 0.0, 0.0))
    assert h.add(0.1, (float("nan"), 0.0, 0.0)) is None and h.rejected == 1
    assert h.at(0.05) == (0.0, 0.0, 0.0) and h.newest_time == 0.0
