/* XXH3-128 (seed 0, the default secret) of a byte stream fed in pieces: the block checksum of
 * fast-level blocks since FAST_VERSION 4.
 *
 * Why: MurmurHash3_x64_128 (_kernel_common.h) runs at ~8 GB/s, one multiply chain after
 * another, and took a fifth of a dense block's decode; XXH3 accumulates 64-byte stripes in
 * eight independent lanes (AVX2: two vectors), ~4x faster on the rows the decoder hashes while
 * they are in L1. It is a published hash with independent implementations (Yann Collet's
 * xxHash, BSD; the Python package `xxhash`), so a block's checksum can be checked without lmgc:
 * it is exactly `xxhash.xxh3_128_digest(values)`, the canonical (big-endian high, then low
 * 64 bits) form (tests/plugins/lmgc_float/test_xxh3.py compares every length to 2 KB, split at
 * every place). Written from the algorithm's description and reference code; integer
 * arithmetic only, so every CPU agrees.
 *
 * Streaming: a stripe is accumulated only once a byte after it has arrived (the last stripe of
 * the message is its final 64 bytes, which may overlap stripes already done), so at most 64
 * bytes wait, always the last ones fed (`tail`); inputs of at most 240 bytes take the short
 * paths, which need the whole message (`head`). */
#ifndef LMGC_XXH3_H
#define LMGC_XXH3_H
#include <stdint.h>
#include <string.h>

#define XH_P32_1 UINT64_C(0x9E3779B1)
#define XH_P32_2 UINT64_C(0x85EBCA77)
#define XH_P32_3 UINT64_C(0xC2B2AE3D)
#define XH_P64_1 UINT64_C(0x9E3779B185EBCA87)
#define XH_P64_2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define XH_P64_3 UINT64_C(0x165667B19E3779F9)
#define XH_P64_4 UINT64_C(0x85EBCA77C2B2AE63)
#define XH_P64_5 UINT64_C(0x27D4EB2F165667C5)
#define XH_MX1 UINT64_C(0x165667919E3779F9)
#define XH_MX2 UINT64_C(0x9FB21C651E98DF25)
#define XH_SHORT 240 /* longest input of the short paths */

static const uint8_t xh_secret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c,
    0xf7, 0x21, 0xad, 0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb,
    0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e,
    0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
    0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb,
    0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97,
    0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7,
    0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
    0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83,
    0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26,
    0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc,
    0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f,
    0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,};

typedef struct {
    uint64_t acc[8];
    uint64_t total;    /* bytes fed */
    unsigned nbuf;     /* bytes at the end of `tail` not yet in a stripe: 0..64 */
    unsigned nstripe;  /* stripes of the current 1,024-byte block accumulated */
    uint8_t tail[64];  /* the last 64 bytes fed (fewer at the start) */
    uint8_t head[XH_SHORT]; /* the first bytes fed, for the short paths */
} Xxh3;

static inline uint64_t xh_rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t xh_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t xh_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint32_t xh_rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/* the 128-bit product of a and b: *hi, and the low half returned */
static inline uint64_t xh_mul128(uint64_t a, uint64_t b, uint64_t *hi) {
#if defined(__SIZEOF_INT128__)
    unsigned __int128 p = (unsigned __int128)a * b;
    *hi = (uint64_t)(p >> 64);
    return (uint64_t)p;
#else
    uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t cross = (ll >> 32) + (uint32_t)lh + hl;
    *hi = (lh >> 32) + (cross >> 32) + hh;
    return (cross << 32) | (uint32_t)ll;
#endif
}

static inline uint64_t xh_fold(uint64_t a, uint64_t b) {
    uint64_t hi, lo = xh_mul128(a, b, &hi);
    return lo ^ hi;
}

static inline uint64_t xh_avalanche(uint64_t h) { /* XXH3's */
    h ^= h >> 37;
    h *= XH_MX1;
    return h ^ (h >> 32);
}

static inline uint64_t xh_avalanche64(uint64_t h) { /* XXH64's */
    h ^= h >> 33;
    h *= XH_P64_2;
    h ^= h >> 29;
    h *= XH_P64_3;
    return h ^ (h >> 32);
}

/* -- the long path: eight lanes over 64-byte stripes, scrambled every 16 stripes ---------- */
/* one stripe into the lanes: each lane's input to its neighbour, its keyed halves multiplied */
static inline void xh_accumulate(uint64_t acc[8], const uint8_t *p, const uint8_t *key) {
    for (int i = 0; i < 8; i++) {
        uint64_t v = xh_rd64(p + 8 * i), dk = v ^ xh_rd64(key + 8 * i);
        acc[i ^ 1] += v;
        acc[i] += (dk & 0xFFFFFFFFu) * (dk >> 32);
    }
}

