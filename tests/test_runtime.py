"""GPU slots (simulated device count), device choice and atomic writes."""

import os
import subprocess
import sys
import time

import pytest

from clip_backdoor.runtime.io import atomic_path, write_json

CLAIM = (
    "import os, sys, time; from clip_backdoor.runtime.device import claim_gpu_slot; "
    "print(claim_gpu_slot(sys.argv[1]), os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); "
    "time.sleep(float(sys.argv[2]))"
)


def _claim(lock_dir, hold, env_extra):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update({"CLIP_BACKDOOR_GPU_COUNT": "2", **env_extra})
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(lock_dir), str(hold)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_jobs_get_distinct_gpus_and_a_third_is_refused(tmp_path):
    first = _claim(tmp_path, 3, {})
    time.sleep(0.5)
    second = _claim(tmp_path, 3, {})
    time.sleep(0.5)
    third = _claim(tmp_path, 0, {})
    _, err = third.communicate(timeout=30)
    outs = [p.communicate(timeout=30)[0].split() for p in (first, second)]
    assert {o[0] for o in outs} == {"0", "1"} and all(o[0] == o[1] for o in outs)
    assert third.returncode != 0 and "GPU slots are busy" in err


def test_preset_cuda_visible_devices_is_respected(tmp_path):
    proc = _claim(tmp_path, 0, {"CUDA_VISIBLE_DEVICES": "3"})
    out, _ = proc.communicate(timeout=30)
    assert out.split() == ["3", "3"]


def test_no_gpu_means_no_slot(tmp_path):
    proc = _claim(tmp_path, 0, {"CLIP_BACKDOOR_GPU_COUNT": "0"})
    out, _ = proc.communicate(timeout=30)
    assert out.split() == ["None", "None"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())
    write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
