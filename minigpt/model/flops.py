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


def cpu_info():
    """The first CPU's fields of /proc/cpuinfo ("flags", "vendor_id", "cpu family", ...); {} elsewhere."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if info:
                        break  # the end of the first CPU's block
                    continue
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags():
    return set(cpu_info().get("flags", "").split())


def fma_lanes_per_cycle(info):
    """fp32 FMA lanes a core completes per cycle. AMD Zen 4 (family 25 with AVX-512) runs a 512-bit
    FMA as two halves on its two 256-bit units: AVX-512 there peaks where AVX2 does (measured: the
    AVX-512 and AVX2 GEMM kernels run at the same speed)."""
    flags = set(info.get("flags", "").split())
    zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"
    if "avx512f" in flags and not zen4:
        return 2 * 16
    if {"avx2", "fma"} <= flags or "avx512f" in flags:
        return 2 * 8
    return 2 * 4


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return max(mhz) if mhz else 2500.0
    except OSError:
        return 2500.0


def peak_flops(threads=None):
    """fp32 peak of `threads` cores: cores x GHz x FLOPs per cycle per core (2 per FMA lane).
    AVX-512: 2 FMA units x 16 lanes x 2 = 64 (Zen 4: 32); AVX2+FMA: 2 x 8 x 2 = 32; SSE: 16.
    The clock is /proc/cpuinfo's, the nominal one: a core that boosts above it can pass this peak."""
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    return threads * cpu_mhz() * 1e6 * 2 * fma_lanes_per_cycle(cpu_info())
