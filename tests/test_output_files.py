"""Output files behave like files (issue 13, items 5-9): the one atomic writer honours the
umask and keeps the mode of a file it replaces; writes through a device node or FIFO and
follows a symlink instead of replacing them; names the user's path in every error and
checks it before the work; cleans up on SIGTERM and on a full disk; sweeps the stale
temporary files a killed writer left (ours only); and an export's directory swap that a
crash cut in half is finished by the next load or export."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vae_format import temp_names
from vae_format.atomic import atomic_path, check_output, save_npy, write_bytes
from vae_format.atomic_dir import recover, staged_dir
from vae_runtime import VAE, save_grid

REPO = Path(__file__).resolve().parents[1]
MLP = REPO / "artifacts" / "mnist-mlp-z20"
VAE_RUN = str(Path(sys.executable).parent / "vae-run")
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def umask() -> Iterator[callable]:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ours(folder: Path) -> list[str]:
    """Names of our temporary files/folders in ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if temp_names.parse(e.name))


def vae_run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VAE_RUN, *args], capture_output=True, text=True, **kw)


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert ".tmp" not in lines[0]  # never the temporary file's name
    return lines[0]


# ---- 5. modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_get_the_umask_mode(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    x = np.zeros((2, 28, 28), np.float32)
    written = [
        save_npy(tmp_path / "a.npy", x),
        save_grid(x, tmp_path / "g.png"),
        write_bytes(tmp_path / "b.bin", b"x"),
    ]
    assert {mode(p) for p in written} == {0o666 & ~mask}


@pytest.mark.parametrize(("existing", "mask"), [(0o644, 0o077), (0o640, 0o022), (0o600, 0o000)])
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, umask, existing: int, mask: int) -> None:
    target = tmp_path / "a.npy"
    target.write_bytes(b"old")
    target.chmod(existing)
    umask(mask)
    save_npy(target, np.ones(3))
    assert mode(target) == existing
    np.testing.assert_array_equal(np.load(target), np.ones(3))


def test_setuid_bits_are_not_carried_over(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    target.chmod(0o4755)
    write_bytes(target, b"new")
    assert mode(target) == 0o755


# ---- 6. special files -------------------------------------------------------------------------


def test_fifo_target_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "out.npy"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    save_npy(fifo, np.arange(5.0))
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0].startswith(b"\x93NUMPY")
    assert not ours(tmp_path)


