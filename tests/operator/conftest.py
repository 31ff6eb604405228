"""Fixtures for the operator's fast tests."""

from __future__ import annotations

import pytest

from kubeinfer.operator.render import RenderOptions


@pytest.fixture
def options() -> RenderOptions:
    return RenderOptions(runtime_image="registry.local/kubeinfer/runtime:test")
