"""The example pipeline (examples/ensembles/digits-pipeline): raw bytes -> preprocess ->
digits classifier -> top-3, through the router, from both its Triton config.pbtxt and its
YAML definition."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import tritonclient.http as httpclient

from tests.conftest import REPO_ROOT

PIPELINE = REPO_ROOT / "examples" / "ensembles" / "digits-pipeline"
MODELS = REPO_ROOT / "examples" / "models"


def test_digits_pipeline_from_pbtxt_and_yaml(start_server):
    subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "build.py"), "digits"], check=True)
    subprocess.run([sys.executable, str(PIPELINE / "build.py")], check=True)
    steps = {
        "preprocess": start_server(["serve", str(PIPELINE / "models"), "--model", "preprocess"]),
        "digits": start_server(["serve", str(MODELS), "--model", "digits"]),
        "postprocess": start_server(["serve", str(PIPELINE / "models"), "--model", "postprocess"]),
    }
    flags = [a for m, s in steps.items() for a in ("--endpoint", f"{m}=http://{s.url}")]
    routers = [
        start_server(["route", str(PIPELINE / "models" / "digits_pipeline" / "config.pbtxt"), *flags]),
        start_server(["route", str(PIPELINE / "ensemble.yaml"), *flags]),
    ]
    samples = json.loads((MODELS / "digits" / "samples.json").read_text())["samples"]
    images = np.array([s["image"] for s in samples], dtype=np.float32)
    raw = np.round(images * 255 / 16).astype(np.uint8)  # what a camera would send
    labels = [s["label"] for s in samples]
    for router in routers:
        client = httpclient.InferenceServerClient(router.url)
        meta = client.get_model_metadata("digits_pipeline")
        assert meta["inputs"] == [{"name": "IMAGE_BYTES", "datatype": "UINT8", "shape": [-1, 64]}]
        inp = httpclient.InferInput("IMAGE_BYTES", list(raw.shape), "UINT8")
        inp.set_data_from_numpy(raw)
        result = client.infer("digits_pipeline", [inp])
        classes, scores = result.as_numpy("TOP_CLASSES"), result.as_numpy("TOP_SCORES")
        assert classes.shape == (len(labels), 3) and classes.dtype == np.int64
        assert classes[:, 0].tolist() == labels
        assert np.all(np.diff(scores, axis=1) <= 0) and np.all(scores[:, 0] > 0.5)
        client.close()
