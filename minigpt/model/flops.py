"""How much arithmetic a model needs, and how much this machine can do: for MFU figures.

MFU (model FLOPs utilisation) = achieved FLOP/s / peak FLOP/s, as in the PaLM paper and nanoGPT.
"""
import os


def flops_per_token(cfg, T, training=True):
    """FLOPs to process one token of a length-T sequence: 2 per parameter-multiply (forward) plus the
    attention scores and mixing; training adds the backward, twice the forward (hence 6N)."""
    N = (cfg.n_layer * 12 * cfg.n_embd ** 2          # qkv, attproj, fc, fcproj weight matrices
         + cfg.padded_vocab_size * cfg.n_embd)      # the LM head (tied wte)
    attention = 2 * cfg.n_layer * T * cfg.n_embd    # q.k and att.v, per token, causal average ~T/2 x 2
    forward = 2 * N + attention
    return 3 * forward if training else forward


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return max(mhz) if mhz else 2500.0
    except OSError:
        return 2500.0


def peak_flops(threads=None):
    """fp32 peak of `threads` cores: cores x GHz x FLOPs per cycle per core.
    AVX-512: 2 FMA units x 16 lanes x 2 = 64; AVX2+FMA: 2 x 8 x 2 = 32; SSE: 2 x 4 x 2 = 16."""
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    flags = cpu_flags()
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16
    return threads * cpu_mhz() * 1e6 * per_cycle
