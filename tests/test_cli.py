"""The `minigpt` command: bad input is one clear line on stderr and exit code 2, never a traceback."""
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "data" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["prepare", "/no/such/dir", "--out", "x"], "minigpt prepare: /no/such/dir: no such file or directory"),
    (["sample", "MODEL", "--prompt-ids", "99999"], "token ids must be ints in [0, vocab_size=60)"),
    (["sample", "/no/model.bin"], "/no/model.bin: no such run directory or checkpoint file"),
    (["sample", "MODEL", "--prompt-ids", "1", "--temperature", "nan"], "temperature must be a finite number"),
    (["sample", "MODEL", "--prompt-ids", "1", "--num-samples", "0"], "num_samples must be >= 1"),
    (["sample", "MODEL", "--prompt-ids", "1", "--max-new-tokens", "x"], "expected an integer, found 'x'"),
    (["train", "--batch-size", "0"], "batch_size must be in [1, any, found 0"),
    (["train", "--dropout", "1.0"], "dropout must be in [0, 1), found 1.0"),
    (["train", "--steps", "-5"], "steps must be in [1, any, found -5"),
    (["train", "--lr", "nan"], "lr must be a finite number"),
    (["train", "--threads", "0"], "threads must be an int >= 1"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    GPT(GPTConfig(block_size=16, vocab_size=60, n_layer=1, n_head=2, n_embd=8), backend="numpy").save(tmp_path / "m.bin")
    argv = [str(tmp_path / "m.bin") if a == "MODEL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("MINIGPT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["prepare", "/no/such/dir", "--out", "x"])


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("minigpt 0.")
