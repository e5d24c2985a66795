/* test_dtype.c - weight types: traits, fp16/bf16 conversions, known-answer
 * blocks that pin every block layout byte by byte, and for every type
 * quantize -> dequantize error bounds, dot_row == dot(dequantize(w), x), and
 * the integer activation path vec_dot_q8 against the float dot.
 *
 * Known-answer blocks are written at explicit byte offsets (not through the
 * structs of core/dtype_blocks.h) and their expected values are computed
 * here from the format description, so a layout mistake in core/ fails. */
#include "core/dtype.h"
#include "testutil.h"

#include <float.h>
#include <math.h>

/* ---- traits ---------------------------------------------------------------- */

static void test_traits(void)
{
    static const struct {
        int type;
        const char *name;
        int64_t bs;
        size_t ts;
    } want[] = {
        {DT_F32, "F32", 1, 4},        {DT_F16, "F16", 1, 2},        {DT_Q4_0, "Q4_0", 32, 18},
        {DT_Q4_1, "Q4_1", 32, 20},    {DT_Q5_0, "Q5_0", 32, 22},    {DT_Q5_1, "Q5_1", 32, 24},
        {DT_Q8_0, "Q8_0", 32, 34},    {DT_Q8_1, "Q8_1", 32, 36},    {DT_Q2_K, "Q2_K", 256, 84},
        {DT_Q3_K, "Q3_K", 256, 110},  {DT_Q4_K, "Q4_K", 256, 144},  {DT_Q5_K, "Q5_K", 256, 176},
        {DT_Q6_K, "Q6_K", 256, 210},  {DT_Q8_K, "Q8_K", 256, 292},  {DT_I8, "I8", 1, 1},
        {DT_I16, "I16", 1, 2},        {DT_I32, "I32", 1, 4},        {DT_I64, "I64", 1, 8},
        {DT_F64, "F64", 1, 8},        {DT_BF16, "BF16", 1, 2},      {16, "IQ2_XXS", 256, 66},
        {17, "IQ2_XS", 256, 74},      {18, "IQ3_XXS", 256, 98},     {19, "IQ1_S", 256, 50},
        {20, "IQ4_NL", 32, 18},       {21, "IQ3_S", 256, 110},      {22, "IQ2_S", 256, 82},
        {23, "IQ4_XS", 256, 136},     {29, "IQ1_M", 256, 56},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const dtype_traits *t = dtype_get(want[i].type);
        TU_CHECK(t->known, "type %d not known", want[i].type);
        TU_CHECK(!strcmp(t->name, want[i].name), "type %d name %s want %s", want[i].type, t->name,
                 want[i].name);
        TU_CHECK(t->block_size == want[i].bs && t->type_size == want[i].ts,
                 "%s: block %lld/%zu want %lld/%zu", want[i].name, (long long)t->block_size,
                 t->type_size, (long long)want[i].bs, want[i].ts);
        TU_CHECK(dtype_from_name(want[i].name) == want[i].type, "from_name(%s)", want[i].name);
        TU_CHECK(dtype_row_size(want[i].type, want[i].bs * 3) == want[i].ts * 3, "%s row size",
                 want[i].name);
    }
    TU_CHECK(dtype_from_name("q4_k") == DT_Q4_K, "from_name is case-insensitive");
    TU_CHECK(dtype_from_name("bf16") == DT_BF16, "from_name(bf16)");
    TU_CHECK(dtype_from_name("Q4_") == -1 && dtype_from_name("") == -1 &&
                 dtype_from_name(NULL) == -1,
             "from_name of non-names");
    TU_CHECK(dtype_row_size(DT_Q4_K, 4096) == 16 * 144, "Q4_K row 4096");
    TU_CHECK(dtype_row_size(DT_Q4_K, 100) == 0, "Q4_K row of 100 elements must be 0");
    TU_CHECK(dtype_row_size(DT_Q8_0, -32) == 0, "negative n");
    int bad[] = {-1, 4, 5, 31, 32, 33, 36, 37, 38, 40, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_CHECK(!dtype_get(bad[i])->known, "type %d must be unknown", bad[i]);
        TU_CHECK(dtype_row_size(bad[i], 256) == 0, "row size of unknown %d", bad[i]);
    }
    TU_CHECK(!strcmp(dtype_name(4), "type#4"), "dtype_name(4) = %s", dtype_name(4));
    TU_CHECK(!strcmp(dtype_name(DT_Q6_K), "Q6_K"), "dtype_name(Q6_K)");
    static const int sup[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                              DT_Q5_1, DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    for (size_t i = 0; i < sizeof sup / sizeof sup[0]; i++)
        TU_CHECK(dtype_get(sup[i])->supported && dtype_get(sup[i])->can_quantize,
                 "%s must be supported with a quantizer", dtype_name(sup[i]));
    float x[256] = {0};
    uint8_t buf[512];
    TU_CHECK(!quantize_row(DT_Q8_K, x, buf, 256), "Q8_K is not a weight quantizer");
    TU_CHECK(!quantize_row(DT_Q4_0, x, buf, 48), "n not a multiple of the block");
    TU_CHECK(dtype_vec_dot_type(DT_Q4_1) == DT_Q8_0 && dtype_vec_dot_type(DT_Q8_0) == DT_Q8_0 &&
                 dtype_vec_dot_type(DT_Q3_K) == DT_Q8_K && dtype_vec_dot_type(DT_Q6_K) == DT_Q8_K &&
                 dtype_vec_dot_type(DT_BF16) == DT_F32 && dtype_vec_dot_type(DT_I8) == -1,
             "dtype_vec_dot_type");
}

/* ---- fp16 / bf16 ------------------------------------------------------------ */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f32 -> f16 reference by exhaustive search over the two neighbouring halves,
 * in double: nearest, ties to the even encoding, overflow past 65520 to inf. */
static uint16_t ref_to_fp16(float f)
{
    if (isnan(f))
        return 0x7e00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0)
        return sign | 0x7c00;
    /* binary search for the largest finite half <= a */
    int lo = 0, hi = 0x7bff;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((double)fp16_to_f32((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double vlo = fp16_to_f32((uint16_t)lo);
    if (vlo == a || lo == 0x7bff)
        return sign | (uint16_t)lo;
    double vhi = fp16_to_f32((uint16_t)(lo + 1));
    double dl = a - vlo, dh = vhi - a;
    int r = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return sign | (uint16_t)r;
}

static void test_fp16(void)
{
    /* every half survives half -> f32 -> half; f32 values checked by shape */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((uint16_t)h);
        int exp = (h >> 10) & 31, man = h & 1023;
        if (exp == 31 && man) {
            if (!isnan(f) || ((f32_to_fp16(f) & 0x7c00) != 0x7c00) || !(f32_to_fp16(f) & 0x3ff))
                bad++;
            continue;
        }
        double want = exp == 0 ? ldexp(man, -24) : exp == 31 ? INFINITY : ldexp(1024 + man, exp - 25);
        if (h & 0x8000)
            want = -want;
        if ((double)f != want || !!signbit(f) != !!(h & 0x8000) || f32_to_fp16(f) != h)
            bad++;
    }
    TU_CHECK(bad == 0, "fp16 round trip: %d of 65536 halves wrong", bad);

    static const struct {
        uint32_t f;
        uint16_t h;
        const char *what;
    } cases[] = {
        {0x3f800000, 0x3c00, "1.0"},
        {0xbf800000, 0xbc00, "-1.0"},
        {0x80000000, 0x8000, "-0"},
        {0x477fe000, 0x7bff, "65504 (max half)"},
        {0x477fefff, 0x7bff, "just below 65520"},
        {0x477ff000, 0x7c00, "65520 ties to inf"},
        {0x7f800000, 0x7c00, "inf"},
        {0xff800000, 0xfc00, "-inf"},
        {0x7f7fffff, 0x7c00, "FLT_MAX"},
        {0x3f801000, 0x3c00, "1 + 2^-11: tie to even (down)"},
        {0x3f803000, 0x3c02, "1 + 3*2^-11: tie to even (up)"},
        {0x3f801001, 0x3c01, "just above the tie"},
        {0x38800000, 0x0400, "2^-14 smallest normal"},
        {0x387fc000, 0x03ff, "largest subnormal"},
        {0x387fe000, 0x0400, "tie between largest subnormal and smallest normal"},
        {0x33800000, 0x0001, "2^-24 smallest subnormal"},
        {0x33000000, 0x0000, "2^-25: tie to even (zero)"},
        {0x33000001, 0x0001, "just above 2^-25"},
        {0x33c00000, 0x0002, "1.5 * 2^-24: tie to even (2)"},
        {0x34200000, 0x0002, "2.5 * 2^-24: tie to even (2)"},
        {0x00000001, 0x0000, "f32 subnormal"},
        {0xb3800000, 0x8001, "-2^-24"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = f32_to_fp16(float_of(cases[i].f));
        TU_CHECK(got == cases[i].h, "f32_to_fp16(%s) = 0x%04x want 0x%04x", cases[i].what, got,
                 cases[i].h);
    }
    TU_CHECK(isnan(fp16_to_f32(f32_to_fp16(NAN))), "NaN -> half -> NaN");
    TU_CHECK(isnan(fp16_to_f32(f32_to_fp16(float_of(0x7f800001)))), "signalling NaN stays NaN");

    /* random f32 of every magnitude against the search reference, and against
     * the compiler's _Float16 conversion where there is one */
    uint64_t s = 7;
    int nbad = 0, nbad_cc = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)tu_rand_u64(&s);
        /* bias exponents to the interesting range 2^-30 .. 2^17 */
        if (i & 1)
            u = (u & 0x807fffffu) | ((uint32_t)(97 + (u >> 23) % 48) << 23);
        float f = float_of(u);
        if (isnan(f))
            continue;
        uint16_t got = f32_to_fp16(f);
        if (got != ref_to_fp16(f) && nbad++ < 5)
            fprintf(stderr, "  f32_to_fp16(0x%08x) = 0x%04x want 0x%04x\n", u, got, ref_to_fp16(f));
#if defined(__FLT16_MAX__)
        _Float16 hc = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &hc, 2);
        if (hb != got)
            nbad_cc++;
#endif
    }
    TU_CHECK(nbad == 0, "f32_to_fp16: %d random values differ from the reference", nbad);
    TU_CHECK(nbad_cc == 0, "f32_to_fp16: %d random values differ from _Float16", nbad_cc);
}

