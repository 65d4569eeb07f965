/* exp and tanh in float, branch-free so the loops that call them vectorise: shared by the training
 * kernels (csrc/kernels.c: softmax, GELU) and the inference kernels (csrc/decode.c: GELU). */
#ifndef MINIGPT_FASTMATH_H
#define MINIGPT_FASTMATH_H
#include <math.h>
#include <stdint.h>

/* exp(x) for x <= 88.7, branch-free so loops over it vectorise (Cephes expf: |rel err| < 2 ulp).
 * x = n ln2 + r with |r| <= ln2/2; exp(r) = 1 + r + r^2 P(r), P of degree 5; 2^n put in the exponent bits.
 * Below -87.3 the result is 0 (float's normal range ends there). */
static inline float exp_f(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return x < -87.3f ? 0.0f : y * two_n.f;
}

/* tanh(u) as a 13/6 rational function of u on [-7.9, 7.9] (Eigen's float ptanh; tanh(7.9) rounds to
 * 1 in float), clamped outside: one division, no exp, and branch-free, so GELU vectorises well */
static inline float tanh_f(float u) {
    float x = u < -7.90531110763549805f ? -7.90531110763549805f : (u > 7.90531110763549805f ? 7.90531110763549805f : u);
    float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
}

#endif
