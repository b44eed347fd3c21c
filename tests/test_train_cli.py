"""``vae-train``: bad options and paths give one ``vae-train: error:`` line and exit status 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vae_train import cli
from vae_train import trainer as trainer_mod

SMALL = [
    "--arch",
    "mlp",
    "--epochs",
    "1",
    "--limit-train",
    "256",
    "--limit-test",
    "100",
    "--batch-size",
    "64",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture
def base(data_dir: Path, tmp_path: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--out", str(tmp_path / "run"), *SMALL]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vae-train: error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--arch", "resnet"],
        ["--dataset", "cifar10"],
        ["--latent-dim", "abc"],
        ["--epochs", "1.5"],
        ["--lr", "fast"],
        ["--device", "tpu"],
        ["--bogus-option"],
    ],
)
def test_argparse_errors(argv: list[str], base: list[str], capsys) -> None:
    code, out, err = run_main([*base, *argv], capsys)
    assert code == 2
    assert err.startswith("usage: vae-train")
    assert err.strip().splitlines()[-1].startswith("vae-train: error: ")
    assert "Traceback" not in err and out == ""


def test_missing_out_is_an_argparse_error(data_dir: Path, capsys) -> None:
    code, _, err = run_main(["--data-dir", str(data_dir)], capsys)
    assert code == 2 and "--out" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--latent-dim", "-3"], "--latent-dim"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--sigma", "0"], "--sigma"),
        (["--sigma", "nan"], "--sigma"),
        (["--threads", "0"], "--threads"),
        (["--threads", "-1"], "--threads"),
        (["--limit-train", "0"], "--limit-train"),
        (["--limit-test", "0"], "--limit-test"),
        (["--val-size", "-1"], "--val-size"),
        (["--val-size", "256"], "--val-size"),  # all 256 training images
        (["--patience", "2"], "--patience"),
    ],
)
def test_bad_settings(argv: list[str], fragment: str, base: list[str], tmp_path: Path, capsys):
    code, out, err = run_main([*base, *argv], capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err, fragment)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(base: list[str], capsys) -> None:
    code, _, err = run_main([*base, "--device", "cuda"], capsys)
    assert code == 2
    assert_one_line_error(err, "cuda")


def test_bad_data_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, _, err = run_main(
        ["--data-dir", str(tmp_path / "nowhere"), "--out", str(out), *SMALL], capsys
    )
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(
        ["--data-dir", str(tmp_path / "empty"), "--out", str(out), *SMALL], capsys
    )
    assert code == 2
    assert_one_line_error(err, "train-images-idx3-ubyte", "--download")
    assert not out.exists()


def test_corrupt_dataset_file(data_dir: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    for f in (data_dir / "mnist").iterdir():
        (d / f.name).symlink_to(f)
    victim = d / "t10k-labels-idx1-ubyte.gz"
    victim.unlink()
    victim.write_bytes(b"\x1f\x8b\x08\x00garbage")
    out = tmp_path / "run"
    code, _, err = run_main(
        ["--data-dir", str(tmp_path / "data"), "--out", str(out), *SMALL], capsys
    )
    assert code == 2
    assert_one_line_error(err, str(victim))
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_out_cannot_be_created(data_dir: Path, tmp_path: Path, capsys, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "run"
    code, _, err = run_main(["--data-dir", str(data_dir), "--out", str(out), *SMALL], capsys)
    assert code == 2
    assert_one_line_error(err, str(out))
    assert blocker.read_text() == "not a folder"


def test_resume_problems(base: list[str], tmp_path: Path, capsys) -> None:
    code, _, err = run_main([*base, "--resume"], capsys)
    assert code == 2
    assert_one_line_error(err, "cannot resume")
    # a finished run, then resumed with another learning rate, then with a broken state file
    code, out, _ = run_main(base, capsys)
    assert code == 0 and f"wrote {tmp_path / 'run'}" in out
    code, _, err = run_main([*base, "--resume", "--lr", "0.01", "--epochs", "2"], capsys)
    assert code == 2
    assert_one_line_error(err, "lr")
    latest = json.loads((tmp_path / "run/checkpoints/latest.json").read_text())["dir"]
    (tmp_path / "run/checkpoints" / latest / "train_state.pt").write_bytes(b"not a state")
    code, _, err = run_main([*base, "--resume", "--epochs", "2"], capsys)
    assert code == 2
    assert_one_line_error(err, "train_state.pt")


def test_resume_continues(base: list[str], tmp_path: Path, capsys) -> None:
    assert run_main(base, capsys)[0] == 0
    code, out, _ = run_main([*base, "--resume", "--epochs", "2"], capsys)
    assert code == 0
    assert f"resuming {tmp_path / 'run'} at epoch 2" in out
    assert "epoch   2/2" in out


def test_non_finite_loss_exits_1(base: list[str], capsys, monkeypatch) -> None:
    real = trainer_mod.negative_elbo

    def nan_elbo(*a, **k):
        parts = real(*a, **k)
        return parts._replace(loss=parts.loss * math.nan)

    monkeypatch.setattr(trainer_mod, "negative_elbo", nan_elbo)
    code, _, err = run_main(base, capsys)
    assert code == 1
    assert_one_line_error(err, "non-finite loss", "step 1", "No checkpoint was written")


def _vae_train() -> list[str]:
    script = Path(sys.executable).with_name("vae-train")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vae_train.cli"]


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "0"], ["--arch", "resnet"], ["--data-dir", "/nonexistent/data/dir"]],
)
def test_console_script(argv: list[str], base: list[str]) -> None:
    proc = subprocess.run(
        [*_vae_train(), *base, *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("vae-train: error: ")


def test_new_run_refuses_to_overwrite_an_existing_run(tmp_path, data_dir, capsys) -> None:
    from vae_train.cli import main

    args = [
        "--arch",
        "mlp",
        "--latent-dim",
        "2",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "128",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    before = (tmp_path / "run" / "checkpoints" / "latest.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (tmp_path / "run" / "checkpoints" / "latest.json").read_bytes() == before


def test_a_second_trainer_into_the_same_out_is_refused(data_dir: Path, tmp_path: Path, capsys):
    """Issue 13 item 16: the first run holds the run directory; a second vae-train into it
    (new or --resume) exits 2 with one line; once the first is killed the lock is free."""
    run = tmp_path / "run"
    first_args = ["--data-dir", str(data_dir), "--out", str(run), *SMALL, "--epochs", "200"]
    first = subprocess.Popen(
        [*_vae_train(), *first_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    latest = run / "checkpoints" / "latest.json"
    try:
        deadline = time.monotonic() + 120
        while not latest.exists():
            assert first.poll() is None, first.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the first run wrote no checkpoint"
            time.sleep(0.01)
        for extra in ([], ["--resume"]):
            code, _, err = run_main([*first_args, *extra], capsys)
            assert code == 2
            assert_one_line_error(err, str(run), "in use by another vae-train")
        assert first.poll() is None  # the first run went on undisturbed
    finally:
        first.kill()
        first.wait()
    from vae_train.run_lock import locked_run_dir

    with locked_run_dir(run, create=False):  # the lock died with the killed process
        pass


def test_run_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    from vae_train.run_lock import RunLockError, locked_run_dir

    run = tmp_path / "run"
    with (
        locked_run_dir(run, create=True),
        pytest.raises(RunLockError, match="in use"),
        locked_run_dir(run, create=False),
    ):
        pass
    with locked_run_dir(run, create=False):  # released when the block ends
        pass
    assert list(run.iterdir()) == []  # no lock file is left behind
    with (
        pytest.raises(RunLockError, match=r"cannot resume: .* does not exist"),
        locked_run_dir(tmp_path / "missing", create=False),
    ):
        pass


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ({"latest.json": {"dir": 5}}, "latest.json"),
        ({"latest.json": {"dir": "../../other-run"}}, "latest.json"),
        ({"train_state.pt": {"optimizer": 5}}, "train_state.pt"),
        ({"train_state.pt": {"epoch": -5}}, "train_state.pt"),
    ],
)
def test_damaged_resume_state_is_one_line(base, tmp_path: Path, capsys, damage, named) -> None:
    assert run_main(base, capsys)[0] == 0
    root = tmp_path / "run" / "checkpoints"
    ((file, value),) = damage.items()
    if file == "latest.json":
        (root / file).write_text(json.dumps(value))
    else:
        path = root / json.loads((root / "latest.json").read_text())["dir"] / file
        torch.save({**torch.load(path, weights_only=True), **value}, path)
    code, _, err = run_main([*base, "--resume", "--epochs", "2"], capsys)
    assert code == 2
    assert_one_line_error(err, named)
