"""Whether TensorFlow's oneDNN kernels are on: decided before TensorFlow is imported (no TF here).

TensorFlow 2.21 on Linux turns its oneDNN custom operations on by itself only on x86 CPUs with
AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (`DefaultOneDnnPolicy` in TF's port.cc). On an
AVX2-only CPU (Intel before Ice Lake / Cascade Lake, AMD before Zen 4) they stay off and every
convolution goes through Eigen: the demo's step ran 3.2x slower on an AVX2-only AMD EPYC. But
oneDNN's AVX2 code computes the filter gradient of 1x1 stride-2 convolutions with fewer than 8
input channels wrong (relative error 0.3-1.7, varying from run to run; `python -m
bench.onednn_sweep`, docs/training.md#onednn). So `auto`:

  user set TF_ENABLE_ONEDNN_OPTS      their value, always ("user")
  not x86-64 Linux, no AVX2, or a CPU where TF turns them on itself     TF's choice ("TF default")
  TensorFlow already imported         TF's choice, and one line saying how to turn them on
  otherwise (AVX2-only x86-64)        on, if oneDNN computes the model's own convolutions right:
                                      `wmse_tf.onednn_check` in a subprocess with oneDNN on
                                      (forward and both gradients against float64), its answer
                                      cached per CPU, TF version and oneDNN ISA limit ("wmse_tf auto")

The commands (train, demo) call `apply(convs)` with their encoder's convolutions
(`core.archs.convolutions`) before they import TensorFlow; any other code that imports wmse_tf
before TensorFlow gets `apply()` when TensorFlow is first imported (an import hook, `install`),
which checks `LIBRARY_CONVS`, a set that includes the wrong class, so a library user on such a
CPU keeps oneDNN off unless they call `apply(convs)` for their model first. Setting a process's
environment from a library needs a reason: docs/training.md#onednn gives it.

Example:
  >>> from wmse_tf import onednn
  >>> onednn.apply(archs.convolutions("resnet18", "cifar", 8, 28)).line()
  'oneDNN ops on (wmse_tf auto): AVX2-only CPU (TF leaves them off); 11 convolutions checked right'
"""

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys

VAR = "TF_ENABLE_ONEDNN_OPTS"
# Set beside VAR when wmse_tf set it, so that a child process (zoo.build's training runs) decides
# for its own model instead of taking the parent's value as the user's.
MARK = "WMSE_TF_ONEDNN_AUTO"
# CPU flags (as /proc/cpuinfo spells them) with which TF 2.21 turns oneDNN on by itself on Linux.
TF_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
# Checked when the model is not known: the wrong class (1x1 stride 2, 1-7 input channels) and
# common ResNet convolutions; [kernel, stride, in, out, size].
LIBRARY_CONVS = tuple([(1, 2, c, 16, 28) for c in (1, 2, 3, 4, 5, 6, 7)]
                      + [(3, 1, 3, 16, 32), (3, 2, 16, 32, 16), (1, 2, 16, 32, 16), (3, 1, 64, 64, 8)])
CHECK_TIMEOUT_S = 300

_decision = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """on: True / False, or None where TF decides on a platform wmse_tf does not know;
    source: "user" | "TF default" | "wmse_tf auto"; reason: why, in a few words."""

    on: object
    source: str
    reason: str

    def line(self):
        """e.g. `oneDNN ops on (wmse_tf auto): AVX2-only CPU (TF leaves them off); 11 convolutions checked right`."""
        state = {True: "on", False: "off", None: "as TF decides"}[self.on]
        return f"oneDNN ops {state} ({self.source}): {self.reason}"


def parse_bool(value):
    """TF's reading of the variable ("0"/"1"/"false"/"true", any case), else None (TF ignores it)."""
    return {"0": False, "false": False, "1": True, "true": True}.get(str(value).strip().lower())