@pytest.mark.skipif(not IS_ROOT, reason="making a device node needs root")
def test_device_node_is_written_through_not_replaced(tmp_path: Path) -> None:
    """A private copy of /dev/null (never the system's: a broken writer would replace it).
    Its name ends .npy: outputs take their format from the name, so a node without one is
    refused by name (the node kept), as /dev/null itself would be."""
    null = tmp_path / "null.npy"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    proc = vae_run("generate", "--n", "4", "--npy", str(null), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    bare = tmp_path / "null"
    os.mknod(bare, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    proc = vae_run("generate", "--n", "4", "--out", str(bare), "--threads", "1")
    assert proc.returncode == 2 and "unknown output format" in proc.stderr, proc.stderr
    assert stat.S_ISCHR(os.lstat(bare).st_mode)
    assert not ours(tmp_path)


def test_full_device_reports_enospc_naming_the_users_path() -> None:
    """/dev/full is written through (never replaced), and its ENOSPC names it."""
    with pytest.raises(OSError) as info:
        save_npy("/dev/full", np.zeros(1000))
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "data" / "real.npy"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    save_npy(link, np.ones(2))
    assert link.is_symlink() and os.readlink(link) == str(real)
    np.testing.assert_array_equal(np.load(real), np.ones(2))
    assert mode(real) == 0o640
    assert not ours(tmp_path) and not ours(real.parent)


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.npy"
    link.symlink_to(tmp_path / "new.npy")
    save_npy(link, np.ones(2))
    assert link.is_symlink() and (tmp_path / "new.npy").is_file()


def test_directory_and_socket_targets_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        save_npy(tmp_path / "d.npy", np.ones(2))
    assert info.value.filename == str(tmp_path / "d.npy")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s.npy"))
        with pytest.raises(OSError, match="is a socket, not a file"):
            save_npy(tmp_path / "s.npy", np.ones(2))
    assert stat.S_ISSOCK(os.lstat(tmp_path / "s.npy").st_mode)


# ---- 9. the user's path, checked before the work ---------------------------------------------


# Each command writes its output only when the work is done (a grid at the end, PNGs as
# they come, Ray's folder after the whole job); n = 10^7 would take far longer than the
# subprocess timeout here, so only a check made before the work passes.
UNWRITABLE = {
    "grid": (["generate", "--n", "10000000", "--out", "{ro}/g.png"], "{ro}/g.png"),
    "png-folder": (["generate", "--n", "10000000", "--out-dir", "{ro}"], "{ro}"),
    "ray-folder": (["embed", "in.parquet", "--ray", "--out", "{ro}/emb"], "{ro}/emb"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_unwritable_folder_names_the_users_path_before_any_work(tmp_path: Path, case) -> None:
    """A folder this process may not write to: 0555 for a user; for root (whom modes do not
    stop), a read-only tmpfs in a private mount namespace."""
    ro = tmp_path / "ro"
    ro.mkdir()
    args = [a.format(ro=ro) for a in UNWRITABLE[case][0]]
    named = UNWRITABLE[case][1].format(ro=ro)
    if not IS_ROOT:
        ro.chmod(0o555)
        proc = vae_run(*args, "--threads", "1", timeout=60)
        reason = "Permission denied"
    elif shutil.which("unshare"):
        command = shlex.join([VAE_RUN, *args, "--threads", "1"])
        script = f'mount -t tmpfs -o ro tmpfs "{ro}" || exit 99; {command}'
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60
        )
        reason = "Read-only file system"
        if proc.returncode == 99:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    else:
        pytest.skip("root, and no unshare to make a read-only folder")
    one_line_error(proc, f"{named}: {reason}")


def test_output_that_is_a_folder_fails_before_the_work(tmp_path: Path) -> None:
    """The audit's `embed many --out folder` worked 33 s before failing; now it fails first."""
    (tmp_path / "out.npy").mkdir()
    many = tmp_path / "many.npy"
    np.save(many, np.zeros((200_000, 28, 28), np.uint8))
    start = time.monotonic()
    proc = vae_run("embed", str(many), "--out", str(tmp_path / "out.npy"), "--threads", "1")
    one_line_error(proc, f"{tmp_path / 'out.npy'}: is a directory")
    assert time.monotonic() - start < 10  # embedding 200k images takes far longer here


def test_output_under_a_file_and_bad_grid_name_fail_first(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line_error(
        vae_run("score", str(tmp_path), "--out", str(tmp_path / "file" / "s.npy")),
        "s.npy",
        "Not a directory",
    )
    one_line_error(vae_run("generate", "--out", str(tmp_path / "g.jpg")), "written as PNG")
    np.save(tmp_path / "a.npy", np.zeros((1, 28, 28), np.uint8))
    a = str(tmp_path / "a.npy")
    strip = vae_run("interpolate", a, a, "--out", str(tmp_path / "s.jpg"))
    one_line_error(strip, "give a .png file name")


def test_check_output_creates_nothing(tmp_path: Path) -> None:
    check_output(tmp_path / "new" / "deep" / "x.npy")
    check_output(tmp_path / "x.npy")
    assert list(tmp_path.iterdir()) == []


# ---- 7. signals, a full disk, stale temporary files -------------------------------------------


def _wait_for_temp(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = ours(folder)
        if found and os.path.getsize(folder / found[0]) > 1 << 16:  # writing has begun
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no temporary file appeared ({proc.poll()})")


@pytest.fixture
def many_images(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "many.npy"
    path.parent.mkdir()
    np.save(path, np.zeros((300_000, 28, 28), np.uint8))
    return path


def test_sigterm_during_embed_cleans_up_and_exits_143(tmp_path: Path, many_images: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "e.npy").write_bytes(b"previous")
    cmd = [
        VAE_RUN,
        "embed",
        str(many_images),
        "--out",
        str(out / "e.npy"),
        "--threads",
        "1",
        "--batch-size",
        "64",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_temp(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    assert ours(out) == [] and (out / "e.npy").read_bytes() == b"previous"


def test_stale_temp_of_a_killed_writer_is_swept_by_the_next_write(
    tmp_path: Path, many_images: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        VAE_RUN,
        "embed",
        str(many_images),
        "--out",
        str(out / "e.npy"),
        "--threads",
        "1",
        "--batch-size",
        "64",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = _wait_for_temp(out, proc)
    proc.kill()
    proc.wait()
    assert temp_names.parse(left).pid == proc.pid  # the writer's PID is in the name
    others = [".e.npy.tmp", ".x.npy.123.abcdefgh.tmp.keep", "e.npy.999999.abcdefgh.tmp"]
    for name in others:
        (out / name).write_text("not ours")
    proc = vae_run("generate", "--n", "2", "--npy", str(out / "g.npy"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert ours(out) == [] and sorted(others) == sorted(
        p.name for p in out.iterdir() if p.name.startswith((".e", ".x", "e.npy.9"))
    )


def test_live_writers_temp_is_left_alone(tmp_path: Path) -> None:
    """A temporary file whose writer is alive (its lock held) survives another writer."""
    with atomic_path(tmp_path / "a.npy") as tmp:
        tmp.write_bytes(b"being written")
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from vae_format.atomic import write_bytes; "
                f"write_bytes({str(tmp_path / 'b.bin')!r}, b'x')",
            ],
            capture_output=True,
            text=True,
        )
        assert child.returncode == 0, child.stderr
        assert tmp.exists()
    assert (tmp_path / "a.npy").read_bytes() == b"being written"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folder_of_an_export_is_swept(tmp_path: Path) -> None:
    stale = tmp_path / f".model.{_dead_pid()}.abcdefgh.stage"
    stale.mkdir()
    (stale / "encoder.onnx").write_bytes(b"half written")
    keep = tmp_path / ".model.tmp-notours"
    keep.mkdir()
    with staged_dir(tmp_path / "model") as stage:
        (stage / "f").write_text("x")
    assert not stale.exists() and keep.exists() and (tmp_path / "model" / "f").exists()


STAGE_UNTIL_SIGTERM = """
import sys, time
from pathlib import Path
from vae_format.atomic_dir import staged_dir
from vae_format.signals import EXIT_TERMINATED, Terminated, sigterm_raises
with sigterm_raises():
    try:
        with staged_dir(Path(sys.argv[1])) as stage:
            (stage / "encoder.onnx").write_bytes(b"half written")
            print("staged", flush=True)
            time.sleep(60)
    except Terminated:
        sys.exit(EXIT_TERMINATED)
"""


def test_sigterm_during_an_export_removes_its_staging_folder(tmp_path: Path) -> None:
    """What vae-export does under SIGTERM (sigterm_raises around the builder)."""
    cmd = [sys.executable, "-c", STAGE_UNTIL_SIGTERM, str(tmp_path / "model")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    assert [temp_names.parse(n).kind for n in ours(tmp_path)] == ["stage"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_disk_full_during_embed_is_one_line_not_sigbus(tmp_path: Path, many_images: Path) -> None:
    """A real ENOSPC: a 2 MiB tmpfs mounted in a private mount namespace (unshare -rm)."""
    full = tmp_path / "full"
    full.mkdir()
    script = (
        f'mount -t tmpfs -o size=2m tmpfs "{full}" || exit 99; '
        f'"{VAE_RUN}" embed "{many_images}" --out "{full}/e.npy" --threads 1; rc=$?; '
        f'ls -A "{full}"; exit $rc'
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    one_line_error(proc, f"{full / 'e.npy'}: No space left on device")
    assert proc.stdout.strip() == ""  # nothing left in the full folder


# ---- 8. the export swap window -----------------------------------------------------------------


CRASH_IN_SWAP = """
import os, sys
from pathlib import Path
import vae_format.atomic_dir as atomic_dir
from vae_export.builder import changed_model_dir
rename = os.rename
def crash_after_first(src, dst):
    rename(src, dst)
    os._exit(9)  # dies between the two renames of the swap
atomic_dir.os.rename = crash_after_first
with changed_model_dir(Path(sys.argv[1])) as builder:
    builder.set_section("marker", "new")
"""


@pytest.fixture
def crashed_swap(tmp_path: Path) -> Path:
    """A model directory whose change crashed mid-swap: only .old and .stage remain."""
    pytest.importorskip("torch")  # vae_export needs the train extra
    target = Path(shutil.copytree(MLP, tmp_path / "model"))
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_IN_SWAP, str(target)], capture_output=True, text=True
    )
    assert proc.returncode == 9, proc.stderr
    assert not target.exists()
    assert sorted(temp_names.parse(n).kind for n in ours(tmp_path)) == ["old", "stage"]
    return target


def _marker(model_dir: Path) -> str | None:
    return VAE(model_dir, threads=1).manifest.get("marker")


def test_load_finishes_a_swap_cut_by_a_crash(crashed_swap: Path) -> None:
    assert _marker(crashed_swap) == "new"  # the staged directory was complete: swapped in
    assert ours(crashed_swap.parent) == []


def test_load_restores_the_old_directory_when_the_new_one_is_gone(crashed_swap: Path) -> None:
    (stage,) = [n for n in ours(crashed_swap.parent) if n.endswith(".stage")]
    shutil.rmtree(crashed_swap.parent / stage)
    assert _marker(crashed_swap) is None  # the old directory is back
    assert ours(crashed_swap.parent) == []


def test_cli_load_recovers_too(crashed_swap: Path) -> None:
    proc = vae_run("info", "--model", str(crashed_swap))
    assert proc.returncode == 0, proc.stderr
    assert crashed_swap.is_dir() and ours(crashed_swap.parent) == []


def test_staging_into_a_crashed_target_recovers_first(crashed_swap: Path) -> None:
    with staged_dir(crashed_swap, copy=True) as stage:
        assert (stage / "manifest.json").exists()  # a copy of the recovered directory
    assert _marker(crashed_swap) == "new" and ours(crashed_swap.parent) == []


def test_recover_leaves_a_live_swap_alone(tmp_path: Path) -> None:
    """A backup whose writer is alive (this process) is not touched by recovery."""
    (tmp_path / f".m.{os.getpid()}.abcdefgh.old").mkdir()
    assert recover(tmp_path / "m") is False
    assert (tmp_path / f".m.{os.getpid()}.abcdefgh.old").exists()
