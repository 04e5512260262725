"""Search spaces and presets: load and validate `search_spaces/*.yaml`, decode sampled values into
an (`ArchSpec`, `Recipe`) pair.

A space file has two sections, `arch` and `recipe`. Each entry is a fixed value or a distribution:

    {choice: [a, b, ...]}                       categorical
    {int: [low, high], step: 1, log: false}     integer range (inclusive)
    {float: [low, high], step: null, log: false}

`arch` speaks ArchSpec's vocabulary plus `stages` (N), `width` and `growth` (stage i has
round8(width * growth**i) channels; or give `channels` per stage instead). `blocks` and `channels`
are sampled once per stage (trial params `blocks_0` ... `blocks_{N-1}`): conditional on N.
`recipe` speaks Recipe's vocabulary; `lr` may map each optimizer to its own range (params `lr_sgd`,
`lr_adam`, ...), and fields that only matter for some optimizers or schedules (momentum,
step_every, restart_every, warmup_epochs, ...) are sampled only where they matter.

A preset file is the degenerate case with no distributions: `arch` and `recipe` hold ArchSpec and
Recipe fields directly (`blocks: [3, 5, 3]`, `channels: [64, 128, 256]`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union

import yaml

from nas.arch import ArchSpec, round_width
from nas.errors import NasError
from nas.recipe import OPTIMIZERS, Recipe, field_used

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_SPACE = SPACES_DIR / "resnet_cifar.yaml"

# Type of each arch key a space may set. classes, image_size and in_channels come from the dataset.
ARCH_KEYS: dict[str, Any] = {
    "stages": int, "blocks": int, "width": int, "growth": float, "channels": int,
    "stem_channels": int, "stem_kernel": int, "kernel": int, "skip_kernel": int,
    "pool": "pool", "block": str, "se": int, "dropout": float, "drop_path": float,
}  # fmt: skip
PER_STAGE = ("blocks", "channels")
RECIPE_KEYS: dict[str, Any] = {f.name: type(f.default) for f in fields(Recipe)}
# Keys whose every value is tried when bounding the space's smallest count from below: the count is
# monotone in all other keys, but not in these (fewer stages enlarge a non-global pool's head).
NON_MONOTONE = ("stages", "pool", "block", "se")


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def candidates(self) -> tuple[Any, ...]:
        return self.values

    def lowest(self) -> Any:
        try:
            return min(self.values)
        except TypeError:  # mixed kinds, e.g. pool: [global, 2]; such keys are enumerated anyway
            return self.values[0]


@dataclass(frozen=True)
class Range:
    kind: type  # int or float
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def sample(self, rng: random.Random) -> Any:
        if self.log:
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return min(self.high, max(self.low, round(v))) if self.kind is int else v
        if self.step:
            return self.kind(self.low + self.step * rng.randint(0, int((self.high - self.low) // self.step)))
        return rng.randint(self.low, self.high) if self.kind is int else rng.uniform(self.low, self.high)

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind is int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> tuple[Any, ...]:
        return tuple(range(self.low, self.high + 1, self.step or 1))

    def lowest(self) -> Any:
        return self.low


Param = Union[Choice, Range]
Pick = Callable[[str, Param], Any]  # (trial-param name, distribution) -> value


class SpaceError(NasError):
    """A space or preset file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Space:
    path: Path
    text: str  # the file's content, stored on the study so a search can be reproduced
    arch: dict[str, Any]  # key -> fixed value or Param
    recipe: dict[str, Any]  # key -> fixed value or Param (lr: also {optimizer: value or Param})

    @property
    def name(self) -> str:
        return self.path.stem

    def decode(self, pick: Pick, classes: int = 10, image_size: int = 32, in_channels: int = 3) -> tuple[ArchSpec, Recipe]:
        """The (ArchSpec, Recipe) for the values `pick` chooses. `pick` is called once per trial
        param, in a fixed order, only for params this configuration uses. Raises NasError when
        the chosen values make an impossible spec (say, a pool that does not divide the map)."""

        def get(key: str, name: str | None = None, entry: Any = None) -> Any:
            entry = self.arch[key] if entry is None else entry
            return pick(name or key, entry) if isinstance(entry, (Choice, Range)) else entry

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
            spec["channels"] = [round_width(width * growth**i) for i in range(n)]
        for key in ARCH_KEYS:
            if key not in ("stages", "width", "growth", *PER_STAGE) and key in a:
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
            chosen[key] = pick(name, entry) if isinstance(entry, (Choice, Range)) else entry
        return ArchSpec.from_dict(spec), Recipe.from_dict(chosen)

    def sample(self, rng: random.Random, **data: int) -> tuple[ArchSpec, Recipe]:
        return self.decode(lambda _name, p: p.sample(rng), **data)

    def from_params(self, params: dict[str, Any], **data: int) -> tuple[ArchSpec, Recipe]:
        """Rebuild the exact configuration of a trial from its params."""
        return self.decode(lambda name, _p: params[name], **data)

    def smallest(self, **data: int) -> ArchSpec:
        """The configuration with the fewest parameters (every value of the non-monotone keys is
        tried; every other key takes its lowest value): a budget below its count is impossible."""
        from nas.count import count_params

        params = [(k, v) for k, v in self.arch.items() if k in NON_MONOTONE and isinstance(v, (Choice, Range))]
        best = None
        for combo in itertools.product(*(p.candidates() for _, p in params)):
            fixed = dict(zip((k for k, _ in params), combo))
            pick = lambda name, p: fixed.get(name, p.lowest())  # noqa: E731
            try:
                spec, _ = self.decode(pick, **data)
            except NasError:
                continue
            if best is None or count_params(spec) < count_params(best):
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
    return parse_space(path.read_text(), path)


