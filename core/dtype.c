/* dtype.c - weight type traits table (names, block sizes, bytes per block for
 * every ggml type id) and the exact fp16/bf16 conversions.
 *
 * The kernels themselves (dequantize, dot, quantize, activation quantization)
 * live in dtype_k.c; this file is what the GGUF reader needs to size tensors. */
#include "core/dtype.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Sizes follow ggml's block structs (ggml-common.h); QK_K = 256.
 * supported / can_quantize mark what dtype_k.c implements. */
#define T(n, bs, ts, sup, q) {n, bs, ts, true, sup, q}
static const dtype_traits dtype_table[DT_COUNT] = {
    [DT_F32] = T("F32", 1, 4, true, true),
    [DT_F16] = T("F16", 1, 2, true, true),
    [DT_Q4_0] = T("Q4_0", 32, 18, true, true),
    [DT_Q4_1] = T("Q4_1", 32, 20, true, true),
    [DT_Q5_0] = T("Q5_0", 32, 22, true, true),
    [DT_Q5_1] = T("Q5_1", 32, 24, true, true),
    [DT_Q8_0] = T("Q8_0", 32, 34, true, true),
    [DT_Q8_1] = T("Q8_1", 32, 36, false, false),
    [DT_Q2_K] = T("Q2_K", 256, 84, true, true),
    [DT_Q3_K] = T("Q3_K", 256, 110, true, true),
    [DT_Q4_K] = T("Q4_K", 256, 144, true, true),
    [DT_Q5_K] = T("Q5_K", 256, 176, true, true),
    [DT_Q6_K] = T("Q6_K", 256, 210, true, true),
    [DT_Q8_K] = T("Q8_K", 256, 292, false, false),
    [16] = T("IQ2_XXS", 256, 66, false, false),
    [17] = T("IQ2_XS", 256, 74, false, false),
    [18] = T("IQ3_XXS", 256, 98, false, false),
    [19] = T("IQ1_S", 256, 50, false, false),
    [20] = T("IQ4_NL", 32, 18, false, false),
    [21] = T("IQ3_S", 256, 110, false, false),
    [22] = T("IQ2_S", 256, 82, false, false),
    [23] = T("IQ4_XS", 256, 136, false, false),
    [DT_I8] = T("I8", 1, 1, false, false),
    [DT_I16] = T("I16", 1, 2, false, false),
    [DT_I32] = T("I32", 1, 4, false, false),
    [DT_I64] = T("I64", 1, 8, false, false),
    [DT_F64] = T("F64", 1, 8, false, false),
    [29] = T("IQ1_M", 256, 56, false, false),
    [DT_BF16] = T("BF16", 1, 2, true, true),
    [34] = T("TQ1_0", 256, 54, false, false),
    [35] = T("TQ2_0", 256, 66, false, false),
    [39] = T("MXFP4", 32, 17, false, false),
};
#undef T

static const dtype_traits dtype_unknown = {"unknown", 0, 0, false, false, false};

const dtype_traits *dtype_get(int type)
{
    if (type < 0 || type >= DT_COUNT || !dtype_table[type].known)
        return &dtype_unknown;
    return &dtype_table[type];
}

const char *dtype_name(int type)
{
    static _Thread_local char buf[4][24];
    static _Thread_local int k;
    const dtype_traits *t = dtype_get(type);
    if (t->known)
        return t->name;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "type#%d", type);
    return p;
}

int dtype_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < DT_COUNT; i++) {
        if (!dtype_table[i].known)
            continue;
        const char *a = dtype_table[i].name, *b = name;
        while (*a && *b && tolower((unsigned char)*a) == tolower((unsigned char)*b))
            a++, b++;
        if (!*a && !*b)
            return i;
    }
    return -1;
}

size_t dtype_row_size(int type, int64_t n)
{
    const dtype_traits *t = dtype_get(type);
    if (!t->known || n < 0 || n % t->block_size)
        return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}

/* ---- fp16 / bf16 ---------------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan: keep the payload, stay quiet-or-not as given */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return f32_from_bits(sign);
        /* subnormal: man * 2^-24, exactly representable in f32 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_fp16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) { /* inf or nan; a nan stays a nan (quiet bit set) */
        if (x > 0x7f800000u)
            return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x1ff);
        return sign | 0x7c00;
    }
    if (x >= 0x477ff000u) /* >= 65520: rounds to infinity */
        return sign | 0x7c00;
    if (x < 0x38800000u) { /* below 2^-14: half subnormal (units of 2^-24) or zero */
        uint32_t e = x >> 23;
        if (e < 102) /* < 2^-25: rounds to zero */
            return sign;
        uint32_t man = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++; /* may carry into the smallest normal: still the right encoding */
        return sign | (uint16_t)q;
    }
    /* normal: round the 13 dropped bits to nearest even; a carry bumps the exponent */
    x += 0xfffu + ((x >> 13) & 1);
    return sign | (uint16_t)((x - (112u << 23)) >> 13);
}

float bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan: truncate, force the quiet bit */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