static void test_bf16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        if (bits_of(f) != h << 16)
            bad++;
        if (isnan(f) ? !isnan(bf16_to_f32(f32_to_bf16(f))) : f32_to_bf16(f) != h)
            bad++;
    }
    TU_CHECK(bad == 0, "bf16 round trip: %d wrong", bad);
    static const struct {
        uint32_t f;
        uint16_t h;
        const char *what;
    } cases[] = {
        {0x3f800000, 0x3f80, "1.0"},
        {0x3f808000, 0x3f80, "tie to even (down)"},
        {0x3f818000, 0x3f82, "tie to even (up)"},
        {0x3f808001, 0x3f81, "above the tie"},
        {0x3f807fff, 0x3f80, "below the tie"},
        {0x7f7fffff, 0x7f80, "FLT_MAX rounds to inf"},
        {0x7f7f7fff, 0x7f7f, "largest that stays finite"},
        {0xff800000, 0xff80, "-inf"},
        {0x00008000, 0x0000, "subnormal tie to even (zero)"},
        {0x00018000, 0x0002, "subnormal tie to even (up)"},
        {0x007fffff, 0x0080, "largest subnormal rounds to smallest normal"},
        {0x80000000, 0x8000, "-0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = f32_to_bf16(float_of(cases[i].f));
        TU_CHECK(got == cases[i].h, "f32_to_bf16(%s) = 0x%04x want 0x%04x", cases[i].what, got,
                 cases[i].h);
    }
    TU_CHECK(isnan(bf16_to_f32(f32_to_bf16(NAN))), "NaN stays NaN");
    TU_CHECK(isnan(bf16_to_f32(f32_to_bf16(float_of(0x7f800001)))),
             "NaN with payload only in the low bits stays NaN");
}

