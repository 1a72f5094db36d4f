"""Short fine-tuning runs on a tiny dataset made here: the loss falls, checkpoints load and run,
a resumed run is the run that was never stopped, bad inputs are refused before training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from twinvla_ros.cli.main import main as cli
from twinvla_ros.model import TwinVLAPolicy
from twinvla_ros.training.config import TrainConfig
from twinvla_ros.training.data import TrainingBatches, load_dataset_statistics, model_batch
from twinvla_ros.training.trainer import Trainer, initial_model

pytestmark = pytest.mark.slow


class Stop(Exception):
    pass


def held_out_loss(policy, dataset):
    """The loss of a fixed batch under a fixed seed (the same noise and times for every model)."""
    batch = next(TrainingBatches(dataset, horizon=20, batch_size=16, image_size=224, cache_bytes=1e9, seed=999).stream())
    inputs, target, valid = model_batch(policy, batch)
    torch.manual_seed(0)
    with torch.no_grad():
        return float(policy.model.compute_loss(inputs, target, valid_steps=valid))


def weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def log_lines(out):
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(training_dataset, tmp_path_factory):
    config = TrainConfig(steps=40, batch_size=8, learning_rate=1e-3, warmup_ratio=0.1, save_every=20, log_every=1)
    result = Trainer(training_dataset, tmp_path_factory.mktemp("run"), config=config).run()
    model, tokenizer = initial_model("tiny", seed=config.seed, device=torch.device("cpu"))
    untrained = TwinVLAPolicy(model, tokenizer, load_dataset_statistics(training_dataset))
    return result, untrained, config


def test_a_short_run_lowers_the_loss_and_writes_a_loadable_checkpoint(run, training_dataset):
    result, untrained, config = run
    assert result.steps == result.steps_this_run == 40
    policy = TwinVLAPolicy.from_pretrained(result.final)
    before, after = held_out_loss(untrained, training_dataset), held_out_loss(policy, training_dataset)
    assert after < 0.7 * before, (before, after)
    statistics = json.loads((training_dataset / "dataset_statistics.json").read_text())
    assert json.loads((result.final / "dataset_statistics.json").read_text()) == statistics
    batch = next(TrainingBatches(training_dataset, horizon=20, batch_size=1, image_size=224, cache_bytes=1e9).stream())
    chunk = policy.predict(batch.observations[0], seed=0)
    assert chunk.shape == (20, 20) and np.isfinite(chunk).all()
    logged = log_lines(result.out)
    assert [line["step"] for line in logged] == list(range(1, 41))
    peak = max(line["lr"] for line in logged)
    assert peak == pytest.approx(1e-3) and logged[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert (result.out / "loss.png").stat().st_size > 5000
    assert sorted(p.name for p in (result.out / "checkpoints").iterdir()) == ["step_000020", "step_000040"]
    # From a random preset the vision encoder trains too (a random frozen one would leave the policy blind).
    trained, initial = weights(result.final), untrained.model.state_dict()
    vision = [name for name in trained if name.startswith("vision_c.") and name.endswith("weight")]
    assert vision and all(not torch.equal(trained[name], initial[name]) for name in vision)


def test_a_resumed_run_equals_the_run_that_was_never_stopped(run, training_dataset, tmp_path):
    result, _, config = run

    def stop_at_21(step, total, loss):
        if step == 21:
            raise Stop

    with pytest.raises(Stop):
        Trainer(training_dataset, tmp_path, config=config, progress=stop_at_21).run()
    resumed = Trainer(training_dataset, tmp_path, config=config, resume=True)
    assert resumed.resume_step == 20
    again = resumed.run()
    assert again.steps == 40 and again.steps_this_run == 20
    reference, continued = weights(result.final), weights(again.final)
    assert reference.keys() == continued.keys()
    for name in reference:
        torch.testing.assert_close(continued[name], reference[name], rtol=0, atol=1e-6, msg=name)
    by_step = {line["step"]: line for line in log_lines(result.out)}
    for line in log_lines(tmp_path)[-20:]:
        assert line["lr"] == pytest.approx(by_step[line["step"]]["lr"], rel=1e-12)


def test_resuming_with_another_recipe_or_overwriting_a_run_is_refused(run, training_dataset):
    result, _, config = run
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(training_dataset, result.out, config=config)
    other = TrainConfig(**{**config.to_json(), "learning_rate": 5e-4})
    with pytest.raises(ValueError, match="learning_rate: 0.001 at the start, 0.0005 now"):
        Trainer(training_dataset, result.out, config=other, resume=True)


def test_the_cli_trains_and_says_what_is_wrong_with_a_dataset(training_dataset, tmp_path, capsys):
    assert cli(["train", "--dataset", str(training_dataset), "--out", str(tmp_path / "cli"), "--steps", "2",
                "--batch-size", "2", "--log-every", "1"]) == 0
    printed = capsys.readouterr().out
    assert "[train] step 2/2 loss" in printed and "final" in printed
    assert TwinVLAPolicy.from_pretrained(tmp_path / "cli" / "final").horizon == 20
    assert cli(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "none")]) == 1
    assert "not a LeRobot v3.0 dataset" in capsys.readouterr().err
    assert cli(["train", "--dataset", str(training_dataset), "--out", str(tmp_path / "x"), "--steps", "0"]) == 2


def test_a_smaller_image_size_and_fewer_noise_draws_train_and_are_kept(training_dataset, tmp_path, monkeypatch):
    """The CPU recipe's knobs: a preset at 112 px (16 tokens a camera, not 64) and 2 noise draws
    per sample; the checkpoint takes 112 px images, resume applies the draws again."""
    import twinvla_ros.model.modeling_twinvla as modeling

    draws = []
    loss = modeling.flow_matching_loss
    monkeypatch.setattr(modeling, "flow_matching_loss", lambda net, z, rows, diffusion_batch, *args, **kwargs: (
        draws.append(diffusion_batch), loss(net, z, rows, diffusion_batch, *args, **kwargs))[1])
    config = TrainConfig(steps=4, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, save_every=2,
                         diffusion_batch=2, image_size=112)

    def stop_at_3(step, total, loss):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        Trainer(training_dataset, tmp_path / "run", config=config, progress=stop_at_3).run()
    assert draws == [2, 2, 2]
    result = Trainer(training_dataset, tmp_path / "run", config=config, resume=True).run()
    assert result.steps_this_run == 2 and draws == [2] * 5       # steps 3 and 4 again, from the step-2 checkpoint
    policy = TwinVLAPolicy.from_pretrained(result.final)
    assert policy.config.image_size == 112 and policy.config.num_image_tokens == 16
    batch = next(TrainingBatches(training_dataset, horizon=20, batch_size=1, image_size=112, cache_bytes=1e9).stream())
    assert np.isfinite(policy.predict(batch.observations[0], seed=0)).all()
    with pytest.raises(ValueError, match="multiple of 28"):
        Trainer(training_dataset, tmp_path / "bad", config=TrainConfig(image_size=100)).run()
    with pytest.raises(ValueError, match="takes 112 px images"):
        Trainer(training_dataset, tmp_path / "other", init=str(result.final), config=TrainConfig(image_size=224)).run()


def test_fine_tuning_starts_from_a_single_arm_checkpoint(training_dataset, tmp_path):
    """How real fine-tuning starts: the twin built from the single-arm SingleVLA (here a tiny one
    in the published layout) trains and is saved as a twin checkpoint."""
    from single_arm_checkpoints import write_single_arm_checkpoint

    _, single = write_single_arm_checkpoint(tmp_path / "single", with_tokenizer=True)
    config = TrainConfig(steps=2, batch_size=2, learning_rate=1e-12, warmup_ratio=0.0)   # the weights barely move
    result = Trainer(training_dataset, tmp_path / "run", init=str(tmp_path / "single"), config=config).run()
    trained = weights(result.final)
    layer = single["language_model.model.layers.0.mlp.up_proj.weight"]
    for stack in ("backbone_l", "backbone_r"):
        torch.testing.assert_close(trained[f"{stack}.0.mlp.up_proj.weight"], layer, rtol=0, atol=1e-6)
    assert TwinVLAPolicy.from_pretrained(result.final).config.model_type == "TinyTwinVLA"


def test_the_vision_encoder_is_frozen_from_a_checkpoint_and_trained_from_a_random_preset(training_dataset, tmp_path):
    """The reference freezes its pretrained encoder; a random one frozen would leave the policy blind."""
    def frozen(init, choice=None):
        return Trainer(training_dataset, tmp_path / "unused", init=init,
                       config=TrainConfig(freeze_vision=choice)).freeze_vision

    assert frozen("tiny") is False and frozen("tiny-reference") is False
    assert frozen(str(tmp_path / "a_checkpoint")) is True
    assert frozen("tiny", True) is True and frozen(str(tmp_path / "a_checkpoint"), False) is False


def test_two_processes_train_one_model_through_torchrun(training_dataset, tmp_path):
    """What several GPUs or hosts do, on this CPU: torchrun, gloo, DistributedDataParallel."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "twinvla_ros.cli.main", "train",
               "--dataset", str(training_dataset), "--out", str(tmp_path), "--steps", "3", "--batch-size", "2",
               "--log-every", "1", "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("[train] step 3/3") == 1            # rank 0 alone reports
    assert [line["step"] for line in log_lines(tmp_path)] == [1, 2, 3]
    state = torch.load(tmp_path / "checkpoints" / "step_000003" / "training_state.pt", weights_only=False)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0], state["rng"][1])
    TwinVLAPolicy.from_pretrained(tmp_path / "final")
