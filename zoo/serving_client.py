"""Features from a running TF Serving, over REST or gRPC, with timeouts and retries.

  tensorflow_model_server --port=8500 --rest_api_port=8501 \\
      --model_name=wmse2_fashion_mnist --model_base_path=$PWD/zoo/exports/wmse2_fashion_mnist
  python -m zoo.serving_client --rest=http://localhost:8501 --model=wmse2_fashion_mnist --images=a.png,b.jpg
  python -m zoo.serving_client --grpc=localhost:8500 --model=wmse2_fashion_mnist --images=a.png

Predict is read-only, so failures that say nothing was computed or that may be
transient are retried with exponential backoff (bounded attempts): connection
refused/reset/dropped (also mid-response), timeouts, HTTP 502/503/504, gRPC UNAVAILABLE and
DEADLINE_EXCEEDED. Anything else (4xx, 500, INVALID_ARGUMENT, a malformed body)
raises `ServingError` at once, naming the URL, the status and the server's message.

REST retries are urllib3's `Retry` (urllib3 directly, not through requests: requests
reads the body after urllib3's retry loop, so a cut body would need a second loop).
gRPC keeps its own loop: a retry service config cannot retry a per-attempt timeout
(its deadline spans all attempts), caps attempts at 5 and does not tell how many
were made (docs/reliability.md).
"""

import base64
import json
import sys
import time

import numpy as np
import urllib3

OUTPUT_KEY = "feature_vector"
RETRY_HTTP = (502, 503, 504)


class ServingError(RuntimeError):
    """A failed request: `url`, `status` (HTTP code, gRPC code name or None), server `message`."""

    def __init__(self, url, status, message, attempts=1):
        self.url, self.status, self.message, self.attempts = url, status, message, attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{url}: {status if status is not None else 'no response'}{tries}: {message}")


def _backoff(attempt, base, cap):
    return min(cap, base * 2 ** attempt)


class _Retry(urllib3.util.Retry):
    """urllib3's Retry with this module's backoff: `_backoff(n - 1)` before retry n (no jitter)."""

    def get_backoff_time(self):
        return _backoff(len(self.history) - 1, self.backoff_factor, self.backoff_max) if self.history else 0.0


def _batches(images, image_bytes, batch_size):
    from wmse_tf.export import serving

    if (images is None) == (image_bytes is None):
        raise ValueError("give exactly one of images (array) or image_bytes (list of encoded images)")
    if images is not None:
        arr = serving.check_images(images)
        signature = "serving_uint8" if arr.dtype == np.uint8 else "serving_default"
        return signature, "images", [arr[i:i + batch_size] for i in range(0, len(arr), batch_size)]
    blobs = list(image_bytes)
    return "serving_bytes", "image_bytes", [blobs[i:i + batch_size] for i in range(0, len(blobs), batch_size)]


class RestClient:
    """TF Serving REST: `POST <base>/v1/models/<model>[/versions/N]:predict`.

    Args:
      base_url: e.g. "http://localhost:8501".
      model: the served model name; version: int or None (the latest).
      timeout: seconds per request (connect and read); retries: extra attempts
        on retryable failures; backoff, max_backoff: seconds (exponential).
      columnar: send {"inputs": ...} (else {"instances": ...}).

    Example:
      >>> feats = RestClient("http://localhost:8501", "wmse2_fashion_mnist").predict(images_uint8)
    """

    def __init__(self, base_url, model, version=None, timeout=10.0, retries=3, backoff=0.2,
                 max_backoff=5.0, columnar=False, pool=None):
        self.url = f"{base_url.rstrip('/')}/v1/models/{model}" + (f"/versions/{int(version)}" if version else "")
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.columnar = columnar
        self.pool = pool or urllib3.PoolManager()

    def _retry(self):
        """urllib3's Retry: every error and 502/503/504 up to `retries` times, POST included
        (predict is read-only). The body is read inside urllib3's retry loop
        (preload_content), so a response cut off mid-body is retried too."""
        return _Retry(total=self.retries, redirect=False, allowed_methods=None, status_forcelist=RETRY_HTTP,
                      raise_on_status=False, respect_retry_after_header=False,
                      backoff_factor=self.backoff, backoff_max=self.max_backoff)

    def _post(self, body):
        url = self.url + ":predict"
        try:
            r = self.pool.request("POST", url, body=json.dumps(body).encode(), retries=self._retry(),
                                  headers={"Content-Type": "application/json"}, preload_content=True,
                                  timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout))
        except urllib3.exceptions.MaxRetryError as e:
            raise ServingError(url, None, _failure(e.reason, self.timeout), self.retries + 1) from None
        attempts = 1 + len(r.retries.history) if r.retries else 1
        text = r.data.decode("utf-8", "replace")
        if r.status != 200:
            raise ServingError(url, r.status, _server_message(text), attempts)
        try:
            return json.loads(text)
        except ValueError:
            raise ServingError(url, 200, f"malformed body (not JSON): {text[:200]!r}", attempts) from None

    def predict(self, images=None, image_bytes=None, batch_size=64, signature=None):
        """Features [N, F] of float [0, 1] / uint8 images [N, H, W, 3], or of encoded image bytes."""
        default_sig, key, batches = _batches(images, image_bytes, batch_size)
        out = []
        for batch in batches:
            if key == "image_bytes":
                values = [{"b64": base64.b64encode(b).decode("ascii")} for b in batch]
            else:
                values = batch.tolist()
            body = {"signature_name": signature or default_sig}
            body.update({"inputs": {key: values}} if self.columnar else {"instances": values})
            out.append(self._parse(self._post(body), len(batch)))
        return np.concatenate(out)

    def _parse(self, body, n):
        url = self.url + ":predict"
        value = body.get("outputs" if self.columnar else "predictions") if isinstance(body, dict) else None
        if isinstance(value, dict):
            value = value.get(OUTPUT_KEY)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [row.get(OUTPUT_KEY) for row in value]
        try:
            arr = np.asarray(value, np.float32)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim != 2 or len(arr) != n:
            raise ServingError(url, 200, f"malformed body: expected {n} feature vectors, got {str(body)[:200]}")
        return arr