/* ---- known-answer blocks ----------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

static int check_block(const char *what, int type, const uint8_t *blk, const float *want, int n)
{
    float got[256];
    dequantize_row(type, blk, got, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            if (bad < 4)
                fprintf(stderr, "  %s: element %d = %g want %g\n", what, i, got[i], want[i]);
            bad++;
        }
    }
    TU_CHECK(bad == 0, "%s: %d of %d dequantized values wrong", what, bad, n);
    /* the element-formula decoding of dot_row must agree: one-hot x picks one element */
    float x[256] = {0};
    int bad_dot = 0;
    for (int i = 0; i < n; i++) {
        x[i] = 1.0f;
        float d = dot_row(type, blk, x, n);
        if (fabsf(d - want[i]) > 1e-6f * fmaxf(1.0f, fabsf(want[i])))
            bad_dot++;
        x[i] = 0.0f;
    }
    TU_CHECK(bad_dot == 0, "%s: dot_row with one-hot x disagrees on %d elements", what, bad_dot);
    return bad;
}

static void kat_32(void)
{
    uint8_t b[34];
    float want[32];

    /* Q8_0 | d f16 | qs[32] int8 |: d = 0.25, qs[j] = j - 16 */
    put16(b, 0x3400);
    for (int j = 0; j < 32; j++)
        b[2 + j] = (uint8_t)(int8_t)(j - 16);
    for (int j = 0; j < 32; j++)
        want[j] = (float)(j - 16) * 0.25f;
    check_block("Q8_0 KAT", DT_Q8_0, b, want, 32);
    TU_CHECK(want[0] == -4.0f && want[31] == 3.75f, "Q8_0 KAT self-check");

    /* Q4_0 | d | qs[16] |: d = 0.5, qs[j] = j | (15 - j) << 4.
     * element j (< 16) is the low nibble of qs[j], element j + 16 the high one. */
    put16(b, 0x3800);
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j - 8) * 0.5f;
        want[j + 16] = (float)(7 - j) * 0.5f;
    }
    check_block("Q4_0 KAT", DT_Q4_0, b, want, 32);
    float y[32];
    dequantize_row(DT_Q4_0, b, y, 32);
    TU_CHECK(y[0] == -4.0f && y[15] == 3.5f && y[16] == 3.5f && y[31] == -4.0f,
             "Q4_0 KAT literals %g %g %g %g", y[0], y[15], y[16], y[31]);

    /* Q4_1 | d | m | qs[16] |: d = 0.5, m = -1 */
    put16(b, 0x3800);
    put16(b + 2, 0xbc00);
    for (int j = 0; j < 16; j++)
        b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) {
        want[j] = (float)j * 0.5f - 1.0f;
        want[j + 16] = (float)(15 - j) * 0.5f - 1.0f;
    }
    check_block("Q4_1 KAT", DT_Q4_1, b, want, 32);

    /* Q5_0 | d | qh u32 LE | qs[16] |: d = 1, qh = 0xAAAA5555 (bit j = 5th bit of
     * element j): elements 0..15 have it when j is even, 16..31 when j is odd.
     * qs[j] = j | j << 4. x = (q - 16) * d. */
    put16(b, 0x3c00);
    b[2] = 0x55, b[3] = 0x55, b[4] = 0xaa, b[5] = 0xaa;
    for (int j = 0; j < 16; j++)
        b[6 + j] = (uint8_t)(j | j << 4);
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j + (j % 2 == 0 ? 16 : 0) - 16);
        want[j + 16] = (float)(j + (j % 2 == 1 ? 16 : 0) - 16);
    }
    check_block("Q5_0 KAT", DT_Q5_0, b, want, 32);
    dequantize_row(DT_Q5_0, b, y, 32);
    TU_CHECK(y[0] == 0.0f && y[1] == -15.0f && y[16] == -16.0f && y[17] == 1.0f,
             "Q5_0 KAT literals %g %g %g %g", y[0], y[1], y[16], y[17]);

    /* Q5_1 | d | m | qh | qs |: d = 0.25, m = 2; same bits; x = q * d + m */
    put16(b, 0x3400);
    put16(b + 2, 0x4000);
    b[4] = 0x55, b[5] = 0x55, b[6] = 0xaa, b[7] = 0xaa;
    for (int j = 0; j < 16; j++)
        b[8 + j] = (uint8_t)(j | j << 4);
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j + (j % 2 == 0 ? 16 : 0)) * 0.25f + 2.0f;
        want[j + 16] = (float)(j + (j % 2 == 1 ? 16 : 0)) * 0.25f + 2.0f;
    }
    check_block("Q5_1 KAT", DT_Q5_1, b, want, 32);
}

