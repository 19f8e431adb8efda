"""Ray as repinterp starts it: on the loopback interface only, with no more workers than
CPUs, a bounded wait for a cluster that does not answer, and a clear stop when workers
keep dying."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from helpers import TESTS
from nets import tiny_cnn, tiny_images

from repinterp.cli import main
from repinterp.core.errors import UserError

pytest.importorskip("ray")                  # `make test` installs the `ray` extra
from repinterp.app import index_ray  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_more_workers_than_cpus_are_capped_with_a_warning():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert index_ray.capped_workers(64, 2, "on this machine") == 2
        assert index_ray.capped_workers(2, 2, "on this machine") == 2
    assert [str(w.message) for w in seen] == [
        "64 Ray workers asked for, 2 CPUs on this machine: using 2"]


def test_a_cluster_that_does_not_answer_is_one_error_after_the_wait():
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError) as err, index_ray.ray_session(address, 1, 1.0):
        pass
    assert time.monotonic() - start < 10
    message = err.value.render({"ray_wait": "--ray-wait SECONDS"})
    assert f"no Ray cluster answers at {address} after 1 s" in message
    assert "--ray-wait SECONDS" in message


def test_cli_ray_address_where_nothing_listens_exits_2_quickly(capsys, tmp_path):
    np.save(tmp_path / "x.npy", tiny_images(0, 60).float().numpy())
    model = tmp_path / "m.pt"
    import torch
    torch.jit.script(tiny_cnn(0, dtype=torch.float32)).save(str(model))
    address = f"127.0.0.1:{_free_port()}"
    args = ["index", "--model", str(model), "--layer", "2", "--data", str(tmp_path / "x.npy"),
            "--normalize", "none", "--pixel-range", "raw",
            "--bank", "8", "--pilot", "30", "--shard-size", "20", "--quiet",
            "--engine", "ray", "--ray-address", address, "--out", str(tmp_path / "idx")]
    start = time.monotonic()
    code = main([*args, "--ray-wait", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.monotonic() - start < 60, err
    assert err.count("\n") == 0 and f"no Ray cluster answers at {address}" in err
    assert not (tmp_path / "idx").exists()
    for bad in ("0", "-1", "1e9"):
        assert main([*args, "--ray-wait", bad]) == 2
        assert "--ray-wait" in capsys.readouterr().err


_LOOPBACK = textwrap.dedent("""
    import json, os, sys, warnings
    from helpers import descendants             # the child runs in the tests' folder
    from repinterp.app.index_ray import ray_session

    def listening(pids):
        inodes = {}
        for pid in pids:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes[link[8:-1]] = pid
            except OSError:
                continue
        found = []
        for table in ("tcp", "tcp6"):
            with open(f"/proc/net/{table}") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:      # LISTEN
                        found.append(cols[1].split(":")[0])
        return found

    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before = os.environ.get(key)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with ray_session(None, 64) as (ray, workers):
            nodes = [n["NodeManagerAddress"] for n in ray.nodes()]
            hosts = listening(descendants(os.getpid()))
    print(json.dumps({"workers": workers, "nodes": nodes, "hosts": hosts,
                      "env_kept": os.environ.get(key) == before,
                      "warnings": [str(w.message) for w in seen],
                      "cpus": len(os.sched_getaffinity(0))}))
""")


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only_and_caps_the_workers():
    """Every listening socket of the processes the local Ray started is bound to
    127.0.0.1 (hex ``0100007F``, or ``::ffff:127.0.0.1`` in tcp6), the node announces
    127.0.0.1, and 64 workers asked for on this machine become its CPU count."""
    run = subprocess.run([sys.executable, "-c", _LOOPBACK], capture_output=True, text=True,
                         timeout=300, cwd=TESTS)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["workers"] == got["cpus"]
    assert any(f"64 Ray workers asked for, {got['cpus']} CPUs on this machine" in w
               for w in got["warnings"])
    assert got["nodes"] == ["127.0.0.1"]
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert got["hosts"] and set(got["hosts"]) <= loopback, got["hosts"]
    assert got["env_kept"]


@pytest.mark.slow
def test_workers_that_keep_dying_stop_the_run_with_one_error(tmp_path):
    """An indexing worker that dies whenever it starts is restarted at most
    MAX_RESTARTS times; then the run stops with a UserError naming --workers."""
    from repinterp.app.index import ShardJob
    from repinterp.app.loading import ImageSource
    np.save(tmp_path / "x.npy", tiny_images(0, 40).float().numpy())
    source = ImageSource(str(tmp_path / "x.npy"), channels=1, normalize="none",
                         pixel_range="raw")
    # a lambda travels by value: the worker dies as the out-of-memory killer would kill it
    job = ShardJob(out=str(tmp_path / "idx"), source=source, load_model=lambda: os._exit(1),
               layer="4",
               bank={}, shard_size=20, batch_size=None, device=None)
    with pytest.raises(UserError) as err:
        index_ray.run_ray(job, [0, 1], 1, None, progress=False)
    message = err.value.render({"workers": "--workers"})
    assert message.startswith("Ray workers kept dying") and "--workers" in message
