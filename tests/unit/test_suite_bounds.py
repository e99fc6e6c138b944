"""The suite's own bounds: every unit test carries pytest-timeout's marker, the rest the ini default."""

from __future__ import annotations

from tests.conftest import UNIT_TIMEOUT_S


def test_a_unit_test_has_the_unit_timeout(request):
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (UNIT_TIMEOUT_S,)
    assert request.config.getini("timeout") == "900"