/* Q2_K | scales[16] @0 | qs[64] @16 | d @80 | dmin @82 |
 * The 256 elements are two halves of 128; in half h, element 32*k + l (k = 0..3,
 * l = 0..31) is bits 2k..2k+1 of qs[32h + l]. Group g = i/16 has scale
 * scales[g] & 15 and min scales[g] >> 4: x = d*scale*q - dmin*min. */
static void kat_q2_k(void)
{
    uint8_t b[84];
    float want[256];
    uint64_t s = 21;
    for (int i = 0; i < 84; i++)
        b[i] = (uint8_t)tu_rand_u64(&s);
    put16(b + 80, 0x3800); /* d = 0.5 */
    put16(b + 82, 0x3400); /* dmin = 0.25 */
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int i = 128 * h + 32 * k + l, g = i / 16;
                int q = (b[16 + 32 * h + l] >> (2 * k)) & 3;
                want[i] = 0.5f * (float)(b[g] & 15) * (float)q - 0.25f * (float)(b[g] >> 4);
            }
    check_block("Q2_K KAT", DT_Q2_K, b, want, 256);

    /* literal: scales[5] = 0x3a (scale 10, min 3), qs[16+32+7] = 0b11100100:
     * half 1, l = 7: elements 135 (q 0), 167 (q 1), 199 (q 2), 231 (q 3) */
    memset(b, 0, 84);
    put16(b + 80, 0x3800), put16(b + 82, 0x3400);
    b[8] = 0x3a, b[10] = 0x3a, b[12] = 0x3a, b[14] = 0x3a; /* groups 8, 10, 12, 14 */
    b[16 + 32 + 7] = 0xe4;
    float y[256];
    dequantize_row(DT_Q2_K, b, y, 256);
    /* group of 135 is 8, of 167 is 10, 199 -> 12, 231 -> 14; each min 0.75 */
    TU_CHECK(y[135] == -0.75f && y[167] == 4.25f && y[199] == 9.25f && y[231] == 14.25f,
             "Q2_K literals %g %g %g %g", y[135], y[167], y[199], y[231]);
    TU_CHECK(y[0] == 0.0f && y[136] == -0.75f, "Q2_K literal zeros %g %g", y[0], y[136]);
}

/* Q3_K | hmask[32] @0 | qs[64] @32 | scales[12] @96 | d @108 |
 * low 2 bits as Q2_K; the high bit of element i is bit i/32 of hmask[i%32];
 * q = low2 - 4 when the high bit is clear. Group g (of 16) has the 6-bit scale
 * (low 4 bits: scales[g%8], nibble g/8; high 2 bits: scales[8 + g%4], bits
 * 2*(g/4)) minus 32. x = d * scale * q. */
