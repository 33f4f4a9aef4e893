"""In-process stand-ins of TF Serving (REST and gRPC Predict) for timing zoo/serving_client.py.

Both answer `predict` with a loaded SavedModel's signatures, on 127.0.0.1 in threads of this
process: a timing through them is the client's encode / transport / decode cost plus the
SavedModel's, on the same cores (no `tensorflow_model_server` binary is needed).

Example:
  >>> with rest_server(loaded, "wmse2_fashion_mnist") as url, grpc_server(loaded, "wmse2_fashion_mnist") as target:
  ...     RestClient(url, "wmse2_fashion_mnist").predict(uint8_images)
"""

import contextlib
import http.server
import json
import threading
from concurrent import futures

import numpy as np
import tensorflow as tf

OUTPUT_KEY = "feature_vector"


def _run(loaded, signature, values):
    dtype = tf.uint8 if signature == "serving_uint8" else tf.float32
    return loaded.signatures[signature](images=tf.constant(values, dtype))[OUTPUT_KEY].numpy()


@contextlib.contextmanager
def rest_server(loaded, model):
    """Yields the base URL of a REST stand-in: POST /v1/models/<model>[/versions/N]:predict."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self.path.startswith(f"/v1/models/{model}"):
                data, status = json.dumps({"error": f"no model at {self.path}"}).encode(), 404
            else:
                values = list(body["inputs"].values())[0] if "inputs" in body else body["instances"]
                feats = _run(loaded, body.get("signature_name", "serving_default"), values).tolist()
                data, status = json.dumps({"outputs": feats} if "inputs" in body else {"predictions": feats}).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def grpc_server(loaded, model):
    """Yields the host:port of a gRPC PredictionService stand-in."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != model:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name}")
            signature = request.model_spec.signature_name or "serving_default"
            values = tf.make_ndarray(request.inputs["images"])
            response = predict_pb2.PredictResponse()
            response.outputs[OUTPUT_KEY].CopyFrom(tf.make_tensor_proto(np.asarray(_run(loaded, signature, values))))
            return response

    options = [("grpc.max_receive_message_length", 1 << 28), ("grpc.max_send_message_length", 1 << 28)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