static void xh_stripes_scalar(Xxh3 *h, const uint8_t *p, size_t k) {
    while (k) {
        size_t take = 16 - h->nstripe < k ? 16 - h->nstripe : k;
        for (size_t s = 0; s < take; s++, p += 64)
            xh_accumulate(h->acc, p, xh_secret + 8 * (h->nstripe + s));
        k -= take;
        h->nstripe += (unsigned)take;
        if (h->nstripe == 16) {
            for (int i = 0; i < 8; i++) {
                uint64_t a = h->acc[i];
                a ^= a >> 47;
                a ^= xh_rd64(xh_secret + 128 + 8 * i);
                h->acc[i] = a * XH_P32_1;
            }
            h->nstripe = 0;
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
static int xh_use_avx2 = 0;

/* The same with the eight lanes in two AVX2 vectors (little-endian hosts only). */
__attribute__((target("avx2"))) static void xh_stripes_avx2(Xxh3 *h, const uint8_t *p, size_t k) {
    __m256i a0 = _mm256_loadu_si256((const __m256i *)h->acc);
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(h->acc + 4));
    const __m256i prime = _mm256_set1_epi32((int)XH_P32_1);
    while (k) {
        size_t take = 16 - h->nstripe < k ? 16 - h->nstripe : k;
        const uint8_t *key = xh_secret + 8 * h->nstripe;
        for (size_t s = 0; s < take; s++, p += 64, key += 8) {
            __m256i d0 = _mm256_loadu_si256((const __m256i *)p);
            __m256i d1 = _mm256_loadu_si256((const __m256i *)(p + 32));
            __m256i k0 = _mm256_xor_si256(d0, _mm256_loadu_si256((const __m256i *)key));
            __m256i k1 = _mm256_xor_si256(d1, _mm256_loadu_si256((const __m256i *)(key + 32)));
            __m256i m0 = _mm256_mul_epu32(k0, _mm256_srli_epi64(k0, 32));
            __m256i m1 = _mm256_mul_epu32(k1, _mm256_srli_epi64(k1, 32));
            /* lane i's input goes to lane i ^ 1: swap the 64-bit halves of each 128 bits */
            a0 = _mm256_add_epi64(a0, _mm256_add_epi64(m0, _mm256_shuffle_epi32(d0, 0x4E)));
            a1 = _mm256_add_epi64(a1, _mm256_add_epi64(m1, _mm256_shuffle_epi32(d1, 0x4E)));
        }
        k -= take;
        h->nstripe += (unsigned)take;
        if (h->nstripe == 16) {
            __m256i s0 = _mm256_loadu_si256((const __m256i *)(xh_secret + 128));
            __m256i s1 = _mm256_loadu_si256((const __m256i *)(xh_secret + 160));
            a0 = _mm256_xor_si256(_mm256_xor_si256(a0, _mm256_srli_epi64(a0, 47)), s0);
            a1 = _mm256_xor_si256(_mm256_xor_si256(a1, _mm256_srli_epi64(a1, 47)), s1);
            /* a * P32_1 (mod 2^64) = lo(a) * P + (hi(a) * P) << 32 */
            a0 = _mm256_add_epi64(_mm256_mul_epu32(a0, prime),
                                  _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a0, 32), prime), 32));
            a1 = _mm256_add_epi64(_mm256_mul_epu32(a1, prime),
                                  _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a1, 32), prime), 32));
            h->nstripe = 0;
        }
    }
    _mm256_storeu_si256((__m256i *)h->acc, a0);
    _mm256_storeu_si256((__m256i *)(h->acc + 4), a1);
}

/* The same in one AVX-512 vector, where a kernel asks for it (xh_use_avx512: the fast kernel's
 * Zen 4 path; on Intel CPUs 512-bit instructions slowed the rest of its decoder by 5-12 %). */
