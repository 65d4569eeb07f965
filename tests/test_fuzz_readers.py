"""#12: random bytes and random header values thrown at every binary reader, in Python and run.c.
Each either loads or fails with a message that names the file (Python: a ValueError or OSError;
run.c: exit 1 and one `run:` line), never a crash, a hang or an unbounded allocation. The files are
built three ways: pure noise, a valid header with random sizes and body length, and a valid file
with a few bytes changed or cut off."""
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt.config import GPTConfig, num_parameters
from minigpt.fileio import read_checkpoint, read_shard, write_checkpoint, write_shard
from minigpt.model import GPT
from minigpt.pretrain import checkpoint
from minigpt.tokenizer import Tokenizer, load_tokenizer
from minigpt.tokenizer.files import read_llmc, read_tiktoken, write_llmc_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
small = st.integers(-3, 9)
any_int32 = st.one_of(small, st.integers(-2**31, 2**31 - 1), st.sampled_from([2**31 - 1, -2**31, 2**16, 65536]))


def header(*fields):
    return np.array(list(fields) + [0] * (256 - len(fields)), "<i4").tobytes()


def mutate(data, edits, cut):
    data = bytearray(data)
    for pos, byte in edits:
        if data:
            data[pos % len(data)] = byte
    return bytes(data[:len(data) - cut % (len(data) + 1)] if cut else data)


edits = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6)


_VALID = {}


def valid_files():
    """One valid file of each kind, to mutate (built once; a plain function, not a fixture, so
    that hypothesis does not print its bytes with a failing example)."""
    if _VALID:
        return _VALID
    import pathlib
    d = pathlib.Path(tempfile.mkdtemp(prefix="fuzzvalid"))
    cfg = GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=2)
    model = GPT(cfg, backend="numpy", seed=0)
    write_checkpoint(str(d / "model.bin"), cfg, model.params_memory)
    write_shard(str(d / "shard.bin"), np.arange(20) % 7)
    run = d / "run"
    run.mkdir()
    checkpoint.save(str(run), 3, model, {"settings": {}, "loader": {}, "val_loss": None, "dropout_rng": {}})
    tok = Tokenizer.train(["hello hello world"], vocab_size=260)
    tok.save(str(d / "tok.model"))
    tok.save_llmc(str(d / "tok.bin"))
    tok.save_tiktoken(str(d / "tok.tiktoken"))
    out = {k: (d / k).read_bytes() for k in ("model.bin", "shard.bin", "tok.model", "tok.bin", "tok.tiktoken")}
    out["state"] = (run / "ckpt_000003.state").read_bytes()
    out["state_model"] = (run / "ckpt_000003.bin").read_bytes()
    shutil.rmtree(d)
    _VALID.update(out)
    return _VALID


def loads_or_names_the_file(read, path):
    try:
        read(path)
    except (ValueError, OSError) as e:   # FileFormatError, UnicodeDecodeError are ValueErrors
        assert str(path) in str(e) or os.path.basename(str(path)) in str(e), f"{type(e).__name__}: {e}"


def write(data, name="f.bin"):
    d = tempfile.mkdtemp(prefix="fuzz")
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    return d, path


def checked(read, data, name="f.bin"):
    d, path = write(data, name)
    try:
        loads_or_names_the_file(read, path)
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------------
# Python readers

READERS = {"checkpoint": read_checkpoint, "shard": read_shard, "tokenizer": load_tokenizer,
           "llmc": read_llmc, "tiktoken": read_tiktoken}


@FUZZ
@given(which=st.sampled_from(sorted(READERS)), data=st.binary(max_size=3000))
def test_noise(which, data):
    checked(READERS[which], data, "f.tiktoken" if which == "tiktoken" else "f.bin")


@FUZZ
@given(version=st.sampled_from([3, 5, 1, -1]), sizes=st.lists(any_int32, min_size=6, max_size=6),
       extra=st.integers(-8, 8), exact=st.booleans())
def test_checkpoint_headers(version, sizes, extra, exact):
    maxT, V, L, NH, C, Vp = sizes
    body = 0
    if exact and min(maxT, V, L, NH, C) > 0 and Vp >= V and C % NH == 0 and max(sizes) < 64:
        cfg = GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)
        cfg.padded_vocab_size = Vp
        body = num_parameters(cfg) * (2 if version == 5 else 4)
    checked(read_checkpoint, header(20240326, version, *sizes) + bytes(max(0, body + extra)))


@FUZZ
@given(ntok=any_int32, body=st.integers(0, 200), version=st.sampled_from([1, 2]))
def test_shard_headers(ntok, body, version):
    checked(read_shard, header(20240520, version, ntok) + bytes(body))


@FUZZ
@given(n=any_int32, eot=any_int32, body=st.binary(max_size=600), version=st.sampled_from([2, 3]),
       v3=st.lists(any_int32, min_size=4, max_size=4))
def test_llmc_headers(n, eot, body, version, v3):
    checked(read_llmc, header(20240328, version, n, eot, *v3) + body)
    checked(load_tokenizer, header(20240328, version, n, eot, *v3) + body)


@FUZZ
@given(which=st.sampled_from(["model.bin", "shard.bin", "tok.model", "tok.bin", "tok.tiktoken"]), e=edits,
       cut=st.integers(0, 40))
def test_mutated_files(which, e, cut):
    read = {"model.bin": read_checkpoint, "shard.bin": read_shard, "tok.model": load_tokenizer,
            "tok.bin": load_tokenizer, "tok.tiktoken": read_tiktoken}[which]
    checked(read, mutate(valid_files()[which], e, cut), which)


