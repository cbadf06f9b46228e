"""minecube.errors: the stack level that makes warnings name the user's line."""

from __future__ import annotations

import sys
import warnings

from minecube.errors import find_stack_level


def _level_here() -> int:
    return find_stack_level()


def test_the_first_frame_outside_the_package_is_the_level():
    assert find_stack_level() == 1  # only its own frame is inside minecube
    assert _level_here() == 1  # tests lie outside the package, however deep the call
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        warnings.warn("here", UserWarning, stacklevel=find_stack_level())
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


def test_a_warning_two_calls_deep_names_the_callers_line():
    from shapely.geometry import box

    from minecube.cube import site_grid

    over_two_zones = box(143.90, -20.10, 144.05, -20.00)
    with warnings.catch_warnings(record=True) as caught:  # cube.site_grid → sites.site_zone
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        site_grid(over_two_zones)
    assert caught
    assert {(w.filename, w.lineno) for w in caught} == {(__file__, line)}
