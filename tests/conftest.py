"""Suite-wide setup: the CPU split into 2 logical devices, before TensorFlow initializes.

The MirroredStrategy tests then run in this process (they needed a fresh Python + TF
subprocess each). Single-device code is unaffected: ops run on /cpu:0 unless a strategy
asks for /cpu:1. `distribute.make_strategy(..., cpu_replicas=2)` asks for the same split
(TF accepts an identical configuration after initialization). Tests that build their own
MirroredStrategy (through the library) still run in a subprocess: see `two_cpus`.
"""

import pytest

import wmse_tf  # noqa: F401  (before TensorFlow: its oneDNN decision, wmse_tf.onednn, is made at TF's import)

LOGICAL_CPUS = 2


def pytest_configure(config):
    """Splits the CPU in the processes that run tests; pytest-xdist's controller runs none and does
    not import TensorFlow (about 5 s before its workers start)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import tensorflow as tf

    try:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration() for _ in range(LOGICAL_CPUS)])
    except RuntimeError:  # TF was initialized before this conftest (e.g. by a plugin)
        pass


@pytest.fixture(scope="session")
def two_cpus():
    """One MirroredStrategy over /cpu:0 and /cpu:1 for the whole session (fails clearly if the
    split did not happen). One instance: TF keys collective ops per strategy object from the
    same start, so two MirroredStrategy objects in one process can clash in their collectives."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= LOGICAL_CPUS, f"expected {LOGICAL_CPUS} logical CPUs, got {devices}"
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(LOGICAL_CPUS)])


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A tiny encoder exported once for the session: (version dir, encoder, reloaded SavedModel).

    Name "tiny", dataset digits, helpers.SPEC, a card with metrics. Read-only: a test that
    changes the weights reloads its own copy (helpers.reload)."""
    from tests import helpers  # here, not at the top: TF must not initialize before the CPU split

    path, encoder = helpers.export_tiny(tmp_path_factory.mktemp("tiny_export"), dataset="digits",
                                        card={"dataset_note": "test", "metrics": {"knn": 0.5}})
    return path, encoder, helpers.reload(path)


# The reliability suite's tally (tests/reliability/figures.py), printed once for the whole run.
# Here rather than in tests/reliability/conftest.py: pytest-xdist's controller collects no tests,
# so it loads only this conftest.
def pytest_sessionfinish(session):
    from tests.reliability import figures

    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # an xdist worker: hand the tally to the controller
        worker_output[figures.WORKER_KEY] = dict(figures.FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist controller: adds a finished worker's tally."""
    from tests.reliability import figures

    figures.FIGURES.update(getattr(node, "workeroutput", {}).get(figures.WORKER_KEY, {}))


def pytest_terminal_summary(terminalreporter):
    from tests.reliability import figures

    figures.report(terminalreporter)
