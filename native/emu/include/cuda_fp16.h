// The host build's cuda_fp16.h: the few half-precision conversions the kernels use, as the PTX instructions do
// them (cvt.rn.f16.f32: IEEE round-to-nearest-even with subnormals, overflow to infinity, NaN -> 0x7FFF;
// cvt.f32.f16: exact, NaN -> 0x7FFFFFFF), in integer arithmetic.
#pragma once

#include "dq4j_emu.h"

struct __half {
    uint16_t bits;
};

struct __half2 {
    uint16_t x;  // low half: the first argument of __floats2half2_rn
    uint16_t y;
};
static_assert(sizeof(__half2) == 4, "__half2 is one 32-bit register");

namespace dq4j_emu {

inline uint16_t f32_to_f16_rn(float f) {
    const uint32_t b = __float_as_uint(f);
    const uint32_t sign = (b >> 16) & 0x8000u;
    const uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) {
        return 0x7FFF;
    }
    if (a >= 0x477FF000u) {  // 65520 and up (infinity included) round to infinity
        return (uint16_t)(sign | 0x7C00u);
    }
    if (a >= 0x38800000u) {  // normal half: rebias the exponent, round the 13 dropped bits
        uint32_t r = (a >> 13) - (112u << 10);
        const uint32_t rem = a & 0x1FFFu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) {
            r++;
        }
        return (uint16_t)(sign | r);
    }
    if (a < 0x33000000u) {  // below 2^-25 (or exactly it: a tie to even zero)
        return (uint16_t)sign;
    }
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;  // units of 2^-24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) {
        r++;
    }
    return (uint16_t)(sign | r);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1Fu) {
        return m != 0 ? __uint_as_float(0x7FFFFFFFu) : __uint_as_float(sign | 0x7F800000u);
    }
    if (e != 0) {
        return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
    }
    if (m == 0) {
        return __uint_as_float(sign);
    }
    int exp = 113;  // normalize the subnormal
    while ((m & 0x400u) == 0) {
        m <<= 1;
        exp--;
    }
    return __uint_as_float(sign | ((uint32_t)exp << 23) | ((m & 0x3FFu) << 13));
}

}  // namespace dq4j_emu

inline __half __ushort_as_half(unsigned short h) { return __half{h}; }
inline float __half2float(__half h) { return ::dq4j_emu::f16_to_f32(h.bits); }
inline __half2 __floats2half2_rn(float lo, float hi) {
    return __half2{::dq4j_emu::f32_to_f16_rn(lo), ::dq4j_emu::f32_to_f16_rn(hi)};
}