static int xh_use_avx512 = 0;
__attribute__((target("avx512f"))) static void xh_stripes_avx512(Xxh3 *h, const uint8_t *p,
                                                                  size_t k) {
    __m512i a = _mm512_loadu_si512(h->acc);
    const __m512i prime = _mm512_set1_epi64(XH_P32_1);
    while (k) {
        size_t take = 16 - h->nstripe < k ? 16 - h->nstripe : k;
        const uint8_t *key = xh_secret + 8 * h->nstripe;
        for (size_t s = 0; s < take; s++, p += 64, key += 8) {
            __m512i d = _mm512_loadu_si512(p);
            __m512i kd = _mm512_xor_si512(d, _mm512_loadu_si512(key));
            __m512i m = _mm512_mul_epu32(kd, _mm512_srli_epi64(kd, 32));
            a = _mm512_add_epi64(a, _mm512_add_epi64(m, _mm512_shuffle_epi32(d, (_MM_PERM_ENUM)0x4E)));
        }
        k -= take;
        h->nstripe += (unsigned)take;
        if (h->nstripe == 16) {
            __m512i sc = _mm512_loadu_si512(xh_secret + 128);
            a = _mm512_xor_si512(_mm512_xor_si512(a, _mm512_srli_epi64(a, 47)), sc);
            a = _mm512_add_epi64(_mm512_mul_epu32(a, prime),
                                 _mm512_slli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), prime), 32));
            h->nstripe = 0;
        }
    }
    _mm512_storeu_si512(h->acc, a);
}
#endif

static inline void xh_stripes(Xxh3 *h, const uint8_t *p, size_t k) {
#if defined(__GNUC__) && defined(__x86_64__) && \
    !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    if (xh_use_avx512) {
        xh_stripes_avx512(h, p, k);
        return;
    }
    if (xh_use_avx2) {
        xh_stripes_avx2(h, p, k);
        return;
    }
#endif
    xh_stripes_scalar(h, p, k);
}

/* once per module (where the CPU is asked what it has) */
static void xh_init(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    xh_use_avx2 = __builtin_cpu_supports("avx2");
#endif
}

static void xh_start(Xxh3 *h) {
    static const uint64_t init[8] = {XH_P32_3, XH_P64_1, XH_P64_2, XH_P64_3,
                                     XH_P64_4, XH_P32_2, XH_P64_5, XH_P32_1};
    memcpy(h->acc, init, sizeof init);
    h->total = 0;
    h->nbuf = h->nstripe = 0;
}

/* Feed n bytes (the pieces are hashed as one message). */
static void xh_update(Xxh3 *h, const uint8_t *p, size_t n) {
    if (!n) return;
    if (h->total < XH_SHORT) {
        size_t m = XH_SHORT - h->total < n ? XH_SHORT - (size_t)h->total : n;
        memcpy(h->head + h->total, p, m);
    }
    if (h->nbuf + n > 64) { /* stripes with a byte after them */
        const uint8_t *q = p;
        size_t m = n;
        if (h->nbuf) { /* the waiting bytes, completed from p */
            uint8_t s[64];
            size_t take = 64 - h->nbuf;
            memcpy(s, h->tail + 64 - h->nbuf, h->nbuf);
            memcpy(s + h->nbuf, p, take);
            xh_stripes(h, s, 1);
            q += take, m -= take;
        }
        size_t k = (m - 1) / 64; /* m > 0: leave 1..64 bytes waiting */
        if (k) xh_stripes(h, q, k);
        h->nbuf = (unsigned)(m - 64 * k);
    } else {
        h->nbuf += (unsigned)n;
    }
    if (n >= 64) {
        memcpy(h->tail, p + n - 64, 64);
    } else {
        memmove(h->tail, h->tail + n, 64 - n);
        memcpy(h->tail + 64 - n, p, n);
    }
    h->total += n;
}

/* XXH128_mix32B */
static inline void xh_mix32(uint64_t *lo, uint64_t *hi, const uint8_t *a, const uint8_t *b,
                            const uint8_t *key) {
    *lo += xh_fold(xh_rd64(a) ^ xh_rd64(key), xh_rd64(a + 8) ^ xh_rd64(key + 8));
    *lo ^= xh_rd64(b) + xh_rd64(b + 8);
    *hi += xh_fold(xh_rd64(b) ^ xh_rd64(key + 16), xh_rd64(b + 8) ^ xh_rd64(key + 24));
    *hi ^= xh_rd64(a) + xh_rd64(a + 8);
}

/* the 17..240-byte paths' common end */
static void xh_mid_end(uint64_t lo, uint64_t hi, uint64_t len, uint64_t out[2]) {
    out[0] = xh_avalanche(lo + hi);
    out[1] = (uint64_t)0 - xh_avalanche(lo * XH_P64_1 + hi * XH_P64_4 + len * XH_P64_2);
}

