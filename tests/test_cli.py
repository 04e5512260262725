import pytest

from nas.cli import build_parser, main


def test_plain_nas_shows_the_workflow(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for step in ("nas search", "nas report", "nas retrain", "nas predict", "optuna-dashboard", "--artifact-dir"):
        assert step in out


def subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_says_what_it_does(name):
    options = [a for a in subcommands()[name]._actions if a.option_strings and a.dest != "help"]
    assert [a.option_strings[0] for a in options if not a.help] == []


def test_help_says_what_nas_does_and_no_option_reads_default_none(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Find the most accurate image classifier" in out and "parsing and printing" not in out
    assert [name for name, p in subcommands().items() if "(default: None)" in p.format_help()] == []


def test_a_misspelt_option_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--buget", "1M"])
    assert e.value.code == 2
    assert "unrecognized arguments: --buget 1M (did you mean --budget?)" in capsys.readouterr().err
