import dataclasses
import random

import pytest

from nas.arch import ArchSpec
from nas.blocks import BLOCKS
from nas.count import count_macs, count_params
from nas.recipe import Recipe
from nas.space import DEFAULT_SPACE, SpaceError, load_preset, load_space, parse_space, preset_names

MINIMAL = "arch:\n  stages: {int: [1, 2]}\n  blocks: {int: [1, 2]}\n  width: {choice: [8, 16]}\n"


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_spaces_load_and_decode():
    for name in (DEFAULT_SPACE, "tiny", "micro"):
        space = load_space(name)
        rng = random.Random(0)
        for _ in range(300):
            spec, recipe = space.sample(rng)
            assert isinstance(spec, ArchSpec) and isinstance(recipe, Recipe)


def test_default_space_covers_every_dimension():
    space = load_space()
    for key in ("stages", "blocks", "width", "growth", "stem_channels", "stem_kernel", "kernel", "skip_kernel",
                "pool", "block", "expansion", "se", "dropout", "drop_path"):  # fmt: skip
        assert key in space.arch
    assert set(space.arch["block"].dist.choices) == set(BLOCKS) == set(load_space("micro").arch["block"].dist.choices)
    assert set(space.recipe["optimizer"].dist.choices) == {"sgd", "sgd-nesterov", "adam", "adamw", "adadelta", "adagrad",
                                                     "asgd", "rmsprop"}  # fmt: skip
    assert set(space.recipe["lr"]) == set(space.recipe["optimizer"].dist.choices)
    assert set(space.recipe["schedule"].dist.choices) == {"constant", "step", "cosine", "cosine-restarts", "warmup-cosine",
                                                    "onecycle"}  # fmt: skip
    for key in ("crop_padding", "flip", "cutout", "mixup", "cutmix", "rotation", "label_smoothing", "batch_size",
                "momentum", "weight_decay"):  # fmt: skip
        assert key in space.recipe


class Recorder:
    """Stands in for an Optuna trial: records which params were asked, answers with the lowest."""

    def __init__(self):
        self.params = {}

    def __call__(self, name, p):
        self.params[name] = p.lowest() if name != "stages" else p.dist.high
        return self.params[name]


def test_per_stage_and_conditional_params():
    space = load_space()
    pick = Recorder()
    spec, recipe = space.decode(pick)
    n = spec.stages
    assert [f"blocks_{i}" for i in range(n)] == [k for k in pick.params if k.startswith("blocks_")]
    assert recipe.optimizer == "adadelta"  # lowest name alphabetically
    assert "lr_adadelta" in pick.params and "lr_sgd" not in pick.params
    assert "momentum" not in pick.params  # adadelta has no momentum
    assert recipe.schedule == "constant" and "step_every" not in pick.params and "restart_every" not in pick.params


def test_params_rebuild_the_exact_configuration():
    space = load_space()
    rng = random.Random(1)
    for _ in range(200):
        params = {}

        def record(name, p):
            params[name] = p.sample(rng)
            return params[name]

        try:
            config = space.decode(record)
        except ValueError:
            continue
        assert space.from_params(params) == config


def test_channels_follow_width_and_growth():
    spec, _ = load_space().decode(lambda name, p: {"stages": 3, "width": 24, "growth": 1.5}.get(name, p.lowest()))
    assert spec.channels == (24, 40, 56)  # 24, 36 -> 40, 54 -> 56: multiples of 8


@pytest.mark.parametrize("name", [DEFAULT_SPACE, "micro"])
def test_smallest_configuration_bounds_the_space(name):
    space = load_space(name)
    smallest = count_params(space.smallest())
    rng = random.Random(2)
    assert all(count_params(space.sample(rng)[0]) >= smallest for _ in range(2000))
    assert count_params(space.smallest(classes=100)) > smallest


