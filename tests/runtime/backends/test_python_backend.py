"""The Python backend: a scikit-learn model behind a user's model.py, served by a real
``kubeinfer serve`` process and called with tritonclient (HTTP and gRPC); error paths."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kubeinfer.runtime.errors import BackendError, ConfigError
from kubeinfer.runtime.repository import load_model
from tests.runtime.backends.python_models import (
    ECHO_CONFIG,
    RAISING_MODEL,
    iris_repo,
    python_repo,
    train_iris,
)

pytest.importorskip("sklearn")
pytest.importorskip("joblib")


@pytest.fixture
def iris_server(tmp_path, start_server):
    return start_server(["serve", str(iris_repo(tmp_path / "repo"))])


def _iris_input(x, module=httpclient):
    inp = module.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_iris_over_http_matches_scikit_learn(iris_server):
    clf, x, y = train_iris()
    client = httpclient.InferenceServerClient(iris_server.url)
    meta = client.get_model_metadata("iris")
    assert meta["platform"] == "python"
    assert meta["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}]
    result = client.infer("iris", [_iris_input(x[:16])])
    np.testing.assert_array_equal(result.as_numpy("LABEL").ravel(), clf.predict(x[:16]))
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), clf.predict_proba(x[:16]), rtol=1e-5)
    assert result.as_numpy("INSTANCE")[0, 0] in (b"iris_0", b"iris_1")
    client.close()


def test_iris_over_grpc(iris_server):
    clf, x, _ = train_iris()
    client = grpcclient.InferenceServerClient(iris_server.grpc_url)
    result = client.infer("iris", [_iris_input(x[40:45], grpcclient)])
    np.testing.assert_array_equal(result.as_numpy("LABEL").ravel(), clf.predict(x[40:45]))
    client.close()


def test_an_error_response_fails_only_its_request(iris_server):
    clf, x, _ = train_iris()
    client = httpclient.InferenceServerClient(iris_server.url, concurrency=16)
    rows = [x[i : i + 1].copy() for i in range(0, 150, 10)]
    rows[3][0, 0] = np.nan
    # all in flight together: the batcher puts them in one batch (20 ms delay)
    pending = [client.async_infer("iris", [_iris_input(r)]) for r in rows]
    for i, p in enumerate(pending):
        if i == 3:
            with pytest.raises(InferenceServerException, match="INPUT contains NaN"):
                p.get_result(timeout=30)
        else:
            assert p.get_result(timeout=30).as_numpy("LABEL")[0, 0] == clf.predict(rows[i])[0]
    stats = client.get_inference_statistics("iris")["model_stats"][0]["inference_stats"]
    assert stats["fail"]["count"] == 1
    assert stats["success"]["count"] == len(rows) - 1
    client.close()


def test_an_exception_in_execute_fails_the_request_and_the_server_stays_up(tmp_path, start_server):
    server = start_server(["serve", str(python_repo(tmp_path / "repo", "raiser", RAISING_MODEL))])
    client = httpclient.InferenceServerClient(server.url)
    bad = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    bad.set_data_from_numpy(np.array([[-1, 1]], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="ValueError: negative input"):
        client.infer("raiser", [bad])
    good = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    good.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
    np.testing.assert_array_equal(client.infer("raiser", [good]).as_numpy("OUTPUT0"), [[2, 4]])
    client.close()
    gclient = grpcclient.InferenceServerClient(server.grpc_url)
    gbad = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
    gbad.set_data_from_numpy(np.array([[-1, 1]], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="negative input"):
        gclient.infer("raiser", [gbad])
    gclient.close()


def test_a_broken_model_py_stops_startup_with_its_error(tmp_path, start_server):
    repo = python_repo(tmp_path / "repo", "broken", "def oops(:\n    pass\n")
    server = start_server(["serve", str(repo)], ready=False)
    assert server.proc.wait(60) == 1
    log = server.log()
    assert "cannot serve" in log and "model.py: cannot import the model: " in log
    assert "SyntaxError" in log


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "defines no class TritonPythonModel"),
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named 'no_such_module_here'"),
        (
            "class TritonPythonModel:\n"
            "    def initialize(self, args):\n"
            "        raise FileNotFoundError('weights.bin is missing')\n"
            "    def execute(self, requests):\n"
            "        return []\n",
            "initialize() failed for {name}_0: FileNotFoundError: weights.bin is missing",
        ),
        ("class TritonPythonModel:\n    pass\n", "has no execute(self, requests) method"),
    ],
    ids=["no-class", "import-error", "initialize-raises", "no-execute"],
)
def test_load_errors_are_config_errors(tmp_path, source, message):
    name = f"bad_{abs(hash(message)) % 10_000}"
    repo = python_repo(tmp_path / "repo", name, source)
    with pytest.raises(ConfigError, match=message.format(name=name).replace("(", r"\(").replace(")", r"\)")):
        load_model(repo, name)


def test_config_without_tensors_is_a_config_error(tmp_path):
    repo = python_repo(tmp_path / "repo", "bare", RAISING_MODEL, config='backend: "python"\n')
    with pytest.raises(ConfigError, match="declare 'input' and 'output' in config.pbtxt"):
        load_model(repo, "bare")


RESPONSES_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.finalized = False

    def execute(self, requests):
        x = requests[0].inputs()[0].as_numpy()
        mode = int(x.ravel()[0])
        if mode == 1:
            return []  # wrong count
        if mode == 2:
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OTHER", x)]) for _ in requests]
        if mode == 3:
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x.astype(np.float64))]) for _ in requests]
        if mode == 4:
            raise pb_utils.TritonModelException("model says no")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) if (r.inputs()[0].as_numpy() >= 0).all()
                else pb_utils.InferenceResponse(error=pb_utils.TritonError("negative"))
                for r in requests]
'''


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (1, "returned 0 responses for 1 requests"),
        (2, r"returned no output 'OUTPUT0' \(it returned \['OTHER'\]\)"),
        (3, "output 'OUTPUT0' is float64, the config declares float32"),
        (4, "^model says no$"),
    ],
)
def test_bad_results_are_backend_errors(tmp_path, mode, message):
    loaded = load_model(python_repo(tmp_path / "repo", f"responses_{mode}", RESPONSES_MODEL), None)
    x = np.full((1, 2), mode, dtype=np.float32)
    with pytest.raises(BackendError, match=message):
        loaded.backend.execute({"INPUT0": x}, ["OUTPUT0"])
    loaded.backend.unload()


def test_execute_requests_gives_each_request_its_outcome(tmp_path):
    loaded = load_model(python_repo(tmp_path / "repo", "per_request", RESPONSES_MODEL), None)
    good = np.zeros((2, 2), dtype=np.float32)
    bad = np.full((1, 2), -1, dtype=np.float32)
    results = loaded.backend.execute_requests([{"INPUT0": good}, {"INPUT0": bad}], ["OUTPUT0"])
    np.testing.assert_array_equal(results[0]["OUTPUT0"], good)
    assert isinstance(results[1], BackendError) and results[1].message == "negative"
    loaded.backend.unload()


def test_instances_get_their_names_and_finalize_runs(tmp_path):
    source = '''
    import triton_python_backend_utils as pb_utils
    FINALIZED = []

    class TritonPythonModel:
        def initialize(self, args):
            self.args = args

        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", r.inputs()[0].as_numpy())]) for r in requests]

        def finalize(self):
            FINALIZED.append(self.args["model_instance_name"])
    '''
    config = ECHO_CONFIG + 'instance_group [ { count: 3 kind: KIND_CPU } ]\n'
    loaded = load_model(python_repo(tmp_path / "repo", "named", source, config), "named")
    assert loaded.config.backend == "python"
    module = __import__("sys").modules["kubeinfer_model_named"]
    loaded.backend.unload()
    assert sorted(module.FINALIZED) == ["named_0", "named_1", "named_2"]


def test_the_iris_example_serves_with_labels(start_server):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    build = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "build.py"), "iris_sklearn"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    server = start_server(["serve", str(REPO_ROOT / "examples" / "models"), "--model", "iris_sklearn"])
    client = httpclient.InferenceServerClient(server.url)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    inp = httpclient.InferInput("features", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("probabilities", class_count=1)
    result = client.infer("iris_sklearn", [inp], outputs=[out])
    top = [v.decode().split(":")[2] for v in result.as_numpy("probabilities").ravel()]
    assert top == ["setosa", "virginica"]
    client.close()
