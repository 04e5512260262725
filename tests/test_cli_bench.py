import datetime
import json

from nas.bench import epoch_figures
from nas.cli import main


def test_bench_reports_speed_and_records_it(tmp_path, capsys):
    record = tmp_path / "RESULTS.md"
    code = main(["bench", "--dataset", "synthetic:200", "--blocks", "1", "--channels", "8", "--epochs", "2",
                 "--batch-size", "50", "--accuracy-run", "1", "--record", str(record), "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["epochs"]) == 2 and result["images_per_epoch"] == 200
    assert result["images_per_second"] > 0 and result["tflops"] > 0
    parts = result["data_seconds"] + result["setup_seconds"] + result["first_epoch_extra_seconds"]
    assert result["first_epoch_overhead_seconds"] == parts and min(parts, result["setup_seconds"]) >= 0
    assert 0 <= result["accuracy_run"]["test_acc"] <= 1
    text = record.read_text()
    assert datetime.date.today().isoformat() in text and result["device"] in text and "images/s" in text


def test_bench_defaults_to_the_resnet24_preset_and_rejects_nonsense(capsys):
    assert main(["bench", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["bench", "--dataset", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_first_epoch_overhead_is_never_negative():
    def epochs(*seconds):
        return [{"seconds": s, "train_seconds": s * 0.9} for s in seconds]

    # A loaded machine: the first epoch came out faster than the steady ones.
    wall, train, setup, extra = epoch_figures(epochs(1.0, 1.2, 1.4, 1.3), run_seconds=5.5)
    assert (wall, extra) == (1.3, 0.0) and abs(setup - 0.6) < 1e-9 and abs(train - 1.17) < 1e-9
    wall, _, _, extra = epoch_figures(epochs(3.5, 1.0, 1.0), run_seconds=6.0)
    assert (wall, extra) == (1.0, 2.5)
    assert epoch_figures(epochs(2.0), run_seconds=1.9)[2:] == (0.0, 0.0)  # one epoch: its own steady state
