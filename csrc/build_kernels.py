"""cffi builder for minigpt._kernels: csrc/gemm.c + csrc/kernels.c (every op of GPT-2 in C, OpenMP).

Compiled by `pip install -e .` (setup.py finds every csrc/build_*.py), or directly:
    python csrc/build_kernels.py          # writes minigpt/_kernels*.so

Flags, chosen at build time:
    default                 -O3 -march=native (the GEMM's SIMD micro-kernels are chosen at run time
                            by cpuid in every build: csrc/gemm.c)
    MINIGPT_PORTABLE=1      -O3 for the baseline of the target (no -march=native): a build that runs
                            on any x86-64, still with AVX2/AVX-512 GEMM where the CPU has them
    MINIGPT_SANITIZE=1      -fsanitize=address,undefined -O1 -g (CI runs the tests under it)
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ffibuilder = FFI()
for header in ("gemm.h", "minigpt.h"):
    with open(os.path.join(HERE, header)) as f:
        # cffi's cdef takes the declarations only: drop the include guard and other preprocessor lines
        ffibuilder.cdef("\n".join(line for line in f.read().splitlines() if not line.startswith("#")))

# no errno and no FP traps: lets GCC vectorise sqrtf and the branch-free selects of exp_f;
# -ffp-contract=fast: a*b+c becomes one FMA (-std=c11 would otherwise forbid it)
compile_args = ["-std=c11", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-Wall", "-Wno-unknown-pragmas"]
link_args = ["-fopenmp"]
if os.environ.get("MINIGPT_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-O1", "-g"]
    compile_args += san
    link_args += san
else:
    compile_args += ["-O3"]
if not os.environ.get("MINIGPT_PORTABLE"):
    compile_args += ["-march=native"]

ffibuilder.set_source(
    "minigpt._kernels",
    '#include "minigpt.h"',
    sources=[os.path.join(HERE, name) for name in ("gemm.c", "kernels.c")],
    include_dirs=[HERE],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

if __name__ == "__main__":
    from inplace import build_inplace  # csrc/inplace.py
    print(build_inplace(ffibuilder, "_kernels"))
