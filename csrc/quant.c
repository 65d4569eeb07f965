// ggml's block formats, dequantized: the fast path of minigpt/quant.py (its NumPy is the spec).
// Every size is checked here too, before a byte is read: the Python wrapper checks them first,
// and this file is also built under ASan/UBSan (.ci/sanitize).
#include <stdint.h>
#include <string.h>

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_BF16 = 30, QK = 32 };

// fp16 -> fp32, exact for every bit pattern (subnormals, infinities, NaN payloads), as NumPy does
static float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    float f;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        f = (float)man * 5.9604644775390625e-8f;  // man * 2^-24: exact
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t u16_at(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// bytes of n weights of a type, or -1 if the type is not one of these or n is not whole blocks
int64_t quant_nbytes(int type, int64_t n) {
    if (n < 0) return -1;
    switch (type) {
    case T_F32: return n * 4;
    case T_F16: case T_BF16: return n * 2;
    case T_Q8_0: return n % QK ? -1 : n / QK * 34;
    case T_Q4_0: return n % QK ? -1 : n / QK * 18;
    case T_Q4_1: return n % QK ? -1 : n / QK * 20;
    default: return -1;
    }
}

// out[0..n) = the n weights held in raw[0..nbytes); 0, or -1 (nothing written) if the sizes disagree
int dequantize_row(float *out, const uint8_t *raw, int type, int64_t n, int64_t nbytes) {
    int64_t need = quant_nbytes(type, n);
    if (need < 0 || need != nbytes) return -1;
    if (type == T_F32) {
        memcpy(out, raw, (size_t)n * 4);
    } else if (type == T_F16) {
        for (int64_t i = 0; i < n; i++) out[i] = fp16_to_fp32(u16_at(raw + 2 * i));
    } else if (type == T_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)u16_at(raw + 2 * i) << 16;
            memcpy(out + i, &bits, 4);
        }
    } else if (type == T_Q8_0) {
        for (int64_t b = 0; b < n / QK; b++) {
            const uint8_t *blk = raw + b * 34;
            float d = fp16_to_fp32(u16_at(blk));
            for (int j = 0; j < QK; j++) out[b * QK + j] = (float)(int8_t)blk[2 + j] * d;
        }
    } else {  // Q4_0 (w = d * (q - 8)) and Q4_1 (w = d * q + m); byte j holds j (low) and j + 16 (high)
        int size = type == T_Q4_0 ? 18 : 20;
        for (int64_t b = 0; b < n / QK; b++) {
            const uint8_t *blk = raw + b * size, *codes = blk + size - 16;
            float d = fp16_to_fp32(u16_at(blk));
            float *o = out + b * QK;
            if (type == T_Q4_0) {
                for (int j = 0; j < 16; j++) {
                    o[j] = d * (float)((codes[j] & 0x0f) - 8);
                    o[j + 16] = d * (float)((codes[j] >> 4) - 8);
                }
            } else {
                float m = fp16_to_fp32(u16_at(blk + 2));
                for (int j = 0; j < 16; j++) {  // -ffp-contract=off: a multiply, then an add, as NumPy
                    o[j] = d * (float)(codes[j] & 0x0f) + m;
                    o[j + 16] = d * (float)(codes[j] >> 4) + m;
                }
            }
        }
    }
    return 0;
}
