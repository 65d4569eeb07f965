"""cffi builder for minigpt._data: the data pipeline's C routines (csrc/langid.c: fastText language
ID; csrc/textstats.c: Gopher repetition's n-gram statistics, MinHash signatures).

`pip install -e .` runs this through setup.py; `python csrc/build_data.py` builds it in place.
-ffp-contract=off: fastText rounds every product before adding it, and so must we.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef("""
    typedef struct {
        int dim, nwords, minn, maxn;
        uint32_t bucket;
        const float *rows;
        const int32_t *prune;
        const int32_t *table;
        const uint32_t *word_hash;
        const int64_t *word_off;
        const uint8_t *word_bytes;
        uint32_t mask;
    } lid_model;
    int64_t lid_hidden_sum(const lid_model *m, const uint8_t *text, int64_t n, float *hidden, uint8_t *scratch);
    int lid_hs_best(const float *out, const int32_t *left, const int32_t *right, int nlabels, int dim,
                    const float *hidden, float *score);
    int gopher_ngram_stats(const uint8_t *buf, int64_t nbytes, const int *top_n, int n_top, int64_t *top,
                           const int *dup_n, int n_dup, int64_t *dup);
    int64_t minhash_signature(const uint8_t *buf, int64_t nbytes, int n, const uint64_t *a, const uint64_t *b,
                              int n_hashes, uint64_t *out);
    void sha1_digest(const uint8_t *msg, int64_t n, uint8_t *digest);
""")

compile_args = ["-O3", "-march=native", "-ffp-contract=off"]
link_args = []
if os.environ.get("MINIGPT_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    compile_args += sanitize
    link_args += sanitize

ffibuilder.set_source(
    "minigpt._data",
    '#include "langid.c"\n#include "textstats.c"',
    include_dirs=[HERE],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=["m"],
)

if __name__ == "__main__":
    from inplace import build_inplace  # csrc/inplace.py
    print(build_inplace(ffibuilder, "_data"))
