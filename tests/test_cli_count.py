import json
import subprocess
import sys

import pytest

from nas.cli import main, parse_count


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_json_reports_resnet18(capsys):
    code, out, _ = run(capsys, "count", "--blocks", "2,2,2,2", "--channels", "64,128,256,512", "--json")
    result = json.loads(out)
    assert code == 0 and result["params"] == 11_173_962 and result["macs"] == 555_422_720


def test_count_for_people_with_budget(capsys):
    code, out, _ = run(capsys, "count", "--preset", "resnet24", "--budget", "5M")
    assert code == 0 and "4,918,602" in out and "within" in out


def test_preset_fields_can_be_overridden(capsys):
    code, out, _ = run(capsys, "count", "--preset", "resnet24", "--classes", "100", "--json")
    assert json.loads(out)["params"] == 4_918_602 + 256 * 90 + 90


def test_count_space_reports_share_percentiles_and_speed(capsys):
    code, out, _ = run(capsys, "count", "--space", "tiny", "--budget", "20k", "--samples", "2000", "--json")
    result = json.loads(out)
    assert code == 0 and 0 < result["within_budget"] < 1
    assert result["percentiles"]["p0"] <= result["percentiles"]["p50"] <= result["percentiles"]["p100"]
    assert result["smallest"] == result["percentiles"]["p0"] or result["smallest"] < result["percentiles"]["p0"]
    assert result["specs_per_s"] > 0 and result["count_params_per_s"] > result["specs_per_s"]
    macs = result["macs_within_budget"]
    assert 0 < macs["p0"] <= macs["p50"] <= macs["p100"]
    code, out, _ = run(capsys, "count", "--space", "tiny", "--budget", "20k", "--samples", "500")
    assert "within" in out and "calls/s" in out and "of those within budget" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--blocks", "2,2", "--channels", "16,32", "--kernel", "4"], "odd"),
        (["--blocks", "2,2"], "give --blocks and --channels"),
        (["--preset", "nope"], "no such file"),
        (["--space", "tiny"], "needs --budget"),
        (["--blocks", "1", "--channels", "8", "--pool", "3"], "does not divide"),
    ],
)
def test_bad_spec_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "count", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_console_entry_point_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "nas", "count", "--blocks", "1", "--channels", "8", "--kernel", "2"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "odd" in proc.stderr


@pytest.mark.parametrize("text,value", [("5e6", 5_000_000), ("5000000", 5_000_000), ("5M", 5_000_000),
                                        ("2.5m", 2_500_000), ("500k", 500_000), ("5_000_000", 5_000_000)])  # fmt: skip
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["five", "5X", "-3", "0", ""])
def test_parse_count_rejects_nonsense(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_count(text)


def test_a_bug_is_not_mistaken_for_a_user_error(capsys, monkeypatch):
    """Only NasError is a user's mistake (one line, exit 2); any other exception is a bug and
    must reach the user with its traceback, ValueError included."""
    import nas.count

    def broken(spec):
        raise ValueError("a bug inside the counter")

    monkeypatch.setattr(nas.count, "count_params", broken)
    with pytest.raises(ValueError, match="a bug inside the counter"):
        main(["count", "--blocks", "1", "--channels", "8"])


def test_user_errors_are_nas_errors():
    from nas.arch import ArchSpec
    from nas.errors import ConfigError, NasError
    from nas.space import SpaceError, load_space

    with pytest.raises(ConfigError):
        ArchSpec(blocks=[1], channels=[8], kernel=2)
    with pytest.raises(SpaceError) as e:
        load_space("no-such-space")
    assert isinstance(e.value, NasError)


def test_search_flags_are_search_config_fields_with_its_defaults():
    """SearchConfig holds the defaults; nas search has one flag per field (devices comes from
    --gpus and --jobs-per-gpu), so the config is built from the flags in one expression."""
    from dataclasses import fields

    from nas.cli import build_parser
    from nas.search import SearchConfig

    args = build_parser().parse_args(["search"])
    for f in fields(SearchConfig):
        if f.name != "devices":
            assert getattr(args, f.name) == f.default, f.name
    assert SearchConfig().proxy_epochs == 5


@pytest.mark.parametrize("argv", [["search", "--record", "/no/such/folder/r.md"],
                                  ["predict", "--trial", "1", "--images", ".", "--out", "/no/such/folder/p.csv"]])  # fmt: skip
def test_an_output_file_in_a_missing_folder_is_refused_before_any_work(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "folder /no/such/folder does not exist" in capsys.readouterr().err
