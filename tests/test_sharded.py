"""The region index's greedy and summary with the rows left in groups (one per worker)
give the in-process regions bit for bit, whatever the cut."""
from __future__ import annotations

import pytest
import torch
from helpers import TESTS, descendants, processes, same_region, tiny_index
from nets import tiny_cnn, tiny_images

from repinterp.core.sharded import ShardedIndex, local_groups


@pytest.fixture(scope="module")
def index():
    return tiny_index(700)


def test_a_row_sent_to_the_driver_is_one_row(index):
    """A group answers a row query with that row alone: a slice of its rows would be a
    view, and pickling a view (Ray's transfer to the driver) sends every row of the
    group, which would make the driver's memory grow with N."""
    import pickle
    ix, _, _ = index
    group = local_groups(ix.rows, len(ix.bank))[0]
    row = group.row(350)
    assert torch.equal(row.values, ix.rows.values[350:351])
    assert torch.equal(row.signs, ix.rows.signs[350:351])
    assert len(pickle.dumps(row)) * 20 < len(pickle.dumps(group.rows))
    assert group.row(700) is None and group.row(-1) is None


@pytest.mark.parametrize("groups", [1, 2, 3, 7])
def test_explain_equals_the_in_process_index(index, groups):
    ix, worker, x = index
    sh = ShardedIndex.local(ix.rows, ix.bank, ix.feature_shape, groups=groups)
    for seed in (0, 5, 123, 699):
        same_region(ix.explain(seed), sh.explain(seed))
    same_region(ix.explain(3, num_boundaries=20, min_purity=None),
                sh.explain(3, num_boundaries=20, min_purity=None))
    outside = worker.rows(x[10:11] * 0.9)
    same_region(ix.explain(outside), sh.explain(outside))


@pytest.mark.parametrize("groups", [1, 4])
def test_summary_equals_the_in_process_index(index, groups):
    ix, _, _ = index
    sh = ShardedIndex.local(ix.rows, ix.bank, ix.feature_shape, groups=groups)
    a = ix.summarize(coverage=0.9, max_regions=4)
    b = sh.summarize(coverage=0.9, max_regions=4)
    assert [(c.cls, c.n_images, c.covered) for c in a] == \
        [(c.cls, c.n_images, c.covered) for c in b]
    assert len(a.regions) == len(b.regions) > 3
    for ra, rb in zip(a.regions, b.regions, strict=True):
        same_region(ra, rb)
    assert sh.steps > 0


@pytest.mark.slow
def test_ray_engine_gives_the_same_summary_and_survives_a_killed_worker(tmp_path, capsys):
    """The rows on two Ray actors (a local Ray, started as its users start it): the same
    summary as in process; one actor killed in the middle of the summary is restarted,
    its state replayed, and the summary comes out the same. Through the command line
    too (`summarize --index --engine ray`)."""
    import json

    import numpy as np
    ray = pytest.importorskip("ray")          # `make test` installs the `ray` extra

    from repinterp.app.index import load_index
    from repinterp.cli import main
    model = tiny_cnn(0, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", (tiny_images(0, 600).numpy() * 40 + 128).clip(0, 255)
            .astype(np.uint8))                # 8-bit pixels: floats must lie in [0, 1]
    base = ["--model", str(tmp_path / "m.pt"), "--quiet"]
    assert main(["index", *base, "--data", str(tmp_path / "x.npy"), "--layer", "2",
                 "--normalize", "none", "--out", str(tmp_path / "idx"), "--bank", "48",
                 "--pilot", "120", "--shard-size", "100"]) == 0
    local = load_index(tmp_path / "idx").index.summarize(coverage=0.9, max_regions=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        loaded = load_index(tmp_path / "idx", engine="ray", workers=2)
        groups, applied = loaded.groups, []

        def call(name, *args):
            if name == "step":
                applied.append(args)
                if len(applied) == 5:                 # mid-summary: kill a worker
                    ray.kill(groups.actors[1], no_restart=False)
            return groups(name, *args)

        loaded.index.call = call
        remote = loaded.index.summarize(coverage=0.9, max_regions=4)
        assert groups.restarts >= 1 and len(applied) > 5
        loaded.close()
    finally:
        ray.shutdown()
    assert len(local.regions) == len(remote.regions) > 2
    for a, b in zip(local.regions, remote.regions, strict=True):
        same_region(a, b)
    # the command line, on a Ray it starts itself
    for engine in ("local", "ray"):
        assert main(["summarize", "--index", str(tmp_path / "idx"), *base[2:], "--engine",
                     engine, "--workers", "2", "--out", str(tmp_path / engine)]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / e / "summary.json").read_text()) for e in ("local", "ray"))
    assert [r["top_members"] for c in a["classes"] for r in c["regions"]] == \
        [r["top_members"] for c in b["classes"] for r in c["regions"]]


