"""minigpt/model/flops.py: the peak that MFU figures divide by, per CPU class."""
from minigpt.model.flops import fma_lanes_per_cycle, peak_flops


def cpu(vendor, family, flags):
    return {"vendor_id": vendor, "cpu family": family, "flags": flags}


def test_fma_lanes_per_cycle_by_cpu_class():
    assert fma_lanes_per_cycle(cpu("GenuineIntel", "6", "sse2 avx2 fma avx512f")) == 32  # 2 x 512-bit FMA
    assert fma_lanes_per_cycle(cpu("AuthenticAMD", "25", "sse2 avx2 fma avx512f")) == 16  # Zen 4: halves
    assert fma_lanes_per_cycle(cpu("AuthenticAMD", "26", "sse2 avx2 fma avx512f")) == 32  # Zen 5
    assert fma_lanes_per_cycle(cpu("AuthenticAMD", "25", "sse2 avx2 fma")) == 16           # Zen 3
    assert fma_lanes_per_cycle(cpu("GenuineIntel", "6", "sse2")) == 8
    assert fma_lanes_per_cycle({}) == 8


def test_peak_scales_with_threads():
    assert peak_flops(2) == 2 * peak_flops(1) > 0
