"""Training for real on small MNIST subsets: loss, determinism, resume, crash safety, refusals."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vae_train import trainer as trainer_mod
from vae_train.architectures import build_decoder, build_encoder
from vae_train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    resolve_checkpoint,
    save_checkpoint,
)
from vae_train.datasets import DatasetError
from vae_train.losses import ElboParts
from vae_train.models import count_parameters
from vae_train.trainer import NonFiniteLossError, TrainConfig, Trainer, TrainingError, evaluate

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = ("encoder.safetensors", "decoder.safetensors")


def config(data_dir: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        arch="mlp",
        data_dir=str(data_dir),
        epochs=2,
        batch_size=64,
        limit_train=512,
        limit_test=200,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def quiet(_: str) -> None:
    pass


def train(cfg: TrainConfig, run: Path) -> Trainer:
    tr = Trainer(cfg, run, progress=False)
    tr.fit(log=quiet)
    return tr


def latest_dir(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["dir"]


def assert_same_weights(a: Path, b: Path) -> None:
    for name in WEIGHTS:
        ta, tb = load_file(a / name), load_file(b / name)
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{name}:{key} differs"


def vae_train_cmd() -> list[str]:
    script = Path(sys.executable).with_name("vae-train")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vae_train.cli"]


def link_mnist(data_dir: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in (data_dir / "mnist").iterdir():
        (dst / f.name).symlink_to(f)


@pytest.fixture(scope="module")
def finished_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 2-epoch mlp run; copy it before changing anything in it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(config(data_dir), run)
    return run


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


# -- real training ----------------------------------------------------------------------------


def test_short_conv_run_lowers_the_test_loss(data_dir: Path, tmp_path: Path) -> None:
    cfg = config(data_dir, arch="conv", epochs=3, limit_train=2000, limit_test=500, batch_size=128)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    before = evaluate(tr.encoder, tr.decoder, tr.test_x, cfg, tr.device, seed=0)["loss"]
    lines: list[str] = []
    history = tr.fit(log=lines.append)
    losses = [row["test_loss"] for row in history]
    assert len(losses) == 3 and len(lines) == 3
    assert before > 500  # an untrained decoder outputs ~0.5 everywhere: ~784 * log 2 = 543 nats
    assert losses[0] < before and losses[2] < losses[0]
    assert losses[2] < 0.5 * before
    for row in history:
        assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"])
    # the checkpoint holds the trained weights and describes them
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.config["epoch"] == 3 and ckpt.config["arch"] == "conv"
    assert ckpt.config["parameters"] == {"encoder": 846_728, "decoder": 844_641}
    assert count_parameters(ckpt.encoder) == 846_728
    x = tr.test_x[:16].float().to(tr.device) / 255
    enc, dec = ckpt.encoder.to(tr.device), ckpt.decoder.to(tr.device)  # the trainer's device
    with torch.no_grad():
        tr.encoder.eval(), tr.decoder.eval()
        assert torch.equal(enc(x)[0], tr.encoder(x)[0])
        assert torch.equal(dec(enc(x)[0]), tr.decoder(tr.encoder(x)[0]))
    metrics = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]
    assert (tmp_path / "run/samples/epoch-003.png").is_file()
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == [
        "best.json",
        "epoch-0003",
        "latest.json",
    ]


def test_same_seed_gives_byte_identical_weights(data_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train(config(data_dir, arch="conv", seed=seed), tmp_path / name)
        runs[name] = latest_dir(tmp_path / name)
    for f in WEIGHTS:
        assert (runs["a"] / f).read_bytes() == (runs["b"] / f).read_bytes()
        assert (runs["a"] / f).read_bytes() != (runs["c"] / f).read_bytes()


def test_checkpoint_files_are_reproducible(tmp_path: Path) -> None:
    """Saving the same weights again gives the same bytes (safetensors' own writer orders the
    metadata keys differently from call to call)."""
    from safetensors import safe_open

    torch.manual_seed(0)
    enc, dec = build_encoder("mlp", 3), build_decoder("mlp", 3)
    blobs = set()
    for i in range(12):
        path = save_checkpoint(
            tmp_path / str(i), enc, dec, {"arch": "mlp", "latent_dim": 3}, {"epoch": 1}, 1
        )
        blobs.add(
            (path / "encoder.safetensors").read_bytes()
            + (path / "decoder.safetensors").read_bytes()
        )
        with safe_open(path / "decoder.safetensors", "pt") as f:
            assert f.metadata() == {"arch": "mlp", "latent_dim": "3", "role": "decoder"}
    assert len(blobs) == 1
    loaded = load_file(path / "encoder.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in enc.state_dict().items())


def test_resume_in_process_is_bit_identical(finished_run: Path, data_dir: Path, tmp_path: Path):
    train(config(data_dir, epochs=1), tmp_path / "part")
    tr = Trainer(config(data_dir), tmp_path / "part", progress=False)
    tr.resume()
    assert tr.start_epoch == 2
    tr.fit(log=quiet)
    assert_same_weights(latest_dir(tmp_path / "part"), latest_dir(finished_run))


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(data_dir: Path, tmp_path: Path) -> None:
    epochs = 4
    args = [
        "--arch",
        "conv",
        "--data-dir",
        str(data_dir),
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--limit-train",
        "1024",
        "--limit-test",
        "200",
        "--threads",
        "1",
        "--no-progress",
        "--seed",
        "3",
    ]
    run = tmp_path / "killed"
    latest = run / "checkpoints" / "latest.json"
    proc = subprocess.Popen(
        [*vae_train_cmd(), *args, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not latest.exists():
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(latest.read_text())["epoch"]
    assert killed_at < epochs, "the run finished before it could be killed"
    resumed = subprocess.run(
        [*vae_train_cmd(), *args, "--out", str(run), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at epoch {killed_at + 1}" in resumed.stdout
    # the uninterrupted reference run, in this process with the same settings
    ref = tmp_path / "ref"
    cfg = config(data_dir, arch="conv", epochs=epochs, batch_size=64, limit_train=1024, seed=3)
    train(cfg, ref)
    assert json.loads(latest.read_text())["epoch"] == epochs
    assert_same_weights(latest_dir(run), latest_dir(ref))
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_hist = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [h["test_loss"] for h in hist] == [h["test_loss"] for h in ref_hist]


SAVER = """
import json, sys, torch
from pathlib import Path
from vae_train.checkpoint import save_checkpoint
from vae_train.architectures import build_decoder, build_encoder
run = Path(sys.argv[1])
latest = run / "checkpoints" / "latest.json"
start = json.loads(latest.read_text())["epoch"] + 1 if latest.exists() else 1
enc, dec = build_encoder("conv", 20), build_decoder("conv", 20)
for epoch in range(start, start + 100000):
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            p.fill_(epoch)
    save_checkpoint(run, enc, dec, {"arch": "conv", "latent_dim": 20, "epoch": epoch},
                    {"epoch": epoch, "weights": [float(epoch)] * 1000}, epoch,
                    best=epoch % 3 == 0)
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """A process saving checkpoints back to back is killed at several moments; every time
    the checkpoints that latest.json and best.json name load and are internally consistent."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    run = tmp_path / "run"
    latest = run / "checkpoints" / "latest.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last_epoch = torn = 0
    seen: set[str] = set()
    for delay in (0.0, 0.004, 0.011, 0.023, 0.037, 0.061):
        before = json.loads(latest.read_text())["epoch"] if latest.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run)], env=env, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 60
            # wait until this process has written a checkpoint of its own, then a bit more
            while not latest.exists() or json.loads(latest.read_text())["epoch"] == before:
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.001)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        epoch = json.loads(latest.read_text())["epoch"]
        assert epoch > last_epoch
        last_epoch = epoch
        for which in ("latest", "best"):
            ckpt = load_checkpoint(run, which)
            n = ckpt.config["epoch"]
            for module in (ckpt.encoder, ckpt.decoder):
                assert all(bool((p == n).all()) for p in module.parameters())
            state = load_train_state(ckpt.path)
            assert state["epoch"] == n and state["weights"][-1] == float(n)
            if which == "latest" or not (run / "checkpoints/best.json").exists():
                assert n == epoch  # "best" falls back to latest before any best exists
            else:
                assert n % 3 == 0 and n <= epoch
        # count the kills that visibly landed inside save_checkpoint: a folder being written or
        # one being pruned, or a temporary pointer file
        named = {"latest.json", "best.json", latest_dir(run).name}
        if (run / "checkpoints/best.json").exists():
            named.add(resolve_checkpoint(run, "best").name)
        leftovers = {p.name for p in (run / "checkpoints").iterdir() if p.name not in named}
        torn += bool(leftovers - seen)
        seen |= leftovers
    assert torn >= 2, "the kills never interrupted a checkpoint write"


def test_failure_inside_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vae_train.checkpoint as ck

    enc, dec = build_encoder("mlp", 2), build_decoder("mlp", 2)
    cfg = {"arch": "mlp", "latent_dim": 2}
    save_checkpoint(tmp_path, enc, dec, cfg, {"epoch": 1}, 1)
    ref = load_file(tmp_path / "checkpoints/epoch-0001/encoder.safetensors")
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1)

    real_write_json = ck.atomic.write_json

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    def write_json(path: Path, obj: object) -> None:
        if Path(path).name == "latest.json":
            raise OSError("disk full")
        real_write_json(path, obj)

    # fail writing the training state, then fail replacing the latest.json pointer
    for obj, name, fake in ((ck.torch, "save", boom), (ck.atomic, "write_json", write_json)):
        with monkeypatch.context() as m:
            m.setattr(obj, name, fake)
            with pytest.raises(OSError, match="disk full"):
                save_checkpoint(tmp_path, enc, dec, cfg, {"epoch": 2}, 2)
        ckpt = load_checkpoint(tmp_path, "latest")
        assert ckpt.path.name == "epoch-0001"
        for k, v in ckpt.encoder.state_dict().items():
            assert torch.equal(v, ref[k])
    save_checkpoint(tmp_path, enc, dec, cfg, {"epoch": 2}, 2)
    assert load_checkpoint(tmp_path, "latest").path.name == "epoch-0002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-0002",
        "latest.json",
    ]


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["loss", "decoder"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    cfg = config(data_dir, epochs=3)
    steps = 512 // 64
    bad_step = steps + 3  # epoch 2, step 3
    calls = {"n": 0}
    real_elbo, real_rep = trainer_mod.negative_elbo, trainer_mod.reparameterize

    def counting() -> bool:
        if torch.is_grad_enabled():  # training steps only, not evaluation
            calls["n"] += 1
            return calls["n"] == bad_step
        return False

    if where == "loss":

        def elbo(*a: object, **k: object) -> ElboParts:
            parts = real_elbo(*a, **k)
            if counting():
                return ElboParts(parts.loss * float("nan"), parts.recon, parts.kl)
            return parts

        monkeypatch.setattr(trainer_mod, "negative_elbo", elbo)
    else:  # NaN activations reach the BCE (on CUDA that was a device-side assert)

        def rep(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            z = real_rep(mu, logvar, eps)
            return z * float("nan") if counting() else z

        monkeypatch.setattr(trainer_mod, "reparameterize", rep)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"non-finite") as err:
        train(cfg, run)
    assert isinstance(err.value, NonFiniteLossError)
    assert "epoch 2, step 3" in str(err.value) and f"global step {bad_step}" in str(err.value)
    assert "epoch 1" in str(err.value)
    assert json.loads((run / "checkpoints/latest.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["epoch-0001"]
    ckpt = load_checkpoint(run, "latest")
    assert all(bool(torch.isfinite(p).all()) for p in ckpt.encoder.parameters())
    # the kept checkpoint is exactly what a clean one-epoch run writes
    monkeypatch.undo()
    train(config(data_dir, epochs=1), tmp_path / "clean")
    for f in WEIGHTS:
        assert (latest_dir(run) / f).read_bytes() == (
            latest_dir(tmp_path / "clean") / f
        ).read_bytes()


def test_bad_dataset_refused_before_any_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    bad_dir = tmp_path / "data"
    link_mnist(data_dir, bad_dir / "mnist")
    victim = bad_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 1
    victim.unlink()
    victim.write_bytes(bytes(data))
    run = tmp_path / "run"
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        train(config(bad_dir), run)
    assert not (run / "checkpoints").exists()


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this calls open(marker, "w"), creating the file
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["pickle", "torch"])
def test_resume_never_unpickles_the_training_state(
    finished_run: Path, data_dir: Path, tmp_path: Path, fmt: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker, control = tmp_path / "pwned", tmp_path / "control"

    def write_evil(path: Path, marker: Path) -> None:
        if fmt == "pickle":
            path.write_bytes(pickle.dumps({"epoch": 2, "x": Evil(marker)}, protocol=2))
        else:
            torch.save({"epoch": 2, "x": Evil(marker)}, path)

    state = latest_dir(run) / "train_state.pt"
    write_evil(state, marker)
    # the same payload really does run code when unpickled without restrictions
    write_evil(tmp_path / "control.pt", control)
    if fmt == "pickle":
        pickle.loads((tmp_path / "control.pt").read_bytes())
    else:
        torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()
    control.unlink()
    tr = Trainer(config(data_dir, epochs=3), run, progress=False)
    with pytest.raises(CheckpointError, match=r"train_state\.pt") as err:
        tr.resume()
    assert not marker.exists()
    assert not control.exists()
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)


@pytest.mark.parametrize(
    "state", [{"epoch": 2}, {"optimizer": {"state": {}}, "epoch": 2, "best_val": 0, "history": []}]
)
def test_resume_refuses_a_foreign_training_state(
    run_copy: Path, data_dir: Path, state: dict[str, object]
) -> None:
    torch.save(state, latest_dir(run_copy) / "train_state.pt")
    tr = Trainer(config(data_dir, epochs=3), run_copy, progress=False)
    with pytest.raises(CheckpointError, match=r"train_state\.pt"):
        tr.resume()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 5e-4}, "lr"),
        ({"seed": 2}, "seed"),
        ({"batch_size": 32}, "batch_size"),
        ({"limit_train": 256}, "limit_train"),
        ({"likelihood": "gaussian"}, "likelihood"),
        ({"latent_dim": 8}, "latent_dim"),
        ({"arch": "conv"}, "arch"),
    ],
)
def test_resume_with_changed_settings_refused(
    finished_run: Path, data_dir: Path, change: dict[str, object], named: str
) -> None:
    before = (latest_dir(finished_run) / "encoder.safetensors").read_bytes()
    tr = Trainer(config(data_dir, epochs=3, **change), finished_run, progress=False)
    with pytest.raises((TrainingError, CheckpointError), match=named):
        tr.resume()
    assert (latest_dir(finished_run) / "encoder.safetensors").read_bytes() == before


def test_resume_may_extend_a_constant_schedule_but_not_a_cosine_one(
    run_copy: Path, data_dir: Path, tmp_path: Path
) -> None:
    tr = Trainer(config(data_dir, epochs=3), run_copy, progress=False)
    tr.resume()
    assert tr.start_epoch == 3 and len(tr.fit(log=quiet)) == 3
    cos = tmp_path / "cos"
    train(config(data_dir, epochs=1, lr_schedule="cosine", limit_train=128), cos)
    with pytest.raises(TrainingError, match="cosine"):
        Trainer(config(data_dir, epochs=2, lr_schedule="cosine", limit_train=128), cos).resume()


def test_resume_without_a_checkpoint_refused(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for run in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(TrainingError, match="cannot resume"):
            Trainer(config(data_dir), run, progress=False).resume()


# -- load_checkpoint refusals -----------------------------------------------------------------


def test_load_checkpoint_round_trip(finished_run: Path) -> None:
    ckpt = load_checkpoint(finished_run)
    ckpt2 = load_checkpoint(latest_dir(finished_run))
    assert ckpt.path == ckpt2.path == latest_dir(finished_run)
    assert not ckpt.encoder.training and not ckpt.decoder.training
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(ckpt.decoder(ckpt.encoder(x)[0]), ckpt2.decoder(ckpt2.encoder(x)[0]))


@pytest.mark.parametrize("missing", ["encoder.safetensors", "decoder.safetensors", "config.json"])
def test_load_checkpoint_refuses_missing_files(run_copy: Path, missing: str) -> None:
    (latest_dir(run_copy) / missing).unlink()
    with pytest.raises(CheckpointError, match=re.escape(missing)):
        load_checkpoint(run_copy)


def test_load_checkpoint_refuses_latent_mismatch(run_copy: Path) -> None:
    ckpt_dir = latest_dir(run_copy)
    save_file(build_decoder("mlp", 7).state_dict(), ckpt_dir / "decoder.safetensors")
    with pytest.raises(CheckpointError, match="latent"):
        load_checkpoint(run_copy)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"latent_dim": 8}, "shape"),
        ({"arch": "conv"}, "decoder|encoder"),
        ({"arch": "resnet"}, "arch"),
        ({"latent_dim": "20"}, "latent_dim"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_load_checkpoint_refuses_config_not_matching_weights(
    run_copy: Path, edit: dict[str, object], match: str
) -> None:
    path = latest_dir(run_copy) / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(run_copy)


def test_load_checkpoint_refuses_unreadable_files(run_copy: Path, tmp_path: Path) -> None:
    ckpt_dir = latest_dir(run_copy)
    (ckpt_dir / "encoder.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match=r"encoder\.safetensors"):
        load_checkpoint(run_copy)
    (ckpt_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(run_copy)
    (run_copy / "checkpoints/latest.json").write_text("[]")
    (run_copy / "checkpoints/best.json").unlink()
    with pytest.raises(CheckpointError, match="latest"):
        load_checkpoint(run_copy)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_kl_warmup_weights_the_kl_term_and_resume_checks_it(tmp_path, data_dir) -> None:
    from vae_train.trainer import TrainConfig, Trainer, TrainingError

    cfg = TrainConfig(
        arch="mlp",
        latent_dim=2,
        data_dir=str(data_dir),
        epochs=2,
        limit_train=512,
        limit_test=128,
        threads=1,
        kl_warmup=1.5,
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    steps = trainer.steps_per_epoch
    assert trainer._kl_weight(1, 0) == pytest.approx(1 / (1.5 * steps))
    assert trainer._kl_weight(1, steps - 1) == pytest.approx(1 / 1.5)
    assert trainer._kl_weight(2, steps - 1) == 1.0
    assert Trainer(TrainConfig(data_dir=str(data_dir)), tmp_path / "x")._kl_weight(1, 0) == 1.0
    trainer.fit(log=lambda _: None)
    changed = TrainConfig(**{**cfg.__dict__, "kl_warmup": 0.0})
    resumed = Trainer(changed, tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="kl_warmup"):
        resumed.resume()
    with pytest.raises(TrainingError, match="--kl-warmup"):
        Trainer(TrainConfig(data_dir=str(data_dir), kl_warmup=-1), tmp_path / "y")


@pytest.mark.slow
def test_mlp_matches_the_pytorch_examples_reference(tmp_path, data_dir) -> None:
    """pytorch/examples' MLP VAE (784-400-20, Adam 1e-3, batch 128, 10 epochs, seed 1)
    reaches a test loss of 105.55 on this machine; ours must land within 1 nat of it."""
    from vae_train.trainer import TrainConfig, Trainer

    cfg = TrainConfig(
        arch="mlp",
        latent_dim=20,
        data_dir=str(data_dir),
        epochs=10,
        batch_size=128,
        lr=1e-3,
        seed=1,
    )
    history = Trainer(cfg, tmp_path / "run", progress=False).fit(log=lambda _: None)
    assert abs(history[-1]["test_loss"] - 105.55) <= 1.0, history[-1]


def test_bf16_autocast_trains_float32_weights_close_to_fp32(tmp_path, data_dir) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            arch="conv",
            latent_dim=4,
            data_dir=str(data_dir),
            epochs=2,
            limit_train=1024,
            limit_test=256,
            threads=1,
            precision=precision,
        )
        history = Trainer(cfg, tmp_path / precision, progress=False).fit(log=lambda _: None)
        weights = load_file(
            tmp_path / precision / "checkpoints" / "epoch-0002" / "decoder.safetensors"
        )
        runs[precision] = (history[-1]["test_loss"], weights)
    (loss32, w32), (loss16, w16) = runs["fp32"], runs["bf16"]
    assert {t.dtype for t in w16.values()} == {torch.float32}  # master weights stay fp32
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)  # autocast did change the math
    assert loss16 == pytest.approx(loss32, rel=0.02)  # ... but not what is learned
    cfg = TrainConfig(
        arch="conv",
        latent_dim=4,
        data_dir=str(data_dir),
        epochs=3,
        limit_train=1024,
        limit_test=256,
        threads=1,
        precision="fp32",
    )
    with pytest.raises(TrainingError, match="precision"):
        Trainer(cfg, tmp_path / "bf16", progress=False).resume()
    with pytest.raises(TrainingError, match="--precision"):
        Trainer(TrainConfig(data_dir=str(data_dir), precision="fp16"), tmp_path / "z")


def test_ema_checkpoints_the_average_and_resumes_bit_identically(tmp_path, data_dir) -> None:
    cfg = config(data_dir, epochs=2, val_size=128, ema=0.9)
    full = train(cfg, tmp_path / "full")
    row = full.history[-1]
    assert {"val_loss", "val_raw_loss"} <= row.keys()
    assert row["val_loss"] != row["val_raw_loss"]
    # The checkpoint holds the averaged weights; the raw ones are only in the training state.
    ckpt = latest_dir(tmp_path / "full")
    saved = load_file(ckpt / "decoder.safetensors")
    raw = load_train_state(ckpt)["raw_decoder"]
    averaged = {k: v.cpu() for k, v in full.ema["decoder"].module.state_dict().items()}
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)
    # Resumed after epoch 1, the average and the raw weights end where the full run ended.
    train(config(data_dir, epochs=1, val_size=128, ema=0.9), tmp_path / "part")
    resumed = Trainer(cfg, tmp_path / "part", progress=False)
    resumed.resume()
    resumed.fit(log=quiet)
    assert_same_weights(latest_dir(tmp_path / "part"), ckpt)
    raw_resumed = load_train_state(latest_dir(tmp_path / "part"))["raw_decoder"]
    assert all(torch.equal(raw[k], raw_resumed[k]) for k in raw)
    with pytest.raises(TrainingError, match="ema"):
        Trainer(config(data_dir, epochs=3, val_size=128), tmp_path / "part").resume()
    with pytest.raises(TrainingError, match="--ema"):
        Trainer(config(data_dir, ema=1.0), tmp_path / "bad")


# -- resume state validated field by field (issue 13 item 17) ----------------------------------


def _edit_state(run: Path, **fields: object) -> Path:
    path = latest_dir(run) / "train_state.pt"
    state = torch.load(path, weights_only=True)
    state.update(fields)
    torch.save(state, path)
    return path


def _odd_adam_moment(run: Path) -> dict[str, object]:
    state = torch.load(latest_dir(run) / "train_state.pt", weights_only=True)
    optimizer = state["optimizer"]
    optimizer["state"][0]["exp_avg"] = torch.zeros(3)
    return {"optimizer": optimizer}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"optimizer": 5}, "optimizer must be an optimizer state"),
        ({"optimizer": {"state": {}, "param_groups": []}}, "param_groups must be a list of 1"),
        ("odd_moment", r"optimizer\.state\[0\]\['exp_avg'\] must be a tensor of shape"),
        ({"epoch": -5}, "epoch must be an integer >= 0, got -5"),
        ({"epoch": "2"}, "epoch must be an integer >= 0"),
        ({"epoch": 10**30}, "differs from config.json's epoch 2"),
        ({"best_val": "low"}, "best_val must be a number"),
        ({"best_val": math.nan}, "best_val must be a number"),
        ({"history": 5}, "history must be a list"),
        ({"history": [{"epoch": 1}]}, "history holds 1 epochs"),
    ],
)
def test_resume_refuses_a_damaged_state_field(
    run_copy: Path, data_dir: Path, fields: object, match: str
) -> None:
    if fields == "odd_moment":
        fields = _odd_adam_moment(run_copy)
    path = _edit_state(run_copy, **fields)  # type: ignore[arg-type]
    tr = Trainer(config(data_dir, epochs=3), run_copy, progress=False)
    with pytest.raises(CheckpointError, match=match) as err:
        tr.resume()
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_resume_refuses_a_run_already_past_epochs(finished_run: Path, data_dir: Path) -> None:
    """A sound state beyond --epochs would train nothing and exit 0: refused instead."""
    tr = Trainer(config(data_dir, epochs=1), finished_run, progress=False)
    with pytest.raises(TrainingError, match="trained 2 epochs already, more than --epochs 1"):
        tr.resume()


def test_resume_refuses_raw_ema_weights_of_another_shape(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ema"
    train(config(data_dir, epochs=1, ema=0.9), run)
    raw = build_decoder("mlp", 7).state_dict()
    path = _edit_state(run, raw_decoder=raw)
    with pytest.raises(CheckpointError, match=r"raw_decoder.*must be") as err:
        Trainer(config(data_dir, epochs=2, ema=0.9), run, progress=False).resume()
    assert str(err.value).startswith(f"{path}: ")
    _edit_state(run, raw_decoder=build_decoder("mlp", 20).state_dict(), ema_steps=-1)
    with pytest.raises(CheckpointError, match="ema_steps must be an integer >= 0"):
        Trainer(config(data_dir, epochs=2, ema=0.9), run, progress=False).resume()


@pytest.mark.parametrize(
    ("pointer", "match"),
    [
        ({"dir": 5}, r'must hold \{"dir"'),
        ({"epoch": 2}, r'must hold \{"dir"'),
        ({"dir": "../../other-run"}, "must name a checkpoint folder inside"),
        ({"dir": "/tmp/other-run/checkpoints/epoch-0002"}, "must name a checkpoint folder"),
        ({"dir": ".."}, "must name a checkpoint folder"),
        ({"dir": "escape"}, "resolves outside"),
        ({"dir": "epoch-0002", "epoch": "2"}, "epoch must be an integer >= 0"),
    ],
)
def test_resume_refuses_a_latest_pointer_leading_elsewhere(
    run_copy: Path, data_dir: Path, tmp_path: Path, pointer: dict[str, object], match: str
) -> None:
    other = tmp_path / "other-run"
    shutil.copytree(run_copy, other)
    (run_copy / "checkpoints" / "escape").symlink_to(latest_dir(other))
    latest = run_copy / "checkpoints" / "latest.json"
    latest.write_text(json.dumps(pointer))
    tr = Trainer(config(data_dir, epochs=3), run_copy, progress=False)
    with pytest.raises(TrainingError, match=match) as err:
        tr.resume()
    assert str(latest) in str(err.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_runs_repeat_and_resume_bit_for_bit(
    precision: str, data_dir: Path, tmp_path: Path
) -> None:
    """A seeded CUDA run is as reproducible as a CPU one: without deterministic kernels two
    3-epoch runs of one seed differed by 4e-4 in their weights on an H100."""
    kw: dict[str, object] = dict(
        arch="conv", device="cuda", precision=precision, ema=0.9, limit_train=2048
    )
    first = train(config(data_dir, **kw), tmp_path / "a")
    assert first.device.type == "cuda" and torch.are_deterministic_algorithms_enabled()
    train(config(data_dir, **kw), tmp_path / "b")
    assert_same_weights(latest_dir(tmp_path / "a"), latest_dir(tmp_path / "b"))
    train(config(data_dir, epochs=1, **kw), tmp_path / "part")
    tr = Trainer(config(data_dir, **kw), tmp_path / "part", progress=False)
    tr.resume()
    tr.fit(log=quiet)
    assert_same_weights(latest_dir(tmp_path / "part"), latest_dir(tmp_path / "a"))