@pytest.fixture()
def two_nodes(monkeypatch):
    """A Ray cluster of two nodes on this machine, started as users start one
    (`ray start --head`, then `ray start --address`), one CPU each, each its own raylet
    and object store; stopped by killing only the processes it started (those whose
    command line names its own temporary folder), never another user's Ray."""
    import contextlib
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")     # a local test cluster
    folder = tempfile.mkdtemp(prefix="ri-", dir="/tmp")  # short: Ray's socket paths
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"

    def ours() -> set[int]:
        """The processes naming our folder, and their descendants (from /proc)."""
        table = processes()
        named = {pid for pid, (_, cmd) in table.items() if os.fsencode(folder) in cmd}
        return named.union(*(descendants(pid, table) for pid in named))

    try:
        for args in (["--head", "--port", str(port), "--temp-dir", folder,
                      "--include-dashboard=false"], ["--address", address]):
            subprocess.run([ray_cli, "start", *args, "--num-cpus", "1",
                            "--disable-usage-stats"], check=True, capture_output=True,
                           timeout=180, env=os.environ.copy())
        yield address
    finally:
        for pid in ours():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


#: The two-node test's body, run in a fresh Python: Ray keeps process-wide state from an
#: earlier ``ray.init`` of the test session (its authentication mode among it)
TWO_NODES = r"""
import json, os, signal, sys
import ray, torch
from helpers import same_region                 # the child runs in the tests' folder
from repinterp.app.index import load_index
idx, address = sys.argv[1], sys.argv[2]
local = load_index(idx).index.summarize(coverage=0.9, max_regions=4)
ray.init(address=address, log_to_driver=False)
nodes = len([n for n in ray.nodes() if n["Alive"]])
loaded = load_index(idx, engine="ray", workers=2)
groups = loaded.groups
where = ray.get([a.where.remote() for a in groups.actors])
steps = []

def call(name, *args):
    if name == "step":
        steps.append(args)
        if len(steps) == 4:
            os.kill(where[1][1], signal.SIGKILL)       # that node's worker dies
    return groups(name, *args)

loaded.index.call = call
remote = loaded.index.summarize(coverage=0.9, max_regions=4)
loaded.close()
ray.shutdown()
for a, b in zip(local.regions, remote.regions, strict=True):
    same_region(a, b)
print(json.dumps({"nodes": nodes, "actor_nodes": len({n for n, _ in where}),
                  "restarts": groups.restarts, "regions": [len(local.regions),
                                                           len(remote.regions)]}))
"""


@pytest.mark.slow
def test_two_ray_nodes_give_the_same_summary_after_a_node_loses_its_worker(tmp_path,
                                                                            two_nodes):
    """The index's rows on two Ray nodes (one actor each, as each node has
    one CPU), joined with --ray-address; the worker process of one node killed
    mid-summary; the summary equals the in-process one (regions compared field by field
    in a fresh Python, which then reports)."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from repinterp.cli import main
    model = tiny_cnn(0, dtype=torch.float32)
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", (tiny_images(0, 600).numpy() * 40 + 128).clip(0, 255)
            .astype(np.uint8))                # 8-bit pixels: floats must lie in [0, 1]
    assert main(["index", "--model", str(tmp_path / "m.pt"), "--quiet", "--data",
                 str(tmp_path / "x.npy"), "--layer", "2", "--normalize", "none", "--out",
                 str(tmp_path / "idx"), "--bank", "48", "--pilot", "120", "--shard-size",
                 "100"]) == 0
    run = subprocess.run([sys.executable, "-c", TWO_NODES, str(tmp_path / "idx"), two_nodes],
                         capture_output=True, text=True, timeout=900, env=os.environ.copy(),
                         cwd=TESTS)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["nodes"] == 2 and got["actor_nodes"] == 2     # one actor on each node
    assert got["restarts"] >= 1
    assert got["regions"][0] == got["regions"][1] > 2
    # and through the command line, joining the cluster
    cli = subprocess.run([sys.executable, "-m", "repinterp.cli", "summarize", "--index",
                          str(tmp_path / "idx"), "--quiet", "--engine", "ray", "--workers",
                          "2", "--ray-address", two_nodes, "--out", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert (tmp_path / "s" / "report.html").is_file()