static void kat_q3_k(void)
{
    uint8_t b[110];
    float want[256];
    uint64_t s = 33;
    for (int i = 0; i < 110; i++)
        b[i] = (uint8_t)tu_rand_u64(&s);
    put16(b + 108, 0x3000); /* d = 0.125 */
    for (int i = 0; i < 256; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32, g = i / 16;
        int lo = (b[32 + 32 * h + l] >> (2 * k)) & 3;
        int hb = (b[i % 32] >> (i / 32)) & 1;
        int sc_lo = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4;
        int sc_hi = (b[96 + 8 + g % 4] >> (2 * (g / 4))) & 3;
        int scale = (sc_lo | sc_hi << 4) - 32;
        want[i] = 0.125f * (float)scale * (float)(lo - (hb ? 0 : 4));
    }
    check_block("Q3_K KAT", DT_Q3_K, b, want, 256);

    /* literals: group 13 scale: low nibble = high nibble of scales[5], high bits
     * = bits 6..7 of scales[9]. scales[5] = 0x70, scales[9] = 0x80 -> 7 | 2<<4 =
     * 39 -> 7. Element 208 (group 13): half 1, k = 2, l = 16; qs[32+32+16]
     * bits 4..5 = 3, hmask[16] bit 6 set -> q = 3 -> x = 0.125*7*3 = 2.625.
     * Element 209: bits = 1, high bit clear -> q = 1 - 4 = -3 -> -2.625. */
    memset(b, 0, 110);
    put16(b + 108, 0x3000);
    b[96 + 5] = 0x70, b[96 + 9] = 0x80;
    b[32 + 32 + 16] = 0x30, b[32 + 32 + 17] = 0x10;
    b[16] = 0x40;
    float y[256];
    dequantize_row(DT_Q3_K, b, y, 256);
    TU_CHECK(y[208] == 2.625f && y[209] == -2.625f, "Q3_K literals %g %g", y[208], y[209]);
    /* group 0: scale bits all zero -> -32; element 0: q = 0 - 4 -> 0.125*-32*-4 = 16 */
    TU_CHECK(y[0] == 16.0f, "Q3_K literal y[0] = %g want 16", y[0]);
}

/* 6-bit scale/min of Q4_K/Q5_K group g from scales[12], per the format:
 * g < 4: scale = s[g] & 63, min = s[g+4] & 63;
 * g >= 4: scale = low nibble of s[g+4] | top 2 bits of s[g-4] << 4,
 *         min = high nibble of s[g+4] | top 2 bits of s[g] << 4. */
static void k_scale_min(const uint8_t *s, int g, int *sc, int *mn)
{
    if (g < 4) {
        *sc = s[g] & 63, *mn = s[g + 4] & 63;
    } else {
        *sc = (s[g + 4] & 15) | (s[g - 4] >> 6) << 4;
        *mn = (s[g + 4] >> 4) | (s[g] >> 6) << 4;
    }
}

/* Q4_K | d @0 | dmin @2 | scales[12] @4 | qs[128] @16 |: groups of 32; group g's
 * nibbles are in qs[32*(g/2) .. +31], low nibble for even g, high for odd g.
 * Q5_K | d | dmin | scales[12] | qh[32] @16 | qs[128] @48 |: 5th bit of element
 * i is bit i/32 of qh[i%32]. x = d*scale*q - dmin*min. */
static void kat_q45_k(int bits)
{
    uint8_t b[176];
    float want[256];
    uint64_t s = 45 + bits;
    int size = bits == 4 ? 144 : 176, qs_at = bits == 4 ? 16 : 48;
    for (int i = 0; i < size; i++)
        b[i] = (uint8_t)tu_rand_u64(&s);
    put16(b, 0x3800);     /* d = 0.5 */
    put16(b + 2, 0x2c00); /* dmin = 0.0625 */
    for (int i = 0; i < 256; i++) {
        int g = i / 32, sc, mn;
        k_scale_min(b + 4, g, &sc, &mn);
        int q = (b[qs_at + 32 * (g / 2) + i % 32] >> (g % 2 ? 4 : 0)) & 15;
        if (bits == 5)
            q += ((b[16 + i % 32] >> g) & 1) * 16;
        want[i] = 0.5f * (float)sc * (float)q - 0.0625f * (float)mn;
    }
    check_block(bits == 4 ? "Q4_K KAT" : "Q5_K KAT", bits == 4 ? DT_Q4_K : DT_Q5_K, b, want, 256);

    /* literals: group 6 (elements 192..223): scale = (s[10] & 15) | (s[2] >> 6) << 4,
     * min = (s[10] >> 4) | (s[6] >> 6) << 4. s[2] = 0xc0, s[6] = 0x40, s[10] = 0x35 ->
     * scale 5 | 3<<4 = 53, min 3 | 1<<4 = 19. Element 200: qs[32*3 + 8] low nibble. */
    memset(b, 0, size);
    put16(b, 0x3800), put16(b + 2, 0x2c00);
    b[4 + 2] = 0xc0, b[4 + 6] = 0x40, b[4 + 10] = 0x35;
    b[qs_at + 96 + 8] = 0x9b; /* element 200: q 11; element 232 (group 7): q 9 */
    if (bits == 5)
        b[16 + 8] = 0x40; /* bit 6: element 200 gets +16 */
    float y[256];
    dequantize_row(bits == 4 ? DT_Q4_K : DT_Q5_K, b, y, 256);
    float w200 = 0.5f * 53.0f * (bits == 4 ? 11.0f : 27.0f) - 0.0625f * 19.0f;
    TU_CHECK(y[200] == w200, "Q%d_K literal y[200] = %g want %g", bits, y[200], w200);
    /* group 7 scale = (s[11] & 15) | (s[3] >> 6) << 4 = 0, min = 0 -> zero */
    TU_CHECK(y[232] == 0.0f && y[201] == -0.0625f * 19.0f, "Q%d_K literals y[232] %g y[201] %g",
             bits, y[232], y[201]);
    /* group 2 (g < 4): scale = s[2] & 63 = 0, min = s[6] & 63 = 0 */
    TU_CHECK(y[64] == 0.0f, "Q%d_K literal y[64] = %g", bits, y[64]);
}

