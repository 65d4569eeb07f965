"""Resumable checkpoints: the model in llm.c's format plus a side file with everything else.

    RUN/ckpt_000500.bin     the model, llm.c checkpoint (20240326 v3): llm.c can load it as it is
    RUN/ckpt_000500.state   the rest of the training state, our own format:

        header  256 int32: [0]=20251122 [1]=1 [2]=N parameters [3]=JSON bytes [4]=CRC-32 of the body
        body    JSON (UTF-8): step, settings, data position, RNG state, CRC-32 of the model file
                AdamW first moments m, fp32 (N), then second moments v, fp32 (N)

Both are written atomically (temp file, rename), the model first, so a `.state` only exists beside a
complete model file. The CRCs catch a file changed or damaged after it was written, and a state
paired with the wrong model.
"""
import glob
import json
import os
import re
import zlib

import numpy as np

from ..fileio import (CHECKPOINT_NAME, HEADER_BYTES, FileFormatError, atomic_write, check_length, make_header,
                      read_header)
from ..model.ops_cuda import DeviceArray

STATE_MAGIC, STATE_VERSION = 20251122, 1
NAME = re.compile(r"ckpt_(\d+)\.state$")


def file_crc32(path, chunk=1 << 24):
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def get_moments(model):
    """AdamW's (m, v) as host arrays (zeros before the first update). CudaGPT keeps them on the GPU."""
    n = model.num_parameters
    if getattr(model, "d_m", None) is not None:
        return model.d_m.download(), model.d_v.download()
    if model.m_memory is None:
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    return model.m_memory, model.v_memory


def set_moments(model, m, v):
    if hasattr(model, "d_m"):  # CudaGPT: moments live on the device
        model.d_m, model.d_v = DeviceArray((m.size,)), DeviceArray((v.size,))
        model.d_m.upload(m)
        model.d_v.upload(v)
    else:
        model.m_memory, model.v_memory = m, v


def paths(run_dir, step):
    base = os.path.join(run_dir, CHECKPOINT_NAME.format(step=step))
    return base + ".bin", base + ".state"


def save(run_dir, step, model, info, keep=None, moments=None):
    """Write the model and its training state for `step`; keep only the newest `keep` checkpoints.
    moments: AdamW's full (m, v) when the model holds only a slice of them (ZeRO-1)."""
    model_path, state_path = paths(run_dir, step)
    model.save(model_path)
    n = model.num_parameters
    m, v = moments if moments is not None else get_moments(model)
    info = dict(info, step=step, model_file=os.path.basename(model_path), model_crc32=file_crc32(model_path))
    body = [json.dumps(info).encode("utf-8"), np.ascontiguousarray(m, "<f4").tobytes(),
            np.ascontiguousarray(v, "<f4").tobytes()]
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    header = make_header(STATE_MAGIC, STATE_VERSION, n, len(body[0]), np.uint32(crc).view(np.int32))

    def write(f):
        f.write(header.tobytes())
        for part in body:
            f.write(part)
    atomic_write(state_path, write)
    if keep:
        for old in list_steps(run_dir)[:-keep]:
            for p in paths(run_dir, old):
                if os.path.exists(p):
                    os.unlink(p)
    return model_path, state_path


def list_steps(run_dir):
    """Steps that have a state file in run_dir, oldest first."""
    steps = [int(NAME.search(p).group(1)) for p in glob.glob(os.path.join(run_dir, "ckpt_*.state"))]
    return sorted(steps)


def load_state(state_path):
    """Read and verify a side file (and the CRC of its model file); returns (info, m, v)."""
    header = read_header(state_path, STATE_MAGIC, {STATE_VERSION}, "training state")
    n, njson = int(header[2]), int(header[3])
    if n <= 0 or njson <= 0:
        raise FileFormatError(f"{state_path}: bad training state header: N={n}, JSON bytes={njson}")
    check_length(state_path, HEADER_BYTES + njson + 8 * n, "training state")
    with open(state_path, "rb") as f:
        f.seek(HEADER_BYTES)
        raw = f.read()
    crc = zlib.crc32(raw)
    expected = int(np.int32(header[4]).view(np.uint32))
    if crc != expected:
        raise FileFormatError(f"{state_path}: corrupted training state: CRC-32 of the body is {crc:#010x}, "
                              f"the header says {expected:#010x}")
    info = json.loads(raw[:njson].decode("utf-8"))
    m = np.frombuffer(raw, dtype="<f4", count=n, offset=njson).astype(np.float32)
    v = np.frombuffer(raw, dtype="<f4", count=n, offset=njson + 4 * n).astype(np.float32)
    model_path = os.path.join(os.path.dirname(state_path), info["model_file"])
    if not os.path.exists(model_path):
        raise FileFormatError(f"{state_path}: its model file {model_path} is missing")
    found = file_crc32(model_path)
    if found != info["model_crc32"]:
        raise FileFormatError(f"{model_path}: corrupted model checkpoint: CRC-32 is {found:#010x}, "
                              f"its training state {state_path} recorded {info['model_crc32']:#010x}")
    return info, m, v


def resolve(path):
    """A run directory (its newest checkpoint) or a .state/.bin file -> the .state path."""
    if os.path.isdir(path):
        steps = list_steps(path)
        if not steps:
            raise FileNotFoundError(f"{path}: no checkpoints (ckpt_*.state) to resume from")
        return paths(path, steps[-1])[1]
    if path.endswith(".bin"):
        path = path[:-len(".bin")] + ".state"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such training state")
    return path


def open_run(run_dir, resume):
    """Make run_dir; with resume, its newest checkpoint as (info, m, v) (info["model_file"] names the
    model beside it), else None. A fresh run never writes over a run that has checkpoints."""
    os.makedirs(run_dir, exist_ok=True)
    steps = list_steps(run_dir)
    if steps and not resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints: add --resume to continue that run, "
                              f"or give another --out")
    if not resume or not steps:
        return None
    return load_state(paths(run_dir, steps[-1])[1])
