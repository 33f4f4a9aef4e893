"""zoo/serving_client.py against stand-in servers that fail in ways
tests/test_serving_client.py does not script: a response cut off mid-body, a body with
fewer rows than images sent, a failure in the middle of a multi-batch request, a
gRPC server that is not there, and the command-line client writing its .npz only
when every batch succeeded (an earlier complete file is never replaced by a partial one).

Reuses the REST stand-in and the exported model of tests/test_serving_client.py."""

import json
import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from tests.test_serving_client import MODEL, RestHandler, RestStandIn, exported, fast_rest  # noqa: F401
from zoo import serving_client
from zoo.serving_client import GrpcClient, ServingError


class FaultyHandler(RestHandler):
    """RestHandler plus: `cut` (headers promise more bytes than are sent, then the
    connection closes) and `short` (a 200 with one feature vector fewer than asked)."""

    def do_POST(self):
        script = self.server.script
        action = script[0] if script else "ok"
        if action == "cut":
            script.pop(0)
            self.server.paths.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b'{"predictions": [[0.1, 0.2')
            self.wfile.flush()
            self.close_connection = True
            return
        if action == "short":
            script.pop(0)
            self.server.paths.append(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = body["instances"][:-1]
            return self.reply(200, {"predictions": [[0.0] * 4 for _ in rows]})
        return super().do_POST()


@pytest.fixture
def rest(exported):  # noqa: F811
    server = RestStandIn(exported[1])
    server.RequestHandlerClass = FaultyHandler
    yield server
    server.stop()


def test_response_cut_mid_body_is_retried_then_clear(rest, tally):
    x = helpers.images01(2)
    rest.script = ["cut"]
    assert fast_rest(rest.url).predict(x).shape[0] == 2 and len(rest.paths) == 2  # retried once
    rest.script = ["cut"] * 3
    with pytest.raises(ServingError, match="after 3 attempts.*(cut off|connection)") as e:
        fast_rest(rest.url).predict(x)
    assert e.value.status is None
    tally(faults=4, errors=1)


def test_partial_rows_and_midway_failures_never_return_partial_results(rest, exported, tally):  # noqa: F811
    x = helpers.images01(6)
    want = exported[1].signatures["serving_default"](images=tf.constant(x))["feature_vector"].numpy()
    rest.script = ["short"]
    with pytest.raises(ServingError, match="expected 6 feature vectors"):
        fast_rest(rest.url).predict(x)
    rest.script = ["ok", "503", "ok", "503"]  # batches 2 and 3 each fail once: retried, in order
    np.testing.assert_allclose(fast_rest(rest.url).predict(x, batch_size=2), want, rtol=1e-5, atol=1e-5)
    rest.script = ["ok", "500"]  # batch 2 fails for good: an error, not 2 of 6 rows
    with pytest.raises(ServingError, match="500"):
        fast_rest(rest.url).predict(x, batch_size=2)
    tally(faults=4, errors=2)


def test_grpc_server_not_there(tally):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GrpcClient(f"127.0.0.1:{port}", MODEL, timeout=2.0, retries=1, backoff=0.01)
    with pytest.raises(ServingError, match="UNAVAILABLE after 2 attempts"):
        client.predict(helpers.images01(1))
    client.close()
    tally(faults=1, errors=1)


def test_client_command_writes_output_only_when_complete(rest, tmp_path, tally, capsys):
    """The command in-process (cli.run with its own flags), as `python -m zoo.serving_client`."""
    paths = []
    for i, im in enumerate((helpers.images01(3) * 255).round().astype(np.uint8)):
        paths.append(str(tmp_path / f"{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(tf.io.encode_png(im).numpy())
    out = tmp_path / "features.npz"
    np.savez(out, features=np.zeros((1, 1)))  # an earlier, complete result
    before = out.read_bytes()
    argv = ["sc", f"--rest={rest.url}", f"--model={MODEL}", f"--images={','.join(paths)}", "--batch_size=1",
            "--retries=1", f"--output={out}"]
    rest.script = ["ok", "503", "503"]  # the 2nd of 3 requests fails twice: the client gives up
    with helpers.own_flags(serving_client.define_flags):
        code, _, err = helpers.run_command(serving_client.main, argv, capsys)
    assert code == 1 and "error:" in err and "503 after 2 attempts" in err
    assert out.read_bytes() == before  # not replaced by 1 of 3 rows
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(p) for p in paths] + [out.name])  # no temp
    rest.script = []
    with helpers.own_flags(serving_client.define_flags):
        code, _, err = helpers.run_command(serving_client.main, argv, capsys)
    assert code == 0, err[-2000:]
    with np.load(out) as saved:
        assert saved["features"].shape[0] == 3 and list(saved["filenames"]) == paths
    tally(faults=2, errors=1)
