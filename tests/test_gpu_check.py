"""benchmarks/gpu_check.py waits for a GPU; its smoke mode runs the same code on the CPU. The cheap
checks run here, so that the script is known to import and run when a GPU session reaches for it
(the whole smoke run, with its 2-worker searches: benchmarks/gpu_check.sh --smoke, a few minutes)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(gpu_check, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--smoke", *args])
    return gpu_check.main()


def test_the_gpu_check_runs_its_cheap_checks_on_the_cpu(gpu_check, tmp_path, monkeypatch):
    record = tmp_path / "results.md"
    assert run(gpu_check, monkeypatch, "--only", "decode,resume,devices", "--record", str(record)) == 0
    text = record.read_text()
    assert "`benchmarks/gpu_check.sh --smoke --only decode,resume,devices`" in text and "| first decode | 300 images" in text
    assert "| device | CPU" in text  # every part starts with the environment
    assert "| resume, deterministic | bit-exact" in text and "| whole check |" in text and "FAILED" not in text


def test_parts_name_their_checks_and_each_fits_a_device_call(gpu_check):
    assert gpu_check.checks_to_run("paths") == ["environment", "decode", "optimizers", "resume", "devices", "oom"]
    assert gpu_check.checks_to_run("search,oom,search") == ["environment", "search", "oom"]
    every = [c for checks, _ in gpu_check.PARTS.values() for c in checks]
    assert gpu_check.checks_to_run(None) == ["environment", *every] and len(set(every)) == len(every) == 9
    assert all(minutes <= 8 for _, minutes in gpu_check.PARTS.values())  # a device call is 10 minutes at most
    with pytest.raises(SystemExit, match="unknown part or check 'sped'; parts: paths, speed, accuracy, search"):
        gpu_check.checks_to_run("sped")


def test_each_row_is_in_the_record_as_soon_as_it_is_measured(gpu_check, tmp_path, monkeypatch):
    # A part cut short (a device call's time limit) keeps what it measured: rows are not held for the end.
    record = tmp_path / "gpu.md"
    seen = []

    def decode_that_dies(plan):
        seen.append(record.read_text())
        plan.row("first decode", "half")
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(gpu_check, "check_decode", decode_that_dies)
    monkeypatch.setattr(gpu_check, "check_devices", lambda plan, tmp: seen.append(record.read_text()))
    assert run(gpu_check, monkeypatch, "--only", "decode,devices", "--record", str(record)) == 1
    assert "| device | CPU" in seen[0] and "| precision auto |" in seen[0]  # the environment's rows, before decode
    assert "| first decode | half |" in seen[1] and "| decode | FAILED: RuntimeError: the machine went away |" in seen[1]
    assert record.read_text().rstrip().endswith("failed: decode |")
