"""Every bad argument is one ``featkit: error:`` line naming the option, exit 2, no traceback
(issue 15, item 6). The test walks every subcommand's parser and feeds each option that takes
a value a bad one, so an option added later is covered without a new test."""

from __future__ import annotations

import argparse

import pytest

from featkit.cli import build_parser, main

#: Bad values for string options whose meaning argparse cannot check, by dest.
BAD_STRINGS = {
    "c_grid": "abc", "k": "ten", "eps": "x/0", "alpha": "abc", "max_memory": "lots",
    "num_workers": "-3", "device": "tpu", "splits": ",", "option": "nokey",
    "metrics": ",", "features": ",",
}
#: Values that fill required arguments so that the bad option is what fails.
FILL = {"model": "pixels:8", "dataset": "digits"}
NUMERIC = {"int": "abc", "float": "abc"}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))
    yield path, parser


def _bad_values(action: argparse.Action) -> list[str]:
    if action.nargs == 0 or not action.option_strings:
        return []
    if action.choices:
        return ["zzz"]
    name = getattr(action.type, "__name__", "")
    if action.type is int or name.endswith("_int"):
        return ["abc", "-3"]
    if action.type is float or name.endswith("_float") or name == "unit_interval":
        return ["abc", "nan"] if action.type is not float else ["abc"]
    if name == "device" or action.dest in BAD_STRINGS:
        return [BAD_STRINGS.get(action.dest, "tpu")]
    return []


def _required(parser: argparse.ArgumentParser, tmp_path, skip: str) -> list[str]:
    argv = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.dest == skip:
            continue
        if not action.option_strings and action.nargs != 0:
            argv.append(str(tmp_path))
        elif action.required:
            argv += [action.option_strings[0], FILL.get(action.dest, str(tmp_path / "out"))]
    for group in parser._mutually_exclusive_groups:
        if group.required and not any(a.dest == skip for a in group._group_actions):
            first = group._group_actions[0]
            argv += [first.option_strings[0], "x"]
    return argv


def _cases():
    for path, parser in _walk(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue
        for action in parser._actions:
            for bad in _bad_values(action):
                yield pytest.param(path, action.option_strings[-1], bad,
                                   id=f"{' '.join(path)} {action.option_strings[-1]}={bad}")


CASES = list(_cases())


def test_the_walk_finds_the_options():
    ids = {(" ".join(p), o) for p, o, _ in (c.values for c in CASES)}
    for expected in [("probe linear", "--max-iter"), ("probe knn", "--k"),
                     ("perturb", "--steps"), ("retrieval", "--max-memory"),
                     ("extract", "--num-workers"), ("report", "--alpha")]:
        assert expected in ids


@pytest.mark.parametrize("path, option, bad", CASES)
def test_a_bad_value_is_one_line(path, option, bad, digits_cache, tmp_path, capsys):
    parser = dict(_walk(build_parser()))[path]
    dest = next(a.dest for a in parser._actions if option in a.option_strings)
    argv = [*path, *_required(parser, tmp_path, dest), f"{option}={bad}"]
    if any(a.dest == "cache_dir" for a in parser._actions):
        argv += ["--cache-dir", str(digits_cache)]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featkit: error:"), err
    assert "Traceback" not in err + out
    assert option in err or option.lstrip("-").replace("-", " ") in err, err


def test_every_help_prints_as_written():
    """Each subcommand's --help formats (no argparse % error) and shows no doubled '%%'."""
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        assert "%%" not in text, " ".join(path)
        assert parser.description or parser.format_usage(), " ".join(path)