def _cpuinfo_field(name, cpuinfo):
    """The first processor's `name` line of /proc/cpuinfo, or None where unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (first processor of /proc/cpuinfo); empty where unreadable."""
    return frozenset((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name (first processor of /proc/cpuinfo), or "unknown CPU"."""
    return _cpuinfo_field("model name", cpuinfo) or "unknown CPU"


def decide(convs=None, environ=None, flags=None, machine=None, system=None, tf_imported=None, check=None):
    """The Decision for a model with `convs` ([kernel, stride, in, out, size]; None: LIBRARY_CONVS).

    Every argument defaults to this process and machine; `check(convs)` returns the wrong ones
    as {key: (what, relative error)} (default: `cached_check`, a subprocess).
    """
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    tf_imported = "tensorflow" in sys.modules if tf_imported is None else tf_imported
    if VAR in environ and environ.get(MARK) != environ[VAR] and parse_bool(environ[VAR]) is not None:
        return Decision(parse_bool(environ[VAR]), "user", f"{VAR}={environ[VAR]}")
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        return Decision(None, "TF default", f"{system} {machine}: wmse_tf leaves the choice to TF")
    if any(f in flags for f in TF_DEFAULT_FLAGS):
        shown = "/".join(f.upper() for f in TF_DEFAULT_FLAGS if f in flags)
        return Decision(True, "TF default", f"the CPU has {shown}")
    if "avx2" not in flags:
        return Decision(False, "TF default", "the CPU has no AVX2")
    if tf_imported:
        return Decision(False, "TF default", f"TensorFlow was imported before wmse_tf on this AVX2-only CPU; "
                                             f"set {VAR}=1 before importing it for up to 3x faster convolutions "
                                             "(docs/training.md#onednn)")
    convs = LIBRARY_CONVS if convs is None else convs
    try:
        wrong = (check or cached_check)(convs)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        return Decision(False, "wmse_tf auto", f"AVX2-only CPU, but the convolution check did not run ({e})")
    if wrong:
        first, (what, err) = sorted(wrong.items())[0]
        return Decision(False, "wmse_tf auto",
                        f"AVX2-only CPU, but oneDNN computes {len(wrong)} of the {len(convs)} convolutions "
                        f"checked wrong here (e.g. {first}: {what}, relative error {err:.2f}); set {VAR}=1 to "
                        "force them on (docs/training.md#onednn)")
    return Decision(True, "wmse_tf auto", f"AVX2-only CPU (TF leaves them off); {len(convs)} convolutions "
                                          "checked right")


def apply(convs=None, quiet=False, **kwargs):
    """Decides (once per process: later calls return the first Decision), sets VAR (and MARK) when
    wmse_tf decides, prints the decision's line on stderr when wmse_tf made it (or unless `quiet`),
    and returns it."""
    global _decision
    if _decision is None:
        _decision = decide(convs, **kwargs)
        if _decision.source == "wmse_tf auto":
            os.environ[VAR] = os.environ[MARK] = "1" if _decision.on else "0"
        if not quiet or _decision.source == "wmse_tf auto" or "imported before" in _decision.reason:
            print(f"wmse_tf: {_decision.line()}", file=sys.stderr, flush=True)
    return _decision


def current():
    """The Decision in force (made now, for LIBRARY_CONVS, if none was made yet)."""
    return _decision or apply(quiet=True)


def tf_version():
    """The installed TensorFlow's version ("none" if it is not installed), without importing it."""
    from importlib import metadata

    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        return "none"


def _machine(with_decision):
    """CPU model and flags, TF version, architecture, oneDNN ISA limit (and the variable in force)."""
    fields = [cpu_model(), sorted(cpu_flags()), tf_version(), platform.machine(), os.environ.get("ONEDNN_MAX_CPU_ISA", "")]
    return json.dumps(fields + [os.environ.get(VAR, "")] if with_decision else fields)


def machine_id():
    """What a cached measurement of this machine depends on, the oneDNN decision in force included
    (a JSON string)."""
    return _machine(with_decision=True)


def cache_path(cache_dir=None):
    """The check's cache file for this CPU, TF version and oneDNN ISA limit (the check itself runs with
    oneDNN on, whatever is decided)."""
    from wmse_tf import atomic_io  # here: `import wmse_tf` imports this module and nothing else

    digest = hashlib.sha1(_machine(with_decision=False).encode()).hexdigest()[:12]
    return os.path.join(cache_dir or atomic_io.cache_dir(), f"onednn-check-{digest}.json")


def cached_check(convs, cache_dir=None, runner=None):
    """{key: (what, error)} of the wrong convs; unknown ones are checked by `runner` (a subprocess)."""
    from wmse_tf import atomic_io
    from wmse_tf.onednn_check import key

    path = cache_path(cache_dir)
    known = atomic_io.read_json(path, {})
    todo = [list(c) for c in dict.fromkeys(tuple(c) for c in convs) if key(c) not in known]
    if todo:
        known.update((runner or run_check)(todo))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_io.write_json(path, known, sort_keys=True)
        except OSError:
            pass  # a read-only home: check again next time
    return {key(c): tuple(known[key(c)]) for c in convs if known.get(key(c))}


def run_check(convs, repeats=3):
    """`python -m wmse_tf.onednn_check` with oneDNN on: {key: None | [what, error]}."""
    env = dict(os.environ, **{VAR: "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    env.pop(MARK, None)
    proc = subprocess.run([sys.executable, "-m", "wmse_tf.onednn_check", json.dumps(convs), str(repeats)],
                          env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(lines[-1])
    if not out["onednn_on"]:
        raise RuntimeError(f"TensorFlow did not turn oneDNN on with {VAR}=1")
    return out["results"]


class _OnTensorFlowImport:
    """A meta-path finder that makes the decision the moment TensorFlow is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            uninstall()
            apply(quiet=True)
        return None


_hook = _OnTensorFlowImport()


def install():
    """`apply()` now if TensorFlow is already imported (it can only be reported), else at its import."""
    if "tensorflow" in sys.modules:
        apply(quiet=True)
    elif _decision is None and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


def uninstall():
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)
