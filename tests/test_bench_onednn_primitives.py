"""Tests of bench/onednn_primitives.py: oneDNN's verbose lines summed per primitive after the marker,
and one real run of wmse_tf's side."""

import subprocess
import sys

from bench import onednn_primitives as op
from tests.helpers import python_env
from tests.layout import ROOT

LINES = [
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32,,,mb8,5.0",  # warm-up
    op.MARK,
    "onednn_verbose,v1,info,oneDNN v3.7.3",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32,,,mb8,2.5",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32,,,mb8,1.5",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,src:f32,,,mb8,3.0",
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32,,,8x8,0.5",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,gemm:jit:f32,undef,src:f32,,,8x8,0.25",
    "step 0.010",
    "step 0.012",
]


def test_exec_times_after_the_marker_are_summed_per_primitive_with_their_implementations():
    rows, steps = op.parse(LINES, op.MARK)
    assert steps == [0.010, 0.012]
    assert rows["conv gradient to the filter"] == (4.0, {"jit:avx2": 4.0})  # the warm-up's 5.0 left out
    assert rows["conv forward"] == (3.0, {"brg_conv_fwd:avx2": 3.0})
    assert rows["reorders (layout changes)"][0] == 0.5 and rows["other oneDNN primitives"][0] == 0.25
    md = op.table({"wmse_tf": (rows, steps)}, 2)
    assert "| conv gradient to the filter | 2 (jit:avx2) |" in md
    assert "| all of oneDNN | 4 |" in md and "| step wall time | 11 |" in md and "| outside oneDNN | 7 |" in md


def test_a_real_run_of_wmse_tf_side_prints_the_machine_and_the_table():
    proc = subprocess.run([sys.executable, "-m", "bench.onednn_primitives", "--width=8", "--batch=48",
                           "--steps=1", "--reference_python=none"], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("machine: ") and "| step wall time |" in proc.stdout
