"""torchrun data-parallel training: two gloo ranks step exactly as one process accumulating
gradients over the same two slices (``--grad-accum 2``), only rank 0 writes the run
directory, and a run whose rank was killed with SIGKILL resumes to the same bits.

Every torchrun here runs in its own network namespace when the machine allows one (the
``loopback`` fixture): torchrun's rendezvous store listens on every interface, and inside
the namespace the only interface is loopback. Ranks are stopped by their own PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vae_train import distributed
from vae_train.checkpoint import load_train_state
from vae_train.distributed import DistributedError, World, wants_cuda
from vae_train.trainer import TrainConfig, Trainer, TrainingError

# 2,048 images in global batches of 411: five steps an epoch, the last of 404 images, so
# the two slices of a batch differ in size (206/205, then 202/202). On the CPU under gloo,
# on a machine with GPUs too.
SETTINGS = dict(
    arch="conv",
    epochs=2,
    batch_size=411,
    limit_train=2048,
    limit_test=200,
    seed=3,
    threads=1,
    device="cpu",
)
VARIANTS = {
    "fp32": {},
    "bf16-ema": {"precision": "bf16", "ema": 0.9, "val_size": 256},
}

# Runs vae-train as torchrun's worker with an audit hook that logs every write, rename,
# mkdir and removal under the run directory, and the rank's PID (to kill it by PID).
AUDITED_WORKER = textwrap.dedent(
    """
    import os, sys
    audit = os.environ["AUDIT_DIR"]
    rank = os.environ["RANK"]
    root = os.path.realpath(os.environ["AUDIT_ROOT"])
    with open(os.path.join(audit, f"rank-{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
    log = open(os.path.join(audit, f"rank-{rank}.log"), "w", buffering=1)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"}

    def inside(path):
        return isinstance(path, (str, os.PathLike)) and os.path.realpath(
            os.path.join(os.getcwd(), path)).startswith(root)

    def hook(event, args):
        if event == "open" and isinstance(args[2], int) and args[2] & WRITE:
            paths = [args[0]]
        elif event in CHANGES:
            paths = [a for a in args if isinstance(a, (str, os.PathLike))]
        else:
            return
        if any(inside(p) for p in paths):
            log.write(f"{event} {paths}\\n")

    sys.addaudithook(hook)
    from vae_train.cli import main
    sys.exit(main())
    """
)


def cli_args(data_dir: Path, out: Path, **kw: object) -> list[str]:
    args = ["--data-dir", str(data_dir), "--out", str(out), "--no-progress"]
    for key, value in {**SETTINGS, **kw}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    worker: Path, args: list[str], audit: Path, loopback: list[str]
) -> subprocess.Popen[str]:
    audit.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        str(worker),
        *args,
    ]
    out = args[args.index("--out") + 1]
    env = {**os.environ, "AUDIT_DIR": str(audit), "AUDIT_ROOT": out, "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.Popen(
        [*loopback, *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 400) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def latest_dir(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["dir"]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for role in ("encoder", "decoder"):
        out.update({f"{role}.{k}": v for k, v in load_file(ckpt / f"{role}.safetensors").items()})
    state = load_train_state(ckpt)
    for role in ("encoder", "decoder"):
        out.update({f"raw_{role}.{k}": v for k, v in state.get(f"raw_{role}", {}).items()})
    return out


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(latest_dir(a)), weights(latest_dir(b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs"
    strip = lambda run: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if "seconds" not in k}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(a) == strip(b)


def in_process(data_dir: Path, run: Path, **kw: object) -> Path:
    cfg = TrainConfig(**{**SETTINGS, "data_dir": str(data_dir), **kw})  # type: ignore[arg-type]
    Trainer(cfg, run, progress=False).fit(log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("worker") / "audited_vae_train.py"
    path.write_text(AUDITED_WORKER)
    return path


@pytest.fixture(scope="module")
def ddp_runs(worker: Path, data_dir: Path, tmp_path_factory, loopback: list[str]):
    """name -> (run directory, audit folder) of an uninterrupted 2-rank torchrun run."""
    runs = {}
    for name, kw in VARIANTS.items():
        root = tmp_path_factory.mktemp(f"ddp-{name}")
        run = root / "run"
        proc = torchrun(worker, cli_args(data_dir, run, **kw), root / "audit", loopback)
        code, out, err = finish(proc)
        assert code == 0, err[-3000:]
        assert out.count(f"wrote {run}") == 1  # rank 0 alone reports
        runs[name] = (run, root / "audit")
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_ranks_equal_grad_accum_two_bit_for_bit(
    ddp_runs, variant: str, data_dir: Path, tmp_path: Path
) -> None:
    ddp, _ = ddp_runs[variant]
    accum = in_process(data_dir, tmp_path / "accum", grad_accum=2, **VARIANTS[variant])
    assert_bit_identical(ddp, accum)
    config = json.loads((latest_dir(ddp) / "config.json").read_text())
    assert (config["world_size"], config["grad_accum"]) == (2, 1)
    if variant == "fp32":  # one full batch is only close: the test can tell the difference
        whole = in_process(data_dir, tmp_path / "whole")
        wd, ww = weights(latest_dir(ddp)), weights(latest_dir(whole))
        assert any(not torch.equal(wd[k], ww[k]) for k in wd)
        assert all(torch.allclose(wd[k], ww[k], atol=1e-3) for k in wd)


@pytest.mark.slow
def test_only_rank_0_writes_the_run_directory(ddp_runs) -> None:
    for run, audit in ddp_runs.values():
        rank0 = (audit / "rank-0.log").read_text()
        assert "train_state.pt" in rank0 and "metrics.jsonl" in rank0 and "os.rename" in rank0
        assert (audit / "rank-1.log").read_text() == ""
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            "best.json",
            "epoch-0002",
            "latest.json",
        ]


@pytest.mark.slow
def test_resume_after_sigkill_of_one_rank_is_bit_identical(
    ddp_runs, worker: Path, data_dir: Path, tmp_path: Path, loopback: list[str]
) -> None:
    run, audit = tmp_path / "run", tmp_path / "audit"
    args = cli_args(data_dir, run)
    proc = torchrun(worker, args, audit, loopback)
    latest = run / "checkpoints" / "latest.json"
    try:
        deadline = time.monotonic() + 300
        while not latest.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        os.kill(int((audit / "rank-1.pid").read_text()), signal.SIGKILL)
        code, _, _ = finish(proc, timeout=120)  # torchrun stops rank 0 and fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0
    killed_at = json.loads(latest.read_text())["epoch"]
    assert killed_at < SETTINGS["epochs"], "the run finished before a rank could be killed"
    code, out, err = finish(torchrun(worker, [*args, "--resume"], tmp_path / "audit2", loopback))
    assert code == 0, err[-3000:]
    assert f"resuming {run} at epoch {killed_at + 1}" in out
    assert_bit_identical(run, ddp_runs["fp32"][0])


def test_grad_accum_settings_checked(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="--grad-accum"):
        TrainConfig(data_dir=str(data_dir), grad_accum=0).validate()
    cfg = TrainConfig(**{**SETTINGS, "data_dir": str(data_dir), "batch_size": 2, "grad_accum": 4})
    with pytest.raises(TrainingError, match="smaller than the 1 rank"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_no_rank_left_running(ddp_runs) -> None:
    """Every rank this module started has exited (their PIDs are gone or reused)."""
    for _, audit in ddp_runs.values():
        for pid_file in audit.glob("rank-*.pid"):
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline")
            assert not cmdline.exists() or b"audited_vae_train" not in cmdline.read_bytes()


@pytest.mark.parametrize(
    ("env", "args", "match"),
    [
        ({"RANK": "3", "WORLD_SIZE": "2"}, [], "inconsistent torchrun environment"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, [], "$RANK must be an integer"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
            [],
            "LOCAL_RANK=2, LOCAL_WORLD_SIZE=2",
        ),
        # more ranks on this node than GPUs (none here, or one on a one-GPU machine)
        (
            {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
            ["--device", "cuda"],
            "--device cuda",
        ),
    ],
)
def test_bad_torchrun_environment_is_one_line(
    env: dict[str, str],
    args: list[str],
    match: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    from vae_train import cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main([*cli_args(data_dir, tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-train: error: ") and match in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("device", "gpus", "chosen"),
    [
        ("auto", 0, "cpu"),
        ("auto", 1, "cpu"),  # two ranks cannot share one GPU under NCCL: gloo on the CPU
        ("auto", 2, "cuda:1"),
        ("cpu", 2, "cpu"),
        ("cuda", 2, "cuda:1"),
        ("cuda", 1, "2 ranks on this node but torch sees 1 CUDA device(s)"),
        ("cuda", 0, "torch sees no CUDA device"),
    ],
)
def test_a_distributed_world_trains_on_one_device_per_rank(
    device: str, gpus: int, chosen: str, monkeypatch
) -> None:
    """Every rank of a node decides alike from its node's GPU count, never a GPU per rank
    that does not exist (torch's 'invalid device ordinal' stack trace, seen on a 1-GPU
    machine with two ranks before)."""
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: gpus)
    world = World(rank=1, size=2, local_rank=1, local_size=2)
    if chosen.startswith(("cpu", "cuda:")):
        picked = replace(world, cuda=wants_cuda(device, world))
        assert picked.device("cuda" if gpus else "cpu") == chosen
    else:
        with pytest.raises(DistributedError, match=re.escape(chosen)):
            wants_cuda(device, world)
    assert World().device("cuda") == "cuda"  # a world of one keeps the trainer's choice
