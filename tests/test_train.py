import math

import pytest

from nas.arch import ArchSpec
from nas.data import synthetic, validation_split
from nas.recipe import OPTIMIZERS, SCHEDULES, Recipe
from nas.train import FitResult, fit, lr_factor


@pytest.fixture(scope="module")
def split():
    return validation_split(synthetic(600), val_size=100)


SPEC = ArchSpec(blocks=[1, 1], channels=[8, 16])


def strip(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_a_small_net_learns_synthetic_data(split):
    result = fit(SPEC, Recipe(epochs=5, batch_size=25, lr=0.05, schedule="onecycle"), split)
    assert result.status == "complete" and len(result.history) == 5
    assert result.final["val_acc"] > 0.35  # chance is 0.1; seeds 0-3 give 0.52-0.72
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert set(result.final) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                                 "train_seconds"}


def test_on_epoch_sees_every_epoch_and_can_stop_the_run(split):
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics["val_acc"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(SPEC, Recipe(epochs=5, batch_size=100), split, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]


def test_resume_after_an_interruption_gives_the_same_history(split, tmp_path):
    recipe = Recipe(epochs=4, batch_size=50, lr=0.05, schedule="cosine-restarts", restart_every=2,
                    mixup=0.2, cutmix=1.0, cutout=4, seed=3)  # fmt: skip
    spec = ArchSpec(blocks=[1, 1], channels=[8, 16], dropout=0.1, drop_path=0.1)
    straight = fit(spec, recipe, split)

    class Killed(Exception):
        pass

    def kill_after_2(epoch, _):
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        fit(spec, recipe, split, checkpoint=ckpt, checkpoint_every=1, on_epoch=kill_after_2)
    resumed = fit(spec, recipe, split, checkpoint=ckpt, checkpoint_every=1, resume=True)
    assert strip(resumed.history) == strip(straight.history)
    assert not list(tmp_path.glob("*.tmp*"))  # writes were atomic: no temp files left


def test_resume_refuses_a_checkpoint_of_another_run(split, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    fit(SPEC, Recipe(epochs=1, batch_size=100), split, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another architecture or recipe"):
        fit(SPEC, Recipe(epochs=2, batch_size=100), split, checkpoint=ckpt, resume=True)


def test_nan_loss_ends_the_run_with_a_status(split):
    result = fit(SPEC, Recipe(epochs=3, batch_size=50, lr=1e30, schedule="constant", momentum=0.0), split)
    assert isinstance(result, FitResult) and result.status == "nan"
    assert "loss became" in result.message and len(result.history) == 1


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(split, optimizer):
    lr = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adadelta": 1.0, "adagrad": 0.01}.get(optimizer, 0.05)
    result = fit(SPEC, Recipe(optimizer=optimizer, lr=lr, epochs=1, batch_size=100, decay_norm_bias=False), split)
    assert result.status == "complete" and math.isfinite(result.final["train_loss"])


def test_schedules_have_their_shapes():
    at = lambda sched, t, **kw: lr_factor(Recipe(schedule=sched, epochs=100, **kw), t)  # noqa: E731
    assert at("constant", 50) == 1.0
    assert at("step", 29.9, step_every=30, gamma=0.2) == 1.0 and at("step", 61, step_every=30, gamma=0.2) == pytest.approx(0.04)
    assert at("cosine", 0) == 1.0 and at("cosine", 50) == pytest.approx(0.5) and at("cosine", 100) == pytest.approx(0.0)
    assert at("cosine-restarts", 49.9, restart_every=50) < 0.01 and at("cosine-restarts", 50, restart_every=50) == 1.0
    assert at("cosine-restarts", 50, restart_every=50, restart_decay=0.5) == 0.5
    assert at("warmup-cosine", 2.5, warmup_epochs=5) == 0.5 and at("warmup-cosine", 5, warmup_epochs=5) == 1.0
    assert at("onecycle", 0) == pytest.approx(0.04) and at("onecycle", 25) == pytest.approx(1.0) and at("onecycle", 100) == 0.0
    assert set(SCHEDULES) == {"constant", "step", "cosine", "cosine-restarts", "warmup-cosine", "onecycle"}


def test_compressed_recipe_keeps_the_schedule_shape():
    full = Recipe(schedule="cosine-restarts", restart_every=50, epochs=200, warmup_epochs=8, step_every=60)
    short = full.compressed(4)
    assert short.epochs == 4 and short.restart_every == 1.0 and short.step_every == pytest.approx(1.2)
    for frac in (0.1, 0.3, 0.6, 0.99):
        assert lr_factor(short, 4 * frac) == pytest.approx(lr_factor(full, 200 * frac))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(optimizer="lamb"), "optimizer must be one of"),
        (dict(schedule="linear"), "schedule must be one of"),
        (dict(lr=0), "lr must be positive"),
        (dict(batch_size=12.5), "batch_size must be an integer"),
        (dict(momentum=1.2), "momentum"),
        (dict(optimizer="sgd-nesterov", momentum=0), "needs a momentum"),
        (dict(flip="yes"), "true or false"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(mixup=-1), "cannot be negative"),
    ],
)
def test_bad_recipe_gives_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        Recipe(**kwargs)
    assert "\n" not in str(e.value)


def test_recipe_dict_round_trip_and_unknown_key():
    r = Recipe(optimizer="adamw", lr=3e-4, cutout=8, mixup=0.2)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown recipe key 'learning_rate'"):
        Recipe.from_dict({"learning_rate": 0.1})


def test_data_must_fit_the_architecture(split):
    with pytest.raises(ValueError, match="expects 100 classes"):
        fit(ArchSpec(blocks=[1], channels=[8], classes=100), Recipe(epochs=1), split)
