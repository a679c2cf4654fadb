"""Ray, for work that outgrows one machine: connect to a cluster, or start a small one on this machine.

`connect` starts a Ray of this process alone (address None or "local"), or joins a running cluster ("auto",
or HOST:PORT of its head), with a quiet console. `local_cluster` starts a cluster of several nodes on the
loopback interface (tests and benchmarks) and stops exactly its own processes afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lmadapt.errors import LmadaptError

INSTALL = "pip install 'lmadapt[ray]'"
# Ray turns 127.0.0.1 and localhost into the machine's outward address (ray._private.services
# .resolve_ip_for_localhost); another loopback address is kept as given, so a local cluster's traffic stays on the
# loopback interface.
LOOPBACK = "127.0.0.2"
START_TIMEOUT_S = 60


def check_ray_options(address: str | None, **given: object) -> None:
    """Options that only mean something on a cluster (`--ray-cpus`, `--parallel`) are refused without `--ray`,
    rather than ignored. `given`: option name (its Python name) -> its value, None when not given."""
    stray = [name for name, value in given.items() if value is not None]
    if address is None and stray:
        option = "--" + stray[0].replace("_", "-")
        raise LmadaptError(
            f"{option} applies only with --ray",
            where=option,
            fix=f"add --ray local (or auto, or the head's HOST:PORT), or leave {option} out",
        )


def require_ray():
    """The ray module, or the error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise LmadaptError("Ray is not installed", where="--ray", fix=INSTALL) from None
    return ray


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is refused at once (Ray itself retries for a minute)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LmadaptError(
            f"'{address}' is not a Ray address",
            where="--ray",
            fix="give the head node's HOST:PORT (as `ray start --head` printed it), auto, or nothing for a local Ray",
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise LmadaptError(
            f"no Ray cluster answers at {address} ({error.strerror or error})",
            where="--ray",
            fix="start one with `ray start --head` and pass the address it prints, or leave the address out to run "
            "Ray on this machine alone",
        ) from None


def connect(address: str | None = None):
    """Ray, initialised once for this process: None or "local" starts a Ray of its own here; "auto" joins the
    cluster running on this machine; HOST:PORT joins that cluster's head. Ray's INFO logs and the workers' output
    stay out of the console (they are in the cluster's log folder)."""
    ray = require_ray()
    local = address in (None, "", "local")
    if not local and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    host = address.rpartition(":")[0] if not local and address != "auto" else None
    try:
        ray.init(
            address="local" if local else address,
            # A driver joining a loopback cluster must say its address is the nodes' own.
            _node_ip_address=host if host and host.startswith("127.") else None,
            log_to_driver=False,
            logging_level=logging.WARNING,
            include_dashboard=False if local else None,
            configure_logging=True,
        )
    except ConnectionError as error:
        raise LmadaptError(
            f"could not join the Ray cluster at {address}: {error}",
            where="--ray",
            fix="start one with `ray start --head` (then --ray auto or --ray HOST:PORT), or leave the address out "
            "to run Ray on this machine alone",
        ) from None
    return ray


def unwrap(error: Exception) -> Exception:
    """The error of ours a remote task raised (a wrong column, an unreadable text), else `error` itself."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, LmadaptError) else error


def cluster_resources() -> dict:
    """CPUs and GPUs of the connected cluster, and the most CPUs one node has."""
    ray = require_ray()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {
        "cpus": sum(node["Resources"].get("CPU", 0) for node in nodes),
        "gpus": sum(node["Resources"].get("GPU", 0) for node in nodes),
        "node_cpus": max((node["Resources"].get("CPU", 0) for node in nodes), default=0),
        "nodes": len(nodes),
    }


def task_resources(cpus: int | None = None) -> tuple[int, int, int]:
    """What one task that trains asks for, and how many such tasks fit at once on the connected cluster: `cpus`
    CPUs (default all of a node's) and a GPU where the cluster has them; as many at once as it has GPUs, else as
    its CPUs allow. Returns (cpus, gpus, slots)."""
    resources = cluster_resources()
    cpus = cpus or int(resources["node_cpus"]) or 1
    gpus = 1 if resources["gpus"] else 0
    slots = int(resources["gpus"]) if gpus else max(1, int(resources["cpus"] // cpus))
    return cpus, gpus, slots


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _node_ports() -> list[str]:
    """Free ports for every server of one node: Ray's fixed defaults (e.g. the agent's 52365) would clash with
    another Ray on this machine, and with the cluster's other node."""
    options = [
        "--node-manager-port",
        "--object-manager-port",
        "--metrics-export-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
    ]
    return [item for option in options for item in (option, str(_free_port()))]


def _ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise LmadaptError("the `ray` command is not found", where=sys.executable, fix=INSTALL)
    return found


def _stop(process: subprocess.Popen) -> None:
    """Stop one `ray start --block` and everything it started (its own process group, and any descendant that
    left it), nothing else."""
    import psutil

    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=5)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=15)


def _alive_nodes(address: str) -> int:
    """Nodes `ray status` lists as active (it reads the GCS: no driver is connected yet); 0 before it answers."""
    status = subprocess.run([_ray_command(), "status", "--address", address], capture_output=True, text=True)
    active = status.stdout.partition("Active:")[2].partition("Pending:")[0]
    return sum(int(count) for count in re.findall(r"^\s*(\d+) node_", active, flags=re.MULTILINE))


def _wait_for_nodes(address: str, nodes: int, processes: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a Ray node stopped at start (exit {process.returncode}); logs in {logs}")
        if _alive_nodes(address) >= nodes:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{nodes} Ray nodes were not up after {START_TIMEOUT_S} s; logs in {logs}")


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[str]:
    """A Ray cluster of `nodes` nodes on this machine (`ray start --head`, then `ray start --address` for each
    other node), each with `cpus_per_node` CPUs, on the loopback interface and free ports, with its own temp
    folder; yields the head's HOST:PORT. On exit, stops this cluster's processes alone and removes the folder.
    Raises RuntimeError when the cluster does not come up."""
    folder = Path(tempfile.mkdtemp(prefix="lmadapt-ray-"))  # short: Ray's socket paths must stay under 108 bytes
    # No token authentication (Ray turns it on for every cluster started while ~/.ray/auth_token exists): the
    # cluster answers on loopback alone, and this process, which joins it, is told the same.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    auth_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    address = f"{LOOPBACK}:{port}"
    common = ["--block", "--node-ip-address", LOOPBACK, "--num-cpus", str(cpus_per_node), "--num-gpus", "0"]
    head = [
        "--head",
        "--port",
        str(port),
        "--temp-dir",
        str(folder),
        "--include-dashboard",
        "false",
        "--ray-client-server-port",
        str(_free_port()),
        "--disable-usage-stats",
    ]
    processes: list[subprocess.Popen] = []
    started = False
    try:
        ray_command = _ray_command()
        for i in range(nodes):
            role = head if i == 0 else ["--address", address]
            log = open(folder / f"node-{i}.log", "w")  # the node writes it; closed here once it has it
            processes.append(
                subprocess.Popen(
                    [ray_command, "start", *role, *common, *_node_ports()],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as one, and alone
                )
            )
            log.close()
            if i == 0:
                _wait_for_nodes(address, 1, processes, folder)
        _wait_for_nodes(address, nodes, processes, folder)
        started = True
        yield address
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        for process in reversed(processes):
            _stop(process)
        if auth_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before
        if started:  # else its logs say why it did not start
            shutil.rmtree(folder, ignore_errors=True)