def parse_space(text: str, path: Path) -> Space:
    """A space from YAML text; `path` names it in messages (a study keeps the text it searched)."""
    doc = _parse_yaml(text, path)
    where = lambda key: f"{path}: {key}"  # noqa: E731
    arch_raw, recipe_raw = _sections(path, doc)
    arch = {}
    for key, raw in arch_raw.items():
        if key not in ARCH_KEYS:
            raise SpaceError(f"{where('arch.' + key)}: unknown key; known: {', '.join(ARCH_KEYS)}.")
        arch[key] = _parse(where("arch." + key), raw, ARCH_KEYS[key], allow_list=key in PER_STAGE)
        _check_values(where("arch." + key), key, arch[key], _arch_probe)
    for key in ("stages", "blocks"):
        if key not in arch:
            raise SpaceError(f"{where('arch')}: a space needs '{key}'.")
    if ("channels" in arch) == ("width" in arch):
        raise SpaceError(f"{where('arch')}: give either 'channels' (per stage) or 'width' (with optional 'growth').")
    if "growth" in arch and "width" not in arch:
        raise SpaceError(f"{where('arch.growth')}: 'growth' needs 'width'.")

    recipe = {}
    for key, raw in recipe_raw.items():
        if key not in RECIPE_KEYS:
            raise SpaceError(f"{where('recipe.' + key)}: unknown key; known: {', '.join(RECIPE_KEYS)}.")
        if key == "lr" and isinstance(raw, dict) and not ({"choice", "int", "float"} & set(raw)):
            recipe[key] = _parse_lr_per_optimizer(where, raw)
            continue
        recipe[key] = _parse(where("recipe." + key), raw, RECIPE_KEYS[key])
        _check_values(where("recipe." + key), key, recipe[key], _recipe_probe)
    if isinstance(recipe.get("lr"), dict):
        opts = recipe.get("optimizer", Recipe.optimizer)
        opts = opts.values if isinstance(opts, Choice) else (opts,)
        missing = [o for o in opts if o not in recipe["lr"]]
        if missing:
            raise SpaceError(f"{where('recipe.lr')}: no learning rate for optimizer {missing[0]!r}.")
    space = Space(path=path, text=text, arch=arch, recipe=recipe)
    space.smallest()  # fails now, naming the file, if no configuration is valid
    return space


def load_preset(name_or_path: str | Path) -> tuple[str, ArchSpec, Recipe]:
    """(name, spec, recipe) of a preset from `search_spaces/presets/` or a path. The spec is for
    10-class 32px images unless the file says otherwise; callers adapt it to their dataset."""
    path = resolve(name_or_path, SPACES_DIR / "presets")
    doc = _parse_yaml(path.read_text(), path)
    arch_raw, recipe_raw = _sections(path, doc)
    try:
        return path.stem, ArchSpec.from_dict(arch_raw), Recipe.from_dict(recipe_raw)
    except NasError as e:
        raise SpaceError(f"{path}: {e}") from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in (SPACES_DIR / "presets").glob("*.yaml"))


