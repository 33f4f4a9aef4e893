"""Property-based tests (hypothesis) of the exported SavedModel's signatures against
wrong rank, channels, dtype, empty batches, any size (resized in the graph), huge
images and bytes that are not images: a result of the right shape, or a clear error
naming `images` and the expected shape; never a crash of the (serving) process.

Extends tests/test_export.py::test_wrong_input_fails_clearly (3 fixed shapes)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tests.reliability.figures import FIGURES
from wmse_tf.export import serving

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SHAPE_ERROR = r"images must have shape \[batch, height, width, 3\]"


@pytest.fixture(scope="module")
def model(tiny_export):
    _, encoder, loaded = tiny_export  # exported once per session (tests/conftest.py)
    return loaded, int(encoder.output.shape[-1])


def _tried(n=1):
    FIGURES["inputs tried"] += n


def _features(model, name, **kwargs):
    return model.signatures[name](**kwargs)["feature_vector"].numpy()


@SETTINGS
@given(batch=st.integers(0, 3), h=st.integers(1, 40), w=st.integers(1, 40), u8=st.booleans(),
       seed=st.integers(0, 2**16))
def test_any_valid_shape_gives_features(model, batch, h, w, u8, seed):
    loaded, features = model
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, h, w, 3)).astype(np.float32)
    out = (_features(loaded, "serving_uint8", images=tf.constant(np.round(x * 255).astype(np.uint8))) if u8
           else _features(loaded, "serving_default", images=tf.constant(x)))
    _tried()
    assert out.shape == (batch, features) and np.isfinite(out).all()


bad_shapes = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=8),  # rank 0-3
    hnp.array_shapes(min_dims=5, max_dims=6, min_side=1, max_side=4),  # rank 5-6
    st.tuples(st.integers(0, 2), st.integers(1, 8), st.integers(1, 8),
              st.integers(0, 6).filter(lambda c: c != 3)),              # wrong channels
    st.tuples(st.integers(1, 2), st.integers(0, 1), st.integers(0, 8), st.just(3)).filter(
        lambda s: 0 in s[1:3]),                                           # H or W = 0
)


@SETTINGS
@given(shape=bad_shapes, u8=st.booleans())
def test_wrong_rank_or_channels_fail_clearly(model, shape, u8):
    loaded, _ = model
    name, dtype = ("serving_uint8", tf.uint8) if u8 else ("serving_default", tf.float32)
    _tried()
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_ERROR):
        loaded.signatures[name](images=tf.zeros(shape, dtype))
    with pytest.raises(ValueError, match="images must have shape"):  # the client's check, before any request
        serving.check_images(np.zeros(shape, np.float32))


@SETTINGS
@given(dtype=st.sampled_from([tf.float16, tf.float64, tf.int32, tf.int64, tf.uint16, tf.bool,
                              tf.string]))
def test_wrong_dtype_fails_clearly(model, dtype):
    loaded, _ = model
    x = tf.zeros([1, 16, 16, 3], dtype) if dtype != tf.string else tf.fill([1, 16, 16, 3], "x")
    _tried()
    errors = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(errors, match="expected to be a float tensor|float32|dtype"):
        loaded.signatures["serving_default"](images=x)
    if dtype not in (tf.float64,):  # float64 is accepted by the client and cast to float32
        with pytest.raises(ValueError, match="dtype"):
            serving.check_images(x.numpy())


@SETTINGS
@given(blob=st.one_of(st.binary(max_size=64),
                      st.binary(min_size=8, max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
                      st.binary(min_size=4, max_size=64).map(lambda b: b"\xff\xd8\xff" + b)))
def test_bytes_that_are_not_images_fail_clearly(model, blob):
    loaded, _ = model
    _tried()
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([blob]))


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


@SETTINGS
@given(h=st.integers(1, 48), w=st.integers(1, 48), mode=st.sampled_from(["L", "RGB", "RGBA"]),
       fmt=st.sampled_from(["PNG", "JPEG", "BMP", "GIF"]))
def test_encoded_images_of_any_size_and_mode(model, h, w, mode, fmt):
    loaded, features = model
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = np.random.default_rng(h * 64 + w).integers(0, 256, (h, w, channels), dtype=np.uint8)
    blob = _encode(arr[..., 0] if channels == 1 else arr, fmt)
    out = _features(loaded, "serving_bytes", image_bytes=tf.constant([blob, blob]))
    _tried()
    assert out.shape == (2, features) and np.isfinite(out).all()


def test_empty_and_huge_inputs(model):
    loaded, features = model
    assert _features(loaded, "serving_bytes", image_bytes=tf.constant([], tf.string)).shape == (0, features)
    huge = np.random.default_rng(0).integers(0, 256, (1, 1500, 2500, 3), dtype=np.uint8)  # resized in the graph
    out = _features(loaded, "serving_uint8", images=tf.constant(huge))
    assert out.shape == (1, features) and np.isfinite(out).all()
    out = _features(loaded, "serving_bytes", image_bytes=tf.constant([_encode(huge[0], "JPEG")]))
    assert out.shape == (1, features) and np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):  # 0..255 floats: the client says what to do
        serving.check_images(huge.astype(np.float32))
    _tried(4)