def test_micro_space_is_microcontroller_sized():
    """What fits --budget 100k in the micro space is around MLPerf Tiny's ResNet-8 (78k parameters,
    12.5M MACs): near the budget, a median in the tens of millions of MACs, never a GMAC."""
    space, rng = load_space("micro"), random.Random(3)
    near = sorted(count_macs(s) for s in (space.sample(rng)[0] for _ in range(3000)) if 70_000 <= count_params(s) <= 100_000)
    assert len(near) > 100
    assert 10e6 < near[len(near) // 2] < 40e6 and near[-1] < 200e6
    assert set(space.recipe["optimizer"].dist.choices) == {"sgd", "sgd-nesterov", "adam", "adamw"}


def test_micro_arch_searches_micro_architectures_under_resnet8_recipe():
    """The tiny CIFAR-10 experiment compares its winner with the preset like with like: micro-arch
    samples micro's dense-block architectures and trains each with exactly the preset's recipe (but
    its length)."""
    arch_only, micro, rng = load_space("micro-arch"), load_space("micro"), random.Random(4)
    _, _, preset = load_preset("mlperf-tiny-resnet8")
    for _ in range(50):
        spec, recipe = arch_only.sample(rng)
        assert recipe == dataclasses.replace(preset, epochs=arch_only.recipe["epochs"])
        assert spec.block in micro.arch["block"].dist.choices and 2 <= len(spec.blocks) <= 4
    shared = set(arch_only.arch) - {"block"}
    assert {k: arch_only.arch[k] for k in shared} == {k: micro.arch[k] for k in shared}
    assert set(arch_only.arch["block"].dist.choices) == {"basic", "preact"}  # dense convolutions: fast on a CPU


@pytest.mark.parametrize("block,reads,skips", [("basic", ["skip_kernel"], ["expansion"]),
                                               ("bottleneck", ["skip_kernel", "expansion"], []),
                                               ("mbconv", ["expansion"], ["skip_kernel"])])  # fmt: skip
def test_block_fields_are_sampled_only_for_blocks_that_read_them(block, reads, skips):
    pick = Recorder()
    spec, _ = load_space().decode(lambda name, p: block if name == "block" else pick(name, p))
    assert spec.block == block
    assert all(k in pick.params for k in reads) and not any(k in pick.params for k in skips)
    assert (spec.expansion is None) == ("expansion" in skips)


def test_a_block_field_no_block_of_the_space_reads_is_a_mistake(tmp_path):
    path = write(tmp_path, MINIMAL + "  block: basic\n  expansion: {choice: [2, 4]}\n")
    with pytest.raises(SpaceError, match=r"arch.expansion: no block of this space reads it \(basic\)"):
        load_space(path)
    path = write(tmp_path, MINIMAL + "  block: mbconv\n  skip_kernel: 3\n")
    with pytest.raises(SpaceError, match="arch.skip_kernel: no block of this space reads it"):
        load_space(path)


def test_trials_of_older_studies_rebuild_exactly():
    """Params and space texts stored by nas before the block registry (tests/data, made with that
    code) decode to the very ArchSpec and Recipe dicts it stored, --fill-budget trials included:
    what `nas retrain` compares before retraining an old study's trial."""
    import json
    from pathlib import Path

    from nas.count import fit_width
    from nas.space import parse_space

    old = json.loads((Path(__file__).parent / "data" / "trials_before_block_registry.json").read_text())
    spaces = {name: parse_space(text, Path(f"{name}.yaml")) for name, text in old["spaces"].items()}
    assert len(old["trials"]) >= 30 and any(t["fill_budget"] for t in old["trials"])
    for t in old["trials"]:
        spec, recipe = spaces[t["space"]].from_params(t["params"])
        if t["fill_budget"]:
            spec = fit_width(spec, t["fill_budget"])
        assert spec.to_dict() == t["arch"] and recipe.to_dict() == t["recipe"]


def test_presets_load_and_match_published_counts():
    names = preset_names()
    assert {"resnet18", "resnet24", "resnet12-k5"} <= set(names) and len(names) >= 6
    counts = {name: count_params(load_preset(name)[1]) for name in names}
    assert counts["resnet18"] == 11_173_962 and counts["resnet24"] == 4_918_602
    assert counts["resnet12-k5"] == 4_980_298
    assert counts["mlperf-tiny-resnet8"] == 78_042 and counts["resnet20"] == 272_474  # 78.7k and 0.27M published
    small = {"mlperf-tiny-resnet8", "resnet20"}
    assert all(c <= 5_000_000 for n, c in counts.items() if n != "resnet18" and n not in small)
    _, resnet8, _ = load_preset("mlperf-tiny-resnet8")
    assert count_macs(resnet8) == 12_501_632 and resnet8.skip_kernel == 1 and resnet8.stem_channels == 16
    name, spec, recipe = load_preset("resnet24")
    assert recipe.schedule == "cosine-restarts" and recipe.restart_every == 50 and recipe.cutout == 8
    assert recipe.lr == 0.01 and recipe.batch_size == 128


@pytest.mark.parametrize(
    "text,where,message",
    [
        (MINIMAL + "  colour: red\n", "arch.colour", "unknown key"),
        (MINIMAL + "recipe:\n  optimiser: sgd\n", "recipe.optimiser", "unknown key"),
        (MINIMAL + "  kernel: {choice: []}\n", "arch.kernel", "non-empty list"),
        (MINIMAL + "  dropout: {float: [0.3, 0.1]}\n", "arch.dropout", "`low <= high` must hold"),
        (MINIMAL + "  kernel: {choice: [3, '5']}\n", "arch.kernel", "expected an integer"),
        (MINIMAL + "  kernel: {choice: [3, 4]}\n", "arch.kernel", "odd"),
        (MINIMAL + "  stem_kernel: {float: [3, 5]}\n", "arch.stem_kernel", "does not fit"),
        (MINIMAL + "  se: {int: [0, 8], lg: true}\n", "arch.se", "unknown distribution key 'lg'"),
        (MINIMAL + "  se: {int: [0, 8], log: true}\n", "arch.se", "`low >= 1` must hold for `log=True`"),
        (MINIMAL + "recipe:\n  lr: {float: [0.01, 0.2], log: true, step: 1}\n", "recipe.lr", "`step` is not supported"),
        (MINIMAL + "  stem_channels: {int: [8, 64], log: true, step: 8}\n", "arch.stem_channels", "Optuna refuses"),
        (MINIMAL + "  dropout: {float: [0.0, 0.3], step: 0.2}\n", "arch.dropout", "write [0.0, 0.2]"),
        (MINIMAL + "  se: {int: [0, 8], step: 0}\n", "arch.se", "`step > 0` must hold"),
        (MINIMAL + "recipe:\n  lr: {adam: {float: [0.1, 0.01]}}\n  optimizer: adam\n", "recipe.lr.adam", "low <= high"),
        (MINIMAL + "recipe:\n  optimizer: {choice: [sgd, lamb]}\n", "recipe.optimizer", "must be one of"),
        (MINIMAL + "recipe:\n  lr: {sgd: 0.1, lion: 0.1}\n", "recipe.lr.lion", "unknown optimizer"),
        (MINIMAL + "recipe:\n  optimizer: {choice: [sgd, adam]}\n  lr: {sgd: 0.1}\n", "recipe.lr", "'adam'"),
        (MINIMAL + "recipe:\n  batch_size: 12.5\n", "recipe.batch_size", "expected an integer"),
        (MINIMAL + "recipe:\n  flip: {choice: [yes, 1]}\n", "recipe.flip", "true or false"),
        (MINIMAL + "  kernel: [3, 5]\n", "arch.kernel", "not a value here"),
        ("arch:\n  stages: 2\n  blocks: 1\n", "arch", "either 'channels'"),
        ("arch:\n  stages: 2\n  width: 8\n", "arch", "needs 'blocks'"),
        ("arch: [1, 2]\n", "arch", "mapping"),
        ("searh:\n  x: 1\n", "searh", "unknown section"),
        ("arch:\n  stages: {int: [1, 2]\n", "line", "not valid YAML"),
    ],
)
def test_loader_rejects_bad_files_naming_file_and_key(tmp_path, text, where, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as e:
        load_space(path)
    assert str(path) in str(e.value) and where in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_space_with_no_valid_configuration_is_rejected(tmp_path):
    path = write(tmp_path, "arch:\n  stages: 1\n  blocks: 1\n  width: 8\n  pool: 3\n")
    with pytest.raises(SpaceError, match="no configuration"):
        load_space(path)


def test_spaces_resolve_by_name_or_checkout_path_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_space("tiny").path == load_space("search_spaces/tiny.yaml").path
    assert load_preset("resnet24")[0] == "resnet24"


def test_unknown_space_name_lists_the_known_ones():
    with pytest.raises(SpaceError, match="resnet_cifar"):
        load_space("no-such-space")


def test_bad_preset_names_file_and_key(tmp_path):
    path = write(tmp_path, "arch:\n  blocks: [1]\n  channels: [8]\n  widht: 3\n", "p.yaml")
    with pytest.raises(SpaceError, match=r"p\.yaml: unknown architecture key 'widht'"):
        load_preset(path)


def test_every_mistake_of_a_file_is_reported_at_once(tmp_path):
    path = write(tmp_path, MINIMAL + "  kernel: {choice: [3, 4]}\n  colour: red\n  dropout: {float: [0.0, 0.2], log: true}\n"
                 "recipe:\n  optimiser: sgd\n  lr: {float: [0.01, 0.2], log: true, step: 1}\n")  # fmt: skip
    with pytest.raises(SpaceError) as e:
        load_space(path)
    text = str(e.value)
    lines = text.splitlines()  # each mistake on its own line
    assert lines[0] == f"{path}: 5 mistakes:" and lines[1].startswith("  (1) arch.kernel") and len(lines) == 6
    for line, where in zip(lines[1:], ("arch.kernel: 4", "arch.colour: unknown key", "arch.dropout: Optuna refuses",
                                       "recipe.optimiser", "recipe.lr: Optuna refuses")):  # fmt: skip
        assert where in line
    assert "did you mean 'optimizer'?" in lines[4]


def test_a_misspelt_key_or_distribution_gets_a_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + "  kernel: {choise: [3, 5]}\n")
    with pytest.raises(SpaceError, match=r"arch\.kernel: unknown distribution key 'choise'; did you mean 'choice'\?"):
        load_space(path)


def test_distributions_are_optunas_own(tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = load_space(write(tmp_path, MINIMAL + "  se: {choice: [0, 4]}\n  dropout: {float: [0.0, 0.3], step: 0.1}\n"))
    assert space.arch["stages"].dist == IntDistribution(1, 2)
    assert space.arch["se"].dist == CategoricalDistribution([0, 4])
    assert space.arch["dropout"].dist == FloatDistribution(0.0, 0.3, step=0.1)


def test_lr_default_is_each_optimizers_registered_range(tmp_path):
    from nas.recipe import OPTIMIZERS

    text = MINIMAL + "recipe:\n  optimizer: {choice: [sgd, adam]}\n  lr: default\n"
    space = load_space(write(tmp_path, text))
    for opt in ("sgd", "adam"):
        d = space.recipe["lr"][opt].dist
        assert (d.low, d.high, d.log) == (*OPTIMIZERS[opt].lr, True)
    space = load_space(write(tmp_path, MINIMAL + "recipe:\n  optimizer: {choice: [sgd, adam]}\n  lr: {sgd: 0.1, adam: default}\n"))
    assert space.recipe["lr"]["sgd"] == 0.1 and space.recipe["lr"]["adam"].dist.high == OPTIMIZERS["adam"].lr[1]
    _, recipe = space.decode(lambda name, p: p.lowest(), classes=10)
    assert recipe.optimizer == "adam" and recipe.lr == OPTIMIZERS["adam"].lr[0]


def test_width_multiple_is_a_property_of_the_space_and_8_by_default(tmp_path):
    from nas.count import fit_width

    text = "arch:\n  stages: 3\n  blocks: 1\n  width: 12\n  growth: 1.5\n  stem_channels: 12\nrecipe: {}\n"
    default = parse_space(text, tmp_path / "s.yaml")
    assert default.width_multiple == 8 and default.sample(random.Random(0))[0].channels == (16, 16, 24)
    fine = parse_space(text.replace("arch:\n", "arch:\n  width_multiple: 1\n"), tmp_path / "s.yaml")
    spec = fine.sample(random.Random(0))[0]
    assert spec.channels == (12, 18, 27)  # 12 * 1.5**i, rounded half up to whole channels
    assert fit_width(spec, 20_000, multiple=1).channels != fit_width(spec, 20_000).channels
    assert all(c % 8 == 0 for c in fit_width(spec, 20_000).channels)
    with pytest.raises(SpaceError, match="width_multiple: a fixed value"):
        parse_space(text.replace("arch:\n", "arch:\n  width_multiple: {choice: [1, 8]}\n"), tmp_path / "s.yaml")
    with pytest.raises(SpaceError, match="width_multiple"):
        parse_space(text.replace("arch:\n", "arch:\n  width_multiple: 0\n"), tmp_path / "s.yaml")


def test_the_largest_batch_of_a_space_is_what_a_gpu_must_hold_the_data_for(tmp_path):
    recipe = {"{choice: [64, 512, 128]}": 512, "{int: [32, 96], step: 32}": 96, "200": 200}
    for entry, largest in recipe.items():
        assert load_space(write(tmp_path, MINIMAL + f"recipe:\n  batch_size: {entry}\n")).largest_batch() == largest
    assert load_space(write(tmp_path, MINIMAL)).largest_batch() == Recipe.batch_size  # the recipe's default
