"""cffi builder for minigpt._bpe: byte-level BPE pre-split, encoding and training (csrc/bpe.c).

setup.py compiles it; by hand: `python csrc/build_bpe.py` (writes minigpt/_bpe*.so).
MINIGPT_SANITIZE=1 builds with AddressSanitizer and UBSan.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
with open(os.path.join(HERE, "bpe.h")) as f:
    # cdef wants declarations only: drop the preprocessor lines
    ffibuilder.cdef("\n".join(line for line in f if not line.startswith("#")))

args = ["-O3", "-std=c99"]
link_args = []
if os.environ.get("MINIGPT_SANITIZE"):
    args = ["-std=c99", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args = ["-fsanitize=address,undefined"]

ffibuilder.set_source(
    "minigpt._bpe",
    '#include "bpe.h"',
    sources=[os.path.join(HERE, name) for name in ("bpe.c", "bpe_train.c")],
    include_dirs=[HERE],
    extra_compile_args=args,
    extra_link_args=link_args,
)

if __name__ == "__main__":
    from inplace import build_inplace  # csrc/inplace.py
    print(build_inplace(ffibuilder, "_bpe"))
