/* Helpers shared by the float prior's compiled kernels: growable output buffers and a bounded
 * reader, varints, per-thread work buffers, the integer entropy estimate, frequency tables for
 * rANS, value access and the 128-bit block checksums (MurmurHash3_x64_128, XXH3-128).
 *
 * Why a header: the fast level (_fast_kernels.c) and the delta model (_delta_kernels.c) code
 * with the same tables and checksum; one copy keeps their bytes in step. Everything here is
 * `static` (each extension module gets its own copy; the work-buffer key is per module and
 * must be created with kc_init() when the module loads). Copied from _fast_kernels.c, whose
 * owner may switch to this header. Integer arithmetic only: the bytes are the same on every
 * CPU. */
#ifndef LMGC_KERNEL_COMMON_H
#define LMGC_KERNEL_COMMON_H
#include <stddef.h> /* ptrdiff_t: clang's <immintrin.h> does not bring it, as gcc's does */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define CHECKSUM_MISMATCH "decoded values do not match the block's checksum"
#define DIGEST 16 /* 128-bit checksum of a block's values */
#define SCALE_BITS 12
#define SCALE (1u << SCALE_BITS)

typedef int64_t i64;
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
/* the header's out-of-line helpers: a kernel that leaves some unused compiles without warnings */
#define KC_FN static __attribute__((unused))
#else
#define INLINE static __forceinline
#define KC_FN static
#endif

