"""The reliability suite's tally (faults, kills, resumes, inputs, clear errors, data lost).

Tests add to `FIGURES` through the `tally` fixture (tests/reliability/conftest.py). The
totals are printed at the end of the run by the hooks of tests/conftest.py; under
pytest-xdist (`make test`) each worker hands its tally to the controller, which adds them up.
"""

import collections
import json
import os

FIGURES = collections.Counter()
KEYS = ("faults injected", "kills (SIGKILL)", "runs resumed", "inputs tried", "clear errors",
        "data lost")
WORKER_KEY = "reliability_figures"


def report(terminalreporter):
    """Prints the totals (and writes them to $RELIABILITY_FIGURES if set)."""
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "reliability figures")
    for key in KEYS:
        terminalreporter.write_line(f"{key}: {FIGURES.get(key, 0)}")
    out = os.environ.get("RELIABILITY_FIGURES")
    if out:
        with open(out, "w") as f:
            json.dump({k: FIGURES.get(k, 0) for k in KEYS}, f, indent=2)
