"""csrc/run.c, the standalone C runner: built with gcc, its greedy output equals the Python engine's
for a tiny model trained here; bf16 (v5) checkpoints, the loss they cost, and bad input."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minigpt.inference import kvcache
from minigpt.model import backend
from minigpt.model import GPT
from minigpt.fileio import write_checkpoint_bf16
from conftest import SHAKESPEARE
from minigpt.inference.generate import generate
from minigpt.tokenizer.files import write_llmc_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT = 256

# Train a byte-level model for a few hundred steps. It runs in a child process so that its tiny
# matmuls can use one BLAS thread (a multi-threaded BLAS on small matrices is slow on busy cores).
TRAIN = r"""
import sys
import numpy as np
from minigpt.model import GPT, GPTConfig
path, out = sys.argv[1], sys.argv[2]
text = open(path, "rb").read()[:5000] if path != "-" else (b"the quick brown fox jumps over the lazy dog. " * 100)
data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
cfg = GPTConfig(block_size=64, vocab_size=257, n_layer=2, n_head=2, n_embd=48)
model = GPT(cfg, backend="numpy", seed=0)
rng = np.random.default_rng(0)
for step in range(1, 201):
    ix = rng.integers(0, len(data) - 33, 16)
    x = np.stack([data[i:i + 32] for i in ix]); y = np.stack([data[i + 1:i + 33] for i in ix])
    model.forward(x, y); model.zero_grad(); model.backward(); model.update(3e-3, t=step)
model.save(out)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("runc")
    ck = str(d / "model.bin")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    src = SHAKESPEARE if os.path.exists(SHAKESPEARE) else "-"  # a built-in text when shared/ is absent
    subprocess.run([sys.executable, "-c", TRAIN, src, ck], check=True, env=env, cwd=ROOT)
    model = GPT.load(ck, backend="numpy")
    ck16 = str(d / "model16.bin")
    write_checkpoint_bf16(ck16, model.config, model.params_memory)
    tok = str(d / "tok.bin")
    write_llmc_table(tok, [bytes([i]) for i in range(256)] + [b"<|endoftext|>"], EOT)
    return dict(dir=d, model=model, ck=ck, ck16=ck16, tok=tok)


@pytest.fixture(scope="module")
def run_bin(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: run.c is built with gcc")
    exe = str(tmp_path_factory.mktemp("runbin") / "run")
    flags = ["-O3", "-march=native", "-fopenmp"]
    if os.environ.get("MINIGPT_SANITIZE"):
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    subprocess.run([gcc, *flags, "-Wall", "-Wextra", "-Werror", "-o", exe,
                    os.path.join(ROOT, "csrc", "run.c"), "-lm"], check=True)
    return exe


def run_c(exe, *args, check=True):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the sanitizer runtime is linked in when asked for, not preloaded
    p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"run.c failed ({p.returncode}): {p.stderr}")
    return p


@pytest.mark.parametrize("which", ["ck", "ck16"])
def test_run_c_greedy_equals_python(trained, run_bin, which):
    prompt = list(b"First Citizen:\n")
    weights = kvcache.DecodeWeights.load(trained[which])
    assert weights.half == (which == "ck16")
    want = generate(weights, prompt, max_new_tokens=40, temperature=0)[0]
    assert len(set(want)) > 3, "the trained model should say something non-trivial"
    ids = run_c(run_bin, trained[which], "-z", trained["tok"], "-I", " ".join(map(str, prompt)),
                "-n", 40, "-t", 0, "-o", "ids").stdout.split()
    assert list(map(int, ids)) == want
    for kern in ("c" in backend.available()) and ["numpy"] or []:  # the NumPy spec agrees too
        assert generate(weights, prompt, max_new_tokens=40, temperature=0, kernels=kern)[0] == want
    # text in, text out: the prompt is encoded byte by byte, the output streamed as bytes
    text = run_c(run_bin, trained[which], "-z", trained["tok"], "-i", "First Citizen:\n", "-n", 40, "-t", 0).stdout
    assert text == "First Citizen:\n" + bytes(want).decode("utf-8", errors="replace") + "\n"


def test_run_c_sampling_seeds_and_context_limit(trained, run_bin):
    args = [trained["ck"], "-z", trained["tok"], "-I", "70 105", "-t", 1.0, "-p", 0.9, "-o", "ids"]
    a = run_c(run_bin, *args, "-n", 30, "-s", 1).stdout
    assert a == run_c(run_bin, *args, "-n", 30, "-s", 1).stdout
    assert a != run_c(run_bin, *args, "-n", 30, "-s", 2).stdout
    # block_size 64: a 2-token prompt leaves room for 63 new tokens, as in Python
    full = run_c(run_bin, *args, "-n", 500, "-s", 1).stdout.split()
    py = generate(trained["model"], [70, 105], max_new_tokens=500, temperature=1.0, top_p=0.9)[0]
    assert len(full) == len(py) == 63


def test_run_c_bad_input(trained, run_bin, tmp_path):
    def fails(*args, message):
        p = run_c(run_bin, *args, check=False)
        assert p.returncode != 0 and message in p.stderr, p.stderr
    fails(trained["ck"], "-z", tmp_path / "missing.bin", message="cannot open tokenizer file")
    fails(tmp_path / "missing.bin", message="cannot open model checkpoint")
    fails(trained["tok"], message="not an llm.c model checkpoint")
    fails(trained["ck"], "-I", "1 300", message="outside [0, vocab_size)")
    fails(trained["ck"], "-I", " ".join(["1"] * 65), message="longer than the model's block_size")
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(open(trained["ck"], "rb").read()[:-8])
    fails(trunc, "-I", "1", message="expected")


def test_bf16_loss_difference(trained):
    """Held-out loss with every parameter in bf16 against fp32: the cost of half the bytes."""
    model = trained["model"]
    B, T = 32, 64
    if os.path.exists(SHAKESPEARE):
        text = open(SHAKESPEARE, "rb").read()[-(B * T + 1):]  # the end of the corpus: never trained on
    else:
        text = b"the quick brown fox jumps over the lazy dog. " * 50
    data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)[:B * T + 1]
    x, y = data[:-1].reshape(B, T), data[1:].reshape(B, T)
    fp32 = model.forward(x, y)
    half = GPT.load(trained["ck16"], backend="numpy")  # v5 read back widened to fp32
    bf16 = half.forward(x, y)
    print(f"held-out loss fp32 {fp32:.5f} bf16 {bf16:.5f} difference {bf16 - fp32:+.5f}")
    assert abs(bf16 - fp32) < 0.01