/* -- growable output buffer and bounded reader ------------------------------------------- */
typedef struct {
    u8 *p;
    size_t len, cap;
    int fail;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->fail) return 0;
    if (b->len + extra <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    u8 *p = realloc(b->p, cap);
    if (!p) {
        b->fail = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

KC_FN void put_u8(Buf *b, u8 v) {
    if (buf_reserve(b, 1)) b->p[b->len++] = v;
}

static void put_varint(Buf *b, u64 v) {
    if (!buf_reserve(b, 10)) return;
    while (v >= 0x80) {
        b->p[b->len++] = (u8)(v | 0x80);
        v >>= 7;
    }
    b->p[b->len++] = (u8)v;
}

KC_FN void put_bytes(Buf *b, const u8 *src, size_t n) {
    if (n && buf_reserve(b, n)) {
        memcpy(b->p + b->len, src, n);
        b->len += n;
    }
}

KC_FN int varint_len(u64 v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

typedef struct {
    const u8 *p;
    size_t len, pos;
    int bad;
} Rd;

KC_FN u64 get_varint(Rd *r) {
    u64 v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len) break;
        u8 c = r->p[r->pos++];
        v |= (u64)(c & 0x7F) << shift;
        if (!(c & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}

KC_FN u8 get_u8(Rd *r) {
    if (r->pos >= r->len) {
        r->bad = 1;
        return 0;
    }
    return r->p[r->pos++];
}

INLINE u64 zz(i64 v) { return v >= 0 ? (u64)v << 1 : (((u64)(-(v + 1))) << 1) | 1; }
INLINE i64 unzz(u64 z) { return (z & 1) ? -(i64)(z >> 1) - 1 : (i64)(z >> 1); }

/* floor(a / b) for b > 0 */
INLINE i64 floor_div(i64 a, i64 b) {
    i64 q = a / b;
    if ((a % b) != 0 && a < 0) q--;
    return q;
}

/* -- per-thread work buffers ------------------------------------------------------------------
 * Kept from block to block: fresh multi-megabyte buffers cost a page fault per 4 KiB touched.
 * Freed when the thread ends. */
#define KC_SLOTS 12
typedef struct {
    void *p[KC_SLOTS];
    size_t cap[KC_SLOTS];
} Work;
static pthread_key_t work_key;

static void work_free(void *v) {
    Work *w = v;
    for (int i = 0; i < KC_SLOTS; i++) free(w->p[i]);
    free(w);
}

/* 0 on success: call once when the module loads */
KC_FN int kc_init(void) { return pthread_key_create(&work_key, work_free); }

/* this thread's buffer `slot`, at least `size` bytes (contents undefined); NULL: no memory */
KC_FN void *work(int slot, size_t size) {
    Work *w = pthread_getspecific(work_key);
    if (!w) {
        w = calloc(1, sizeof(Work));
        if (!w || pthread_setspecific(work_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    if (w->cap[slot] < size) {
        free(w->p[slot]);
        w->p[slot] = malloc(size);
        w->cap[slot] = w->p[slot] ? size : 0;
    }
    return w->p[slot];
}

/* -- integer cost estimate (1/65536 bits) --------------------------------------------------
 * log2(1 + i/256) * 65536, rounded: constants, so the estimate is the same on every CPU. */
static const u32 LOG2TAB[257] = {
    0, 369, 736, 1102, 1466, 1829, 2190, 2551, 2909, 3267, 3623, 3978,
    4331, 4683, 5034, 5384, 5732, 6079, 6425, 6769, 7112, 7454, 7795, 8134,
    8473, 8810, 9146, 9480, 9814, 10146, 10477, 10807, 11136, 11464, 11791, 12116,
    12440, 12764, 13086, 13407, 13727, 14046, 14363, 14680, 14996, 15310, 15624, 15937,
    16248, 16559, 16868, 17177, 17484, 17791, 18096, 18401, 18704, 19007, 19308, 19609,
    19909, 20207, 20505, 20802, 21098, 21393, 21687, 21980, 22272, 22564, 22854, 23144,
    23433, 23720, 24007, 24293, 24579, 24863, 25146, 25429, 25711, 25992, 26272, 26551,
    26830, 27108, 27384, 27660, 27936, 28210, 28484, 28757, 29029, 29300, 29571, 29840,
    30109, 30378, 30645, 30912, 31178, 31443, 31707, 31971, 32234, 32496, 32758, 33019,
    33279, 33538, 33797, 34055, 34312, 34569, 34825, 35080, 35334, 35588, 35841, 36094,
    36346, 36597, 36847, 37097, 37346, 37595, 37842, 38090, 38336, 38582, 38827, 39072,
    39316, 39559, 39802, 40044, 40286, 40527, 40767, 41006, 41246, 41484, 41722, 41959,
    42196, 42432, 42667, 42902, 43137, 43370, 43603, 43836, 44068, 44300, 44530, 44761,
    44990, 45220, 45448, 45676, 45904, 46131, 46357, 46583, 46809, 47034, 47258, 47482,
    47705, 47928, 48150, 48372, 48593, 48813, 49034, 49253, 49472, 49691, 49909, 50127,
    50344, 50560, 50776, 50992, 51207, 51422, 51636, 51850, 52063, 52276, 52488, 52700,
    52911, 53122, 53332, 53542, 53751, 53960, 54169, 54377, 54584, 54791, 54998, 55204,
    55410, 55615, 55820, 56025, 56229, 56432, 56635, 56838, 57040, 57242, 57443, 57644,
    57845, 58045, 58245, 58444, 58643, 58841, 59039, 59237, 59434, 59631, 59827, 60023,
    60219, 60414, 60609, 60803, 60997, 61190, 61384, 61576, 61769, 61961, 62152, 62343,
    62534, 62725, 62915, 63104, 63294, 63483, 63671, 63859, 64047, 64234, 64421, 64608,
    64794, 64980, 65166, 65351, 65536,
};

static u64 log2fix(u64 x) {
    if (x == 0) return 0;
    int msb = 63 - __builtin_clzll(x);
    u64 frac = msb >= 8 ? (x >> (msb - 8)) & 255 : (x << (8 - msb)) & 255;
    return (u64)msb * 65536 + LOG2TAB[frac];
}

KC_FN u64 entropy_cost(const u32 *hist, int nsym) {
    u64 n = 0, sum = 0;
    for (int s = 0; s < nsym; s++)
        if (hist[s]) {
            n += hist[s];
            sum += (u64)hist[s] * log2fix(hist[s]);
        }
    return n ? n * log2fix(n) - sum : 0;
}

/* -- frequency tables ---------------------------------------------------------------------- */
/* Counts to frequencies summing to 2^sb: every occurring symbol >= 1; the rounding remainder
 * goes to (or comes from) the most frequent symbol, first on ties. */
static void normalize_bits(const u64 *cnt, int nsym, u32 *freq, int sb) {
    const u32 total_freq = 1u << sb;
    u64 total = 0;
    for (int s = 0; s < nsym; s++) total += cnt[s];
    memset(freq, 0, sizeof(u32) * (size_t)nsym);
    if (total == 0) return;
    u32 sum = 0;
    int best = 0;
    u64 bestc = 0;
    for (int s = 0; s < nsym; s++) {
        if (!cnt[s]) continue;
        u64 f = cnt[s] * total_freq / total;
        if (f < 1) f = 1;
        freq[s] = (u32)f;
        sum += (u32)f;
        if (cnt[s] > bestc) {
            bestc = cnt[s];
            best = s;
        }
    }
    if (sum < total_freq) {
        freq[best] += total_freq - sum;
        return;
    }
    while (sum > total_freq) {
        int m = 0;
        for (int s = 1; s < nsym; s++)
            if (freq[s] > freq[m]) m = s;
        u32 cut = sum - total_freq < freq[m] - 1 ? sum - total_freq : freq[m] - 1;
        freq[m] -= cut;
        sum -= cut;
    }
}

/* normalize_bits to SCALE */
static inline void normalize(const u64 *cnt, int nsym, u32 *freq) {
    normalize_bits(cnt, nsym, freq, SCALE_BITS);
}

/* present count, then (gap, freq - 1) per present symbol */
KC_FN void write_table(Buf *b, const u32 *freq, int nsym) {
    int k = 0;
    for (int s = 0; s < nsym; s++) k += freq[s] != 0;
    put_varint(b, (u64)k);
    int prev = -1;
    for (int s = 0; s < nsym; s++) {
        if (!freq[s]) continue;
        put_varint(b, (u64)(s - prev - 1));
        put_varint(b, (u64)(freq[s] - 1));
        prev = s;
    }
}

INLINE u32 rd16(const u8 *p) { return (u32)p[0] | ((u32)p[1] << 8); }

/* -- value access ---------------------------------------------------------------------------- */
INLINE u64 load_v(const void *vals, int width, i64 k) {
    switch (width) {
        case 8: return ((const u8 *)vals)[k];
        case 16: return ((const u16 *)vals)[k];
        case 32: return ((const u32 *)vals)[k];
        default: return ((const u64 *)vals)[k];
    }
}

INLINE void store_v(void *vals, int width, i64 k, u64 v) {
    switch (width) {
        case 8: ((u8 *)vals)[k] = (u8)v; break;
        case 16: ((u16 *)vals)[k] = (u16)v; break;
        case 32: ((u32 *)vals)[k] = (u32)v; break;
        default: ((u64 *)vals)[k] = v; break;
    }
}

/* -- the block checksum -----------------------------------------------------------------------
 * Why: a stream must prove that decoding reproduced the original bytes. A SHA-256 of the whole
 * array runs at ~1 GB/s, slower than this decoder; a 128-bit non-cryptographic hash of each
 * block's values, computed right after the block is decoded (its values still in cache), costs
 * a fraction of that and catches the same accidents (a corrupted or mis-decoded block).
 * The hash is MurmurHash3_x64_128 (Austin Appleby's public-domain design; seed 0) of the block's
 * values as little-endian bytes, in segment order, as if concatenated: h1 then h2, each 8 bytes
 * little-endian, appended to every block. Integer arithmetic only, so every CPU agrees. */
#define MM_C1 UINT64_C(0x87c37b91114253d5)
#define MM_C2 UINT64_C(0x4cf5ad432745937f)

typedef struct {
    u64 h1, h2, total;
    u8 tail[16];
    size_t ntail;
} Hash128;

INLINE u64 rotl64(u64 x, int r) { return (x << r) | (x >> (64 - r)); }

/* (a * b) >> 48 of the full 128-bit product; without __int128 (32-bit targets) by halves */
INLINE u64 mul_shr48(u64 a, u64 b) {
#if defined(__SIZEOF_INT128__)
    return (u64)(((unsigned __int128)a * b) >> 48);
#else
    u64 al = (u32)a, ah = a >> 32, bl = (u32)b, bh = b >> 32;
    u64 ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    u64 cross = (ll >> 32) + (u32)lh + (u32)hl;
    u64 hi = hh + (lh >> 32) + (hl >> 32) + (cross >> 32);
    u64 lo = (cross << 32) | (u32)ll;
    return (hi << 16) | (lo >> 48);
#endif
}

INLINE u64 le64(const u8 *p) {
    u64 v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

INLINE u32 le16(const u8 *p) { /* one load, which gcc vectorises; two byte loads it may not */
    uint16_t v;
    memcpy(&v, p, 2);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap16(v);
#endif
    return v;
}

INLINE u64 fmix64(u64 k) {
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    return k;
}

/* one lane's key mixing: k * ca, rotated left by r, * cb */
INLINE u64 mm_key(u64 k, u64 ca, int r, u64 cb) { return rotl64(k * ca, r) * cb; }

INLINE void mm_round(Hash128 *h, u64 k1, u64 k2) {
    h->h1 = (rotl64(h->h1 ^ mm_key(k1, MM_C1, 31, MM_C2), 27) + h->h2) * 5 + 0x52dce729;
    h->h2 = (rotl64(h->h2 ^ mm_key(k2, MM_C2, 33, MM_C1), 31) + h->h1) * 5 + 0x38495ab5;
}

/* Feed n bytes (the stream of bytes is hashed as one message, whatever the pieces). */
static void hash_bytes(Hash128 *h, const u8 *p, size_t n) {
    h->total += n;
    if (h->ntail) {
        size_t take = 16 - h->ntail < n ? 16 - h->ntail : n;
        memcpy(h->tail + h->ntail, p, take);
        h->ntail += take;
        p += take;
        n -= take;
        if (h->ntail < 16) return;
        mm_round(h, le64(h->tail), le64(h->tail + 8));
        h->ntail = 0;
    }
    u64 h1 = h->h1, h2 = h->h2;
    for (; n >= 16; p += 16, n -= 16) {
        u64 k1 = le64(p) * MM_C1, k2 = le64(p + 8) * MM_C2;
        h1 ^= rotl64(k1, 31) * MM_C2;
        h1 = (rotl64(h1, 27) + h2) * 5 + 0x52dce729;
        h2 ^= rotl64(k2, 33) * MM_C1;
        h2 = (rotl64(h2, 31) + h1) * 5 + 0x38495ab5;
    }
    h->h1 = h1;
    h->h2 = h2;
    memcpy(h->tail, p, n);
    h->ntail = n;
}

static void hash_final(Hash128 *h, u8 out[16]) {
    u64 k1 = 0, k2 = 0, h1 = h->h1, h2 = h->h2;
    const u8 *t = h->tail;
    for (size_t i = h->ntail; i-- > 8;) k2 = (k2 << 8) | t[i];
    for (size_t i = h->ntail < 8 ? h->ntail : 8; i-- > 0;) k1 = (k1 << 8) | t[i];
    if (h->ntail > 8) h2 ^= rotl64(k2 * MM_C2, 33) * MM_C1;
    if (h->ntail > 0) h1 ^= rotl64(k1 * MM_C1, 31) * MM_C2;
    h1 ^= h->total;
    h2 ^= h->total;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    for (int i = 0; i < 8; i++) {
        out[i] = (u8)(h1 >> (8 * i));
        out[8 + i] = (u8)(h2 >> (8 * i));
    }
}

/* -- which checksum a block carries ----------------------------------------------------------
 * SUM_MURMUR: MurmurHash3_x64_128 above (delta blocks; fast blocks before FAST_VERSION 4);
 * SUM_XXH3: XXH3-128 (_xxh3.h; fast blocks since FAST_VERSION 4, ~4x faster). */
#include "_xxh3.h"
enum { SUM_MURMUR = 0, SUM_XXH3 = 1 };

typedef struct {
    int kind;
    Hash128 mm;
    Xxh3 xx;
} BlockSum;

KC_FN void sum_start(BlockSum *h, int kind) {
    h->kind = kind;
    memset(&h->mm, 0, sizeof h->mm);
    if (kind == SUM_XXH3) xh_start(&h->xx);
}

INLINE void sum_bytes(BlockSum *h, const u8 *p, size_t n) {
    if (h->kind == SUM_XXH3)
        xh_update(&h->xx, p, n);
    else
        hash_bytes(&h->mm, p, n);
}

KC_FN void sum_final(BlockSum *h, u8 out[16]) {
    if (h->kind == SUM_XXH3)
        xh_digest(&h->xx, out);
    else
        hash_final(&h->mm, out);
}

/* The checksum (`kind`) of the values `segs` names: little-endian bytes of each, in segment
 * order. */
KC_FN void block_digest(const void *vals, const i64 *segs, i64 nsegs, int width, int kind,
                        u8 out[16]) {
    BlockSum h;
    sum_start(&h, kind);
    size_t w = (size_t)width / 8;
    for (i64 g = 0; g < nsegs; g++) {
        const u8 *p = (const u8 *)vals + (size_t)segs[3 * g] * w;
        size_t n = (size_t)(segs[3 * g + 1] * segs[3 * g + 2]) * w;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        u8 le[4096];
        for (size_t done = 0; done < n; done += sizeof le) {
            size_t m = n - done < sizeof le ? n - done : sizeof le;
            for (size_t i = 0; i < m; i += w)
                for (size_t b = 0; b < w; b++) le[i + b] = p[done + i + w - 1 - b];
            sum_bytes(&h, le, m);
        }
#else
        sum_bytes(&h, p, n);
#endif
    }
    sum_final(&h, out);
}

/* -- AVX2 rANS decoding helpers ----------------------------------------------------------------
 * Eight 32-bit states per vector; a state below 2**16 reads the next 16-bit little-endian word,
 * the lanes that read one taking the words in lane order (as the scalar loop does). Chosen at
 * run time: kc_init_simd() fills the table and sets kc_use_simd when the CPU has AVX2. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KC_HAVE_AVX2 1
/* lane -> index of its word among the lanes that read one */
static u32 kc_renorm_perm[256][8] __attribute__((unused));
static int kc_use_simd __attribute__((unused)) = 0;
static int kc_use_avx512 __attribute__((unused)) = 0; /* kc_renorm8_avx512 runs here */
/* AMD's choice (zen(), on by default on AMD CPUs with AVX2): the vector loops read table entries
 * by eight scalar loads instead of the gather instruction, which is slower there */
static int kc_zen __attribute__((unused)) = 0;

/* the eight 32-bit lanes of a vector idx, two to a 64-bit word (KC_LANE(i01, 1): lane 1) */
#define KC_LANES8(idx)                                                                             \
    const __m128i lo_ = _mm256_castsi256_si128(idx), hi_ = _mm256_extracti128_si256(idx, 1);       \
    const u64 i01 = (u64)_mm_cvtsi128_si64(lo_), i23 = (u64)_mm_extract_epi64(lo_, 1);             \
    const u64 i45 = (u64)_mm_cvtsi128_si64(hi_), i67 = (u64)_mm_extract_epi64(hi_, 1)
#define KC_LANE(w, k) ((k) ? (w) >> 32 : (u32)(w))

KC_FN void kc_init_simd(void) {
    for (int m = 0; m < 256; m++) {
        int c = 0;
        for (int i = 0; i < 8; i++) {
            kc_renorm_perm[m][i] = (u32)c;
            c += (m >> i) & 1;
        }
    }
    __builtin_cpu_init();
    xh_init();
    kc_use_simd = __builtin_cpu_supports("avx2");
    kc_use_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    kc_zen = kc_use_simd && __builtin_cpu_is("amd");
}

/* Renormalise the eight states of x from the words at *pp (advanced past those read). */
__attribute__((target("avx2"), always_inline, unused)) static inline __m256i kc_renorm8(
    __m256i x, const u8 **pp) {
    __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
    int bits = _mm256_movemask_ps(_mm256_castsi256_ps(need));
    __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)*pp));
    __m256i w = _mm256_permutevar8x32_epi32(
        words, _mm256_loadu_si256((const __m256i *)kc_renorm_perm[bits]));
    *pp += 2 * __builtin_popcount((unsigned)bits);
    return _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), w), need);
}

/* The same with AVX-512VL: the words expanded into the lanes that read one (no table), a shorter
 * chain from one group's states to the next's (kc_use_avx512). */
__attribute__((target("avx2,avx512f,avx512vl"), always_inline, unused)) static inline __m256i
kc_renorm8_avx512(__m256i x, const u8 **pp) {
    __mmask8 need = _mm256_cmplt_epu32_mask(x, _mm256_set1_epi32(1 << 16));
    __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)*pp));
    *pp += 2 * __builtin_popcount((unsigned)need);
    return _mm256_mask_or_epi32(x, need, _mm256_slli_epi32(x, 16),
                                _mm256_maskz_expand_epi32(need, words));
}
#else
KC_FN void kc_init_simd(void) { xh_init(); }
#endif

#endif
