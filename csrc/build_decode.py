"""cffi builder for minigpt._decode: the KV-cache inference kernels of csrc/decode.c.

`pip install -e .` runs this through setup.py; `python csrc/build_decode.py` builds it in place.
MINIGPT_SANITIZE=1 builds with AddressSanitizer and UBSan (the CI sanitizer step).
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef("""
    void decode_set_threads(int n);
    int decode_get_threads(void);
    void matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
    void matvec_forward_bf16(float *out, const float *inp, const uint16_t *w, const float *bias,
                             int N, int C, int OC);
    void layernorm_cached(float *out, const float *inp, const float *w, const float *b, int N, int C);
    void kv_write(float *kcache, float *vcache, const float *qkv, const int *streams, const int *positions,
                  int N, int C, int NH, int maxT);
    void attention_cached(float *out, const float *qkv, const float *kcache, const float *vcache,
                          const int *streams, const int *positions, int N, int C, int NH, int maxT);
    void gelu_forward(float *out, const float *inp, int N);
    double stream_read(const float *x, long n);
    const char *sgemm_kernel_name(void);
""")

compile_args = ["-O3", "-march=native", "-fopenmp"]
link_args = ["-fopenmp"]
if os.environ.get("MINIGPT_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    compile_args += sanitize
    link_args += sanitize

ffibuilder.set_source(
    "minigpt._decode",
    '#include "decode.c"',
    include_dirs=[HERE],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=["m"],
)

if __name__ == "__main__":
    from inplace import build_inplace  # csrc/inplace.py
    print(build_inplace(ffibuilder, "_decode"))
