"""benchmarks/gpu_check.py waits for a GPU; its smoke mode runs the same code on the CPU. The cheap
checks run here, so that the script is known to import and run when a GPU session reaches for it
(the whole smoke run, with its 2-worker searches: benchmarks/gpu_check.sh --smoke, a few minutes)."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_its_cheap_checks_on_the_cpu(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    record = tmp_path / "results.md"
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--smoke", "--only", "environment,decode,resume,devices",
                                      "--record", str(record)])  # fmt: skip
    assert gpu_check.main() == 0
    text = record.read_text()
    assert "benchmarks/gpu_check.sh --smoke" in text and "| first decode | 300 images" in text
    assert "| resume, deterministic | bit-exact" in text and "| whole check |" in text and "FAILED" not in text
