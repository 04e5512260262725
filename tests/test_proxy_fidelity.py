"""benchmarks/proxy_fidelity.py on a tiny synthetic study: pruner replays, correlations against the
retrains, and re-scored proxies trained side by side in spawned processes, cached so that a rerun
trains nothing again."""

import json
import subprocess
import sys
from pathlib import Path

from nas.cli import main
from nas.study import counts, load_study

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "proxy_fidelity.py"
STUDY = "fid"


def run_script(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--study", STUDY, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rescored_proxies_train_in_lanes_cache_and_correlate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--space", "tiny", "--dataset", "synthetic:200", "--proxy-epochs", "2", "--gpus", "cpu",
                 "--seed", "3", "--pruner", "none", "--study", STUDY, "--trials", "3"]) == 0  # fmt: skip
    trained = [t.number for t in load_study(None, STUDY).trials if counts(t) and t.value is not None]
    assert len(trained) == 3
    for number in trained:
        assert main(["retrain", "--study", STUDY, "--trial", str(number), "--epochs", "1"]) == 0

    first = run_script(tmp_path, "--rescore", "0.5:1", "--cache", "fid.json")  # one lane: in this process
    assert first.count(": val ") == 3
    out = run_script(tmp_path, "--rescore", "0.5:1,1:1", "--lanes", "2", "--cache", "fid.json", "--record", "R.md")
    cache = json.loads((tmp_path / "fid.json").read_text())
    names = {f"{STUDY}/{n}" for n in trained}
    assert set(cache) == {"0.5:1", "1:1"} and all(set(v) == names for v in cache.values())
    for result in (r for v in cache.values() for r in v.values()):
        assert 0 <= result["val_acc"] <= 1 and result["seconds"] > 0 and result["status"] == "complete"
    assert out.count(": val ") == 3 and "0.5:1" not in out.split("| proxy |")[0]  # only the new size trained
    for row in ("re-scored: 0.5 of the split, 1 epochs | 3", "re-scored: 1 of the split, 1 epochs | 3",
                "params only (no training) | 3", "study curve, epoch 2 | 3", "nas search --pruner median"):  # fmt: skip
        assert row in out
    assert "Proxy against retrain over 3 retrained trials of fid" in (tmp_path / "R.md").read_text()

    again = run_script(tmp_path, "--rescore", "0.5:1,1:1", "--lanes", "2", "--cache", "fid.json")
    assert ": val " not in again  # all cached: nothing trained twice
    assert json.loads((tmp_path / "fid.json").read_text()) == cache

    # Issue 18's candidates: a constant-learning-rate proxy with its history, zero-cost scores, a
    # second seed averaged into its net's ground truth, and every candidate with its interval.
    assert main(["retrain", "--study", STUDY, "--trial", str(trained[0]), "--epochs", "1", "--seed", "1"]) == 0
    out = run_script(tmp_path, "--rescore", "0.5:1:constant", "--zero-cost", "--cache", "fid.json")
    cache = json.loads((tmp_path / "fid.json").read_text())
    assert set(cache) == {"0.5:1", "1:1", "0.5:1:constant", "init"} and set(cache["init"]) == names
    assert all(len(r["history"]) == 1 and "train_loss" in r["history"][0] for r in cache["0.5:1:constant"].values())
    assert all({"synflow", "snip", "naswot", "seconds"} <= set(r) for r in cache["init"].values())
    assert "Candidate scores against retrain over 3 retrained trials of fid (0 within 80%-100% of the budget)" in out
    for row in ("| 0.5 of the split, 1 epochs, constant learning rate: TSE |", "| zero-cost: naswot |",
                "| rank ensemble: params + zero-cost: synflow |", "| params (no training) | 0.0 |"):  # fmt: skip
        assert row in out
    assert "0.5 of the split, 1 epochs: TSE" not in out  # cached before histories were kept: left out, not faked
