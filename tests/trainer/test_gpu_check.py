"""bench/gpu_check.sh: exits 0 with a message without a GPU; its checks pass in bfloat16 on the CPU."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_0():
    done = _run()
    assert done.returncode == 0, done.stderr
    assert "gpu_check: nothing to check on this machine" in done.stdout
    assert "Run bench/gpu_check.sh on a machine with a GPU" in done.stdout


@pytest.mark.slow
def test_the_checks_pass_in_bfloat16_on_the_cpu():
    done = _run("--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 8 and not any(line.startswith("FAIL") for line in lines)
    assert json.loads(lines[-1])["passed"] is True
