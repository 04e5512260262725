import datetime
import json

from nas.cli import main


def test_bench_reports_speed_and_records_it(tmp_path, capsys):
    record = tmp_path / "RESULTS.md"
    code = main(["bench", "--dataset", "synthetic:200", "--blocks", "1", "--channels", "8", "--epochs", "2",
                 "--batch-size", "50", "--accuracy-run", "1", "--record", str(record), "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["epochs"]) == 2 and result["images_per_epoch"] == 200
    assert result["images_per_second"] > 0 and result["tflops"] > 0 and result["first_epoch_overhead_seconds"] >= 0
    assert 0 <= result["accuracy_run"]["test_acc"] <= 1
    text = record.read_text()
    assert datetime.date.today().isoformat() in text and result["device"] in text and "images/s" in text


def test_bench_defaults_to_the_resnet24_preset_and_rejects_nonsense(capsys):
    assert main(["bench", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["bench", "--dataset", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
