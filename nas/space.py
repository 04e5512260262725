"""Search spaces and presets: load and validate `search_spaces/*.yaml`, decode sampled values into
an (`ArchSpec`, `Recipe`) pair.

A space file has two sections, `arch` and `recipe`. Each entry is a fixed value or a distribution:

    {choice: [a, b, ...]}                       categorical
    {int: [low, high], step: 1, log: false}     integer range (inclusive)
    {float: [low, high], step: null, log: false}

Each distribution is built as Optuna's own (Categorical/Int/FloatDistribution) while the file is
parsed, so what Optuna would refuse in every trial is refused at load time, naming file and key;
every mistake of a file is reported at once.

`arch` speaks ArchSpec's vocabulary plus `stages` (N), `width` and `growth` (stage i has
width * growth**i channels rounded to a multiple of `width_multiple`, 8 unless the file says
otherwise; or give `channels` per stage instead). `width_multiple` (a fixed value) is also the step
of `--fill-budget` and of a preset scaled to a budget: GPUs like 8, a microcontroller takes 1. `blocks` and `channels`
are sampled once per stage (trial params `blocks_0` ... `blocks_{N-1}`): conditional on N.
`recipe` speaks Recipe's vocabulary; `lr` may map each optimizer to its own range (params `lr_sgd`,
`lr_adam`, ...; `default` is the optimizer's registered range, and `lr: default` gives every
optimizer its own), and fields that only matter for some optimizers or schedules (momentum,
step_every, restart_every, warmup_epochs, ...) are sampled only where they matter.

A preset file is the degenerate case with no distributions: `arch` and `recipe` hold ArchSpec and
Recipe fields directly (`blocks: [3, 5, 3]`, `channels: [64, 128, 256]`).
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from nas.arch import WIDTH_MULTIPLE, ArchSpec, round_width
from nas.blocks import BLOCK_FIELDS, BLOCKS, block_reads
from nas.errors import NasError
from nas.recipe import OPTIMIZERS, Recipe, field_used

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_SPACE = SPACES_DIR / "resnet_cifar.yaml"

# Type of each arch key a space may set. classes, image_size and in_channels come from the dataset.
# Keys only some blocks read (nas.blocks: expansion) are sampled only for those blocks.
ARCH_KEYS: dict[str, Any] = {
    "stages": int, "blocks": int, "width": int, "growth": float, "channels": int,
    "stem_channels": int, "stem_kernel": int, "kernel": int, "skip_kernel": int,
    "pool": "pool", "block": str, **{name: int for name in sorted(BLOCK_FIELDS)},
    "se": int, "dropout": float, "drop_path": float, "width_multiple": int,
}  # fmt: skip
NOT_SPEC = ("stages", "width", "growth", "width_multiple")  # keys that shape the decoding, not ArchSpec fields
PER_STAGE = ("blocks", "channels")
RECIPE_KEYS: dict[str, Any] = {f.name: type(f.default) for f in fields(Recipe)}
# Keys whose every value is tried when bounding the space's smallest count from below: the count is
# monotone in all other keys, but not in these (fewer stages enlarge a non-global pool's head; a
# larger expansion narrows a bottleneck but widens an mbconv).
NON_MONOTONE = ("stages", "pool", "block", "se", *sorted(BLOCK_FIELDS))


@dataclass(frozen=True)
class Param:
    """A searched value: the Optuna distribution its YAML entry describes, built (and so validated
    by Optuna) when the file is parsed."""

    dist: BaseDistribution

    def sample(self, rng: random.Random) -> Any:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return rng.choice(d.choices)
        if d.log:
            v = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
            return min(d.high, max(d.low, round(v))) if isinstance(d, IntDistribution) else v
        if d.step:
            return type(d.low)(d.low + d.step * rng.randint(0, int((d.high - d.low) // d.step)))
        return rng.uniform(d.low, d.high)

    def suggest(self, trial: Any, name: str) -> Any:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)

    def candidates(self) -> tuple[Any, ...]:
        """Every value (choices and integer ranges only)."""
        d = self.dist
        return d.choices if isinstance(d, CategoricalDistribution) else tuple(range(d.low, d.high + 1, d.step))

    def lowest(self) -> Any:
        d = self.dist
        if not isinstance(d, CategoricalDistribution):
            return d.low
        try:
            return min(d.choices)
        except TypeError:  # mixed kinds, e.g. pool: [global, 2]; such keys are enumerated anyway
            return d.choices[0]


Pick = Callable[[str, Param], Any]  # (trial-param name, distribution) -> value


class SpaceError(NasError):
    """A space or preset file that cannot be used; the message names the file and the key."""


def unknown_key(where: str, key: str, known, what: str = "key") -> str:
    """'arch.chanels: unknown key; did you mean 'channels'? (known: ...)'."""
    import difflib

    close = difflib.get_close_matches(str(key), list(known), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"{where}: unknown {what} {key!r}; {guess}(known: {', '.join(known)})."


@dataclass(frozen=True)
class Space:
    path: Path
    text: str  # the file's content, stored on the study so a search can be reproduced
    arch: dict[str, Any]  # key -> fixed value or Param
    recipe: dict[str, Any]  # key -> fixed value or Param (lr: also {optimizer: value or Param})

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def width_multiple(self) -> int:
        return self.arch.get("width_multiple", WIDTH_MULTIPLE)

    def decode(self, pick: Pick, classes: int = 10, image_size: int = 32, in_channels: int = 3) -> tuple[ArchSpec, Recipe]:
        """The (ArchSpec, Recipe) for the values `pick` chooses. `pick` is called once per trial
        param, in a fixed order, only for params this configuration uses. Raises NasError when
        the chosen values make an impossible spec (say, a pool that does not divide the map)."""

        def get(key: str, name: str | None = None, entry: Any = None) -> Any:
            entry = self.arch[key] if entry is None else entry
            return pick(name or key, entry) if isinstance(entry, Param) else entry

        a = self.arch
        n = get("stages")
        spec: dict[str, Any] = {"classes": classes, "image_size": image_size, "in_channels": in_channels}
        for key in PER_STAGE:
            if key in a:
                entry = a[key]
                if isinstance(entry, list):
                    if len(entry) < n:
                        raise SpaceError(f"{key} lists {len(entry)} stages but the space allows {n}.")
                    spec[key] = entry[:n]
                else:
                    spec[key] = [get(key, f"{key}_{i}", entry) for i in range(n)]
        if "channels" not in spec:
            width, growth = get("width"), get("growth") if "growth" in a else 2.0
            spec["channels"] = [round_width(width * growth**i, self.width_multiple) for i in range(n)]
        spec["block"] = get("block") if "block" in a else ArchSpec.block  # first: it decides what else is read
        for key in ARCH_KEYS:
            if key not in (*NOT_SPEC, "block", *PER_STAGE) and key in a and block_reads(spec["block"], key):
                spec[key] = get(key)

        chosen: dict[str, Any] = {}
        for key in RECIPE_KEYS:  # declaration order: what decides a conditional field comes first
            if key not in self.recipe or not field_used(key, chosen):
                continue
            entry = self.recipe[key]
            if key == "lr" and isinstance(entry, dict):
                opt = chosen.get("optimizer", Recipe.optimizer)
                entry, name = entry[opt], f"lr_{opt}"
            else:
                name = key
            chosen[key] = pick(name, entry) if isinstance(entry, Param) else entry
        return ArchSpec.from_dict(spec), Recipe.from_dict(chosen)

    def sample(self, rng: random.Random, **data: int) -> tuple[ArchSpec, Recipe]:
        return self.decode(lambda _name, p: p.sample(rng), **data)

    def from_params(self, params: dict[str, Any], **data: int) -> tuple[ArchSpec, Recipe]:
        """Rebuild the exact configuration of a trial from its params."""
        return self.decode(lambda name, _p: params[name], **data)

    def largest_batch(self) -> int:
        """The largest batch size a trial of this space trains with: what a GPU must hold the data for."""
        entry = self.recipe.get("batch_size", Recipe.batch_size)
        if not isinstance(entry, Param):
            return entry
        return max(entry.dist.choices) if isinstance(entry.dist, CategoricalDistribution) else entry.dist.high

    def smallest(self, measure: Callable[[ArchSpec], int] | None = None, **data: int) -> ArchSpec:
        """The configuration with the fewest parameters, or the least of `measure` (count_macs):
        every value of the non-monotone keys is tried, every other key takes its lowest value, as
        both counts grow with every other key. A limit below its figure is impossible."""
        from nas.count import count_params

        measure = measure or count_params
        params = [(k, v) for k, v in self.arch.items() if k in NON_MONOTONE and isinstance(v, Param)]
        best = None
        for combo in itertools.product(*(p.candidates() for _, p in params)):
            fixed = dict(zip((k for k, _ in params), combo))
            pick = lambda name, p: fixed.get(name, p.lowest())  # noqa: E731
            try:
                spec, _ = self.decode(pick, **data)
            except NasError:
                continue
            if best is None or measure(spec) < measure(best):
                best = spec
        if best is None:
            raise SpaceError(f"{self.path}: no configuration of this space is a valid architecture for {data}.")
        return best


def resolve(name_or_path: str | Path, folder: Path = SPACES_DIR) -> Path:
    """A path as given if it exists; else relative to the checkout (`search_spaces/tiny.yaml` from
    any folder); else `folder/<name>.yaml` (so `--space tiny` works)."""
    p = Path(name_or_path)
    for candidate in (p, SPACES_DIR.parent / p, folder / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(f.stem for f in folder.glob("*.yaml")))
    raise SpaceError(f"no such file {str(name_or_path)!r} (names in {folder}: {known}).")


def load_space(name_or_path: str | Path = DEFAULT_SPACE) -> Space:
    path = resolve(name_or_path)
    return parse_space(_read(path), path)


def parse_space(text: str, path: Path) -> Space:
    """A space from YAML text; `path` names it in messages (a study keeps the text it searched).
    Every mistake in the file is reported at once, each with its key."""
    doc = _parse_yaml(text, path)
    arch_raw, recipe_raw = _sections(path, doc)
    mistakes: list[str] = []

    def parsed(section: dict[str, Any], key: str, parse: Callable[[], Any]) -> None:
        try:
            section[key] = parse()
        except SpaceError as e:
            mistakes.append(str(e))

    arch: dict[str, Any] = {}
    for key, raw in arch_raw.items():
        if key not in ARCH_KEYS:
            mistakes.append(unknown_key(f"arch.{key}", key, ARCH_KEYS))
            continue
        parsed(arch, key, lambda: _checked(f"arch.{key}", key, _parse(f"arch.{key}", raw, ARCH_KEYS[key],
                                                                      allow_list=key in PER_STAGE), _arch_probe))  # fmt: skip
    if isinstance(arch.get("width_multiple"), Param):
        mistakes.append("arch.width_multiple: a fixed value, not a distribution (it decides how every width rounds).")
    mistakes += [f"arch: a space needs '{key}'." for key in ("stages", "blocks") if key not in arch_raw]
    if ("channels" in arch_raw) == ("width" in arch_raw):
        mistakes.append("arch: give either 'channels' (per stage) or 'width' (with optional 'growth').")
    if "growth" in arch_raw and "width" not in arch_raw:
        mistakes.append("arch.growth: 'growth' needs 'width'.")

    recipe: dict[str, Any] = {}
    for key, raw in recipe_raw.items():
        if key not in RECIPE_KEYS:
            mistakes.append(unknown_key(f"recipe.{key}", key, RECIPE_KEYS))
        elif key == "lr" and raw == "default":
            continue  # once the optimizers are known, below
        elif key == "lr" and isinstance(raw, dict) and not {"choice", "int", "float"} & set(raw):
            parsed(recipe, key, lambda: _parse_lr_per_optimizer(raw))
        else:
            parsed(recipe, key, lambda: _checked(f"recipe.{key}", key, _parse(f"recipe.{key}", raw, RECIPE_KEYS[key]),
                                                 _recipe_probe))  # fmt: skip
    opts = recipe.get("optimizer", Recipe.optimizer)
    opts = opts.dist.choices if isinstance(opts, Param) else (opts,)
    if recipe_raw.get("lr") == "default":
        parsed(recipe, "lr", lambda: _parse_lr_per_optimizer(dict.fromkeys(opts, "default")))
    if isinstance(recipe.get("lr"), dict) and ("optimizer" in recipe or "optimizer" not in recipe_raw):
        mistakes += [f"recipe.lr: no learning rate for optimizer {o!r}." for o in opts if o not in recipe["lr"]]
    block = arch.get("block", ArchSpec.block)
    blocks = [b for b in (block.dist.choices if isinstance(block, Param) else (block,)) if b in BLOCKS]
    mistakes += [f"arch.{key}: no block of this space reads it ({', '.join(blocks)})." for key in arch
                 if key not in NOT_SPEC and blocks and not any(block_reads(b, key) for b in blocks)]  # fmt: skip
    if mistakes:
        if len(mistakes) == 1:
            raise SpaceError(f"{path}: {mistakes[0]}")
        raise SpaceError(f"{path}: {len(mistakes)} mistakes:" + "".join(f"\n  ({i}) {m}" for i, m in enumerate(mistakes, 1)))
    space = Space(path=path, text=text, arch=arch, recipe=recipe)
    space.smallest()  # fails now, naming the file, if no configuration is valid
    return space


def load_preset(name_or_path: str | Path) -> tuple[str, ArchSpec, Recipe]:
    """(name, spec, recipe) of a preset from `search_spaces/presets/` or a path. The spec is for
    10-class 32px images unless the file says otherwise; callers adapt it to their dataset."""
    path, arch_raw, recipe_raw = _preset_sections(name_or_path)
    arch_raw = {k: v for k, v in arch_raw.items() if k != "width_multiple"}
    try:
        return path.stem, ArchSpec.from_dict(arch_raw), Recipe.from_dict(recipe_raw)
    except NasError as e:
        raise SpaceError(f"{path}: {e}") from None


def preset_width_multiple(name_or_path: str | Path) -> int:
    """What a preset's widths round to when it is scaled to a budget (`width_multiple`, default 8)."""
    path, arch_raw, _ = _preset_sections(name_or_path)
    multiple = arch_raw.get("width_multiple", WIDTH_MULTIPLE)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise SpaceError(f"{path}: arch.width_multiple: expected a positive integer, got {multiple!r}.")
    return multiple


