"""--executor ray on a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``,
one CPU per node), bound to the loopback address only: collection equals the local pool byte
for byte, also when a worker is killed mid-task; the seeds of train_rl.py run on different
nodes and equal local runs; without Ray, --executor ray says how to install it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import PIPELINE_TINY, RL_TINY, as_argv

# Ray reads this when it is imported: every node then uses 127.0.0.1 as its address (ray 2.60),
# so nothing here listens on, or sends to, any other address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Ray starts its workers at nice 15; at 0 they keep their share of the CPUs when other tests
# run beside them (pytest -n 2), as the local pool's workers do.
os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray spells it so)
ray = pytest.importorskip("ray")

from rlkit.cli.collect_demonstrations import main as collect_main  # noqa: E402
from rlkit.cli.train_rl import main as rl_main  # noqa: E402
from rlkit.cluster import INSTALL  # noqa: E402
from rlkit.rl import RLConfig, train_rl  # noqa: E402


@pytest.fixture
def cluster():
    """A head node and a worker node, one CPU each; every Ray process is shut down at the end
    of the test."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        assert c.address.startswith("127.0.0.1:")
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def _dataset_files(root: Path) -> dict[str, bytes]:
    """The dataset's bytes (its run records — command line, options, timing — aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parts[len(root.parts)] in ("data", "meta")
    }


COLLECT = ["--episodes", "12", "--max-steps", "150", "--chunk-size", "3", "--seed", "7"]


def test_collection_on_ray_equals_the_local_pool_byte_for_byte(cluster, tmp_path, capsys):
    assert collect_main([*COLLECT, "--workers", "2", "--output", str(tmp_path / "local")]) == 0
    argv = [*COLLECT, "--executor", "ray", "--ray-address", cluster.address]
    assert collect_main([*argv, "--output", str(tmp_path / "ray")]) == 0
    assert "Ray: 2 node(s), 2 CPUs" in capsys.readouterr().out
    local, remote = _dataset_files(tmp_path / "local"), _dataset_files(tmp_path / "ray")
    assert len(local) > 4 and local == remote
    result = json.loads((tmp_path / "ray" / "result.json").read_text())
    assert result["cluster"]["nodes"] == 2 and result["episodes"] == 12
    assert not ray.is_initialized()  # the tool disconnected


def _chunk_workers() -> list[int]:
    """Pids of Ray worker processes running a collection chunk (Ray names them after the task)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::_run_chunk" in line]


def test_a_worker_killed_mid_task_is_retried_and_the_dataset_is_the_same(cluster, tmp_path, capsys):
    argv = ["--episodes", "8", "--max-steps", "1000", "--chunk-size", "2", "--seed", "3"]
    assert collect_main([*argv, "--workers", "1", "--output", str(tmp_path / "local")]) == 0
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            pids = _chunk_workers()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        code = collect_main(
            [*argv, "--executor", "ray", "--ray-address", cluster.address, "--output",
             str(tmp_path / "ray")]
        )  # fmt: skip
    finally:
        killer.join()
    assert killed, "no chunk task was seen running"
    assert code == 0, capsys.readouterr().err
    assert _dataset_files(tmp_path / "local") == _dataset_files(tmp_path / "ray")


#: 512 PPO steps past a 256-step critic warm-up, 2 test tracks: seconds per seed
SEED_RUN = {
    **RL_TINY,
    "timesteps": 512,
    "n_steps": 64,
    "critic_warmup": 256,
    "eval_every": 256,
    "checkpoint_every": 256,
    "test_episodes": 2,
}