# ---------------------------------------------------------------------------------------- parsing


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}.") from None


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
            return Choice(tuple(_typed(where, v, kind) for v in values))
        return _parse_range(where, raw, dist[0], kind)
    if isinstance(raw, list):
        if not allow_list:
            raise SpaceError(f"{where}: a list is not a value here; for a choice write {{choice: {raw}}}.")
        if not raw:
            raise SpaceError(f"{where}: the list is empty.")
        return [_typed(where, v, kind) for v in raw]
    return _typed(where, raw, kind)


def _parse_range(where: str, raw: dict, dist: str, kind: Any) -> Range:
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
    low, high = bounds
    if low > high:
        raise SpaceError(f"{where}: low {low} is greater than high {high}.")
    log, step = raw.get("log", False), raw.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false.")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise SpaceError(f"{where}: step must be a positive {'integer' if dist == 'int' else 'number'}.")
        if log and step != 1:
            raise SpaceError(f"{where}: a log range cannot also have a step.")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0.")
    if dist == "float":
        return Range(float, float(low), float(high), float(step) if step else None, log)
    return Range(int, low, high, step if step and step != 1 else None, log)


def _parse_lr_per_optimizer(where: Callable[[str], str], raw: dict) -> dict[str, Any]:
    out = {}
    for opt, entry in raw.items():
        if opt not in OPTIMIZERS:
            raise SpaceError(f"{where('recipe.lr.' + str(opt))}: unknown optimizer; known: {', '.join(OPTIMIZERS)}.")
        out[opt] = _parse(where(f"recipe.lr.{opt}"), entry, float)
        _check_values(where(f"recipe.lr.{opt}"), "lr", out[opt], _recipe_probe)
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


def _check_values(where: str, key: str, entry: Any, probe: Callable[[str, Any], None]) -> None:
    """Reject a value the vocabulary would reject (an even kernel, an unknown optimizer) now, with
    the file and key, rather than as a failed trial later. Ranges are checked at both ends."""
    if isinstance(entry, Choice):
        values = entry.values
    elif isinstance(entry, Range):
        values = (entry.low, entry.high)
    else:
        values = entry if isinstance(entry, list) else (entry,)
    for v in values:
        try:
            probe(key, v)
        except NasError as e:
            raise SpaceError(f"{where}: {v!r}: {e}") from None


def _arch_probe(key: str, v: Any) -> None:
    if key in ("stem_kernel", "kernel", "skip_kernel", "block", "se", "dropout", "drop_path"):
        ArchSpec(blocks=(1,), channels=(8,), **{key: v})
    elif key in ("stages", "blocks", "width", "channels", "stem_channels") and v < 1:
        raise SpaceError(f"{key} must be at least 1.")
    elif key == "growth" and v <= 0:
        raise SpaceError("growth must be positive.")
    elif key == "pool" and v != "global" and v < 1:
        raise SpaceError("pool must be 'global' or a positive integer.")


def _recipe_probe(key: str, v: Any) -> None:
    Recipe(**{key: v})


def survey(space: Space, budget: float, samples: int, seed: int = 0, **data: int) -> dict[str, Any]:
    """Sample `space` at random and count every configuration: the share within `budget`, count
    percentiles, and the rates of sampling+counting and of the counter alone."""
    import time

    from nas.count import count_params

    rng = random.Random(seed)
    t0 = time.perf_counter()
    specs = [space.sample(rng, **data)[0] for _ in range(samples)]
    t1 = time.perf_counter()
    counts = sorted(count_params(s) for s in specs)
    t2 = time.perf_counter()
    pct = lambda q: counts[min(len(counts) - 1, int(q / 100 * len(counts)))]  # noqa: E731
    return {
        "samples": samples,
        "budget": int(budget),
        "within_budget": sum(c <= budget for c in counts) / samples,
        "percentiles": {f"p{q}": pct(q) for q in (0, 5, 25, 50, 75, 95, 100)},
        "smallest": count_params(space.smallest(**data)),
        "specs_per_s": samples / (t2 - t0),
        "count_params_per_s": samples / (t2 - t1),
    }
