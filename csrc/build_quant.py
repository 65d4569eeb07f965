"""cffi builder for minigpt._quant: csrc/quant.c, the C dequantizer of ggml's block formats.

`pip install -e .` runs this through setup.py; `python csrc/build_quant.py` builds it in place.
MINIGPT_SANITIZE=1 builds with AddressSanitizer and UBSan (the CI sanitizer step).
-ffp-contract=off: Q4_1's d * q + m must stay a multiply then an add (an FMA rounds once, not twice),
so C is bit-exact with the NumPy specification.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef("""
    int64_t quant_nbytes(int type, int64_t n);
    int dequantize_row(float *out, const uint8_t *raw, int type, int64_t n, int64_t nbytes);
""")

compile_args = ["-O3", "-march=native", "-ffp-contract=off"]
link_args = []
if os.environ.get("MINIGPT_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    compile_args += sanitize
    link_args += sanitize

ffibuilder.set_source(
    "minigpt._quant",
    '#include "quant.c"',
    include_dirs=[HERE],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

if __name__ == "__main__":
    from inplace import build_inplace  # csrc/inplace.py
    print(build_inplace(ffibuilder, "_quant"))