static void xh_short(const uint8_t *p, size_t len, uint64_t out[2]) {
    const uint8_t *s = xh_secret;
    if (len == 0) {
        out[0] = xh_avalanche64(xh_rd64(s + 64) ^ xh_rd64(s + 72));
        out[1] = xh_avalanche64(xh_rd64(s + 80) ^ xh_rd64(s + 88));
    } else if (len <= 3) {
        uint32_t cl = (uint32_t)p[0] << 16 | (uint32_t)p[len >> 1] << 24 | (uint32_t)p[len - 1] |
                      (uint32_t)len << 8;
        uint32_t ch = xh_rotl32(__builtin_bswap32(cl), 13);
        out[0] = xh_avalanche64((uint64_t)cl ^ (uint64_t)(xh_rd32(s) ^ xh_rd32(s + 4)));
        out[1] = xh_avalanche64((uint64_t)ch ^ (uint64_t)(xh_rd32(s + 8) ^ xh_rd32(s + 12)));
    } else if (len <= 8) {
        uint64_t in = (uint64_t)xh_rd32(p) + ((uint64_t)xh_rd32(p + len - 4) << 32);
        uint64_t keyed = in ^ (xh_rd64(s + 16) ^ xh_rd64(s + 24)), hi;
        uint64_t lo = xh_mul128(keyed, XH_P64_1 + (len << 2), &hi);
        hi += lo << 1;
        lo ^= hi >> 3;
        lo ^= lo >> 35;
        lo *= XH_MX2;
        lo ^= lo >> 28;
        out[0] = lo;
        out[1] = xh_avalanche(hi);
    } else if (len <= 16) {
        uint64_t fl = xh_rd64(s + 32) ^ xh_rd64(s + 40), fh = xh_rd64(s + 48) ^ xh_rd64(s + 56);
        uint64_t a = xh_rd64(p), b = xh_rd64(p + len - 8), mh;
        uint64_t ml = xh_mul128(a ^ b ^ fl, XH_P64_1, &mh);
        ml += (uint64_t)(len - 1) << 54;
        b ^= fh;
        mh += b + (uint64_t)(uint32_t)b * (XH_P32_2 - 1);
        ml ^= __builtin_bswap64(mh);
        uint64_t hh, hl = xh_mul128(ml, XH_P64_2, &hh);
        hh += mh * XH_P64_2;
        out[0] = xh_avalanche(hl);
        out[1] = xh_avalanche(hh);
    } else if (len <= 128) {
        uint64_t lo = len * XH_P64_1, hi = 0;
        if (len > 32) {
            if (len > 64) {
                if (len > 96) xh_mix32(&lo, &hi, p + 48, p + len - 64, s + 96);
                xh_mix32(&lo, &hi, p + 32, p + len - 48, s + 64);
            }
            xh_mix32(&lo, &hi, p + 16, p + len - 32, s + 32);
        }
        xh_mix32(&lo, &hi, p, p + len - 16, s);
        xh_mid_end(lo, hi, len, out);
    } else {
        uint64_t lo = len * XH_P64_1, hi = 0;
        for (size_t i = 32; i < 160; i += 32) xh_mix32(&lo, &hi, p + i - 32, p + i - 16, s + i - 32);
        lo = xh_avalanche(lo);
        hi = xh_avalanche(hi);
        for (size_t i = 160; i <= len; i += 32)
            xh_mix32(&lo, &hi, p + i - 32, p + i - 16, s + 3 + i - 160);
        xh_mix32(&lo, &hi, p + len - 16, p + len - 32, s + 136 - 17 - 16);
        xh_mid_end(lo, hi, len, out);
    }
}

/* mergeAccs */
static uint64_t xh_merge(const uint64_t acc[8], const uint8_t *key, uint64_t start) {
    uint64_t r = start;
    for (int i = 0; i < 4; i++)
        r += xh_fold(acc[2 * i] ^ xh_rd64(key + 16 * i), acc[2 * i + 1] ^ xh_rd64(key + 16 * i + 8));
    return xh_avalanche(r);
}

/* The 16-byte digest: the high 64 bits then the low, each big-endian (xxHash's canonical form). */
static void xh_digest(const Xxh3 *h, uint8_t out[16]) {
    uint64_t r[2];
    if (h->total <= XH_SHORT) {
        xh_short(h->head, (size_t)h->total, r);
    } else {
        uint64_t acc[8]; /* the last stripe, the message's final 64 bytes, on a copy */
        memcpy(acc, h->acc, sizeof acc);
        xh_accumulate(acc, h->tail, xh_secret + 192 - 64 - 7);
        r[0] = xh_merge(acc, xh_secret + 11, h->total * XH_P64_1);
        r[1] = xh_merge(acc, xh_secret + 192 - 64 - 11, ~(h->total * XH_P64_2));
    }
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(r[1] >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(r[0] >> (56 - 8 * i));
    }
}
#endif