/* Q6_K | ql[128] @0 | qh[64] @128 | scales[16] int8 @192 | d @208 |
 * Two halves of 128; in half h, element 32k + l (k = 0..3): the low 4 bits are
 * the low (k < 2) or high (k >= 2) nibble of ql[64h + 32*(k%2) + l], the high 2
 * bits are bits 2k..2k+1 of qh[32h + l]. x = d * scales[i/16] * (q - 32). */
static void kat_q6_k(void)
{
    uint8_t b[210];
    float want[256];
    uint64_t s = 66;
    for (int i = 0; i < 210; i++)
        b[i] = (uint8_t)tu_rand_u64(&s);
    put16(b + 208, 0x2400); /* d = 2^-6 */
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int i = 128 * h + 32 * k + l;
                uint8_t lb = b[64 * h + 32 * (k % 2) + l];
                int lo = k < 2 ? lb & 15 : lb >> 4;
                int hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
                want[i] = 0.015625f * (float)(int8_t)b[192 + i / 16] * (float)((lo | hi << 4) - 32);
            }
    check_block("Q6_K KAT", DT_Q6_K, b, want, 256);

    /* literals: element 128 + 96 + 5 = 229 (h 1, k 3, l 5): high nibble of
     * ql[64 + 32 + 5], bits 6..7 of qh[32 + 5]; scales[229/16 = 14] = -3.
     * ql = 0xa0 -> 10, qh = 0x80 -> 2 -> q = 42 - 32 = 10 -> x = 2^-6 * -3 * 10. */
    memset(b, 0, 210);
    put16(b + 208, 0x2400);
    b[64 + 32 + 5] = 0xa0, b[128 + 32 + 5] = 0x80, b[192 + 14] = (uint8_t)(int8_t)-3;
    float y[256];
    dequantize_row(DT_Q6_K, b, y, 256);
    TU_CHECK(y[229] == -0.46875f, "Q6_K literal y[229] = %g want -0.46875", y[229]);
    /* element 165 (k 1, l 5) reads the low nibble of the same ql byte: 0 | hi 0 -> -32,
     * its group 10 has scale 0 -> 0; element 229 - 32 = 197: group 12 scale 0 */
    TU_CHECK(y[165] == 0.0f && y[197] == 0.0f, "Q6_K literal zeros %g %g", y[165], y[197]);
}

/* ---- golden checksums from an independent decoder ------------------------------
 * The sums below were computed once by gguf-py 0.19.0 (gguf.quants.dequantize,
 * the numpy decoder of the llama.cpp project) over the blocks golden_blocks()
 * generates: c = sum_i y_i * ((7919 i mod 97) - 48) / 48 and q = sum_i y_i^2
 * over 4 blocks. Random bytes exercise every bit of qh/hmask/scales. */
/* seeded random blocks of `type` (nb blocks): random bytes, scale fields set to
 * f16 of uniform [-1, 1) so every value is finite */
static void golden_blocks(int type, int nb, uint8_t *w)
{
    const dtype_traits *tr = dtype_get(type);
    uint64_t s = 0x9e3779b97f4a7c15ULL ^ (uint64_t)type;
    for (size_t i = 0; i < (size_t)nb * tr->type_size; i++)
        w[i] = (uint8_t)tu_rand_u64(&s);
    size_t off = type == DT_Q2_K ? 80 : type == DT_Q3_K ? 108 : type == DT_Q6_K ? 208 : 0;
    int two = type == DT_Q4_1 || type == DT_Q5_1 || type == DT_Q2_K || type == DT_Q4_K ||
              type == DT_Q5_K;
    for (int b = 0; b < nb; b++) {
        uint8_t *p = w + (size_t)b * tr->type_size + off;
        uint16_t h = f32_to_fp16(tu_rand_f(&s));
        p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
        if (two) {
            h = f32_to_fp16(tu_rand_f(&s));
            p[2] = (uint8_t)h, p[3] = (uint8_t)(h >> 8);
        }
    }
}

static void test_golden(void)
{
    static const struct {
        int type;
        double c, q;
    } gold[] = {
        {DT_Q4_0, -13.843292236328123, 1161.0170013904572},
        {DT_Q4_1, 3.3619689941406214, 5234.8519513607025},
        {DT_Q5_0, -12.186599731445307, 2885.1175418496132},
        {DT_Q5_1, 47.49444580078125, 10929.32316297479},
        {DT_Q8_0, 320.16877237955725, 170726.08288264275},
        {DT_Q2_K, -75.23084831237793, 92970.456873512827},
        {DT_Q3_K, -148.70513343811041, 335476.35568261892},
        {DT_Q4_K, -1883.7704760233557, 34008399.781009391},
        {DT_Q5_K, 1698.1433938344323, 180034269.17786947},
        {DT_Q6_K, 1994.8803151448565, 161225767.73805445},
    };
    for (size_t k = 0; k < sizeof gold / sizeof gold[0]; k++) {
        int64_t n = 4 * dtype_get(gold[k].type)->block_size;
        uint8_t w[4 * 292];
        float y[1024];
        golden_blocks(gold[k].type, 4, w);
        dequantize_row(gold[k].type, w, y, n);
        double c = 0, q = 0;
        for (int64_t i = 0; i < n; i++) {
            c += (double)y[i] * (double)((i * 7919) % 97 - 48) / 48.0;
            q += (double)y[i] * y[i];
        }
        TU_CHECK(fabs(c - gold[k].c) <= 1e-9 * fabs(gold[k].q) &&
                     fabs(q - gold[k].q) <= 1e-9 * fabs(gold[k].q),
                 "%s: golden checksums %.17g %.17g want %.17g %.17g", dtype_name(gold[k].type), c,
                 q, gold[k].c, gold[k].q);
    }
}