def _failure(reason, timeout):
    """One line for the last error of a request that got no usable response."""
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return f"timed out after {timeout}s"
    if "IncompleteRead" in repr(reason):
        return f"response cut off mid-body ({reason})"  # the connection dropped mid-body
    return f"connection failed ({type(reason).__name__}: {reason})"


def _server_message(text):
    try:
        return str(json.loads(text).get("error", text))[:500]
    except (ValueError, AttributeError):
        return text[:500]


class GrpcClient:
    """TF Serving gRPC PredictionService.Predict, with the same retry policy.

    Example:
      >>> feats = GrpcClient("localhost:8500", "wmse2_fashion_mnist").predict(images_uint8)
    """

    RETRY = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

    def __init__(self, target, model, version=None, timeout=10.0, retries=3, backoff=0.2, max_backoff=5.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target, self.model, self.version = target, model, version
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 1 << 28),
                                                              ("grpc.max_send_message_length", 1 << 28)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _request(self, signature, key, batch):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version:
            request.model_spec.version.value = int(self.version)
        value = np.array(batch, dtype=object) if key == "image_bytes" else batch
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.append(OUTPUT_KEY)
        return request

    def _call(self, request):
        import grpc

        where = f"grpc://{self.target}/{self.model}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(_backoff(attempt - 1, self.backoff, self.max_backoff))
            try:
                return self.stub.Predict(request, timeout=self.timeout)
            except grpc.RpcError as e:
                code = e.code().name if e.code() else "UNKNOWN"
                if code not in self.RETRY:
                    raise ServingError(where, code, e.details() or "", attempt + 1) from None
                last = (code, e.details() or "")
        raise ServingError(where, last[0], last[1], self.retries + 1)

    def predict(self, images=None, image_bytes=None, batch_size=64, signature=None):
        """Features [N, F]; same arguments as RestClient.predict."""
        import tensorflow as tf

        default_sig, key, batches = _batches(images, image_bytes, batch_size)
        out = []
        for batch in batches:
            response = self._call(self._request(signature or default_sig, key, batch))
            if OUTPUT_KEY not in response.outputs:
                raise ServingError(f"grpc://{self.target}/{self.model}", "OK",
                                   f"malformed response: no {OUTPUT_KEY!r} in {list(response.outputs)}")
            out.append(tf.make_ndarray(response.outputs[OUTPUT_KEY]))
        return np.concatenate(out)


def main(argv):
    from absl import flags

    from wmse_tf import cli

    f = flags.FLAGS
    if len(argv) > 1:
        return cli.fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    if bool(f.rest) == bool(f.grpc):
        return cli.fail("give exactly one of --rest=URL or --grpc=HOST:PORT")
    blobs = []
    for path in f.images:
        with cli.about("images", path, OSError):  # a missing or unreadable image file
            with open(path, "rb") as fh:
                blobs.append(fh.read())
    client = (RestClient(f.rest, f.model, f.version, f.timeout, f.retries) if f.rest
              else GrpcClient(f.grpc, f.model, f.version, f.timeout, f.retries))
    try:
        feats = client.predict(image_bytes=blobs, batch_size=f.batch_size)
    except ServingError as e:  # the server's or the network's failure, not the user's: exit 1
        print(cli.error_line(e), file=sys.stderr)
        return 1
    for path, row in zip(f.images, feats):
        print(f"{path}: {row.shape[0]} features, |f| = {np.linalg.norm(row):.4f}")
    if f.output:
        from wmse_tf.evaluation import features

        with cli.about("output", f.output, OSError):
            features.save_npz(f.output, features=feats, filenames=np.array(f.images))
    return 0


def define_flags():
    """Defines this script's flags (only when run as a script: the modules are importable)."""
    from absl import flags

    flags.DEFINE_string("rest", None, "REST base URL, e.g. http://localhost:8501.")
    flags.DEFINE_string("grpc", None, "gRPC target, e.g. localhost:8500.")
    flags.DEFINE_string("model", None, "Served model name.")
    flags.DEFINE_integer("version", None, "Model version (default: the latest served).")
    flags.DEFINE_list("images", None, "Image files (JPEG/PNG/...), sent as encoded bytes.")
    flags.DEFINE_integer("batch_size", 32, "Images per request.")
    flags.DEFINE_float("timeout", 10.0, "Seconds per request.")
    flags.DEFINE_integer("retries", 3, "Extra attempts on retryable failures.")
    flags.DEFINE_string("output", None, "Optional .npz of the features.")
    flags.mark_flags_as_required(["model", "images"])


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