def _preset_sections(name_or_path: str | Path) -> tuple[Path, dict, dict]:
    path = resolve(name_or_path, SPACES_DIR / "presets")
    arch_raw, recipe_raw = _sections(path, _parse_yaml(_read(path), path))
    return path, arch_raw, recipe_raw


def preset_names() -> list[str]:
    return sorted(p.stem for p in (SPACES_DIR / "presets").glob("*.yaml"))


# ---------------------------------------------------------------------------------------- parsing


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                         f"save it as UTF-8.") from None  # fmt: skip
    except OSError as e:
        raise SpaceError(f"{path}: cannot be read: {e.strerror or e}.") from None


def _parse_yaml(text: str, path: Path) -> Any:
    """Safe-loaded YAML, refused before it is built where aliases would expand it beyond any space
    file's size: a few hundred bytes of nested aliases ("billion laughs") expand to gigabytes."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expanded_size(node, path)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}.") from None
    except RecursionError:
        raise SpaceError(f"{path}: values nested too deeply to be a space file.") from None
    finally:
        loader.dispose()


MAX_YAML_NODES = 100_000  # values and keys once aliases are expanded; the largest space file has a few hundred


def _check_expanded_size(root: yaml.Node, path: Path) -> None:
    sizes: dict[int, int] = {}  # id(node) -> expanded size: each aliased node is measured once

    def size(node: yaml.Node, inside: frozenset[int]) -> int:
        if id(node) in inside:
            raise SpaceError(f"{path}: an alias refers to the value that contains it; a space file cannot be recursive.")
        if id(node) not in sizes:
            children = ([n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode)
                        else node.value if isinstance(node, yaml.SequenceNode) else [])  # fmt: skip
            sizes[id(node)] = 1 + sum(size(c, inside | {id(node)}) for c in children)
        return sizes[id(node)]

    if size(root, frozenset()) > MAX_YAML_NODES:
        raise SpaceError(f"{path}: its aliases expand to more than {MAX_YAML_NODES:,} values; a space file needs a "
                         f"few hundred: write the values out, or alias less.")  # fmt: skip


def _sections(path: Path, doc: Any) -> tuple[dict, dict]:
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: expected a mapping with 'arch' and 'recipe' sections.")
    unknown = sorted(set(doc) - {"arch", "recipe", "description"})
    if unknown:
        raise SpaceError(f"{path}: {unknown[0]}: unknown section; a file has 'arch', 'recipe' and 'description'.")
    sections = []
    for name in ("arch", "recipe"):
        section = doc.get(name) or {}
        if not isinstance(section, dict):
            raise SpaceError(f"{path}: {name}: expected a mapping of keys to values.")
        sections.append(section)
    return sections[0], sections[1]


def _parse(where: str, raw: Any, kind: Any, allow_list: bool = False) -> Any:
    """A fixed value or a Param, type-checked against `kind` (int, float, str, bool or 'pool')."""
    if isinstance(raw, dict):
        dist = [k for k in ("choice", "int", "float") if k in raw]
        if not dist and set(raw) - {"step", "log"}:  # a misspelt kind: `choise:`
            raise SpaceError(unknown_key(where, sorted(set(raw) - {"step", "log"})[0], ("choice", "int", "float", "step", "log"),
                                         "distribution key"))  # fmt: skip
        if len(dist) != 1:
            raise SpaceError(f"{where}: a distribution has exactly one of 'choice', 'int' or 'float'.")
        extra = sorted(set(raw) - {dist[0], "step", "log"})
        if extra:
            raise SpaceError(f"{where}: unknown distribution key {extra[0]!r} (allowed: step, log).")
        if dist[0] == "choice":
            values = raw["choice"]
            if set(raw) != {"choice"}:
                raise SpaceError(f"{where}: 'step' and 'log' apply to ranges, not to a choice.")
            if not isinstance(values, list) or not values:
                raise SpaceError(f"{where}: choice needs a non-empty list of values.")
            if len(set(map(repr, values))) != len(values):
                raise SpaceError(f"{where}: choice lists a value twice.")
            return _optuna(where, CategoricalDistribution, [_typed(where, v, kind) for v in values])
        return _parse_range(where, raw, dist[0], kind)
    if isinstance(raw, list):
        if not allow_list:
            raise SpaceError(f"{where}: a list is not a value here; for a choice write {{choice: {raw}}}.")
        if not raw:
            raise SpaceError(f"{where}: the list is empty.")
        return [_typed(where, v, kind) for v in raw]
    return _typed(where, raw, kind)


def _parse_range(where: str, raw: dict, dist: str, kind: Any) -> Param:
    """The YAML's shape and types are checked here; the range itself (low <= high, log with low > 0,
    step with log, a positive step) by Optuna's own distribution."""
    if kind not in (int, float) or (dist == "float" and kind is int):
        raise SpaceError(f"{where}: a {dist} range does not fit this key; use {{choice: [...]}} or an int range.")
    bounds = raw[dist]
    number = int if dist == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds)
    ):
        raise SpaceError(f"{where}: {dist} needs [low, high] as two {'integers' if dist == 'int' else 'numbers'}.")
    log, step = raw.get("log", False), raw.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false.")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number)):
        raise SpaceError(f"{where}: step must be {'an integer' if dist == 'int' else 'a number'}.")
    if dist == "int":
        return _optuna(where, IntDistribution, *bounds, log=log, step=1 if step is None else step)
    return _optuna(where, FloatDistribution, *map(float, bounds), log=log, step=None if step is None else float(step))