@FUZZ
@given(fields=st.lists(any_int32, min_size=3, max_size=3), e=edits, cut=st.integers(0, 40), keep_header=st.booleans())
def test_training_states(fields, e, cut, keep_header):
    """load_state checks the header, the CRC of its body and the model file's CRC; a state whose
    CRC is right but whose JSON is not what it should be is refused too."""
    state = mutate(valid_files()["state"], e, cut)
    if not keep_header:
        state = header(20251122, 1, *fields) + state[1024:]
    d = tempfile.mkdtemp(prefix="fuzz")
    try:
        for name, data in (("ckpt_000003.state", state), ("ckpt_000003.bin", valid_files()["state_model"])):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        loads_or_names_the_file(checkpoint.load_state, os.path.join(d, "ckpt_000003.state"))
    finally:
        shutil.rmtree(d)


@FUZZ
@given(info=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                      st.fixed_dictionaries({"step": st.one_of(st.integers(-3, 3), st.text(max_size=2)),
                                             "model_file": st.sampled_from(["ckpt_000003.bin", "../x", "", 7]),
                                             "model_crc32": st.one_of(st.integers(), st.none())})))
def test_training_state_json_with_a_valid_crc(info):
    import json
    import zlib
    raw = valid_files()["state"]
    n, njson = struct.unpack_from("<2i", raw, 8)
    moments = raw[1024 + njson:]
    body = json.dumps(info).encode()
    crc = zlib.crc32(moments, zlib.crc32(body))
    state = header(20251122, 1, n, len(body), np.uint32(crc).view(np.int32)) + body + moments
    d = tempfile.mkdtemp(prefix="fuzz")
    try:
        for name, data in (("ckpt_000003.state", state), ("ckpt_000003.bin", valid_files()["state_model"])):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        loads_or_names_the_file(checkpoint.load_state, os.path.join(d, "ckpt_000003.state"))
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------------
# run.c, as a subprocess


@pytest.fixture(scope="module")
def run_bin(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: run.c is built with gcc")
    exe = str(tmp_path_factory.mktemp("runbin") / "run")
    flags = ["-O1", "-fopenmp"]
    if os.environ.get("MINIGPT_SANITIZE"):
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    subprocess.run([gcc, *flags, "-o", exe, os.path.join(ROOT, "csrc", "run.c"), "-lm"], check=True)
    return exe


def run_c(exe, model, tok=None, args=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", ASAN_OPTIONS="detect_leaks=0")  # run.c frees at exit, by exiting
    env.pop("LD_PRELOAD", None)
    cmd = [exe, model, "-n", "2", "-t", "1", "-p", "0.9", "-s", "1", "-o", "ids", *args]
    if tok:
        cmd += ["-z", tok]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, errors="replace")
    assert p.returncode in (0, 1), (p.returncode, p.stderr[-2000:])   # a signal is negative
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr[-2000:]
    if p.returncode == 1:  # one message, or the usage text for flags it does not know
        assert (p.stderr.startswith("run: ") and p.stderr.count("\n") == 1
                or p.stderr.startswith("usage: run")), p.stderr[-2000:]
    return p


@FUZZ
@given(version=st.sampled_from([3, 5]), sizes=st.lists(any_int32, min_size=6, max_size=6), extra=st.integers(-4, 4),
       exact=st.booleans(), noise=st.binary(min_size=16, max_size=16))
def test_run_c_checkpoint_headers(run_bin, version, sizes, extra, exact, noise):
    maxT, V, L, NH, C, Vp = sizes
    body = 64
    if exact and min(maxT, V, L, NH, C) > 0 and Vp >= V and C % NH == 0 and max(sizes) < 64:
        cfg = GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)
        cfg.padded_vocab_size = Vp
        body = num_parameters(cfg) * (2 if version == 5 else 4) + extra
    weights = (noise * (max(0, body) // 16 + 1))[:max(0, body)]  # random weights: NaN and inf included
    d, path = write(header(20240326, version, *sizes) + weights)
    try:
        run_c(run_bin, path, args=("-I", "0"))
    finally:
        shutil.rmtree(d)


@FUZZ
@given(n=any_int32, eot=any_int32, body=st.binary(max_size=400), how=st.sampled_from(["noise", "header", "mutated"]),
       version=st.sampled_from([2, 3]), v3=st.lists(any_int32, min_size=4, max_size=4), e=edits,
       cut=st.integers(0, 40))
def test_run_c_tokenizers(run_bin, n, eot, body, how, version, v3, e, cut):
    """Version 2 (llm.c's decode table) and 3 (minigpt's: + specials, merges, Unicode class runs)."""
    d, model = write(valid_files()["model.bin"])
    try:
        tok = os.path.join(d, "tok.bin")
        with open(tok, "wb") as f:
            f.write({"noise": body, "header": header(20240328, version, n, eot, *v3) + body,
                     "mutated": mutate(valid_files()["tok.bin"], e, cut)}[how])
        run_c(run_bin, model, tok, args=("-i", "hello world"))
    finally:
        shutil.rmtree(d)


@FUZZ
@given(e=edits, cut=st.integers(0, 40), flags=st.lists(st.sampled_from(["-n", "-t", "-p", "-s", "-I", "-o", "-x", "-q"]),
                                                       max_size=3), values=st.lists(st.text(max_size=6), max_size=3))
def test_run_c_mutated_model_and_flags(run_bin, e, cut, flags, values):
    d, model = write(mutate(valid_files()["model.bin"], e, cut))
    try:
        args = [x for pair in zip(flags, values + [""] * 3) for x in pair if "\x00" not in x]
        run_c(run_bin, model, args=["-I", "1", *args])
    finally:
        shutil.rmtree(d)
