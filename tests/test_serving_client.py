"""Tests of zoo/serving_client.py against in-process stand-ins of TF Serving on 127.0.0.1.

REST: http.server in a thread; gRPC: a grpc.server with a PredictionServiceServicer.
Both answer with the exported SavedModel's outputs, or fail as scripted (503, 500,
dropped connection, malformed body, timeout, UNAVAILABLE, INVALID_ARGUMENT).
A real `tensorflow_model_server` is used only when it is on PATH.
"""

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from zoo import serving_client
from zoo.serving_client import GrpcClient, RestClient, ServingError

MODEL = "tiny"


@pytest.fixture(scope="module")
def exported(tiny_export):
    path, _, loaded = tiny_export  # exported once per session as MODEL (tests/conftest.py)
    assert os.path.basename(os.path.dirname(path)) == MODEL
    return path, loaded


def run_signature(loaded, name, key, values):
    if key == "image_bytes":
        arg = tf.constant(values, tf.string)
    else:
        arg = tf.constant(values, tf.uint8 if name == "serving_uint8" else tf.float32)
    return loaded.signatures[name](**{key: arg})["feature_vector"].numpy()


# ------------------------------------------------------------------------------------ REST
class RestStandIn(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, loaded):
        super().__init__(("127.0.0.1", 0), RestHandler)
        self.loaded, self.script, self.paths = loaded, [], []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self):
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        """Quiet for a client that hung up (the timeout tests); any other error is printed."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class RestHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        server = self.server
        server.paths.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        action = server.script.pop(0) if server.script else "ok"
        if action == "drop":
            self.close_connection = True
            return  # no response at all: the client sees the connection closed
        if action == "sleep":
            time.sleep(1.0)
        if action in ("503", "500"):
            return self.reply(int(action), {"error": f"stand-in says {action}"})
        if action == "malformed":
            return self.reply(200, "{not json")
        match = re.fullmatch(rf"/v1/models/{MODEL}(/versions/\d+)?:predict", self.path)
        if not match:
            return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
        name = body.get("signature_name", "serving_default")
        columnar = "inputs" in body
        values = list(body["inputs"].values())[0] if columnar else body["instances"]
        key = "image_bytes" if name == "serving_bytes" else "images"
        if key == "image_bytes":
            values = [base64.b64decode(v["b64"]) for v in values]
        feats = run_signature(server.loaded, name, key, values).tolist()
        self.reply(200, {"outputs": feats} if columnar else {"predictions": feats})


@pytest.fixture
def rest(exported):
    server = RestStandIn(exported[1])
    yield server
    server.stop()


def fast_rest(url, **kwargs):
    return RestClient(url, MODEL, **dict(dict(timeout=5.0, retries=2, backoff=0.01), **kwargs))


def test_rest_features_equal_saved_model(rest, exported):
    loaded = exported[1]
    x = helpers.images01(5)
    want = loaded.signatures["serving_default"](images=tf.constant(x))["feature_vector"].numpy()
    np.testing.assert_allclose(fast_rest(rest.url).predict(x, batch_size=2), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast_rest(rest.url, columnar=True, version=1).predict(x), want, rtol=1e-5, atol=1e-5)
    assert rest.paths[-1] == f"/v1/models/{MODEL}/versions/1:predict" and len(rest.paths) == 4
    u8 = (x * 255).round().astype(np.uint8)
    pngs = [tf.io.encode_png(im).numpy() for im in u8]
    np.testing.assert_allclose(fast_rest(rest.url).predict(image_bytes=pngs),
                               fast_rest(rest.url).predict(u8), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("failures", [["503"], ["drop"], ["503", "drop"]])
def test_rest_retries_safe_failures(rest, failures):
    rest.script = list(failures)
    feats = fast_rest(rest.url).predict(helpers.images01(2))
    assert feats.shape[0] == 2 and len(rest.paths) == len(failures) + 1


def test_rest_errors_are_clear(rest):
    x = helpers.images01(1)
    rest.script = ["500"]
    with pytest.raises(ServingError, match=r"500.*stand-in says 500") as e:
        fast_rest(rest.url).predict(x)
    assert e.value.status == 500 and len(rest.paths) == 1  # not retried
    rest.script = ["503"] * 3
    with pytest.raises(ServingError, match="after 3 attempts") as e:
        fast_rest(rest.url).predict(x)
    assert e.value.status == 503 and MODEL in e.value.url
    rest.script = ["malformed"]
    with pytest.raises(ServingError, match="malformed body"):
        fast_rest(rest.url).predict(x)
    with pytest.raises(ServingError, match="404.*Servable not found"):
        RestClient(rest.url, "nope", retries=0).predict(x)


def test_rest_timeout_and_refused(rest):
    rest.script = ["sleep", "sleep"]
    start = time.time()
    with pytest.raises(ServingError, match="timed out") as e:
        fast_rest(rest.url, timeout=0.3, retries=1).predict(helpers.images01(1))
    assert e.value.status is None and time.time() - start < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServingError, match="connection failed"):
        fast_rest(f"http://127.0.0.1:{port}", retries=1).predict(helpers.images01(1))


def test_bad_images_fail_before_any_request(rest):
    with pytest.raises(ValueError, match="images must have shape"):
        fast_rest(rest.url).predict(np.zeros((2, 16, 16), np.float32))
    assert rest.paths == []


# ------------------------------------------------------------------------------------ gRPC
@pytest.fixture
def grpc_server(exported):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    loaded = exported[1]
    state = {"script": [], "calls": 0}

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            state["calls"] += 1
            action = state["script"].pop(0) if state["script"] else "ok"
            if action == "unavailable":
                context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in is warming up")
            if action == "invalid":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "images must have shape [batch, height, width, 3]")
            if action == "sleep":
                time.sleep(1.0)
            response = predict_pb2.PredictResponse()
            if action == "empty":
                return response
            key = "image_bytes" if "image_bytes" in request.inputs else "images"
            values = tf.make_ndarray(request.inputs[key])
            name = request.model_spec.signature_name or "serving_default"
            feats = run_signature(loaded, name, key, list(values) if key == "image_bytes" else values)
            response.outputs["feature_vector"].CopyFrom(tf.make_tensor_proto(feats))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", state
    server.stop(grace=None)


def test_grpc_features_retries_and_errors(grpc_server, exported):
    target, state = grpc_server
    loaded = exported[1]
    x = helpers.images01(3)
    u8 = (x * 255).round().astype(np.uint8)
    want = loaded.signatures["serving_uint8"](images=tf.constant(u8))["feature_vector"].numpy()
    client = GrpcClient(target, MODEL, timeout=5.0, retries=2, backoff=0.01)
    np.testing.assert_allclose(client.predict(u8, batch_size=2), want, rtol=1e-5, atol=1e-5)
    pngs = [tf.io.encode_png(im).numpy() for im in u8]
    np.testing.assert_allclose(client.predict(image_bytes=pngs), want, rtol=1e-5, atol=1e-5)
    state["script"], state["calls"] = ["unavailable", "unavailable"], 0
    assert client.predict(u8).shape == want.shape and state["calls"] == 3
    state["script"], state["calls"] = ["invalid"], 0
    with pytest.raises(ServingError, match="INVALID_ARGUMENT.*images must have shape"):
        client.predict(u8)
    assert state["calls"] == 1  # not retried
    state["script"] = ["unavailable"] * 3
    with pytest.raises(ServingError, match="UNAVAILABLE after 3 attempts"):
        client.predict(u8)
    state["script"] = ["empty"]
    with pytest.raises(ServingError, match="malformed response"):
        client.predict(u8)
    state["script"] = ["sleep", "sleep"]
    with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
        GrpcClient(target, MODEL, timeout=0.3, retries=1, backoff=0.01).predict(u8)
    client.close()


# --------------------------------------------------------------------- real model server
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_tensorflow_model_server(exported, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (install it or use the docker image; see zoo/README.md)")
    import requests

    path, loaded = exported
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen([binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                             "--rest_api_timeout_in_ms=30000", f"--model_name={MODEL}",
                             f"--model_base_path={os.path.dirname(path)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{rest_port}"
        for _ in range(120):  # bounded wait (~60 s) for the model to load
            try:
                if "AVAILABLE" in requests.get(f"{url}/v1/models/{MODEL}", timeout=1).text:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        x = helpers.images01(2)
        want = loaded(x).numpy()
        np.testing.assert_allclose(fast_rest(url).predict(x), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(GrpcClient(f"127.0.0.1:{grpc_port}", MODEL).predict(x), want, rtol=1e-4, atol=1e-4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_rest_backoff_is_exponential_and_capped(rest, monkeypatch):
    """urllib3 sleeps through Retry.sleep: before retry n, backoff * 2**(n-1), capped at max_backoff."""
    sleeps = []
    monkeypatch.setattr(serving_client._Retry, "sleep", lambda self, response=None: sleeps.append(self.get_backoff_time()))
    rest.script = ["503", "drop", "503", "503"]
    feats = fast_rest(rest.url, retries=4, backoff=0.5, max_backoff=1.5).predict(helpers.images01(1))
    assert feats.shape[0] == 1 and len(rest.paths) == 5
    assert sleeps == [0.5, 1.0, 1.5, 1.5]
