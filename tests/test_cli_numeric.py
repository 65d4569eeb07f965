"""#12: every numeric flag of every subcommand, given zero, a negative, NaN, infinity, a string or a
float where an int is meant, ends in exit 2 with one line on stderr and no traceback. The flags are
read from the parsers, so a new subcommand or flag is covered without touching this file."""
import argparse
import importlib
import json

import pytest

from minigpt.cli import SUBCOMMANDS, Parser, main

MISSING = "/nonexistent/minigpt-input"   # every run that gets past its flags stops here, clearly


INPUTS = ("data", "base", "checkpoint")  # options that name an input file or folder


def parser_of(name):
    p = Parser(prog=f"minigpt {name}")
    importlib.import_module(SUBCOMMANDS[name][0]).add_arguments(p)
    return p


def numeric_flags():
    """(subcommand, flag, int or float) for every flag whose type parses a number."""
    out = []
    for name in SUBCOMMANDS:
        for a in parser_of(name)._actions:
            kind = getattr(a.type, "__name__", None)
            if a.option_strings and kind in ("int", "float"):
                out.append((name, a.option_strings[0], kind))
    return out


FLAGS = numeric_flags()


def test_the_flag_list_covers_every_subcommand():
    assert {name for name, _, _ in FLAGS} >= {"data", "prepare", "train", "sample"}
    assert ("train", "--batch-size", "int") in FLAGS and ("sample", "--temperature", "float") in FLAGS
    assert ("prepare", "--vocab-size", "int") in FLAGS and ("data", "--shard-tokens", "int") in FLAGS


def argv_for(name, tmp_path):
    """The subcommand with inputs that do not exist (and an --out of its own), read from its parser:
    a run that gets past its flags stops at the missing input, before any work."""
    argv = [name]
    for a in parser_of(name)._actions:
        if not a.option_strings and a.default is None and a.dest != "help":
            argv.append(MISSING)                    # a required positional: the input
        elif a.option_strings and a.dest in INPUTS:
            argv += [a.option_strings[0], MISSING]
        elif a.option_strings and a.dest == "out":
            argv += [a.option_strings[0], str(tmp_path / "o")]
    return argv


@pytest.mark.parametrize("name, flag, kind", FLAGS, ids=[f"{n}{f}" for n, f, _ in FLAGS])
def test_every_numeric_flag(tmp_path, capsys, name, flag, kind):
    bad = ["nan", "inf", "-inf", "abc", ""] + (["1.5", "1e3"] if kind == "int" else [])
    for value in ["0", "-1", "-0.5", "99999999999999999999"] + bad:
        argv = argv_for(name, tmp_path) + [flag, value]
        assert main(argv) == 2, argv
        out = capsys.readouterr()
        assert out.err.count("\n") == 1 and out.err.endswith("\n"), (argv, out.err)
        assert "Traceback" not in out.err and out.out == "", (argv, out.err)
        named = flag[2:] in out.err or flag[2:].replace("-", "_") in out.err
        if value in bad or value == "-0.5" and kind == "int":
            assert named, (argv, out.err)                       # refused by the flag's own check
        else:
            assert named or MISSING in out.err, (argv, out.err)  # refused, or ran on into the missing input


@pytest.mark.parametrize("text, message", [
    ("5", "must be an object"), ("null", "must be an object"), ('"train"', "must be an object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("steps = 2e3", "steps must be an int"), ("steps = '300'", "steps must be an int"),
    ("lr = nan", "lr must be a"), ("batch_size = " + "(" * 400 + "1" + ")" * 400, "batch_size must be an int"),
    (json.dumps({"dropout": 1.0}), "dropout must be in"), (json.dumps({"keep": -5}), "keep must be in"),
    (b"\xff\xfe steps = 3", "not a UTF-8 text file"),
], ids=lambda x: repr(x)[:30])
def test_config_values(tmp_path, capsys, text, message):
    path = tmp_path / "cfg.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["train", "--config", str(path), "--data", MISSING]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
