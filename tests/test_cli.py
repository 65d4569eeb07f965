"""The `minigpt` command: bad input is one clear line on stderr and exit code 2, never a traceback."""
import pytest

from minigpt import GPT, GPTConfig
from minigpt.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "data" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["prepare", "/no/such/dir", "--out", "x"], "minigpt prepare: /no/such/dir: no such file or directory"),
    (["sample", "--checkpoint", "MODEL", "--prompt-ids", "99999"], "token ids must be ints in [0, vocab_size=60)"),
    (["sample", "--checkpoint", "/no/model.bin"], "not found: /no/model.bin"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    GPT(GPTConfig(block_size=16, vocab_size=60, n_layer=1, n_head=2, n_embd=8), backend="numpy").save(tmp_path / "m.bin")
    argv = [str(tmp_path / "m.bin") if a == "MODEL" else a for a in argv]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("MINIGPT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["prepare", "/no/such/dir", "--out", "x"])