/* ---- quantize / dequantize / dot over random data ----------------------------- */

typedef struct type_case {
    int type;
    double rmse_max;   /* relative RMSE bound of quantize -> dequantize */
} type_case;

/* gaussian-ish (sum of 4 uniforms), row scale varying by row, a few outliers */
static void fill_row(float *x, int64_t n, uint64_t *s, int row)
{
    float scale = 0.02f * (float)(1 + row % 5);
    for (int64_t i = 0; i < n; i++) {
        float g = tu_rand_f(s) + tu_rand_f(s) + tu_rand_f(s) + tu_rand_f(s);
        x[i] = scale * g;
        if (tu_rand_u64(s) % 512 == 0)
            x[i] *= 6.0f;
    }
}

/* dequantize a Q8_K row (the test's own reading of its layout) */
static void deq_q8_k(const uint8_t *b, float *y, int64_t n, int *bsum_bad)
{
    for (int64_t ib = 0; ib < n / 256; ib++, b += 292, y += 256) {
        float d;
        memcpy(&d, b, 4);
        for (int j = 0; j < 256; j++)
            y[j] = d * (float)(int8_t)b[4 + j];
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += (int8_t)b[4 + 16 * g + j];
            int16_t bs;
            memcpy(&bs, b + 260 + 2 * g, 2);
            if (bs != sum)
                (*bsum_bad)++;
        }
    }
}