def _optuna(where: str, cls: type[BaseDistribution], *args: Any, **kwargs: Any) -> Param:
    """The distribution as Optuna builds it; its refusal, or a range it would silently shorten to a
    whole number of steps, becomes a SpaceError naming the key."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dist = cls(*args, **kwargs)
        except ValueError as e:
            raise SpaceError(f"{where}: Optuna refuses this distribution: {str(e).rstrip('.')}.") from None
    if caught and not isinstance(dist, CategoricalDistribution) and dist.high != args[1]:
        raise SpaceError(f"{where}: [{args[0]}, {args[1]}] is not a whole number of steps of {dist.step}; "
                         f"write [{args[0]}, {dist.high}].")  # fmt: skip
    return Param(dist)


def _parse_lr_per_optimizer(raw: dict[str, Any]) -> dict[str, Any]:
    """`lr: {sgd: ..., adam: default, ...}`: each optimizer's own value or range; `default` is its
    registered range (nas.recipe.OPTIMIZERS), log-uniform. `lr: default` gives it to every optimizer."""
    out = {}
    for opt, entry in raw.items():
        where = f"recipe.lr.{opt}"
        if opt not in OPTIMIZERS:
            raise SpaceError(f"{where}: unknown optimizer; known: {', '.join(OPTIMIZERS)}.")
        if entry == "default":
            out[opt] = _optuna(where, FloatDistribution, *OPTIMIZERS[opt].lr, log=True)
        else:
            out[opt] = _checked(where, "lr", _parse(where, entry, float), _recipe_probe)
    return out


def _typed(where: str, v: Any, kind: Any) -> Any:
    ok = {
        int: lambda x: isinstance(x, int) and not isinstance(x, bool),
        float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
        str: lambda x: isinstance(x, str),
        bool: lambda x: isinstance(x, bool),
        "pool": lambda x: x == "global" or (isinstance(x, int) and not isinstance(x, bool)),
    }[kind]
    if not ok(v):
        expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                    "pool": "'global' or an integer"}[kind]  # fmt: skip
        raise SpaceError(f"{where}: expected {expected}, got {v!r}.")
    return v


def _checked(where: str, key: str, entry: Any, probe: Callable[[str, Any], None]) -> Any:
    """`entry`, once every value the vocabulary would reject (an even kernel, an unknown optimizer)
    is rejected now, with the key, rather than as a failed trial later. Ranges are checked at both ends."""
    if isinstance(entry, Param):
        d = entry.dist
        values = d.choices if isinstance(d, CategoricalDistribution) else (d.low, d.high)
    else:
        values = entry if isinstance(entry, list) else (entry,)
    for v in values:
        try:
            probe(key, v)
        except NasError as e:
            raise SpaceError(f"{where}: {v!r}: {e}") from None
    return entry


def _arch_probe(key: str, v: Any) -> None:
    if key in ("stem_kernel", "kernel", "skip_kernel", "block", "se", "dropout", "drop_path"):
        ArchSpec(blocks=(1,), channels=(8,), **{key: v})
    elif key in BLOCK_FIELDS:
        ArchSpec(blocks=(1,), channels=(8,), block=next(b.name for b in BLOCKS.values() if key in b.fields), **{key: v})
    elif key in ("stages", "blocks", "width", "channels", "stem_channels", "width_multiple") and v < 1:
        raise SpaceError(f"{key} must be at least 1.")
    elif key == "growth" and v <= 0:
        raise SpaceError("growth must be positive.")
    elif key == "pool" and v != "global" and v < 1:
        raise SpaceError("pool must be 'global' or a positive integer.")


def _recipe_probe(key: str, v: Any) -> None:
    Recipe(**{key: v})


def survey(space: Space, budget: float, samples: int, seed: int = 0, **data: int) -> dict[str, Any]:
    """Sample `space` at random and count every configuration: the share within `budget`, count
    percentiles, the MACs of those within the budget, and the rates of sampling+counting and of
    the counter alone."""
    import time

    from nas.count import count_macs, count_params

    rng = random.Random(seed)
    t0 = time.perf_counter()
    specs = [space.sample(rng, **data)[0] for _ in range(samples)]
    t1 = time.perf_counter()
    counts = [count_params(s) for s in specs]
    t2 = time.perf_counter()
    macs = sorted(count_macs(s) for s, c in zip(specs, counts) if c <= budget)
    counts.sort()
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q / 100 * len(xs)))]  # noqa: E731
    return {
        "samples": samples,
        "budget": int(budget),
        "within_budget": sum(c <= budget for c in counts) / samples,
        "percentiles": {f"p{q}": pct(counts, q) for q in (0, 5, 25, 50, 75, 95, 100)},
        "macs_within_budget": {f"p{q}": pct(macs, q) for q in (0, 5, 50, 95, 100)} if macs else None,
        "smallest": count_params(space.smallest(**data)),
        "specs_per_s": samples / (t2 - t0),
        "count_params_per_s": samples / (t2 - t1),
    }
