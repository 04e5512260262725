"""benchmarks/tiny_cifar.sh end to end on generated images (its DATA knob): both searches, the
retrains (the preset and the trials spread over the proxy ranking), the fidelity table and the
reports; then a rerun, which finds every step done and trains nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nas.retrain import retrains
from nas.study import load_study

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_experiment(tmp_path: Path) -> str:
    """The script from a copy in tmp_path/benchmarks: it works from the folder above its own (studies/,
    the retrains' artifacts), which must not be this checkout."""
    script = tmp_path / "benchmarks" / "tiny_cifar.sh"
    script.parent.mkdir(exist_ok=True)
    for name in ("tiny_cifar.sh", "tiny_common.sh", "proxy_fidelity.py"):
        shutil.copy(BENCHMARKS / name, script.parent / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # this venv's nas, python3
           "DATA": "synthetic:200", "STATE": str(tmp_path / "state"), "RECORD": str(tmp_path / "R.md"), "TRIALS": "3",
           "EPOCHS": "1", "SPREAD": "2", "CONTROL": "1", "RESCORE": "0.5:1", "LANES": "2"}  # fmt: skip
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_experiment_runs_to_its_end_and_a_rerun_trains_nothing(tmp_path):
    out = run_experiment(tmp_path)
    state = tmp_path / "state"
    tpe = load_study(f"journal:{state}/tiny-arch-tpe.journal", "tiny-arch-tpe")
    rnd = load_study(f"journal:{state}/tiny-arch-random.journal", "tiny-arch-random")
    assert all(s.user_attrs["space_path"].endswith("micro-arch.yaml") and s.user_attrs["budget"] == 100_000 for s in (tpe, rnd))
    tpe_done, rnd_done = retrains(tpe), retrains(rnd)
    assert "preset-mlperf-tiny-resnet8" in tpe_done and len(tpe_done) == 3 and len(rnd_done) == 1  # preset, SPREAD, CONTROL
    best = max((t for t in tpe.trials if t.value is not None), key=lambda t: t.value).number
    assert f"trial-{best}" in tpe_done and all(r["retrain_epochs"] == 1 for r in tpe_done.values())
    for name, r in {**tpe_done, **rnd_done}.items():  # each retrain in its folder under STATE
        assert (Path(r["dir"]) / "history.csv").exists() and Path(r["dir"]).is_relative_to(state), name
    cache = json.loads((state / "proxy-fidelity.json").read_text())
    assert len(cache["0.5:1"]) == 3  # the 3 retrained trials of both studies, pooled
    record = (tmp_path / "R.md").read_text()
    assert "Proxy against retrain over 3 retrained trials of tiny-arch-tpe and tiny-arch-random" in record
    assert record.count("`nas search --space micro-arch") == 2 and record.count("--sampler random --seed 1") == 1
    for study in ("tiny-arch-tpe", "tiny-arch-random"):  # the reports beside the experiment's state
        assert (state / study / "report" / "leaderboard.csv").stat().st_size > 0
    assert not (tmp_path / "studies" / "tiny-arch-tpe" / "report").exists()
    assert "retrain 4, 2 at a time" in out

    again = run_experiment(tmp_path)
    assert "both studies hold 3 trained trials already" in again and "retrain 0, 2 at a time" in again
    assert ": val " not in again  # the fidelity's re-scores come from its cache
    assert retrains(load_study(f"journal:{state}/tiny-arch-tpe.journal", "tiny-arch-tpe")) == tpe_done
