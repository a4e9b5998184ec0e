"""The surround grid's fusion rule and the fair order of cameras (plain pytest, no ROS)."""

import numpy as np
import pytest

from seg_perception.core.surround import SurroundGrid, fair_order, fuse_grids

U, F, O = -1, 0, 100


def g(*rows):
    return np.array(rows, np.int8)


def test_fusion_rule_at_overlaps():
    front = g([F, F, U, O], [U, F, F, U])
    side = g([O, U, F, F], [U, U, U, U])
    fused = fuse_grids([front, side])
    # an obstacle from either camera wins over the other's free ground; free where any camera
    # sees drivable ground and none an obstacle; unknown where nobody knows
    np.testing.assert_array_equal(fused, g([O, F, F, O], [U, F, F, U]))
    np.testing.assert_array_equal(fuse_grids([front]), front)
    assert fused.dtype == np.int8
    with pytest.raises(ValueError, match="different shapes"):
        fuse_grids([front, g([F])])


def test_a_stale_camera_drops_out_of_the_surround_grid():
    s = SurroundGrid(["front", "rear"], max_spread_s=0.2)
    assert s.fused() is None
    s.update("front", g([F, U]), 10.0)
    s.update("rear", g([U, O]), 10.1)
    cells, stamp, used = s.fused()
    np.testing.assert_array_equal(cells, g([F, O]))
    assert stamp == 10.1 and used == ["front", "rear"]
    s.update("front", g([F, F]), 10.5)  # the rear camera stalls at 10.1
    cells, stamp, used = s.fused()
    assert used == ["front"] and stamp == 10.5
    np.testing.assert_array_equal(cells, g([F, F]))
    with pytest.raises(KeyError):
        s.update("left", g([F, F]), 10.5)


def test_the_published_surround_grid_never_goes_back_in_time():
    """Cameras are not synchronised: a grid from a camera whose frame is older than one already
    fused is kept for the next fusion but not published (its stamp would rewind the topic)."""
    s = SurroundGrid(["front", "rear"], max_spread_s=0.2)
    s.update("front", g([F, U]), 10.10)
    cells, used = s.to_publish(10.10)
    np.testing.assert_array_equal(cells, g([F, U]))
    s.update("rear", g([U, O]), 10.05)  # late: older than the front grid already published
    assert s.to_publish(10.05) is None
    s.update("front", g([F, F]), 10.20)  # the next front grid carries the rear's view too
    cells, used = s.to_publish(10.20)
    np.testing.assert_array_equal(cells, g([F, O]))
    assert used == ["front", "rear"] and s.fused()[1] == 10.20


@pytest.mark.parametrize("fair", [True, False])
def test_every_camera_gets_its_share_under_overload(fair):
    """Four cameras at 10 Hz each, a network for 20 frames/s (2x overload), newest-frame slots:
    the fair order gives each camera a quarter of the network; serving the oldest waiting frame
    (the other rule, checked here to show why it is not used) starves one."""
    cameras = ["front", "left", "right", "rear"]
    waiting = {}
    served = {c: 0 for c in cameras}
    last_served = {}
    t = 0.0
    next_free = 0.0
    for step in range(4000):  # 1 ms ticks over 4 s
        t = step / 1000.0
        for i, c in enumerate(cameras):
            if step % 100 == i * 7:  # 10 Hz each, phase-shifted
                waiting[c] = t  # a newer frame replaces a waiting one
        if t >= next_free and waiting:
            c = (fair_order(waiting, last_served)[0] if fair
                 else min(waiting, key=lambda k: waiting[k]))
            del waiting[c]
            served[c] += 1
            last_served[c] = t
            next_free = t + 0.05  # 50 ms per frame
    assert sum(served.values()) >= 78
    if fair:
        assert max(served.values()) - min(served.values()) <= 2, served
    else:
        assert min(served.values()) == 0, served