def test_seeds_train_on_different_nodes_and_equal_local_runs(cluster, bc_export, tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = ["--init-from", str(bc_export), "--output", str(out), *as_argv(SEED_RUN)]
    ray_flags = ["--executor", "ray", "--ray-address", cluster.address]
    assert rl_main([*argv, "--seeds", "0", "1", *ray_flags]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "seed 1 | " in printed and "Ray: 2 node(s), 2 CPUs" in printed

    agg = json.loads((out / "aggregate.json").read_text())
    nodes = agg["ray"]["node_of_seed"]
    assert set(nodes) == {"0", "1"} and nodes["0"] != nodes["1"]  # one seed on each node
    alive = {n["NodeID"] for n in _nodes(cluster)}
    assert set(nodes.values()) == alive
    for s in (0, 1):
        folder = out / f"seed_{s}"
        assert (folder / "final_model.zip").is_file() and (folder / "checkpoints").is_dir()
        assert "(on Ray node" in (out / "logs" / f"seed_{s}.log").read_text()

    # a seed run on a Ray node is the same run as that seed alone, here
    single = tmp_path / "single"
    train_rl(RLConfig(init_from=str(bc_export), output=str(single), seed=1, **SEED_RUN),
             progress=False)  # fmt: skip
    alone = json.loads((single / "eval.json").read_text())
    assert alone["rl_final"] == json.loads((out / "seed_1" / "eval.json").read_text())["rl_final"]

    # the finished run resumes as finished
    assert rl_main([*argv, "--seeds", "0", "1", *ray_flags, "--resume"]) == 0


def _nodes(cluster) -> list[dict]:
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    "module, flags",
    [
        ("rlkit.cli.collect_demonstrations", []),
        ("rlkit.cli.train_rl", ["--seeds", "0", "1"]),
        ("rlkit.pipeline", ["--seeds", "2"]),
    ],
)
def test_without_ray_executor_ray_exits_2_with_the_install_line(module, flags, tmp_path):
    argv = ["--executor", "ray", "--output", str(tmp_path / "o"), *flags]
    # sys.modules["ray"] = None makes `import ray` fail as if Ray were not installed
    code = (
        "import sys; sys.modules['ray'] = None; "
        f"from {module} import main; sys.exit(main({argv!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert INSTALL in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_pipeline_collects_and_trains_seeds_on_the_cluster(cluster, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlkit.pipeline", "--output", str(out), "--seeds", "2",
           "--executor", "ray", "--", *PIPELINE_TINY, "--timesteps", "256", "--eval-every",
           "128", "--critic-warmup", "64"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = {r["stage"]: r for r in summary["stages"]}
    assert "on Ray: 2 node(s), 2 CPUs" in stages["collect"]["throughput"]
    assert "on Ray: 2 node(s), 2 CPUs" in stages["rl"]["throughput"]
    assert "on Ray: 2 node(s)" in (out / "summary.md").read_text()


def _seed_workers() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::_seed_task" in line]


#: long enough to be killed between checkpoints: 2,048 steps, a checkpoint every 512
KILLABLE = {**SEED_RUN, "timesteps": 2048, "checkpoint_every": 512, "eval_every": 512}


def test_a_seed_whose_worker_dies_is_rerun_from_its_last_checkpoint(
    cluster, bc_export, tmp_path, capsys
):
    """The Ray worker running a seed is SIGKILLed (as when its node is lost) after the driver
    has received a checkpoint: the task is rerun and resumes from that checkpoint."""
    out = tmp_path / "seeds"
    argv = ["--init-from", str(bc_export), "--output", str(out), *as_argv(KILLABLE),
            "--seeds", "0", "--executor", "ray", "--ray-address", cluster.address]  # fmt: skip
    killed: list[int] = []

    def kill_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if list((out / "seed_0" / "checkpoints").glob("step_*/done")):
                pids = _seed_workers()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_a_checkpoint)
    killer.start()
    try:
        code = rl_main(argv)
    finally:
        killer.join()
    assert killed, "the seed finished before it could be killed"
    assert code == 0, capsys.readouterr().err
    log = (out / "logs" / "seed_0.log").read_text()
    assert log.count("(on Ray node") == 2 and "resuming" in log  # the rerun resumed
    result = json.loads((out / "seed_0" / "result.json").read_text())
    assert result["timesteps"] >= 2048 and result["complete"]
    # the killed task's temporary folder was removed by the rerun on the same machine
    assert not list(Path(tempfile.gettempdir()).glob(f".rlkit_seed.tmp-{killed[0]}_*"))


@pytest.mark.slow
def test_a_killed_driver_resumes_every_unfinished_seed(cluster, bc_export, tmp_path):
    out = tmp_path / "seeds"
    cmd = [sys.executable, "-m", "rlkit.cli.train_rl", "--init-from", str(bc_export),
           "--output", str(out), *as_argv(KILLABLE), "--seeds", "0", "1",
           "--executor", "ray", "--ray-address", cluster.address]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("seed_*/checkpoints/step_*/done")):
            assert proc.poll() is None, "the run ended before a checkpoint reached the driver"
            assert time.monotonic() < deadline, "no checkpoint on the driver within 120 s"
            time.sleep(0.02)
    finally:
        proc.kill()  # the driver; Ray then ends its tasks
        proc.wait()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = [(out / "logs" / f"seed_{s}.log").read_text() for s in (0, 1)]
    assert any("resuming" in log for log in logs)
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1] and set(agg["ray"]["node_of_seed"]) == {"0", "1"}
