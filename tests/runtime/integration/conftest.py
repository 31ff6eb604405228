"""Servers shared by the hostile-input tests and the fuzzer: started once per session.

``add_sub`` is the FP32 model (INPUT0, INPUT1 [B, 16]); ``strings`` the BYTES model
(an ONNX string identity). Tests against them must leave them healthy.
"""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.runtime.models import add_sub_repo, strings_repo


@pytest.fixture(scope="session")
def add_sub_server(tmp_path_factory):
    s = ServerProcess(["serve", str(add_sub_repo(tmp_path_factory.mktemp("add_sub")))])
    s.wait_ready()
    yield s
    s.terminate()


@pytest.fixture(scope="session")
def strings_server(tmp_path_factory):
    s = ServerProcess(["serve", str(strings_repo(tmp_path_factory.mktemp("strings")))])
    s.wait_ready()
    yield s
    s.terminate()
