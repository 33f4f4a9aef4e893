"""A missing TFDS dataset offline: one clear error in seconds, nothing left behind; online: TFDS downloads.

The network is refused at the socket level (`refused_network`): every name resolves to
127.0.0.1 and every connect is refused, as behind a firewall that rejects. Without the probe of
wmse_tf.data.download_host, TFDS's own retries take about 3.5 minutes to fail there.
"""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from wmse_tf import data
from wmse_tf.errors import DatasetNotFoundError
from wmse_tf.data import download_host
from wmse_tf.data import tfds as wtfds

DEADLINE_S = 30  # loose: the probe takes at most ~6 s; TFDS alone would take ~200 s


@pytest.fixture
def refused_network(monkeypatch):
    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]

    def refuse(self, address):
        raise ConnectionRefusedError(111, "Connection refused (test stub)")

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: 111)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _files(root):
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


@pytest.mark.parametrize("name", ["stl10", "cifar10"])
def test_refused_network_fails_in_seconds_with_one_clear_line(refused_network, tmp_path, name):
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as e:
        data.load(name, "train", data_dir=str(tmp_path))
    elapsed = time.monotonic() - start
    assert elapsed < DEADLINE_S, elapsed
    message = str(e.value)
    assert "\n" not in message
    for part in (repr(name), str(tmp_path), "--nodownload", f"tfds build {name} --data_dir={tmp_path}",
                 "ConnectionRefusedError"):
        assert part in message, (part, message)
    assert _files(tmp_path) == [] and os.listdir(tmp_path) == []  # nothing half-downloaded


REFUSE_AND_TRAIN = """
import runpy, socket, sys
socket.getaddrinfo = lambda h, p, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(p or 0)))]
def refuse(self, address):
    raise ConnectionRefusedError(111, "Connection refused (test stub)")
socket.socket.connect = refuse
sys.argv = ["wmse_tf.train", *sys.argv[1:]]
runpy.run_module("wmse_tf.train", run_name="__main__")
"""


def test_train_command_offline_prints_one_error_line_and_exits_2(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = tmp_path / "data"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", REFUSE_AND_TRAIN, "--flagfile=configs/stl10.flags",
                          f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60  # TF import and flag parsing included
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "'stl10'" in errors[0] and str(data_dir) in errors[0] and "--nodownload" in errors[0]
    assert f"tfds build stl10 --data_dir={data_dir}" in errors[0]
    assert not os.path.exists(data_dir) or os.listdir(data_dir) == []


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "fashion_mnist"])
def test_every_tfds_dataset_of_ours_has_urls_to_probe(name, tmp_path):
    urls = list(wtfds.builder(name, str(tmp_path)).url_infos or ())  # TFDS's registered checksums
    assert urls and all(download_host.endpoint(u) for u in urls), urls


def test_mocked_tfds_data_needs_no_network(refused_network):
    with tfds.testing.mock_data(num_examples=3):  # users' offline tests keep working
        images = np.stack([x.numpy() for x, _ in data.load("cifar10", "train")])
    assert images.shape == (3, 32, 32, 3)


def test_probe_bounds_a_resolver_that_never_answers(monkeypatch):
    def never_answers(*args, **kwargs):
        time.sleep(5)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", never_answers)
    start = time.monotonic()
    failed = download_host.unreachable(["https://example.invalid/a.tgz"], timeout=0.5)
    assert time.monotonic() - start < 3
    assert failed == {"example.invalid:443": "no answer in 0.5 s"}


def test_probe_tells_a_listening_port_from_a_closed_one():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert download_host.unreachable([f"http://127.0.0.1:{port}/x", f"http://127.0.0.1:{port}/y"]) == {}
    failed = download_host.unreachable([f"http://127.0.0.1:{port}/x"], timeout=2)  # closed now
    assert list(failed) == [f"127.0.0.1:{port}"] and "ConnectionRefusedError" in failed[f"127.0.0.1:{port}"]
    assert download_host.unreachable(["gs://bucket/x", "/local/file"]) == {}  # not fetched over HTTP


def test_probe_connects_to_the_proxy_requests_would_use(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert download_host.endpoint("http://ai.stanford.edu/a.tgz") == ("ai.stanford.edu", 80)
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    assert download_host.endpoint("https://www.cs.toronto.edu/x") == ("proxy.corp", 3128)
    assert download_host.endpoint("http://ai.stanford.edu/a.tgz") == ("ai.stanford.edu", 80)
    monkeypatch.setenv("no_proxy", "www.cs.toronto.edu")
    assert download_host.endpoint("https://www.cs.toronto.edu/x") == ("www.cs.toronto.edu", 443)


# A reachable host: a local HTTP server and a one-file TFDS dataset that downloads from it.
PAYLOAD = np.arange(4 * 4 * 4 * 3, dtype=np.uint8).tobytes()  # 4 images 4x4x3


class WmseOfflineTestData(tfds.core.GeneratorBasedBuilder):
    """4 tiny images downloaded from `URL` (set by the test)."""

    VERSION = tfds.core.Version("1.0.0")
    URL = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, supervised_keys=("image", "label"),
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(4, 4, 3)),
                                                 "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(dl_manager.download(self.URL))}

    def _generate_examples(self, path):
        images = np.frombuffer(path.read_bytes(), np.uint8).reshape(4, 4, 4, 3)
        for i, image in enumerate(images):
            yield i, {"image": image, "label": i % 2}


@pytest.fixture
def served(monkeypatch):
    """(url, requests served) of PAYLOAD on 127.0.0.1; /missing answers 404."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/data.bin":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("http_proxy", "all_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def _serve_from(monkeypatch, url, payload=PAYLOAD):
    info = tfds.core.download.checksums.UrlInfo(
        size=tfds.core.utils.Size(len(payload)), checksum=hashlib.sha256(payload).hexdigest(), filename=None)
    monkeypatch.setattr(WmseOfflineTestData, "URL", url)
    monkeypatch.setattr(WmseOfflineTestData, "url_infos", {url: info})


def test_reachable_host_downloads_with_tfds_progress(served, monkeypatch, tmp_path, capfd):
    base, hits = served
    _serve_from(monkeypatch, base + "/data.bin")
    ds = wtfds.load("wmse_offline_test_data", "train", data_dir=str(tmp_path))
    images = np.stack([x.numpy() for x, _ in ds])
    np.testing.assert_array_equal(np.sort(images.ravel()), np.sort(np.frombuffer(PAYLOAD, np.uint8)))
    assert hits == ["/data.bin"]
    err = capfd.readouterr()
    assert "downloading it to" in err.out and "Dl Completed" in err.err  # our line, then TFDS's bars
    assert wtfds.builder("wmse_offline_test_data", str(tmp_path)).is_prepared()


def test_failed_download_leaves_no_partial_files(served, monkeypatch, tmp_path):
    base, _ = served
    _serve_from(monkeypatch, base + "/missing")
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as e:
        wtfds.load("wmse_offline_test_data", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < DEADLINE_S
    assert "404" in str(e.value) and "partial downloads removed" in str(e.value)
    assert os.listdir(tmp_path) == [], list(os.walk(tmp_path))
