"""A two-node Ray cluster on loopback for one command, then stopped by PID.

    python tests/ray_loopback.py [--cpus-per-node N] [--stats FILE] -- COMMAND ...

Starts a head node on 127.0.0.2 and a worker node on 127.0.0.3 (``ray start --block``,
token authentication: ``RAY_AUTH_MODE=token`` and one ``RAY_AUTH_TOKEN`` for both nodes
and the command), waits until both nodes are registered, runs COMMAND with ``{address}``
replaced by the head's address, then stops both nodes by their own PIDs (never
``ray stop``, which would stop every Ray on the machine) and removes their temporary
folder. ``--stats`` writes the bring-up time, the command's time, the peak resident memory
of the cluster and the command together, and the actor processes each node ran. Exits
with the command's status. Ray binds its ports on every interface; the tests run this
script in a network namespace that holds only loopback (tests/test_ray.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HEAD, WORKER = "127.0.0.2", "127.0.0.3"
STARTED = "Ray runtime started"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    ray = str(Path(sys.executable).with_name("ray"))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [ray, "start", *args, "--disable-usage-stats", "--block"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_started(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while STARTED not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def wait_nodes(address: str, count: int, env: dict[str, str], deadline: float) -> None:
    probe = (
        "import ray, time, sys\n"
        "ray.init(address=sys.argv[1], logging_level='error', log_to_driver=False)\n"
        "while len([n for n in ray.nodes() if n['Alive']]) < int(sys.argv[2]):\n"
        "    time.sleep(0.1)\n"
    )
    timeout = max(1.0, deadline - time.monotonic())
    subprocess.run(
        [sys.executable, "-c", probe, address, str(count)],
        env=env,
        check=True,
        timeout=timeout,
        capture_output=True,
    )


class Sampler(threading.Thread):
    """Every 0.2 s: the resident memory of the process trees under ``roots`` (summed; the
    peak is kept), the CPU time each of their processes has used (the last value seen),
    and the actor processes (``ray::MapWorker``) found under each node."""

    def __init__(self, roots: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peak_rss = 0
        self.actors: dict[str, set[int]] = {name: set() for name in roots}
        self.seen: set[tuple[int, str]] = set()  # (pid, start time): a PID reused is not ours
        self.cpu_ticks: dict[tuple[int, str], int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.sample()

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        starts: dict[int, str] = {}
        ticks: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
            starts[int(stat.parent.name)] = fields[19]
            ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])  # utime + stime
        total = 0
        for name, root in self.roots.items():
            todo = [root]
            while todo:
                pid = todo.pop()
                todo += children.get(pid, [])
                key = (pid, starts.get(pid, ""))
                self.seen.add(key)
                self.cpu_ticks[key] = max(self.cpu_ticks.get(key, 0), ticks.get(pid, 0))
                total += rss(pid)
                if name != "command" and b"MapWorker" in cmdline(pid):
                    self.actors[name].add(pid)
        self.peak_rss = max(self.peak_rss, total)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def stop(procs: list[subprocess.Popen[bytes]], leftovers: set[tuple[int, str]]) -> None:
    """SIGTERM each ``ray start --block`` (it stops its node's processes), worker first;
    then SIGKILL, by PID, whatever of the nodes' processes is still there (a PID with the
    start time it had when sampled: one reused since is left alone)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = [(pid, t) for pid, t in leftovers if pid != os.getpid() and t and start_time(pid) == t]
    if left:
        print(f"ray_loopback: killing {len(left)} leftover process(es) by PID", file=sys.stderr)
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--stats", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a COMMAND after --")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    temp = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # short: Ray's socket paths
    port = free_port(HEAD)
    address = f"{HEAD}:{port}"
    cpus = str(args.cpus_per_node)
    procs: list[subprocess.Popen[bytes]] = []
    sampler: Sampler | None = None
    code = 1
    stats: dict[str, object] = {"address": address}
    try:
        t0 = time.monotonic()
        deadline = t0 + 180
        head_args = ["--head", "--node-ip-address", HEAD, "--port", str(port), "--num-cpus", cpus]
        head_args += ["--include-dashboard", "false", "--temp-dir", str(temp / "h")]
        procs.append(ray_start(head_args, temp / "head.log", env))
        wait_started(procs[0], temp / "head.log", deadline)
        worker_args = ["--address", address, "--node-ip-address", WORKER, "--num-cpus", cpus]
        worker_args += ["--temp-dir", str(temp / "w")]
        procs.insert(0, ray_start(worker_args, temp / "worker.log", env))
        wait_started(procs[0], temp / "worker.log", deadline)
        wait_nodes(address, 2, env, deadline)
        stats["bring_up_seconds"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        run = subprocess.Popen([c.replace("{address}", address) for c in command], env=env)
        sampler = Sampler({"head": procs[1].pid, "worker": procs[0].pid, "command": run.pid})
        sampler.sample()
        sampler.start()
        code = run.wait()
        stats["command_seconds"] = round(time.monotonic() - t1, 3)
    finally:
        if sampler is not None:
            sampler.done.set()
            sampler.join()
            sampler.sample()
            stats["peak_rss_bytes"] = sampler.peak_rss
            stats["actor_processes"] = {k: len(v) for k, v in sampler.actors.items()}
        t2 = time.monotonic()
        stop(procs, sampler.seen if sampler else set())
        stats["stop_seconds"] = round(time.monotonic() - t2, 3)
        shutil.rmtree(temp, ignore_errors=True)
        stats["exit_code"] = code
        if args.stats:
            args.stats.write_text(json.dumps(stats, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