static void test_type(const type_case *tc)
{
    const dtype_traits *t = dtype_get(tc->type);
    const int64_t nblocks[] = {1, 2, 3, 8};
    int64_t nmax = 8 * (t->block_size > 32 ? t->block_size : 32);
    float *x = malloc(sizeof(float) * (size_t)nmax), *y = malloc(sizeof(float) * (size_t)nmax);
    float *x2 = malloc(sizeof(float) * (size_t)nmax), *xd = malloc(sizeof(float) * (size_t)nmax);
    uint8_t *w = malloc(dtype_row_size(tc->type, nmax) + 1);
    uint8_t *xq = malloc(dtype_row_size(DT_Q8_K, 2048) + dtype_row_size(DT_Q8_0, 2048));
    uint64_t s = 1000 + (uint64_t)tc->type;
    double se = 0, sx = 0, worst_dot = 0, worst_q8 = 0, worst_q8x = 0;
    int nrows = 0, bad_dot = 0, bad_q8 = 0, bad_q8x = 0, bsum_bad = 0;
    for (size_t k = 0; k < sizeof nblocks / sizeof nblocks[0]; k++) {
        int64_t n = t->block_size == 1 ? 32 * nblocks[k] : nblocks[k] * t->block_size;
        for (int row = 0; row < 24; row++, nrows++) {
            fill_row(x, n, &s, row);
            TU_CHECK(quantize_row(tc->type, x, w, n), "%s: quantize_row failed", t->name);
            dequantize_row(tc->type, w, y, n);
            for (int64_t i = 0; i < n; i++) {
                se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                sx += (double)x[i] * x[i];
            }
            /* (b) dot_row == dot(dequantize(w), x2) */
            fill_row(x2, n, &s, row + 1);
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)y[i] * x2[i];
                mag += fabs((double)y[i] * x2[i]);
            }
            double got = dot_row(tc->type, w, x2, n);
            double rel = fabs(got - ref) / (mag + 1e-30);
            worst_dot = fmax(worst_dot, rel);
            if (rel > 2e-6 && bad_dot++ < 3)
                fprintf(stderr, "  %s n=%lld: dot_row %.9g want %.9g\n", t->name, (long long)n, got,
                        ref);
            /* (c) vec_dot_q8 with quantized activations */
            int vt = dtype_vec_dot_type(tc->type);
            const void *act = x2;
            double bound = 0;
            if (vt == DT_Q8_0) {
                quantize_row_q8_0(x2, xq, n);
                dequantize_row(DT_Q8_0, xq, xd, n);
                for (int64_t i = 0; i < n; i++) {
                    float dx = fp16_to_f32((uint16_t)(xq[34 * (i / 32)] | xq[34 * (i / 32) + 1] << 8));
                    bound += fabs((double)y[i]) * dx * 0.5;
                }
                act = xq;
            } else if (vt == DT_Q8_K) {
                quantize_row_q8_k(x2, xq, n);
                deq_q8_k(xq, xd, n, &bsum_bad);
                for (int64_t i = 0; i < n; i++) {
                    float dx;
                    memcpy(&dx, xq + 292 * (i / 256), 4);
                    bound += fabs((double)y[i]) * dx * 0.5;
                }
                act = xq;
            } else {
                memcpy(xd, x2, sizeof(float) * (size_t)n);
            }
            double qref = 0, qmag = 0;
            for (int64_t i = 0; i < n; i++) {
                qref += (double)y[i] * xd[i];
                qmag += fabs((double)y[i] * xd[i]);
            }
            double q8 = vec_dot_q8(tc->type, w, act, n);
            /* exact against dequantized activations ... */
            double qrel = fabs(q8 - qref) / (qmag + 1e-30);
            worst_q8x = fmax(worst_q8x, qrel);
            if (qrel > 2e-6 && bad_q8x++ < 3)
                fprintf(stderr, "  %s n=%lld: vec_dot_q8 %.9g want %.9g (dequantized acts)\n",
                        t->name, (long long)n, q8, qref);
            /* ... and within the activation-rounding bound of the float dot */
            double err = fabs(q8 - ref);
            worst_q8 = fmax(worst_q8, err / (mag + 1e-30));
            if (err > bound * 1.001 + 2e-6 * mag && bad_q8++ < 3)
                fprintf(stderr, "  %s n=%lld: vec_dot_q8 %.9g float dot %.9g bound %.3g\n",
                        t->name, (long long)n, q8, ref, bound);
        }
    }
    double rmse = sqrt(se / sx);
    fprintf(stderr,
            "%-5s rel_rmse %.5f (bound %.4f)  dot_row max rel %.1e  vec_dot_q8 vs dequantized acts "
            "%.1e, vs float dot %.2e  [%d rows]\n",
            t->name, rmse, tc->rmse_max, worst_dot, worst_q8x, worst_q8, nrows);
    TU_CHECK(rmse <= tc->rmse_max, "%s: relative RMSE %.5f over bound %.5f", t->name, rmse,
             tc->rmse_max);
    TU_CHECK(rmse > tc->rmse_max * 0.3 || tc->type == DT_F32,
             "%s: relative RMSE %.5f far below bound %.5f: tighten the bound", t->name, rmse,
             tc->rmse_max);
    TU_CHECK(bad_dot == 0, "%s: dot_row differs from dot(dequantize) on %d rows", t->name, bad_dot);
    TU_CHECK(bad_q8x == 0, "%s: vec_dot_q8 differs from the dequantized-activation dot on %d rows",
             t->name, bad_q8x);
    TU_CHECK(bad_q8 == 0, "%s: vec_dot_q8 outside the activation bound on %d rows", t->name, bad_q8);
    TU_CHECK(bsum_bad == 0, "%s: %d Q8_K bsums wrong", t->name, bsum_bad);

    /* an all-zero row stays exactly zero */
    int64_t n = t->block_size == 1 ? 64 : 2 * t->block_size;
    memset(x, 0, sizeof(float) * (size_t)n);
    quantize_row(tc->type, x, w, n);
    dequantize_row(tc->type, w, y, n);
    int nz = 0;
    for (int64_t i = 0; i < n; i++)
        nz += y[i] != 0.0f;
    TU_CHECK(nz == 0, "%s: zero row dequantizes to %d non-zeros", t->name, nz);
    /* an all-positive row (offsets matter for the types with mins) */
    for (int64_t i = 0; i < n; i++)
        x[i] = 1.0f + 0.5f * tu_rand_f(&s);
    quantize_row(tc->type, x, w, n);
    dequantize_row(tc->type, w, y, n);
    double pe = 0, px = 0;
    for (int64_t i = 0; i < n; i++)
        pe += ((double)y[i] - x[i]) * ((double)y[i] - x[i]), px += (double)x[i] * x[i];
    TU_CHECK(sqrt(pe / px) <= tc->rmse_max, "%s: all-positive row rel RMSE %.4f", t->name,
             sqrt(pe / px));
    free(x), free(y), free(x2), free(xd), free(w), free(xq);
}

int main(void)
{
    test_traits();
    test_fp16();
    test_bf16();
    kat_32();
    kat_q2_k();
    kat_q3_k();
    kat_q45_k(4);
    kat_q45_k(5);
    kat_q6_k();
    test_golden();
    /* bounds: about 1.2x the relative RMSE measured on fill_row data (gaussian-ish
     * with 1/512 outliers of 6x); a quantizer that regresses past them fails */
    static const type_case cases[] = {
        {DT_F32, 1e-9},    {DT_F16, 2.6e-4},  {DT_BF16, 2.1e-3}, {DT_Q8_0, 7.0e-3},
        {DT_Q5_0, 0.050},  {DT_Q5_1, 0.041},  {DT_Q4_0, 0.100},  {DT_Q4_1, 0.087},
        {DT_Q6_K, 0.021},  {DT_Q5_K, 0.042},  {DT_Q4_K, 0.085},  {DT_Q3_K, 0.178},
        {DT_Q2_K, 0.31},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_type(&cases[i]);
    return tu_finish("test_dtype");
}
