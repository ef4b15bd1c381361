/* The float prior's fast level: semi-static fields, interleaved rANS, raw noise bytes.
 *
 * Why: the adaptive binary coder of the highest level decodes at ~50 MB/s; on dense tensors
 * its gain comes from the fields and their row/column context, not from adapting symbol by
 * symbol. Here each block is coded in two passes: pass 1 measures per-row / per-column
 * statistics (stored as side information, so no value's context depends on decoded values),
 * then counts the fields and normalises one frequency table in integers; pass 2 codes with
 * NSTATES interleaved 32-bit rANS states sharing one 16-bit word stream (Giesen,
 * arXiv 1402.3392), which the CPU pipelines (since version 6, 64 or 128 in a block of many
 * values: states_for). The low mantissa bits are noise and are stored
 * raw, copied back at memory speed.
 *
 * Per value (not in an all-zero row or column the side information names), version 3:
 *   A = 2 + (exponent - prediction + 127) mod 2^E, or 0 / 1 for +0 / -0;
 *   B = (sign XOR predicted sign) << t | the top t mantissa bits (t = mbits mod 4);
 *   one rANS symbol J = A for zeros, else 2 + (A - 2) << (t + 1) | B (its table at 2^15,
 *   since version 5 at the block's own scale, 2^11 to 2^15: choose_scale);
 *   raw = the remaining mbits - t bits: a nibble (packed two to a byte, in its own plane)
 *   where they are not whole bytes, then whole bytes, little-endian.
 * Version 2 blocks (still decoded) code A and B as two streams (B with k = mbits mod 8 bits,
 * tables at 2^12) and the rest as raw bytes. Each block ends with the 128-bit checksum of its
 * values, which decoding computes row by row as it rebuilds them: XXH3-128 since version 4
 * (_xxh3.h; the kind byte's KIND_XXH3 bit), MurmurHash3_x64_128 before (_kernel_common.h).
 *
 * Every decision the coder sees is integer arithmetic (portable bytes). The decoder checks
 * every length, table and count against the block before using it, and never reads or writes
 * outside its buffers on garbage input: a bad block raises ValueError. Asked to (canonical, for
 * a block whose CRC32 nobody checked), it also refuses every block the encoder would not write
 * (non-canonical varints, side information other than what the rebuilt values give, nonzero
 * padding bits, a coded block no shorter than the values): every bit either reaches the values
 * (the checksum) or is checked, so no changed byte decodes
 * (tests/plugins/lmgc_float/test_fast_canonical.py); without it only the checks that read every
 * value again are left out (test_fast_unchecked.py). Where a block goes is not in it: the
 * container's CRC32s bind blocks to their places (docs/format.md, What checks what).
 *
 * Bump FAST_VERSION whenever the bytes change: the loader refuses a stale build. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_kernel_common.h" /* buffers, varints, work buffers, tables, checksum, AVX2 rANS */
static void zen_sync(void);
#define KC_ON_SWITCH zen_sync /* simd() and zen() change what the Zen 4 path takes */
#include "_kernel_py.h"     /* argument checks, simd(), the module */

#define FAST_VERSION 9 /* 7: the same blocks as 6; the part's header records block_sums (fast.py);
                        * 8: the same layout, coarser tables chosen (SCALE_SLACK);
                        * 9: side values may be packed as Rice codes (F_PACK_R, F_PACK_C) */

/* A varint as put_varint writes it, else r->bad: no redundant continuation bytes (a last byte
 * of 0 after others), nothing above 64 bits. The decoder reads every varint this way so that no
 * changed byte of a block decodes (docs/format.md, What checks what). */
static u64 get_cvarint(Rd *r) {
    u64 v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len || (shift == 63 && r->p[r->pos] > 1)) break;
        u8 c = r->p[r->pos++];
        v |= (u64)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            if (c == 0 && shift) break;
            return v;
        }
    }
    r->bad = 1;
    return 0;
}
/* SCALE_BITS (12, the header's): integer planes and version-2 floats */
#define SCALE_BITS3 15 /* version-3 floats: a joint alphabet has many rare symbols, which a
                          coarser scale would overpay (+1.9 % on bfloat16 weights at 2^12) */
#define MAX_SCALE (1u << SCALE_BITS3)
#define MIN_SCALE_BITS3 11 /* version 5: a block's J table sums to 2^sb, MIN_SCALE_BITS3 <= sb <= 15 */
#define RANS_L (1u << 16)
#define NSTATES 32 /* four AVX2 vectors of eight: every stream before version 6, and a version-6
                    * block too small for more (states_for) */
#define MAX_STATES_CODE 2 /* the kind byte's largest states code */
#define MAX_STATES (NSTATES << MAX_STATES_CODE)
/* Version 6: a float block interleaves as many states (32, 64 or 128) as it can afford: each
 * extra state costs its 4 final bytes, at most 1/STATES_SHARE of the block's estimated bytes
 * (so 64 states from 64 KB, 128 from 192 KB). Why: each state's chain from one group of symbols
 * to the next (gather, multiply, renormalise: ~45 cycles) bounds the decoder, not its
 * throughput, so more states in flight decode faster (benchmarks/fast_kernel.py: bfloat16 GPT
 * weights +21 %, PP-OCRv4 detection weights +11-17 %); a block of few symbols, or of very
 * predictable ones, keeps 32. The AVX2-only path (16 vector registers) spills 128 states and
 * gains less: -6 to +7 % against version 5 on the same workloads (avx512(False)). */
#ifndef STATES_SHARE
#define STATES_SHARE 512
#endif
/* The states code (log2(states / NSTATES), the kind byte's bits 2-3) a block of about `bytes`
 * affords: the largest whose extra states' final bytes stay within 1/STATES_SHARE of them. */
static int states_for(u64 bytes) {
    int code = 0;
    while (code < MAX_STATES_CODE &&
           bytes >= (u64)STATES_SHARE * 4 * (u64)((NSTATES << (code + 1)) - NSTATES))
        code++;
    return code;
}
#define SPAN 32 /* values of a row rebuilt by one pass of the vector loop (AVX-512, 16 bits) */

#define FRAC 2 /* fixed-point fraction bits of the row / column exponent means */
#define MAX_EBITS 11
#define MAX_ALPHA ((1 << 12) + 2) /* version 3's joint symbols of the formats below */
#define SIDE_LIMIT (INT64_C(1) << 24)
#define BIAS (INT64_C(1) << 26) /* keeps shifted predictions non-negative */
#define BIAS32 (1 << 26)
#define CENTRE 127 /* A = 2 + (exponent - prediction + CENTRE) mod 2^E; 0 / 1 are +0 / -0 */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#define ZEN_TARGET __attribute__((target("arch=x86-64-v4")))
#else
#define CLONES
#endif

/* A block's first byte: its kind (KIND_FLOAT: version 2's float fields, KIND_FLOAT3: version
 * 3's; stored and integer blocks are the same in both versions), with KIND_XXH3 set where the
 * block's checksum is XXH3-128 (version 4, the same bytes otherwise) instead of MurmurHash3 */
enum { KIND_STORED = 0, KIND_FLOAT = 1, KIND_INT = 2, KIND_FLOAT3 = 3, KIND_XXH3 = 0x10 };
/* version 5: bits 5-7 of a KIND_FLOAT3 | KIND_XXH3 block's kind byte hold 15 - sb, its J table's
 * scale (choose_scale); blocks of versions 3 and 4 have them clear, so they read as sb = 15 */
#define KIND_SCALE_SHIFT 5
/* version 6: bits 2-3 of such a block's kind byte hold log2(states / NSTATES) of its J stream
 * (states_for's code: 0, 1 or 2); older blocks have them clear, so they read as NSTATES */
#define KIND_STATES_SHIFT 2
enum { F_EXP_MODE = 3, F_SIGN = 4, F_ZROWS = 8, F_ZCOLS = 16, F_PACK_R = 32, F_PACK_C = 64 };
/* F_PACK_R / F_PACK_C (version 9): the segment's row / column means are packed (put_packed) */

/* this thread's work() buffers (_kernel_common.h), kept from block to block */
enum { W_A, W_B, W_RAW, W_TMP, W_PLANE, W_COLS, W_ZPOS };

/* -- frequency tables ---------------------------------------------------------------------- */
typedef struct {
    u64 ent[MAX_SCALE]; /* symbol << 32 | freq << 16 | (slot - cum): one load per state (the
                         * AVX2 loop: one 64-bit gather lane instead of two 32-bit ones) */
    int empty, sb;      /* sb: frequencies sum to 2^sb */
    int lowest;         /* the smallest symbol listed (nsym when none): no smaller one decodes */
} DecTab;

/* bfloat16's joint symbols as the decoder keeps them (read_table's `map`, fused_span's TM): a
 * zero (0, 1) as itself; a coded J as its value's bits for a prediction of CENTRE, raw nibble 0,
 * with bit 3 set: sign << 15 | (J - 2) >> 4 << 7 | mantissa top bits << 4 | 8, so that a value
 * is two 16-bit adds and a select away (and still >= 2 exactly where coded). float32's the
 * same: its top 16 bits are laid out as bfloat16's (t = 3, a nibble), its two raw bytes below */
INLINE u32 bf16_map(u32 s) {
    const u32 bs = s - 2;
    return s < 2 ? s : ((bs >> 3) & 1) << 15 | (bs >> 4) << 7 | (bs & 7) << 4 | 8;
}
/* A bfloat16 row of mode 2 whose |R| <= R16_LIMIT computes its predictions in the value loop in
 * 16 bits: (C' + R + 2) >> FRAC with C saturated to +-C16_LIMIT (|sum| < 2^15) gives the same
 * prediction after the clamp to [0, 255] (a saturated C puts the sum past 2^FRAC * 2000, and
 * the true sum further on the same side) */
#define C16_LIMIT 16000
#define R16_LIMIT 8000
#define TMAP(W, V3, M, K, E, NIB, RB)                                                  \
    ((V3) && (K) == 3 && (E) == 8 && (NIB) &&                                           \
     (((W) == 16 && (M) == 7 && !(RB)) || ((W) == 32 && (M) == 23 && (RB) == 2)))

/* 1 when the table is well formed: symbols in the alphabet, frequencies summing to 2^sb.
 * `map`: the entries hold bf16_map's symbols (bfloat16's A stream) instead of the symbols. */
static int read_table(Rd *r, int nsym, DecTab *t, int sb, int map) {
    const u32 S = 1u << sb;
    t->sb = sb;
    u64 k = get_cvarint(r);
    if (r->bad || k > (u64)nsym) return 0;
    t->empty = k == 0;
    t->lowest = nsym;
    u32 cum = 0;
    i64 prev = -1;
    for (u64 i = 0; i < k; i++) {
        u64 gap = get_cvarint(r), f1 = get_cvarint(r);
        if (r->bad || gap >= (u64)nsym || f1 >= S) return 0;
        i64 s = prev + 1 + (i64)gap;
        u32 f = (u32)f1 + 1;
        if (s >= nsym || cum + f > S) return 0;
        const u64 sv = map ? bf16_map((u32)s) : (u64)s;
        for (u32 j = 0; j < f; j++) t->ent[cum + j] = sv << 32 | (f << 16) | j;
        if (i == 0) t->lowest = (int)s; /* listed in increasing order */
        cum += f;
        prev = s;
    }
    return k == 0 || cum == S;
}

/* -- interleaved rANS ----------------------------------------------------------------------
 * Encoding runs backwards, symbol k on state k % ns (ns: NSTATES, or states_for's), writing
 * 16-bit words down from the end of `out`; the final states go in front, so decoding reads one
 * forward stream. At most one word per symbol (a symbol adds at most SCALE_BITS < 16 bits):
 * `cap` >= 2 n + 4 ns. */
typedef struct {
    u64 rcp; /* ceil(2^48 / freq): v / freq = (v * rcp) >> 48 exactly for v < 2^32, freq <= 2^15 */
    u32 freq, cum;
} EncSym;

#define RANS_ENCODE(NAME, T)                                                                    \
    static size_t NAME(const T *syms, size_t n, const EncSym *es, u8 *out, size_t cap,         \
                       const int sb, const int ns) {                                            \
        u32 x[MAX_STATES];                                                                      \
        for (int i = 0; i < ns; i++) x[i] = RANS_L;                                             \
        u8 *p = out + cap;                                                                      \
        for (size_t k = n; k-- > 0;) {                                                          \
            const EncSym *e = &es[syms[k]];                                                     \
            u32 *xs = &x[k & (size_t)(ns - 1)], v = *xs;                                        \
            if ((u64)v >= ((u64)e->freq << (32 - sb))) { /* shed 16 bits first */              \
                p -= 2;                                                                         \
                p[0] = (u8)v;                                                                   \
                p[1] = (u8)(v >> 8);                                                            \
                v >>= 16;                                                                       \
            }                                                                                   \
            u32 q = (u32)mul_shr48(v, e->rcp);                                                  \
            *xs = (q << sb) + (v - q * e->freq) + e->cum;                                       \
        }                                                                                       \
        for (int i = ns; i-- > 0;) {                                                            \
            p -= 4;                                                                             \
            p[0] = (u8)x[i];                                                                    \
            p[1] = (u8)(x[i] >> 8);                                                             \
            p[2] = (u8)(x[i] >> 16);                                                            \
            p[3] = (u8)(x[i] >> 24);                                                            \
        }                                                                                       \
        return (size_t)(out + cap - p);                                                         \
    }
RANS_ENCODE(rans_encode16, u16)
RANS_ENCODE(rans_encode8, u8)


/* -- AVX2 decoding of whole groups of NSTATES symbols ----------------------------------------
 * The same arithmetic, eight states per vector, four vectors per group; the renormalisation
 * reads each vector's words in lane order, as the scalar loop does, so both decode the same
 * stream to the same symbols (tests compare them). Chosen at run time (kc_use_simd); where the
 * CPU has AVX-512VL (kc_use_avx512) the renormalisation expands the words into the lanes that
 * read one (vpexpandd) instead of permuting them by a table: a shorter chain from one group's
 * states to the next's (ocr-rec-bf16 +8-13 %). One body, compiled once per instruction set. */
/* The decoding path tuned on AMD Zen (zen(), on by default on AMD CPUs with AVX2): the rANS loop
 * reads its table entries by eight scalar loads instead of the gather instruction, which is
 * slower there, at either vector width; with AVX-512 (x86-64-v4, kc_v4) the fields are also
 * rebuilt by a copy of decode_float compiled for x86-64-v4 (512-bit vectors) where rows are long
 * enough (long_rows), with XXH3's 512-bit loop. Kernel decode on a Zen 4 EPYC against the
 * AVX-512 path: PP-OCRv4 detection weights +17 % (float32) and +15 % (bfloat16), GPT weights in
 * bfloat16 +32 %, sparse gradients +1-3 %; with AVX-512 off, the loads against AVX2's gathers:
 * +6-15 % (GPT weights +15 %, PP-OCRv4 +9 %), for Zen 2 and 3, which have no AVX-512 and slower
 * gathers (not measured on them). The same values on every path
 * (tests/plugins/lmgc_float/kernel_paths.py). */
static int kc_v4 = 0; /* the CPU runs x86-64-v4 code (decode_float_zen) */
#ifdef KC_HAVE_AVX2
#define RANS_GROUPS(NAME, TARGET, RENORM, Z)                                                       \
__attribute__((target(TARGET), always_inline)) static inline size_t NAME##_body(                   \
    u32 *xs, const u8 **pp, const u8 *end, const DecTab *t, void *out, const int wide,             \
    size_t n, const int NV) {                                                                      \
    const size_t NS = 8 * (size_t)NV; /* NV vectors of eight states */                             \
    __m256i x[MAX_STATES / 8];                                                                     \
    for (int v = 0; v < NV; v++) x[v] = _mm256_loadu_si256((const __m256i *)(xs + 8 * v));         \
    const __m256i m12 = _mm256_set1_epi32((1 << t->sb) - 1), lo16 = _mm256_set1_epi32(0xFFFF);     \
    const __m128i sbv = _mm_cvtsi32_si128(t->sb);                                                  \
    /* after packus_epi32 of symbols in lane order 0 1 4 5 2 3 6 7: 16-bit pairs 0-1, 2-3, ... */  \
    const __m256i pairs = _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5);                               \
    const long long *ent = (const long long *)t->ent;                                              \
    const u8 *p = *pp;                                                                             \
    size_t k = 0;                                                                                  \
    for (; k + NS <= n && end - p >= 2 * (ptrdiff_t)NS; k += NS) {                                 \
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) {                                    \
            __m256i slot = _mm256_and_si256(x[v], m12), e;                                         \
            if (Z) { /* one 512-bit gather of the eight entries, narrowed in lane order */         \
                GATHER512(ent, slot, e, out, k + 8 * v, wide);                                     \
            } else {                                                                               \
            /* the entries of lanes 0-3 and 4-7, then their low halves (freq, slot - cum) and      \
             * high halves (symbols), each in lane order 0 1 4 5 2 3 6 7 */                        \
            ENTRIES256(ent, slot, ga, gb);                                                         \
            __m256 fa = _mm256_castsi256_ps(ga), fb = _mm256_castsi256_ps(gb);                     \
            e = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, 0x88));                              \
            __m256i sy = _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, 0xDD));                     \
            e = _mm256_permute4x64_epi64(e, 0xD8); /* lane order */                                \
            __m256i w16 = _mm256_permutevar8x32_epi32(_mm256_packus_epi32(sy, sy), pairs);         \
            if (wide) {                                                                            \
                _mm_storeu_si128((__m128i *)((u16 *)out + k + 8 * v), _mm256_castsi256_si128(w16)); \
            } else {                                                                               \
                __m128i lo = _mm256_castsi256_si128(w16);                                          \
                _mm_storel_epi64((__m128i *)((u8 *)out + k + 8 * v), _mm_packus_epi16(lo, lo));    \
            }                                                                                      \
            }                                                                                      \
            x[v] = _mm256_add_epi32(                                                               \
                _mm256_mullo_epi32(_mm256_srli_epi32(e, 16), _mm256_srl_epi32(x[v], sbv)),         \
                _mm256_and_si256(e, lo16));                                                        \
        }                                                                                          \
        for (int v = 0; v < NV; v++) x[v] = RENORM(x[v], &p);                                      \
    }                                                                                              \
    for (int v = 0; v < NV; v++) _mm256_storeu_si256((__m256i *)(xs + 8 * v), x[v]);               \
    *pp = p;                                                                                       \
    return k;                                                                                      \
}                                                                                                  \
/* one loop per output width and number of states: no branch on them inside */                     \
__attribute__((target(TARGET))) static size_t NAME(u32 *xs, const u8 **pp, const u8 *end,          \
                                                  const DecTab *t, void *out, int wide, size_t n,  \
                                                  int ns) {                                        \
    if (ns == 128)                                                                                 \
        return wide ? NAME##_body(xs, pp, end, t, out, 1, n, 16)                                   \
                    : NAME##_body(xs, pp, end, t, out, 0, n, 16);                                  \
    if (ns == 64)                                                                                  \
        return wide ? NAME##_body(xs, pp, end, t, out, 1, n, 8)                                    \
                    : NAME##_body(xs, pp, end, t, out, 0, n, 8);                                   \
    return wide ? NAME##_body(xs, pp, end, t, out, 1, n, 4) : NAME##_body(xs, pp, end, t, out, 0, n, 4); \
}
#define GATHER512(ent, slot, e, out, at, wide) /* Z = 0: never expanded */
/* the slots' eight 64-bit entries: lanes 0-3 in ga, 4-7 in gb */
#define ENTRIES256(ent, slot, ga, gb)                                                              \
    __m256i ga = _mm256_i32gather_epi64(ent, _mm256_castsi256_si128(slot), 8);                     \
    __m256i gb = _mm256_i32gather_epi64(ent, _mm256_extracti128_si256(slot, 1), 8)
RANS_GROUPS(rans_groups_avx2, "avx2", kc_renorm8, 0)
#undef ENTRIES256
/* the same by scalar loads, the slots taken out of the vector 64 bits at a time (kc_zen): AMD's
 * vpgatherdq is slower than eight loads (Zen 4: 0.66 against ~0.5 ns per symbol) */
#define LOADS256(ent, slot, ga, gb)                                                                \
    KC_LANES8(slot);                                                                               \
    const __m256i ga = _mm256_setr_epi64x(ent[KC_LANE(i01, 0)], ent[KC_LANE(i01, 1)],             \
                                          ent[KC_LANE(i23, 0)], ent[KC_LANE(i23, 1)]);            \
    const __m256i gb = _mm256_setr_epi64x(ent[KC_LANE(i45, 0)], ent[KC_LANE(i45, 1)],             \
                                          ent[KC_LANE(i67, 0)], ent[KC_LANE(i67, 1)])
#define ENTRIES256(ent, slot, ga, gb) LOADS256(ent, slot, ga, gb)
RANS_GROUPS(rans_groups_avx2_loads, "avx2", kc_renorm8, 0)
#undef ENTRIES256
#undef GATHER512
#define ENTRIES256(ent, slot, ga, gb) /* Z = 1: only in the branch not taken */                    \
    __m256i ga = _mm256_setzero_si256(), gb = ga
/* AVX-512: eight 64-bit entries g split into their low halves e (freq, slot - cum) by vpmovqd in
 * lane order (no shuffles), and their symbols stored by vpmovdw / vpmovdb */
#define NARROW512(g, e, out, at, wide)                                                             \
    do {                                                                                           \
        __m256i sy = _mm512_cvtepi64_epi32(_mm512_srli_epi64(g, 32));                              \
        e = _mm512_cvtepi64_epi32(g);                                                              \
        if (wide)                                                                                  \
            _mm_storeu_si128((__m128i *)((u16 *)(out) + (at)), _mm256_cvtepi32_epi16(sy));         \
        else                                                                                       \
            _mm_storel_epi64((__m128i *)((u8 *)(out) + (at)), _mm256_cvtepi32_epi8(sy));           \
    } while (0)
/* the eight entries in one gather */
#define GATHER512(ent, slot, e, out, at, wide)                                                     \
    do {                                                                                           \
        __m512i g = _mm512_i32gather_epi64(slot, ent, 8);                                          \
        NARROW512(g, e, out, at, wide);                                                            \
    } while (0)
RANS_GROUPS(rans_groups_avx512, "avx2,avx512f,avx512vl", kc_renorm8_avx512, 1)
#undef GATHER512
/* The same with the eight entries read by scalar loads instead of the gather instruction, the
 * slots taken out of the vector 64 bits at a time (kc_zen) */
#define GATHER512(ent, slot, e, out, at, wide)                                                     \
    do {                                                                                           \
        LOADS256(ent, slot, ga, gb);                                                               \
        __m512i g = _mm512_inserti64x4(_mm512_castsi256_si512(ga), gb, 1);                         \
        NARROW512(g, e, out, at, wide);                                                            \
    } while (0)
RANS_GROUPS(rans_groups_loads, "avx2,avx512f,avx512vl", kc_renorm8_avx512, 1)
/* The same with sixteen states per 512-bit vector (x86-64-v4, kc_v4): the entries' low halves
 * and symbols of two sets of eight picked by one two-source permutation each, and the
 * arithmetic and renormalisation on sixteen lanes at once (the words still read in lane order,
 * so the same stream gives the same symbols) */
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq"), always_inline)) static inline
    __m512i renorm16_avx512(__m512i x, const u8 **pp) {
    __mmask16 need = _mm512_cmplt_epu32_mask(x, _mm512_set1_epi32(1 << 16));
    __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)*pp));
    *pp += 2 * __builtin_popcount((unsigned)need);
    return _mm512_mask_or_epi32(x, need, _mm512_slli_epi32(x, 16),
                                _mm512_maskz_expand_epi32(need, words));
}
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq"), always_inline)) static inline
    size_t rans_groups_loads16_body(u32 *xs, const u8 **pp, const u8 *end, const DecTab *t,
                                    void *out, const int wide, size_t n, const int NV) {
    const size_t NS = 16 * (size_t)NV; /* NV vectors of sixteen states */
    __m512i x[MAX_STATES / 16];
    for (int v = 0; v < NV; v++) x[v] = _mm512_loadu_si512((const void *)(xs + 16 * v));
    const __m512i m12 = _mm512_set1_epi32((1 << t->sb) - 1), lo16 = _mm512_set1_epi32(0xFFFF);
    const __m128i sbv = _mm_cvtsi32_si128(t->sb);
    /* the low dwords (freq, slot - cum) and the symbols' words of entries 0-7 (a), 8-15 (b) */
    const __m512i pickd = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                            28, 30);
    /* (words 2, 6, ... of a: 0-31; of b: 32-63; the upper sixteen lanes unused) */
    const __m512i pickw = _mm512_setr_epi32(2 | 6 << 16, 10 | 14 << 16, 18 | 22 << 16,
                                            26 | 30 << 16, 34 | 38 << 16, 42 | 46 << 16,
                                            50 | 54 << 16, 58 | 62 << 16, 0, 0, 0, 0, 0, 0, 0,
                                            0);
    const long long *ent = (const long long *)t->ent;
    const u8 *p = *pp;
    size_t k = 0;
    for (; k + NS <= n && end - p >= 2 * (ptrdiff_t)NS; k += NS) {
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) {
            const __m512i slot = _mm512_and_si512(x[v], m12);
            const __m256i s0 = _mm512_castsi512_si256(slot), s1 = _mm512_extracti64x4_epi64(slot, 1);
            __m512i ga, gb;
            {
                KC_LANES8(s0);
                ga = _mm512_setr_epi64(ent[KC_LANE(i01, 0)], ent[KC_LANE(i01, 1)],
                                       ent[KC_LANE(i23, 0)], ent[KC_LANE(i23, 1)],
                                       ent[KC_LANE(i45, 0)], ent[KC_LANE(i45, 1)],
                                       ent[KC_LANE(i67, 0)], ent[KC_LANE(i67, 1)]);
            }
            {
                KC_LANES8(s1);
                gb = _mm512_setr_epi64(ent[KC_LANE(i01, 0)], ent[KC_LANE(i01, 1)],
                                       ent[KC_LANE(i23, 0)], ent[KC_LANE(i23, 1)],
                                       ent[KC_LANE(i45, 0)], ent[KC_LANE(i45, 1)],
                                       ent[KC_LANE(i67, 0)], ent[KC_LANE(i67, 1)]);
            }
            const __m512i e = _mm512_permutex2var_epi32(ga, pickd, gb);
            const __m256i sy = _mm512_castsi512_si256(_mm512_permutex2var_epi16(ga, pickw, gb));
            if (wide)
                _mm256_storeu_si256((__m256i *)((u16 *)out + k + 16 * v), sy);
            else
                _mm_storeu_si128((__m128i *)((u8 *)out + k + 16 * v), _mm256_cvtepi16_epi8(sy));
            x[v] = _mm512_add_epi32(
                _mm512_mullo_epi32(_mm512_srli_epi32(e, 16), _mm512_srl_epi32(x[v], sbv)),
                _mm512_and_si512(e, lo16));
        }
        for (int v = 0; v < NV; v++) x[v] = renorm16_avx512(x[v], &p);
    }
    for (int v = 0; v < NV; v++) _mm512_storeu_si512((void *)(xs + 16 * v), x[v]);
    *pp = p;
    return k;
}
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq"))) static size_t
rans_groups_loads16(u32 *xs, const u8 **pp, const u8 *end, const DecTab *t, void *out, int wide,
                    size_t n, int ns) {
    if (ns == 128)
        return wide ? rans_groups_loads16_body(xs, pp, end, t, out, 1, n, 8)
                    : rans_groups_loads16_body(xs, pp, end, t, out, 0, n, 8);
    if (ns == 64)
        return wide ? rans_groups_loads16_body(xs, pp, end, t, out, 1, n, 4)
                    : rans_groups_loads16_body(xs, pp, end, t, out, 0, n, 4);
    return wide ? rans_groups_loads16_body(xs, pp, end, t, out, 1, n, 2)
                : rans_groups_loads16_body(xs, pp, end, t, out, 0, n, 2);
}
#undef GATHER512
#undef NARROW512
#undef LOADS256
#undef ENTRIES256
#undef RANS_GROUPS
#define SIMD_GROUPS(WIDE)                                                                        \
    if (kc_use_simd && kc_use_avx512 && kc_zen && kc_v4)                                         \
        k = rans_groups_loads16(x, &p, end, t, out, WIDE, n, ns);                                \
    else if (kc_use_simd && kc_use_avx512 && kc_zen)                                             \
        k = rans_groups_loads(x, &p, end, t, out, WIDE, n, ns);                                  \
    else if (kc_use_simd && kc_use_avx512)                                                       \
        k = rans_groups_avx512(x, &p, end, t, out, WIDE, n, ns);                                 \
    else if (kc_use_simd && kc_zen)                                                              \
        k = rans_groups_avx2_loads(x, &p, end, t, out, WIDE, n, ns);                             \
    else if (kc_use_simd)                                                                        \
        k = rans_groups_avx2(x, &p, end, t, out, WIDE, n, ns);
#else
#define SIMD_GROUPS(WIDE)
#endif

/* 1 when the stream decodes to exactly n symbols, ends where it should and leaves every state
 * where the encoder started it; 0 on a damaged stream (never reads past `len`). */
#define RANS_DECODE(NAME, T)                                                                  \
    static int NAME(const u8 *in, size_t len, size_t n, const DecTab *t, T *out, int ns) {     \
        if (n == 0) return len == 0;                                                            \
        if (t->empty || ns > MAX_STATES || len < 4 * (size_t)ns) return 0;                     \
        const int sb = t->sb;                                                                   \
        const u32 smask = (1u << sb) - 1;                                                       \
        u32 x[MAX_STATES];                                                                      \
        for (int i = 0; i < ns; i++)                                                            \
            x[i] = rd16(in + 4 * i) | (rd16(in + 4 * i + 2) << 16);                             \
        const u8 *p = in + 4 * ns, *end = in + len;                                             \
        size_t k = 0;                                                                           \
        SIMD_GROUPS(sizeof(T) == 2)                                                             \
        /* the states decode independently; only the short renormalisation chain (compare,   \
         * add) is serial through the read position, so the CPU overlaps the table loads */     \
        for (; k + (size_t)ns <= n && end - p >= 2 * ns; k += (size_t)ns) {                     \
            for (int i = 0; i < ns; i++) {                                                      \
                u32 v = x[i], slot = v & smask;                                                 \
                u64 ent = t->ent[slot];                                                         \
                u32 e = (u32)ent;                                                               \
                out[k + i] = (T)(ent >> 32);                                                    \
                x[i] = (e >> 16) * (v >> sb) + (e & 0xFFFF);                                    \
            }                                                                                   \
            for (int i = 0; i < ns; i++) {                                                      \
                u32 v = x[i];                                                                   \
                int r = v < RANS_L;                                                             \
                x[i] = r ? (v << 16) | rd16(p) : v;                                             \
                p += 2 * r;                                                                     \
            }                                                                                   \
        }                                                                                       \
        for (; k < n; k++) {                                                                    \
            u32 *xs = &x[k & (size_t)(ns - 1)], v = *xs, slot = v & smask;                       \
            u64 ent = t->ent[slot];                                                             \
            u32 e = (u32)ent;                                                                   \
            out[k] = (T)(ent >> 32);                                                            \
            v = (e >> 16) * (v >> sb) + (e & 0xFFFF);                                           \
            if (v < RANS_L) {                                                                   \
                if (end - p < 2) return 0;                                                      \
                v = (v << 16) | rd16(p);                                                        \
                p += 2;                                                                         \
            }                                                                                   \
            *xs = v;                                                                            \
        }                                                                                       \
        if (p != end) return 0;                                                                 \
        for (int i = 0; i < ns; i++)                                                            \
            if (x[i] != RANS_L) return 0;                                                       \
        return 1;                                                                               \
    }
RANS_DECODE(rans_decode16, u16)
RANS_DECODE(rans_decode8, u8)

/* Normalise, write the table, code the symbols; append `varint len | stream` after it. */
static int code_stream_freq(Buf *b, const void *syms, int wide, size_t n, const u32 *freq,
                            int nsym, int sb, int ns) {
    write_table(b, freq, nsym);
    if (n == 0) {
        put_varint(b, 0);
        return !b->fail;
    }
    EncSym *es = malloc(sizeof(EncSym) * (size_t)nsym);
    size_t cap = 2 * n + 4 * (size_t)ns + 16;
    u8 *tmp = work(W_TMP, cap);
    if (!tmp || !es) {
        free(es);
        return 0;
    }
    u32 cum = 0;
    for (int s = 0; s < nsym; s++) {
        u32 f = freq[s] ? freq[s] : 1; /* absent symbols are never coded */
        es[s].freq = f, es[s].cum = cum;
        es[s].rcp = ((UINT64_C(1) << 48) + f - 1) / f;
        cum += freq[s];
    }
    size_t len = wide ? rans_encode16(syms, n, es, tmp, cap, sb, ns)
                      : rans_encode8(syms, n, es, tmp, cap, sb, ns);
    free(es);
    put_varint(b, (u64)len);
    put_bytes(b, tmp + cap - len, len);
    return !b->fail;
}

static int code_stream(Buf *b, const void *syms, int wide, size_t n, const u64 *cnt, int nsym,
                       int sb) {
    u32 freq[MAX_ALPHA];
    normalize_bits(cnt, nsym, freq, sb);
    return code_stream_freq(b, syms, wide, n, freq, nsym, sb, NSTATES);
}

/* Read `table | varint len | stream` and decode n symbols (ns interleaved states). */
static int read_stream(Rd *r, int nsym, size_t n, int wide, void *out, DecTab *t, int sb,
                       int ns, int map) {
    if (!read_table(r, nsym, t, sb, map) || (n == 0) != t->empty) return 0;
    u64 len = get_cvarint(r);
    if (r->bad || len > r->len - r->pos) return 0;
    const u8 *in = r->p + r->pos;
    r->pos += (size_t)len;
    return wide ? rans_decode16(in, (size_t)len, n, t, out, ns)
                : rans_decode8(in, (size_t)len, n, t, out, ns);
}

/* Version 2 codes A and B as two streams (k = mbits mod 8 mantissa bits in B, the rest raw
 * bytes); version 3 codes one joint symbol J = 2 + (A - 2) << (t + 1) | B per value (t = mbits
 * mod 4 mantissa bits: the top mantissa bits depend on the exponent's distance from its
 * prediction, which the joint table captures) and stores the rest as raw bytes plus, where
 * mbits - t is not a whole number of bytes, one packed nibble. */
typedef struct {
    int width, ebits, mbits, k, rawbytes, nA, nB;
    int t, rb3, nib, nJ; /* version 3 */
    u64 emask, sign_bit;
} Fmt;

static Fmt make_fmt(int width, int ebits, int mbits) {
    Fmt f;
    f.width = width;
    f.ebits = ebits;
    f.mbits = mbits;
    f.rawbytes = mbits / 8;
    f.k = mbits - 8 * f.rawbytes;
    f.nA = (1 << ebits) + 2;
    f.nB = 1 << (f.k + 1);
    f.t = mbits % 4;
    f.rb3 = (mbits - f.t) / 8;
    f.nib = (mbits - f.t) % 8 != 0;
    f.nJ = 2 + (1 << (ebits + 1 + f.t));
    f.emask = ((u64)1 << ebits) - 1;
    f.sign_bit = (u64)1 << (width - 1);
    return f;
}

/* -- the float encoder ----------------------------------------------------------------------- */
typedef struct {
    i64 *R, *C;          /* per-row / per-column fixed-point exponent means */
    int32_t *C32;        /* C as 32-bit (decoding: |C| <= SIDE_LIMIT), for vector loops */
    int16_t *C16, *C16c; /* decoding: C (and C32c) saturated to +-C16_LIMIT (fused_span's INL) */
    int32_t *lc, *C32c;  /* decoding with zero columns: the live columns, then the zero ones; */
    u8 *csc;             /* C32 and cs of the live columns, in that order */
    u8 *livem;           /* and a bit per column, set where it is live (spread_row) */
    i64 ncl;             /* how many columns are live */
    u8 *zr, *zc, *rs, *cs; /* all-zero rows / columns, row / column signs */
    i64 *cnt_r, *cnt_c, *sum_c, *neg_c;
    int32_t *sum32, *cnt32, *nz32; /* decoding (in W_COLS): the column sums of rows rebuilt by
                                    * the fused loop (fused_row), added to sum_c / cnt_c /
                                    * neg_c every FLUSH_ROWS rows */
    i64 nfused;
    int32_t *pred; /* decoding (in W_COLS): a row's predictions in mode 2 */
    u32 *rowv;     /* and its values, with zero columns */
    u32 *lox, *bx; /* a row with zeros: its values' raw / B entries (expand_row) */
    u64 nbtot;     /* the block's coded values */
    int dense; /* decoding: no symbol of the block is a zero (no row needs looking at first) */
    const u32 *zp, *zend; /* decoding: the zero symbols' positions not yet passed (zp NULL:
                           * not listed, rows are scanned) */
    u32 *hist; /* 3 x nA */
} Scratch;

static void scratch_free(Scratch *s) {
    free(s->R), free(s->C), free(s->C32), free(s->C16), free(s->C16c), free(s->lc), free(s->C32c), free(s->csc), free(s->livem), free(s->zr), free(s->zc), free(s->rs), free(s->cs);
    free(s->cnt_r), free(s->cnt_c), free(s->sum_c), free(s->neg_c), free(s->hist);
}

static int scratch_alloc(Scratch *s, i64 rows, i64 cols, int nA) {
    size_t r = (size_t)rows + 1, c = (size_t)cols + 1 + SPAN; /* (SPAN: fused_row's short rows) */
    s->R = malloc(r * 8), s->C = malloc(c * 8), s->zr = malloc(r), s->zc = malloc(c);
    /* (zeroed: the padding past the columns is read, never used) */
    s->C16 = calloc(c, 2), s->C16c = calloc(c, 2);
    s->C32 = calloc(c, 4), s->lc = malloc(c * 4), s->C32c = calloc(c, 4), s->csc = calloc(c, 1);
    s->livem = malloc(c / 8 + 4);
    s->rs = malloc(r), s->cs = calloc(c, 1), s->cnt_r = malloc(r * 8), s->cnt_c = malloc(c * 8);
    s->sum_c = malloc(c * 8), s->neg_c = malloc(c * 8), s->hist = malloc(3 * (size_t)nA * 4);
    return s->R && s->C && s->C32 && s->C16 && s->C16c && s->lc && s->C32c && s->csc && s->livem && s->zr && s->zc && s->rs && s->cs && s->cnt_r && s->cnt_c &&
           s->sum_c && s->neg_c && s->hist;
}

INLINE i64 clamp_pred(i64 fixed, u64 emask) {
    i64 p = ((fixed + 2 + BIAS) >> FRAC) - (BIAS >> FRAC);
    return p < 0 ? 0 : (p > (i64)emask ? (i64)emask : p);
}

INLINE int is_zero(u64 v, u64 sign_bit) { return (v & ~sign_bit) == 0; }

static u64 bits_cost(u64 ones, u64 n) { /* binary entropy of n flags, 1/65536 bits */
    u32 h[2] = {(u32)ones, (u32)(n - ones)};
    return entropy_cost(h, 2);
}

/* -- side values: varints, or (version 9) Rice codes --------------------------------------
 * A segment's row (column) means are written as the zigzag varints of their differences, one
 * byte or more each. Since version 9 a list of them may instead be packed (flag F_PACK_R /
 * F_PACK_C): a byte k (0-15), the first difference as a varint, then each further difference's
 * zigzag z as a Rice code, least significant bit first: z >> k zeros, a one, the k low bits of
 * z; a quotient of RICE_ESC or more as RICE_ESC zeros, a one and z's RICE_RAW bits; then zero
 * bits to the byte's end. Most differences are a few quarter-exponents, 3-4 bits instead of 8
 * (ConvNet gradients: 1,900 -> ~980 bytes of side information, 0.4 % of the stream). The
 * encoder takes, per list, the k whose code is shortest (the lowest on a tie), and packs the list
 * only where that is shorter than its varints: one encoding of every list, which canonical
 * decoding checks. */
#define RICE_ESC 15
#define RICE_RAW 27 /* zigzag differences of values within +-SIDE_LIMIT (2^24) are below 2^26 */

static u64 varints_len(const i64 *v, i64 n) { /* bytes of the list as varints */
    u64 bytes = 0;
    i64 prev = 0;
    for (i64 i = 0; i < n; i++) {
        bytes += (u64)varint_len(zz(v[i] - prev));
        prev = v[i];
    }
    return bytes;
}

/* Bytes of the list packed with the best k (in *k), UINT64_MAX where a difference is too big. */
static u64 packed_len(const i64 *v, i64 n, int *k) {
    u64 bits[16] = {0};
    for (i64 i = 1; i < n; i++) {
        const u64 z = zz(v[i] - v[i - 1]);
        if (z >> RICE_RAW) return UINT64_MAX;
        for (int b = 0; b < 16; b++) {
            const u64 q = z >> b;
            bits[b] += q < RICE_ESC ? q + 1 + (u64)b : RICE_ESC + 1 + RICE_RAW;
        }
    }
    int best = 0;
    for (int b = 1; b < 16; b++)
        if (bits[b] < bits[best]) best = b;
    *k = best;
    return 1 + (u64)varint_len(zz(v[0])) + (bits[best] + 7) / 8;
}

/* Bytes of the list as the encoder writes it: packed (*pack, with *k) only where that is shorter
 * than its varints. */
static u64 list_len(const i64 *v, i64 n, int *pack, int *k) {
    const u64 var = varints_len(v, n);
    *k = 0;
    const u64 pk = n >= 2 ? packed_len(v, n, k) : UINT64_MAX;
    *pack = pk < var;
    return *pack ? pk : var;
}

static void put_packed(Buf *b, const i64 *v, i64 n, int k) {
    put_u8(b, (u8)k);
    put_varint(b, zz(v[0]));
    u64 acc = 0;
    int nacc = 0;
    for (i64 i = 1; i < n; i++) {
        const u64 z = zz(v[i] - v[i - 1]), q = z >> k;
        /* the unary part with its one, then the low bits (or the escaped value): <= 43 bits */
        const int esc = q >= RICE_ESC, u = esc ? RICE_ESC : (int)q, low = esc ? RICE_RAW : k;
        acc |= (u64)1 << (nacc + u);
        nacc += u + 1;
        while (nacc >= 8) put_u8(b, (u8)acc), acc >>= 8, nacc -= 8;
        acc |= (z & (((u64)1 << low) - 1)) << nacc;
        nacc += low;
        while (nacc >= 8) put_u8(b, (u8)acc), acc >>= 8, nacc -= 8;
    }
    if (nacc) put_u8(b, (u8)acc);
}

/* The list as list_len chose: packed, or the zigzag varints of its differences. */
static void put_list(Buf *b, const i64 *v, i64 n, int pack, int k) {
    if (pack) {
        put_packed(b, v, n, k);
        return;
    }
    i64 prev = 0;
    for (i64 i = 0; i < n; i++) put_varint(b, zz(v[i] - prev)), prev = v[i];
}

/* Pass 1 for one segment: choose its side information and write it to `side`. */
INLINE void plan_segment(const int W, const void *vals, const Fmt *f, i64 off, i64 rows, i64 cols,
                         Scratch *s, Buf *side, int *mode_out, int *flags_out, i64 *R0) {
    const int M = f->mbits;
    const u64 sb = f->sign_bit, em = f->emask;
    i64 tsum = 0, tcnt = 0, tneg = 0, any_zr = 0, any_zc = 0;
    const int can2 = rows >= 2; /* a one-row segment never touches the column arrays */
    if (can2)
        for (i64 j = 0; j < cols; j++) s->cnt_c[j] = s->sum_c[j] = s->neg_c[j] = 0, s->zc[j] = 1;
    /* one pass over the rows (branch-free, so it vectorises): zero rows / columns, row means,
     * then, while the row is in L1, its share of the column means of (exponent - row mean) and
     * of the columns' majority sign (the first round of the sign pattern below) */
    for (i64 i = 0; i < rows; i++) {
        const i64 base = off + i * cols;
        i64 rsum = 0, rcnt = 0, rneg = 0;
        u64 any = 0;
        for (i64 j = 0; j < cols; j++) {
            u64 v = load_v(vals, W, base + j);
            i64 nz = !is_zero(v, sb);
            any |= v;
            if (can2) s->zc[j] &= v == 0;
            rsum += nz ? (i64)((v >> M) & em) : 0;
            rcnt += nz;
            rneg += nz & (i64)(v >> (W - 1));
        }
        int zrow = any == 0;
        s->zr[i] = (u8)zrow;
        any_zr |= zrow;
        s->R[i] = rcnt ? floor_div(2 * (rsum << FRAC) + rcnt, 2 * rcnt) : (i ? s->R[i - 1] : 0);
        s->cnt_r[i] = rcnt;
        tsum += rsum, tcnt += rcnt, tneg += rneg;
        if (can2 && rcnt) {
            const i64 Ri = s->R[i];
            for (i64 j = 0; j < cols; j++) {
                u64 v = load_v(vals, W, base + j);
                i64 nz = !is_zero(v, sb);
                s->sum_c[j] += nz ? ((i64)((v >> M) & em) << FRAC) - Ri : 0;
                s->cnt_c[j] += nz;
                s->neg_c[j] += nz ? 2 * (i64)(v >> (W - 1)) - 1 : 0;
            }
        }
    }
    if (can2)
        for (i64 j = 0; j < cols; j++) any_zc |= s->zc[j];
    *R0 = tcnt ? floor_div(2 * (tsum << FRAC) + tcnt, 2 * tcnt) : 0;
    if (can2)
        for (i64 j = 0; j < cols; j++)
            s->C[j] = s->cnt_c[j] ? floor_div(2 * s->sum_c[j] + s->cnt_c[j], 2 * s->cnt_c[j])
                                  : (j ? s->C[j - 1] : 0);
    /* histograms of A under the three modes (0: segment mean, 1: row means, 2: rank-1) */
    const int nA = f->nA;
    u32 *h0 = s->hist, *h1 = s->hist + nA, *h2 = s->hist + 2 * nA;
    memset(s->hist, 0, 3 * (size_t)nA * 4);
    i64 p0 = clamp_pred(*R0, em);
    for (i64 i = 0; i < rows; i++) {
        i64 p1 = clamp_pred(s->R[i], em);
        for (i64 j = 0; j < cols; j++) {
            u64 v = load_v(vals, W, off + i * cols + j);
            if (is_zero(v, sb)) {
                u32 a = (u32)(em + 1 + ((v & sb) != 0));
                h0[a]++;
                if (!s->zr[i]) h1[a]++;
                if (can2 && !s->zr[i] && !s->zc[j]) h2[a]++;
                continue;
            }
            i64 ex = (i64)((v >> M) & em);
            h0[(ex - p0) & em]++;
            h1[(ex - p1) & em]++;
            if (can2) h2[(ex - clamp_pred(s->R[i] + s->C[j], em)) & em]++;
        }
    }
    u64 zr_bits = any_zr ? (u64)((rows + 7) / 8) * 8 * 65536 : 0;
    u64 zc_bits = any_zc ? (u64)((cols + 7) / 8) * 8 * 65536 : 0;
    /* the row / column means as they would be written (each list's form chosen once) */
    int pack_r = 0, pack_c = 0, kr = 0, kc = 0;
    const u64 r_bits = can2 ? list_len(s->R, rows, &pack_r, &kr) * 8 * 65536 : 0;
    const u64 c_bits = can2 ? list_len(s->C, cols, &pack_c, &kc) * 8 * 65536 : 0;
    u64 cost0 = entropy_cost(h0, nA) + (u64)varint_len(zz(*R0)) * 8 * 65536;
    u64 cost1 = rows >= 2 ? entropy_cost(h1, nA) + r_bits + zr_bits : UINT64_MAX;
    u64 cost2 = UINT64_MAX;
    if (can2) cost2 = entropy_cost(h2, nA) + r_bits + c_bits + zr_bits + zc_bits;
    int mode = 0;
    if (cost1 < cost0) mode = 1;
    if (cost2 < (mode ? cost1 : cost0)) mode = 2;
    /* signs: a rank-1 sign pattern (row sign XOR column sign), when it pays */
    int use_sign = 0;
    if (can2 && tcnt) {
        /* columns' majority sign (counted in the pass above), rows' majority against the
         * columns, columns again against the rows, rows again; the misses of the final pattern
         * follow from the last rows' scores: a row's misses are its values whose sign differs
         * from its row sign XOR column sign */
        for (i64 j = 0; j < cols; j++) s->cs[j] = s->neg_c[j] > 0;
        u64 miss = 0;
        for (int round = 0; round < 2; round++) {
            for (i64 i = 0; i < rows; i++) { /* rows' majority against the columns */
                const i64 base = off + i * cols;
                i64 score = 0, nnz = 0;
                for (i64 j = 0; j < cols; j++) {
                    u64 v = load_v(vals, W, base + j);
                    i64 nz = !is_zero(v, sb), d = (i64)(((v >> (W - 1)) ^ s->cs[j]) & 1);
                    score += nz ? 2 * d - 1 : 0;
                    nnz += nz;
                }
                s->rs[i] = score > 0;
                /* score = m1 - m0, nnz = m1 + m0 (m1: sign differs from the column's) */
                if (round == 1) miss += (u64)(s->rs[i] ? (nnz - score) / 2 : (nnz + score) / 2);
            }
            if (round == 0) { /* columns again, against the rows */
                for (i64 j = 0; j < cols; j++) s->neg_c[j] = 0;
                for (i64 i = 0; i < rows; i++) {
                    const i64 base = off + i * cols;
                    const u64 ri = s->rs[i];
                    for (i64 j = 0; j < cols; j++) {
                        u64 v = load_v(vals, W, base + j);
                        i64 nz = !is_zero(v, sb), d = (i64)(((v >> (W - 1)) ^ ri) & 1);
                        s->neg_c[j] += nz ? 2 * d - 1 : 0;
                    }
                }
                for (i64 j = 0; j < cols; j++) s->cs[j] = s->neg_c[j] > 0;
            }
        }
        u64 with = bits_cost(miss, (u64)tcnt) + (u64)((rows + 7) / 8 + (cols + 7) / 8) * 8 * 65536;
        use_sign = with < bits_cost((u64)tneg, (u64)tcnt);
    }
    int flags = mode | (use_sign ? F_SIGN : 0);
    if (mode >= 1 && any_zr) flags |= F_ZROWS;
    if (mode == 2 && any_zc) flags |= F_ZCOLS;
    if (mode >= 1 && pack_r) flags |= F_PACK_R;
    if (mode == 2 && pack_c) flags |= F_PACK_C;
    put_u8(side, (u8)flags);
    if (mode == 0)
        put_varint(side, zz(*R0));
    else
        put_list(side, s->R, rows, pack_r, kr);
    if (mode == 2) put_list(side, s->C, cols, pack_c, kc);
#define PUT_BITMAP(ARR, N)                                                  \
    for (i64 q = 0; q < (N); q += 8) {                                      \
        u8 byte = 0;                                                        \
        for (int t = 0; t < 8 && q + t < (N); t++) byte |= (u8)((ARR)[q + t] << t); \
        put_u8(side, byte);                                                 \
    }
    if (flags & F_ZROWS) PUT_BITMAP(s->zr, rows)
    if (flags & F_ZCOLS) PUT_BITMAP(s->zc, cols)
    if (flags & F_SIGN) {
        PUT_BITMAP(s->rs, rows)
        PUT_BITMAP(s->cs, cols)
    }
    *mode_out = mode;
    *flags_out = flags;
}

/* One segment's values as fields, under the side information just chosen: J per value, then
 * for each value that is not a zero its nibble (if any; one byte each here, packed later) and
 * its raw bytes. */
INLINE void fields_segment(const int W, const void *vals, const Fmt *f, i64 off, i64 rows,
                           i64 cols, const Scratch *s, int flags, i64 R0, u16 *J, size_t *na,
                           u8 *L, size_t *nb, u8 *raw, u64 *cJ) {
    const int M = f->mbits, t = f->t, rb = f->rb3, nib = f->nib, mode = flags & F_EXP_MODE;
    const u64 sb = f->sign_bit, em = f->emask, tmask = ((u64)1 << t) - 1;
    const int zrows = flags & F_ZROWS, zcols = flags & F_ZCOLS, sgn = flags & F_SIGN;
    size_t a = *na, b = *nb;
    for (i64 i = 0; i < rows; i++) {
        if (zrows && s->zr[i]) continue;
        i64 rfix = mode == 0 ? R0 : s->R[i], p = clamp_pred(rfix, em);
        u64 rsg = sgn ? s->rs[i] : 0;
        for (i64 j = 0; j < cols; j++) {
            if (zcols && s->zc[j]) continue;
            u64 v = load_v(vals, W, off + i * cols + j);
            if (is_zero(v, sb)) {
                u16 z = (u16)((v & sb) != 0);
                J[a++] = z, cJ[z]++;
                continue;
            }
            if (mode == 2) p = clamp_pred(rfix + s->C[j], em);
            u64 ex = (v >> M) & em, sp = sgn ? rsg ^ s->cs[j] : 0;
            u64 sym = 2 + (((ex - (u64)p + CENTRE) & em) << (t + 1) |
                           ((((v & sb) != 0) ^ sp) << t) | ((v >> (M - t)) & tmask));
            J[a++] = (u16)sym, cJ[sym]++;
            if (nib) L[b] = (u8)((v >> (8 * rb)) & 15);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(raw + b * (size_t)rb, &v, 8); /* one store; the next value overwrites the rest */
#else
            for (int q = 0; q < rb; q++) raw[b * (size_t)rb + q] = (u8)(v >> (8 * q));
#endif
            b++;
        }
    }
    *na = a, *nb = b;
}

static i64 max_of(const i64 *segs, i64 nsegs, int field) {
    i64 m = 0;
    for (i64 s = 0; s < nsegs; s++)
        if (segs[3 * s + field] > m) m = segs[3 * s + field];
    return m;
}

static i64 total_values(const i64 *segs, i64 nsegs) {
    i64 n = 0;
    for (i64 s = 0; s < nsegs; s++) n += segs[3 * s + 1] * segs[3 * s + 2];
    return n;
}

/* 1 when the segments' rows hold ZEN_ROW values or more on average: decode_float_zen's 512-bit
 * rebuild loses to the 256-bit one on shorter rows (benchmarks/row_length.py: rows of 16 values
 * 30 % slower, of 32 or more 10-35 % faster) */
#define ZEN_ROW 24
static int long_rows(const i64 *segs, i64 nsegs) {
    i64 rows = 0;
    for (i64 s = 0; s < nsegs; s++) rows += segs[3 * s + 1];
    return total_values(segs, nsegs) >= ZEN_ROW * rows;
}

/* -- version 5: each block's J table at the scale it needs -------------------------------------
 * Why: decoding looks up one 8-byte entry per value in a table of 2^sb entries. At sb = 15
 * (256 KB) every lookup misses L1; at sb = 12 (32 KB) the table stays there and the whole
 * decode is 8-15 % faster, but a coarser table codes rare symbols less exactly. So the encoder
 * normalises the counts at every scale from 15 down to MIN_SCALE_BITS3, estimates each block's
 * size, and takes the smallest scale within SCALE_SLACK of the smallest size: a block gives up
 * at most ~0.4 % of its bytes for the faster table (~0.1 % before version 8, which left dense
 * blocks at 2^13-2^15: version 8 decodes them 5-12 % faster for up to 0.18 points of size,
 * benchmarks/fast_kernel.py). All of it is integer arithmetic, so every machine writes the same
 * bytes. */
#define SCALE_SLACK 8 /* a scale may cost 2^-8 of the block's estimated bits more than the best
                       * (2^-10 before version 8) */

/* log2(x) * 65536 to within ~2e-5 bits (log2fix interpolated between its table's points) */
static u64 log2fine(u64 x) {
    if (x == 0) return 0;
    int msb = 63 - __builtin_clzll(x);
    u64 m = msb >= 16 ? x >> (msb - 16) : x << (16 - msb); /* 1.16 fixed point, 2^16 <= m < 2^17 */
    u32 i = (u32)(m >> 8) & 255, fr = (u32)m & 255;
    return (u64)msb * 65536 + LOG2TAB[i] + (((LOG2TAB[i + 1] - LOG2TAB[i]) * fr) >> 8);
}

/* Whether symbol a's unit of frequency should move before b's: with `inc`, a's next unit saves
 * more bits than b's, else a's last unit costs fewer (a symbol at 1 has none to give). A unit's
 * worth at frequency f is about c / (f +- 1/2) (log2((f + 1) / f) to within 1e-3 relative),
 * compared by exact cross-multiplication; ties go to the lower symbol. */
INLINE int unit_before(const u64 *cnt, const u32 *f, int a, int b, int inc) {
    if (!inc && (f[a] == 1 || f[b] == 1)) return f[a] == 1 ? 0 : f[b] == 1 ? 1 : a < b;
    u64 da = 2 * (u64)f[a] + (inc ? 1 : (u64)-1), db = 2 * (u64)f[b] + (inc ? 1 : (u64)-1);
    u64 l = cnt[a] * db, r = cnt[b] * da;
    return l != r ? (inc ? l > r : l < r) : a < b;
}

static void sift_down(int *h, int k, int i, const u64 *cnt, const u32 *f, int inc) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= k) return;
        if (c + 1 < k && unit_before(cnt, f, h[c + 1], h[c], inc)) c++;
        if (!unit_before(cnt, f, h[c], h[i], inc)) return;
        int t = h[i];
        h[i] = h[c], h[c] = t;
        i = c;
    }
}

/* Frequencies summing to 2^sb (each present symbol's >= 1, at most 2^sb of them): floors of the
 * proportional shares, then the surplus or deficit moved one unit at a time where it costs least
 * (a heap over the present symbols `h`). */
static void normalize_close(const u64 *cnt, int nsym, u32 *freq, int sb, int *h) {
    const u64 S = (u64)1 << sb;
    u64 total = 0, sum = 0;
    int k = 0;
    for (int s = 0; s < nsym; s++) total += cnt[s];
    for (int s = 0; s < nsym; s++) {
        freq[s] = 0;
        if (!cnt[s]) continue;
        u64 q = cnt[s] * S / total;
        freq[s] = q ? (u32)q : 1;
        sum += freq[s];
        h[k++] = s;
    }
    if (!k || sum == S) return;
    const int inc = sum < S;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i, cnt, freq, inc);
    for (; sum != S; sum += inc ? 1 : (u64)-1) { /* the top always has a unit to give: sum > k */
        freq[h[0]] += inc ? 1 : (u32)-1;
        sift_down(h, k, 0, cnt, freq, inc);
    }
}

/* The estimated bits (1/65536) of coding the counts with these frequencies, and their table. */
static u64 table_cost(const u64 *cnt, const u32 *freq, int nsym, int sb) {
    u64 bits = 0, bytes = 0;
    int prev = -1, k = 0;
    for (int s = 0; s < nsym; s++) {
        if (!freq[s]) continue;
        bits += cnt[s] * ((u64)sb * 65536 - log2fine(freq[s]));
        bytes += (u64)varint_len((u64)(s - prev - 1)) + (u64)varint_len(freq[s] - 1);
        prev = s, k++;
    }
    return bits + (bytes + (u64)varint_len((u64)k)) * 8 * 65536;
}

/* The scale of a block's J table and its frequencies (in freq), and the estimated bits (1/65536)
 * of the symbols and the table at that scale: `rest` is the block's other bytes (side
 * information, nibbles, raw bytes), which the slack is a share of too. 0 when out of memory. */
static int choose_scale(const u64 *cnt, int nsym, u64 rest, u32 *freq, u64 *bits) {
    int *h = malloc(sizeof(int) * (size_t)nsym);
    u32 *tr = malloc(sizeof(u32) * (size_t)nsym * (SCALE_BITS3 - MIN_SCALE_BITS3 + 1));
    int sb = 0, present = 0;
    u64 cost[SCALE_BITS3 + 1] = {0}, best = UINT64_MAX;
    if (!h || !tr) goto done;
    for (int s = 0; s < nsym; s++) present += cnt[s] != 0;
    for (int b = SCALE_BITS3; b >= MIN_SCALE_BITS3 && present <= (1 << b); b--) {
        u32 *fb = tr + (size_t)(SCALE_BITS3 - b) * (size_t)nsym;
        normalize_close(cnt, nsym, fb, b, h);
        cost[b] = table_cost(cnt, fb, nsym, b);
        if (cost[b] < best) best = cost[b];
        sb = b;
    }
    const u64 limit = best + ((best + rest * 8 * 65536) >> SCALE_SLACK);
    while (cost[sb] > limit) sb++;
    *bits = cost[sb];
    memcpy(freq, tr + (size_t)(SCALE_BITS3 - sb) * (size_t)nsym, sizeof(u32) * (size_t)nsym);
done:
    free(h), free(tr);
    return sb;
}

/* One version-3 float block of a run of segments whose fields are ready: its side information,
 * J symbols (counted in cJ) at the scale choose_scale picks, nibbles and raw bytes. */
static int write_float3(Buf *out, const Fmt *f, const u8 *side, size_t sidelen, const u16 *J,
                        size_t na, const u8 *L, size_t nb, const u8 *raw, const u64 *cJ) {
    u32 freq[MAX_ALPHA];
    const u64 rest = sidelen + (f->nib ? (nb + 1) / 2 : 0) + nb * (u64)f->rb3;
    u64 bits = 0;
    const int sb = na ? choose_scale(cJ, f->nJ, rest, freq, &bits) : SCALE_BITS3;
    if (!sb) return 0;
    if (!na) memset(freq, 0, sizeof(u32) * (size_t)f->nJ);
    const int code = states_for(rest + (bits >> 19)), ns = NSTATES << code; /* bits / 2^19 */
    put_u8(out, KIND_FLOAT3 | KIND_XXH3 | (SCALE_BITS3 - sb) << KIND_SCALE_SHIFT |
                    code << KIND_STATES_SHIFT);
    put_varint(out, na);
    put_varint(out, nb);
    put_varint(out, sidelen);
    put_bytes(out, side, sidelen);
    int ok = code_stream_freq(out, J, 1, na, freq, f->nJ, sb, ns);
    if (f->nib && buf_reserve(out, (nb + 1) / 2)) {
        for (size_t q = 0; q + 1 < nb; q += 2) out->p[out->len++] = (u8)(L[q] | L[q + 1] << 4);
        if (nb & 1) out->p[out->len++] = L[nb - 1];
    }
    put_bytes(out, raw, nb * (size_t)f->rb3);
    return ok && !out->fail;
}

/* -- splitting a block where its tensors' statistics change ---------------------------------
 * A block has one J table, so tensors of different statistics in one block pay for each other
 * (PP-OCRv4's first bf16 block: 1x1 convolutions of different spreads, +43 KB on 3.6 MB). Their
 * fields do not depend on the block (side information is per segment), so the encoder may cut
 * a block's segments into runs that each get their own table: the runs minimising the
 * estimated size (entropy of each run's symbols, its table, a block's fixed cost), over units of
 * segments (at least UNIT values, or one bigger segment: plan_units), at most MAX_UNITS of
 * them, whose counts coding snapshots as it goes. The stream lists the cuts (the part's
 * "splits"); each run is an ordinary block. */
#define MAX_UNITS 32
#define UNIT 4096
#define BLOCK_COST (160 * 8) /* bits: NSTATES rANS states 128 bytes, checksum, lengths, header
                              * entry (run_cost adds states_for's extra states) */
#define SPLIT_MARGIN (32 * 8) /* bits a split must save on the estimate */

/* The estimated bits (1/65536) of a block holding the counts c[0..k) of the symbols sym[]. */
static u64 run_cost(const u32 *hi, const u32 *lo, const u16 *sym, int k, const Fmt *f) {
    u64 n = 0, sum = 0, table = 0;
    for (int q = 0; q < k; q++) n += hi[q] - lo[q];
    if (!n) return 0;
    /* a table entry: the gap (1 byte below 128, else 2) and the frequency - 1 (1 byte below 128,
     * 2 below 16,384, else 3) of a frequency of about c 2^15 / n, compared without dividing */
    const u64 f1 = 129 * n, f2 = 16385 * n;
    int prev = -1;
    for (int q = 0; q < k; q++) {
        u64 c = hi[q] - lo[q];
        if (!c) continue;
        sum += c * log2fix(c);
        u64 scaled = c << SCALE_BITS3;
        table += 2 + (sym[q] - prev > 128) + (scaled >= f1) + (scaled >= f2);
        prev = sym[q];
    }
    /* the extra states' final bytes, for the run's estimated bytes (raw bytes: as if every
     * value were coded) */
    const u64 est = n * log2fix(n) - sum + ((table + 1) * 8 + BLOCK_COST) * 65536;
    const u64 raw = n * (u64)f->rb3 + (f->nib ? n / 2 : 0);
    return est + 32 * (u64)((NSTATES << states_for((est >> 19) + raw)) - NSTATES) * 65536;
}

/* The units a block's segments are planned in: a unit starts at ustart[u] (ustart[0] = 0) with
 * a segment of at least `unit` values or after units of at least as many, `unit` doubled until
 * there are at most MAX_UNITS. Derived from the segments' sizes alone, so that coding can take
 * its counts as it goes. Returns their number. */
static int plan_units(const i64 *segs, i64 nsegs, i64 *ustart) {
    int nu = 0;
    for (u64 unit = UNIT;; unit *= 2) {
        nu = 0;
        u64 cur = 0;
        for (i64 g = 0; g < nsegs && nu <= MAX_UNITS; g++) {
            u64 n = (u64)(segs[3 * g + 1] * segs[3 * g + 2]);
            if (g == 0 || cur >= unit || n >= unit) {
                if (nu == MAX_UNITS) {
                    nu++;
                    break;
                }
                ustart[nu++] = g, cur = 0;
            }
            cur += n;
        }
        if (nu <= MAX_UNITS) break;
    }
    ustart[nu] = nsegs;
    return nu;
}

/* Cut a block's nu >= 2 units into runs (cuts[0] = 0 < ... < cuts[m] = nsegs, in segments;
 * returns m, 1 when the block stays whole, -1 when out of memory) and, when m > 1, give each
 * run's symbol counts (m rows of nJ, to be freed). snap[u nJ + s]: the count of symbol s before
 * unit u (row nu: the block's, cJ). */
static int plan_cuts(const u32 *snap, const i64 *ustart, int nu, const Fmt *f, const u64 *cJ,
                     i64 *cuts, u32 **run_counts) {
    *run_counts = NULL;
    int k = 0, m = 1;
    u16 *sym = malloc(sizeof(u16) * (size_t)f->nJ);
    u32 *P = NULL;
    if (sym) {
        for (int s = 0; s < f->nJ; s++)
            if (cJ[s]) sym[k++] = (u16)s;
        P = malloc((size_t)(nu + 1) * (size_t)k * 4); /* the same, present symbols only */
    }
    if (!P) {
        m = -1;
        goto done;
    }
    for (int u = 0; u <= nu; u++)
        for (int q = 0; q < k; q++) P[(size_t)u * k + q] = snap[(size_t)u * f->nJ + sym[q]];
    /* no cut can pay when the block's estimate is within reach of a lower bound of every cut
     * into two runs or more: each unit's own entropy (merging never lowers it), two bytes per
     * present symbol (each is in some run's table) and two blocks' fixed cost */
    u64 whole = run_cost(P + (size_t)nu * k, P, sym, k, f), floor_bits = 0;
    for (int u = 0; u < nu; u++) {
        const u32 *hi = P + (size_t)(u + 1) * k, *lo = P + (size_t)u * k;
        u64 n = 0, sum = 0;
        for (int q = 0; q < k; q++) {
            u64 c = hi[q] - lo[q];
            n += c, sum += c * log2fix(c);
        }
        floor_bits += n * log2fix(n) - sum;
    }
    floor_bits += ((u64)k * 16 + 2 * BLOCK_COST + SPLIT_MARGIN) * 65536;
    if (floor_bits >= whole) goto done;
    u64 best[MAX_UNITS + 1];
    int from[MAX_UNITS + 1];
    best[0] = 0;
    for (int j = 1; j <= nu; j++) {
        best[j] = UINT64_MAX;
        for (int i = 0; i < j; i++) {
            u64 c = best[i] + run_cost(P + (size_t)j * k, P + (size_t)i * k, sym, k, f);
            if (c < best[j]) best[j] = c, from[j] = i;
        }
    }
    if (best[nu] + (u64)SPLIT_MARGIN * 65536 < whole) {
        int runs[MAX_UNITS + 1], r = 0;
        for (int j = nu; j > 0; j = from[j]) runs[r++] = j;
        for (m = 0; m < r; m++) cuts[m + 1] = ustart[runs[r - 1 - m]];
        u32 *rc = *run_counts = calloc((size_t)m * (size_t)f->nJ, 4); /* each run's counts */
        if (!rc) m = -1;
        for (int q = 0; rc && q < m; q++) {
            const u32 *hi = P + (size_t)runs[r - 1 - q] * k;
            const u32 *lo = P + (size_t)(q ? runs[r - q] : 0) * k;
            for (int z = 0; z < k; z++) rc[(size_t)q * f->nJ + sym[z]] = hi[z] - lo[z];
        }
    }
done:
    free(sym), free(P);
    return m;
}

/* Code a block's segments (split: into runs of their own, plan_cuts) into outs[0..m) (each the
 * smaller of coded and stored, then the checksum of its values); cuts[0..m] are the runs'
 * segment bounds. Returns m, 0 when out of memory. Compiled twice, like decode_float. */
CLONES static int encode_float(const void *vals, const i64 *segs, i64 nsegs, const Fmt *f,
                               int split, Buf *outs, i64 *cuts) {
    i64 n = total_values(segs, nsegs);
    Scratch s = {0};
    Buf side = {0};
    u16 *J = work(W_A, (size_t)n * 2 + 2);
    u8 *L = work(W_B, (size_t)n + 1), *raw = work(W_RAW, (size_t)n * f->rb3 + 8);
    u64 *cJ = calloc(MAX_ALPHA, 8);
    size_t *mk = malloc(sizeof(size_t) * 3 * (size_t)(nsegs + 1)); /* na, nb, side per segment */
    int ok = J && L && raw && cJ && mk &&
             scratch_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2), f->nA);
    i64 ustart[MAX_UNITS + 1];
    int nu = ok && split && nsegs > 1 ? plan_units(segs, nsegs, ustart) : 1, u = 0;
    u32 *snap = nu > 1 ? malloc((size_t)(nu + 1) * (size_t)f->nJ * 4) : NULL; /* plan_cuts */
    ok = ok && (nu < 2 || snap);
    size_t na = 0, nb = 0;
    for (i64 g = 0; ok && g < nsegs; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        int mode, flags;
        i64 R0;
        mk[3 * g] = na, mk[3 * g + 1] = nb, mk[3 * g + 2] = side.len;
        if (snap && u < nu && ustart[u] == g) { /* the counts so far, at a unit's start */
            for (int q = 0; q < f->nJ; q++) snap[(size_t)u * f->nJ + q] = (u32)cJ[q];
            u++;
        }
        switch (f->width) { /* one specialised copy of both passes per width */
#define PASSES(WW)                                                                             \
    case WW:                                                                                   \
        plan_segment(WW, vals, f, off, rows, cols, &s, &side, &mode, &flags, &R0);             \
        fields_segment(WW, vals, f, off, rows, cols, &s, flags, R0, J, &na, L, &nb, raw, cJ);  \
        break;
            PASSES(8)
            PASSES(16)
            PASSES(32)
            default:
                PASSES(64)
#undef PASSES
        }
    }
    ok = ok && !side.fail;
    int m = 0;
    if (ok) {
        mk[3 * nsegs] = na, mk[3 * nsegs + 1] = nb, mk[3 * nsegs + 2] = side.len;
        cuts[0] = 0, cuts[1] = nsegs;
        u32 *rc = NULL;
        m = 1;
        if (snap) {
            for (int q = 0; q < f->nJ; q++) snap[(size_t)nu * f->nJ + q] = (u32)cJ[q];
            m = plan_cuts(snap, ustart, nu, f, cJ, cuts, &rc);
        }
        ok = m > 0;
        for (int r = 0; ok && r < m; r++) {
            const size_t *a = mk + 3 * cuts[r], *b = mk + 3 * cuts[r + 1];
            const i64 *sg = segs + 3 * cuts[r], ns = cuts[r + 1] - cuts[r];
            Buf *out = &outs[r];
            if (m > 1) /* this run's counts */
                for (int z = 0; z < f->nJ; z++) cJ[z] = rc[(size_t)r * f->nJ + z];
            u64 stored = 1 + (u64)total_values(sg, ns) * (u64)(f->width / 8);
            ok = buf_reserve(out, (size_t)stored + 4096) &&
                 write_float3(out, f, side.p + a[2], b[2] - a[2], J + a[0], b[0] - a[0],
                              L + a[1], b[1] - a[1], raw + a[1] * (size_t)f->rb3, cJ);
        }
        free(rc);
    }
    free(cJ), free(side.p), free(mk), free(snap);
    scratch_free(&s);
    return ok ? m : 0;
}

/* -- the float decoder ----------------------------------------------------------------------- */
static int get_bitmap(Rd *r, u8 *dst, i64 n) {
    for (i64 q = 0; q < n; q += 8) {
        u8 byte = get_u8(r);
        for (int t = 0; t < 8 && q + t < n; t++) dst[q + t] = (byte >> t) & 1;
        if (n - q < 8 && byte >> (n - q)) r->bad = 1; /* padding bits are zero */
    }
    return !r->bad;
}

static int get_side_values(Rd *r, i64 *dst, i64 n) {
    i64 prev = 0;
    for (i64 i = 0; i < n; i++) {
        i64 v = prev + unzz(get_cvarint(r));
        if (r->bad || v < -SIDE_LIMIT || v > SIDE_LIMIT) return 0;
        dst[i] = prev = v;
    }
    return 1;
}

/* A list put_packed wrote (n >= 2). `canonical`: also refuse a list the encoder would have
 * written otherwise (another k, or as varints), which would decode to the same values. */
static int get_side_packed(Rd *r, i64 *dst, i64 n, int canonical) {
    const int k = get_u8(r);
    if (r->bad || k > 15 || n < 2 || !get_side_values(r, dst, 1)) return 0;
    u64 buf = 0;
    int nb = 0;
    for (i64 i = 1; i < n; i++) {
        while (nb <= 56 && r->pos < r->len) buf |= (u64)r->p[r->pos++] << nb, nb += 8;
        const int q = buf ? __builtin_ctzll(buf) : 64;
        if (q > RICE_ESC || q >= nb) return 0;
        buf >>= q, buf >>= 1, nb -= q + 1;
        const int low = q == RICE_ESC ? RICE_RAW : k;
        if (nb < low) return 0;
        u64 z = buf & (((u64)1 << low) - 1);
        buf >>= low, nb -= low;
        if (q == RICE_ESC) {
            if (z >> k < RICE_ESC) return 0; /* an escape only where the code could not hold it */
        } else {
            z |= (u64)q << k;
        }
        const i64 v = dst[i - 1] + unzz(z);
        if (v < -SIDE_LIMIT || v > SIDE_LIMIT) return 0;
        dst[i] = v;
    }
    if (buf & (((u64)1 << (nb & 7)) - 1)) return 0; /* the last byte's padding bits are zero */
    r->pos -= (size_t)(nb >> 3); /* whole bytes read ahead */
    int pack, best;
    return !canonical || (list_len(dst, n, &pack, &best), pack && best == k);
}

INLINE u64 load_raw(const u8 *p, int rb) {
    u64 v = 0;
    switch (rb) {
        case 0: return 0;
        case 1: return p[0];
        case 2: return (u64)p[0] | ((u64)p[1] << 8);
        default:
            for (int q = 0; q < rb; q++) v |= (u64)p[q] << (8 * q);
            return v;
    }
}

/* One segment's side information after its flags byte: the row means (or R0), the column means
 * (and their 32- and 16-bit copies), the bitmaps. 0 where it is not what an encoder writes.
 * (Out of line: inside the decoder's body, whose rebuild loops it precedes, the packed lists'
 * reader made those loops 15-20 % slower on small tensors.) */
__attribute__((noinline)) static int read_side(Rd *side, int flags, i64 rows, i64 cols,
                                               Scratch *s, i64 *R0, int canonical) {
    const int mode = flags & F_EXP_MODE;
    if (mode == 3 || flags >= 128 || ((mode >= 1 || (flags & F_SIGN)) && rows < 2) ||
        ((flags & F_ZROWS) && mode == 0) || ((flags & F_ZCOLS) && mode != 2) ||
        ((flags & F_PACK_R) && mode == 0) || ((flags & F_PACK_C) && mode != 2))
        return 0;
    int ok;
    if (mode == 0)
        ok = get_side_values(side, R0, 1);
    else if (flags & F_PACK_R)
        ok = get_side_packed(side, s->R, rows, canonical);
    else /* (varints where packing is shorter are version 8's lists: read, not refused) */
        ok = get_side_values(side, s->R, rows);
    if (ok && mode == 2) {
        ok = (flags & F_PACK_C) ? get_side_packed(side, s->C, cols, canonical)
                                : get_side_values(side, s->C, cols);
        for (i64 j = 0; ok && j < cols; j++) {
            s->C32[j] = (int32_t)s->C[j];
            s->C16[j] = (int16_t)(s->C[j] < -C16_LIMIT ? -C16_LIMIT
                                  : s->C[j] > C16_LIMIT ? C16_LIMIT : s->C[j]);
        }
    }
    if (ok && (flags & F_ZROWS)) ok = get_bitmap(side, s->zr, rows);
    if (ok && (flags & F_ZCOLS)) ok = get_bitmap(side, s->zc, cols);
    if (ok && (flags & F_SIGN)) ok = get_bitmap(side, s->rs, rows) && get_bitmap(side, s->cs, cols);
    return ok;
}

/* -- a row with zeros: each value's B / raw entry ------------------------------------------
 * Zeros (A < 2) have no B or raw entry, so value q's entry is the count of coded values before
 * it in the row: a prefix sum, which a branch per value (taken at random where zeros are
 * scattered) would mispredict. The expansion writes, for each value of a run of n, its raw bits
 * (with the nibble above them) to lox and version 2's B to bx, a coded value's own entries, a
 * zero's anything (fused_row replaces a zero's value), and returns how many values are coded.
 * `avail`: the entries readable at B and R (the block's rest), so no load passes the block. */
INLINE i64 expand_tail(u32 *lox, u32 *bx, const u16 *A, i64 q, i64 n, const u8 *B,
                       const u8 *R, i64 avail, i64 k, const int RB, const int NIB, const int V2) {
    if (avail <= k) { /* no coded value left: all zeros */
        for (; q < n; q++) {
            if (RB || NIB) lox[q] = 0;
            if (V2) bx[q] = 0;
        }
        return k;
    }
    for (; q < n; q++) { /* branch-free: the entry at k (the last one past the end) */
        const i64 kk = k < avail ? k : avail - 1;
        u32 lo = (u32)load_raw(R + kk * RB, RB);
        if (NIB) lo |= (u32)B[kk] << (8 * RB);
        if (RB || NIB) lox[q] = lo;
        if (V2) bx[q] = B[kk];
        k += A[q] >= 2;
    }
    return k;
}

#ifdef KC_HAVE_AVX2
/* Eight values at a time: the next eight entries, widened to 32 bits, moved into the lanes of
 * the coded values (AVX2: a permutation from kc_renorm_perm, whose row for a lane mask holds
 * each lane's rank among the set lanes; AVX-512VL: vpexpandd). */
#define EXPAND8(NAME, TARGET, SPREAD)                                                            \
__attribute__((target(TARGET), always_inline)) static inline i64 NAME##_body(                    \
    u32 *lox, u32 *bx, const u16 *A, i64 n, const u8 *B, const u8 *R, i64 avail, const int RB,   \
    const int NIB, const int V2) {                                                               \
    i64 q = 0, k = 0;                                                                            \
    const __m256i one = _mm256_set1_epi32(1);                                                    \
    for (; q + 8 <= n && k + 8 <= avail; q += 8) {                                               \
        __m256i sym = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(A + q)));          \
        __m256i c = _mm256_cmpgt_epi32(sym, one);                                                \
        const unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(c));                 \
        __m256i lo = _mm256_setzero_si256();                                                     \
        if (RB == 2) lo = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(R + 2 * k)));  \
        if (RB == 1) lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(R + k)));       \
        __m256i b8 = _mm256_setzero_si256();                                                     \
        if (NIB || V2) b8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(B + k)));    \
        if (NIB) lo = _mm256_or_si256(lo, _mm256_slli_epi32(b8, 8 * RB));                        \
        if (RB || NIB) _mm256_storeu_si256((__m256i *)(lox + q), SPREAD(lo, m));                 \
        if (V2) _mm256_storeu_si256((__m256i *)(bx + q), SPREAD(b8, m));                         \
        k += __builtin_popcount(m);                                                              \
    }                                                                                            \
    return expand_tail(lox, bx, A, q, n, B, R, avail, k, RB, NIB, V2);                           \
}                                                                                                \
/* one body per layout: (raw bytes, nibble, version 2's B) */                                    \
__attribute__((target(TARGET))) static i64 NAME(u32 *lox, u32 *bx, const u16 *A, i64 n,         \
                                                const u8 *B, const u8 *R, i64 avail, int rb,     \
                                                int nib, int v2) {                               \
    switch (rb * 4 + nib * 2 + v2) {                                                             \
        case 0: return NAME##_body(lox, bx, A, n, B, R, avail, 0, 0, 0);                         \
        case 1: return NAME##_body(lox, bx, A, n, B, R, avail, 0, 0, 1);                         \
        case 2: return NAME##_body(lox, bx, A, n, B, R, avail, 0, 1, 0);                         \
        case 4: return NAME##_body(lox, bx, A, n, B, R, avail, 1, 0, 0);                         \
        case 5: return NAME##_body(lox, bx, A, n, B, R, avail, 1, 0, 1);                         \
        case 8: return NAME##_body(lox, bx, A, n, B, R, avail, 2, 0, 0);                         \
        case 9: return NAME##_body(lox, bx, A, n, B, R, avail, 2, 0, 1);                         \
        default: return NAME##_body(lox, bx, A, n, B, R, avail, 2, 1, 0);                        \
    }                                                                                            \
}
/* The eight values of v into the lanes set in m, in order (spread_row's too: SPREAD8) */
#define SPREAD_AVX2(v, m)                                                                        \
    _mm256_permutevar8x32_epi32((v), _mm256_loadu_si256((const __m256i *)kc_renorm_perm[(m)]))
#define SPREAD_AVX512(v, m) _mm256_maskz_expand_epi32((__mmask8)(m), (v))
EXPAND8(expand_avx2, "avx2", SPREAD_AVX2)
EXPAND8(expand_avx512, "avx2,avx512f,avx512vl", SPREAD_AVX512)
#undef EXPAND8
#endif

/* The expansion of one run of a row (see expand_tail), by the widest code the CPU runs. */
INLINE i64 expand_row(u32 *lox, u32 *bx, const u16 *A, i64 n, const u8 *B, const u8 *R,
                      i64 avail, const int RB, const int NIB, const int V2) {
#ifdef KC_HAVE_AVX2
    if (kc_use_simd && kc_use_avx512) return expand_avx512(lox, bx, A, n, B, R, avail, RB, NIB, V2);
    if (kc_use_simd) return expand_avx2(lox, bx, A, n, B, R, avail, RB, NIB, V2);
#endif
    return expand_tail(lox, bx, A, 0, n, B, R, avail, 0, RB, NIB, V2);
}

/* -- a row with zero columns: its live columns' values to their places ------------------------
 * fused_row rebuilds the live columns in order (rowv); their places are an expansion too: the
 * columns [j, jend) hold exactly those values, in order, where livem (a bit per column, live =
 * 1) is set, and +0 elsewhere. Stored eight columns at a time where the CPU has AVX2 (rather
 * than one store per column at an index). rowv may be read up to 8 values past its end. */
INLINE void spread_tail(void *outv, i64 base, i64 j, i64 jend, const u32 *rowv,
                        const u8 *livem, i64 k, const int W) {
    for (; j < jend; j++) { /* branch-free */
        const u32 live = (livem[j >> 3] >> (j & 7)) & 1, x = rowv[k];
        store_v(outv, W, base + j, x & -live);
        k += live;
    }
}

#ifdef KC_HAVE_AVX2
#define SPREAD8(NAME, TARGET, SPREAD)                                                            \
__attribute__((target(TARGET), always_inline)) static inline void NAME##_body(                  \
    void *outv, i64 base, i64 j, i64 jend, const u32 *rowv, const u8 *livem, const int W) {     \
    i64 k = 0;                                                                                   \
    for (; j + 8 <= jend; j += 8) {                                                              \
        const unsigned m = (rd16(livem + (j >> 3)) >> (j & 7)) & 0xFF;                           \
        __m256i v = SPREAD(_mm256_loadu_si256((const __m256i *)(rowv + k)), m);                  \
        if (W == 32) {                                                                           \
            _mm256_storeu_si256((__m256i *)((u32 *)outv + base + j), v);                         \
        } else { /* the low 16 (8) bits of each lane, in order */                               \
            __m128i h = _mm256_castsi256_si128(                                                  \
                _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0xD8));                      \
            if (W == 16)                                                                         \
                _mm_storeu_si128((__m128i *)((u16 *)outv + base + j), h);                        \
            else                                                                                 \
                _mm_storel_epi64((__m128i *)((u8 *)outv + base + j), _mm_packus_epi16(h, h));    \
        }                                                                                        \
        k += __builtin_popcount(m);                                                              \
    }                                                                                            \
    spread_tail(outv, base, j, jend, rowv, livem, k, W);                                         \
}                                                                                                \
__attribute__((target(TARGET))) static void NAME(void *outv, i64 base, i64 j, i64 jend,         \
                                                const u32 *rowv, const u8 *livem, int w) {      \
    if (w == 32) NAME##_body(outv, base, j, jend, rowv, livem, 32);                              \
    else if (w == 16) NAME##_body(outv, base, j, jend, rowv, livem, 16);                         \
    else NAME##_body(outv, base, j, jend, rowv, livem, 8);                                       \
}
/* AVX2: the permutation (EXPAND8's) leaves other values in the dead columns' lanes: masked to
 * +0; AVX-512VL's expand zeroes them itself */
#define SPREAD_ZEROED_AVX2(v, m)                                                                 \
    _mm256_and_si256(SPREAD_AVX2(v, m),                                                          \
                     _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(m)),             \
                                                         lane_bits()),                           \
                                        lane_bits()))
__attribute__((target("avx2"), always_inline)) static inline __m256i lane_bits(void) {
    return _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
}
SPREAD8(spread_avx2, "avx2", SPREAD_ZEROED_AVX2)
SPREAD8(spread_avx512, "avx2,avx512f,avx512vl", SPREAD_AVX512)
#undef SPREAD8
#undef SPREAD_ZEROED_AVX2
#undef SPREAD_AVX2
#undef SPREAD_AVX512
#endif

/* One run of a row with zero columns to its places (see spread_tail). */
INLINE void spread_row(void *outv, i64 base, i64 j, i64 jend, const u32 *rowv, const u8 *livem,
                       const int W) {
#ifdef KC_HAVE_AVX2
    if (kc_use_simd && kc_use_avx512)
        spread_avx512(outv, base, j, jend, rowv, livem, W);
    else if (kc_use_simd)
        spread_avx2(outv, base, j, jend, rowv, livem, W);
    else
#endif
        spread_tail(outv, base, j, jend, rowv, livem, 0, W);
}

/* A row's share of the canonical check, when fused_row gathered it (done) */
typedef struct {
    u64 rsum, rcnt, any;
    int done;
} RowSums;
#define FLUSH_ROWS 32768 /* rows of 32-bit column sums: |exponent << FRAC - R| <= 2^10 each */

/* SPAN, hidden from the compiler: gcc leaves a loop of a known 32 iterations scalar where it
 * cannot vectorise it without an epilogue (float32's two raw bytes per value), but runs the
 * vector loop it makes for an unknown count */
INLINE i64 span_len(void) {
    i64 n = SPAN;
#if defined(__GNUC__)
    __asm__("" : "+r"(n));
#endif
    return n;
}

/* the predictions of values lo..hi-1 of a run starting at q0 (fused_row) */
INLINE void predict_span(int32_t *pred, const int32_t *C32, i64 q0, i64 lo, i64 hi, int32_t rf,
                         u64 em) {
#pragma GCC ivdep
    for (i64 q = lo; q < hi; q++) {
        int32_t pj = ((rf + C32[q]) >> FRAC) - (int32_t)(BIAS32 >> FRAC);
        pj = pj < 0 ? 0 : pj;
        pred[q - q0] = pj > (int32_t)em ? (int32_t)em : pj;
    }
}

/* the same for bfloat16's mapped symbols (TMAP; float32's top halves too): ((prediction -
 * CENTRE) << 7) - 8, as 16 bits */
INLINE void predict_span16(u16 *pred, const int32_t *C32, i64 q0, i64 lo, i64 hi, int32_t rf,
                           u64 em) {
#pragma GCC ivdep
    for (i64 q = lo; q < hi; q++) {
        int32_t pj = ((rf + C32[q]) >> FRAC) - (int32_t)(BIAS32 >> FRAC);
        pj = pj < 0 ? 0 : pj;
        pj = pj > (int32_t)em ? (int32_t)em : pj;
        pred[q - q0] = (u16)((((u32)pj - CENTRE) << 7) - 8);
    }
}

/* value v's share of canon_row's sums (xf: its exponent field), at column q of the run */
INLINE void canon_sums(u32 v, u32 xf, i64 q, int32_t *sum32, int32_t *cnt32, int32_t *nz32,
                       int32_t Ri, u32 *ps, u32 *pc, u32 *pa32, const int W, const int mode2,
                       const int sgn) {
    const u32 nz = (v & ~((u32)1 << (W - 1))) != 0;
    *pa32 |= v;
    *ps += nz ? xf : 0;
    *pc += nz;
    if (mode2) {
        sum32[q] += nz ? (int32_t)(xf << FRAC) - Ri : 0;
        cnt32[q] += (int32_t)nz;
        nz32[q] |= (int32_t)(v != 0);
    } else if (sgn) {
        cnt32[q] += (int32_t)nz;
    }
}

/* values lo..hi-1 of a run starting at q0 (fused_row), and with CK their canonical sums */
INLINE void fused_span(void *outv, i64 base, i64 q0, i64 lo, i64 hi, const int32_t *pred,
                       int32_t p0, const u16 *Ar, const u8 *csq, u64 rsg, const u32 *bx,
                       const u8 *Br, const u32 *lox, const u8 *Rr, u32 *rowv, int32_t *sum32,
                       int32_t *cnt32, int32_t *nz32, int32_t Ri, u32 *pps, u32 *ppc, u32 *ppa,
                       const int W, const int RB, const int M, const int K, const int E,
                       const int V3, const int NIB, const int mode2, const int sgn,
                       const int zcols, const int CK, const int ZR, const int16_t *C16,
                       int16_t r2, const int INL) {
    const u64 em = ((u64)1 << E) - 1, kmask = ((u64)1 << K) - 1;
    const int LO = 8 * RB; /* the nibble's position */
    const int TM = TMAP(W, V3, M, K, E, NIB, RB);
    const u16 P0 = (u16)((((u32)p0 - CENTRE) << 7) - 8);
    const u16 *pred16 = (const u16 *)pred;
    u32 ps = 0, pc = 0, pa32 = 0;
    /* the row, the fields and the column sums never overlap */
#pragma GCC ivdep
    for (i64 q = lo; q < hi; q++) {
        if (TM) { /* bf16_map's symbols: sign and exponent + prediction in 16 bits */
            const u16 T = Ar[q];
            u16 Pv = mode2 ? pred16[q - q0] : P0;
            if (INL) { /* predict_span16's, from the saturated column means */
                int16_t y = (int16_t)((int16_t)(C16[q] + r2) >> FRAC);
                y = y < 0 ? 0 : y;
                y = y > (int16_t)em ? (int16_t)em : y;
                Pv = (u16)(((u16)y << 7) - (CENTRE * 128 + 8));
            }
            /* the nibble; float32: the top 16 bits as bfloat16's, then the two raw bytes */
            const u16 low = ZR ? (u16)(lox[q - q0] >> (8 * RB)) : (u16)Br[q];
            const u16 sb16 = sgn ? (u16)(((u32)rsg ^ csq[q]) << 15) : 0;
            const u16 x = (u16)(T + Pv + low);
            u16 v16 = (u16)((x & 0x7FFF) | ((T ^ sb16) & 0x8000));
            u16 r16 = 0;
            if (RB == 2) r16 = ZR ? (u16)lox[q - q0] : (u16)le16(Rr + 2 * q);
            if (ZR) {
                const u16 coded = (u16)-(u16)(T >= 2);
                v16 = (u16)((v16 & coded) | ((u16)(T << 15) & (u16)~coded));
                r16 &= coded;
            }
            const u32 v = W == 32 ? (u32)v16 << 16 | r16 : v16;
            if (zcols)
                rowv[q - q0] = v;
            else
                store_v(outv, W, base + q, v);
            if (CK)
                canon_sums(v, (v >> M) & (u32)em, q, sum32, cnt32, nz32, Ri, &ps, &pc, &pa32, W,
                           mode2, sgn);
            continue;
        }
        const int32_t pj = mode2 ? pred[q - q0] : p0;
        u32 sym = Ar[q], sp = sgn ? (u32)rsg ^ csq[q] : 0;
        u32 bs = V3 ? sym - 2 : ZR ? bx[q - q0] : Br[q];
        u32 ex = V3 ? ((sym - 2) >> (K + 1)) + (u32)pj - CENTRE
                    : sym + (u32)pj - (CENTRE + 2);
        u32 low = 0;
        if (ZR && (RB || (V3 && NIB))) low = lox[q - q0];
        if (!ZR && RB == 1) low = Rr[q];
        if (!ZR && RB == 2) low = le16(Rr + 2 * q);
        if (!ZR && V3 && NIB) low |= (u32)Br[q] << LO;
        u32 v = ((((bs >> K) ^ sp) & 1) << (W - 1)) | ((ex & (u32)em) << M) |
                ((bs & (u32)kmask) << (M - K)) | low;
        if (ZR) { /* a zero's +0 / -0, by a mask: gcc would not vectorise a select here */
            const u32 coded = -(u32)(sym >= 2);
            v = (v & coded) | ((sym << (W - 1)) & ~coded);
        }
        if (zcols) /* in order here (the loop vectorises), to their columns below */
            rowv[q - q0] = v;
        else
            store_v(outv, W, base + q, v);
        if (CK) /* canon_row's sums */
            canon_sums(v, ex & (u32)em, q, sum32, cnt32, nz32, Ri, &ps, &pc, &pa32, W, mode2, sgn);
    }
    if (CK) *pps += ps, *ppc += pc, *ppa |= pa32;
}

/* SPAN float32 values of mapped symbols (TMAP) as fused_span computes them without zeros, zero
 * columns or canonical sums, sixteen at a time in vectors (GNU C vector extensions, on
 * little-endian hosts: a value is its two raw bytes, then its top half): the values of a row
 * shorter than SPAN (fused_row), whose loop gcc left scalar (a third of the rebuild of float32
 * PP-OCRv4 detection weights); elsewhere fused_span's loop does it */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    defined(__has_builtin)
#if __has_builtin(__builtin_convertvector)
#define TM32_VEC 1
#endif
#endif
#ifndef TM32_VEC
#define TM32_VEC 0
#endif
#if TM32_VEC
typedef u16 v16h __attribute__((vector_size(32)));
typedef int16_t v16s __attribute__((vector_size(32)));
typedef u8 v16b __attribute__((vector_size(16)));
typedef u32 v16w __attribute__((vector_size(64)));
/* (loads by memcpy, unaligned; no function passes a vector: that would change the ABI) */
#define LD16(V, P) memcpy(&(V), (P), sizeof(V))
INLINE void tm32_span(void *outv, i64 base, const u16 *Ar, const u8 *Br, const u8 *Rr,
                      const u8 *csq, u64 rsg, const int16_t *C16, int16_t r2, const u16 *pred16,
                      int32_t p0, int inl, const int mode2, const int sgn) {
    const u16 P0 = (u16)((((u32)p0 - CENTRE) << 7) - 8);
    for (int h = 0; h < SPAN; h += 16) {
        v16h T, Pv = P0 + (v16h){0}, r16;
        v16b nib, cs8;
        LD16(T, Ar + h);
        LD16(nib, Br + h);
        LD16(r16, Rr + 2 * h);
        if (mode2 && inl) { /* predict_span16's, from the saturated column means */
            v16s c;
            memcpy(&c, C16 + h, sizeof c);
            v16s y = (v16s)(c + r2) >> FRAC;
            y &= ~(y < 0); /* (comparisons give 0 / -1 in each lane) */
            const v16s big = y > 255;
            y = (y & ~big) | (255 & big);
            Pv = ((v16h)y << 7) - (u16)(CENTRE * 128 + 8);
        } else if (mode2) {
            LD16(Pv, pred16 + h);
        }
        const v16h x = T + Pv + __builtin_convertvector(nib, v16h);
        v16h sb = T;
        if (sgn) {
            LD16(cs8, csq + h);
            sb ^= (__builtin_convertvector(cs8, v16h) ^ (u16)(rsg & 1)) << 15;
        }
        const v16h v16 = (x & 0x7FFF) | (sb & 0x8000);
        const v16w w =
            __builtin_convertvector(v16, v16w) << 16 | __builtin_convertvector(r16, v16w);
        memcpy((u32 *)outv + base + h, &w, sizeof w);
    }
}
#endif

/* One row of values from the decoded fields. Every argument after `raw` is a compile-time
 * constant at each call site, so each (version, dtype, mode) gets its own loop without branches
 * on the layout or the side information's flags. Version 2: A holds the exponent symbols, B the
 * sign / top-K-bit symbols; version 3 (V3): A holds the joint symbols, B each coded value's
 * nibble (NIB). With the canonical checks (CK), the loop also gathers the row's sums
 * (canon_row) from the values still in registers (rs->done); without them the loop has no check
 * code at all. A row with zeros (ZR) is rebuilt by the same branch-free loop, a run of ZCHUNK
 * values at a time: first each value's B and raw entries (expand_row), then every value as if
 * coded, a zero's replaced by its +0 / -0. */
#define ZCHUNK 2048 /* values per run of a row with zeros: its entries stay in L1 */

INLINE void fused_row(void *outv, i64 base, i64 cols, i64 rfix, u64 rsg, Scratch *s,
                      const u16 *A, size_t *pa, const u8 *B, size_t *pb, const u8 *raw,
                      RowSums *rsm, int room, const int W, const int RB, const int M, const int K,
                      const int E, const int V3, const int NIB, const int mode2, const int sgn,
                      const int zcols, const int CK, const int ZR) {
    const u64 em = ((u64)1 << E) - 1;
    const size_t a = *pa;
    size_t b = *pb;
    const i64 n = zcols ? s->ncl : cols; /* with zero columns, the live ones (see below) */
    const int32_t *C32 = zcols ? s->C32c : s->C32, *lc = s->lc;
    const int16_t *C16 = zcols ? s->C16c : s->C16;
    /* bfloat16, mode 2: the predictions in the value loop (INL), where R allows */
    const int inl = TMAP(W, V3, M, K, E, NIB, RB) && mode2 && rfix >= -R16_LIMIT &&
                    rfix <= R16_LIMIT;
    const int16_t r2 = (int16_t)(inl ? rfix + 2 : 0);
    const u8 *csq = zcols ? s->csc : s->cs;
    const int32_t rf = (int32_t)rfix + 2 + (int32_t)BIAS32, p0 = (int32_t)clamp_pred(rfix, em);
    const u16 *Ar = A + a;
    i64 jz = 0; /* with zero columns: the columns stored so far */
    const int32_t Ri = (int32_t)rfix; /* |R| <= SIDE_LIMIT */
    /* with zero columns, the column sums are of the live columns, in their order */
    int32_t *sum32 = s->sum32, *cnt32 = s->cnt32, *nz32 = s->nz32, *pred = s->pred;
    u32 *rowv = s->rowv, *lox = s->lox, *bx = s->bx;
    u64 rsum = 0, rcnt = 0, any = 0;
    if ((W <= 16 || TMAP(W, V3, M, K, E, NIB, RB)) && !CK && !ZR && !zcols && n < SPAN && room &&
        (!RB || s->nbtot - b >= SPAN)) {
        /* A row shorter than a vector (a 5 x 5 depthwise kernel's 25 values) is rebuilt as
         * SPAN values: the ones past it are the next rows' places (room: the segment has
         * them), which those rows overwrite, from the next rows' fields or the buffers'
         * padding. In the scalar loop such rows had cost bfloat16 PP-OCRv4 detection a tenth
         * of its decode for 6 % of its values. Other 32-bit values keep the plain loop, which
         * measured faster (benchmarks/fast_kernel.py); float32's mapped symbols (TMAP) take
         * this one. */
        const i64 len = span_len();
        u32 none = 0;
#if TM32_VEC
        if (W == 32) { /* float32 (TMAP): gcc leaves fused_span's loop scalar here */
            if (mode2 && !inl) predict_span16((u16 *)pred, C32, 0, 0, len, rf, em);
            tm32_span(outv, base, Ar, B + b, raw + b * (size_t)RB, csq, rsg, C16, r2,
                      (const u16 *)pred, p0, inl, mode2, sgn);
        } else
#endif
        if (inl) {
            fused_span(outv, base, 0, 0, len, pred, p0, Ar, csq, rsg, bx, B + b, lox,
                       raw + b * (size_t)RB, rowv, sum32, cnt32, nz32, Ri, &none, &none, &none,
                       W, RB, M, K, E, V3, NIB, mode2, sgn, zcols, CK, ZR, C16, r2, 1);
        } else {
            if (mode2 && TMAP(W, V3, M, K, E, NIB, RB))
                predict_span16((u16 *)pred, C32, 0, 0, len, rf, em);
            else if (mode2)
                predict_span(pred, C32, 0, 0, len, rf, em);
            fused_span(outv, base, 0, 0, len, pred, p0, Ar, csq, rsg, bx, B + b, lox,
                       raw + b * (size_t)RB, rowv, sum32, cnt32, nz32, Ri, &none, &none, &none,
                       W, RB, M, K, E, V3, NIB, mode2, sgn, zcols, CK, ZR, C16, r2, 0);
        }
        *pa = a + (size_t)n, *pb = b + (size_t)n;
        return;
    }
    const i64 CH = ZR ? ZCHUNK : 65536; /* 32-bit row sums vectorise better */
    for (i64 q0 = 0; q0 < n; q0 += CH) {
        const i64 q1 = n - q0 > CH ? q0 + CH : n;
        u32 ps = 0, pc = 0, pa32 = 0;
        /* without zeros, the run's entries are at b + q - q0; with them, expanded to lox / bx */
        const size_t bq = ZR ? 0 : b - (size_t)q0;
        const u8 *Br = B + bq, *Rr = raw + bq * (size_t)RB;
        if (ZR)
            b += (size_t)expand_row(lox, bx, Ar + q0, q1 - q0, B + b, raw + b * (size_t)RB,
                                    (i64)(s->nbtot - b), RB, V3 && NIB, !V3);
        else
            b += (size_t)(q1 - q0);
        /* Without the canonical sums every value is a function of its own inputs, so a run
         * that does not fill whole vectors ends by computing its last SPAN values again
         * instead of in gcc's scalar epilogue (PP-OCRv4's rows average 153 values: the
         * epilogue had taken a sixth of the rebuild). */
        const i64 whole = !CK && q1 - q0 >= SPAN ? q0 + (q1 - q0) / SPAN * SPAN : q1;
        if (mode2 && !inl) { /* the row's predictions first: in the loop below, gcc would not
                              * vectorise it (in 32 bits) */
            if (TMAP(W, V3, M, K, E, NIB, RB)) {
                predict_span16((u16 *)pred, C32, q0, q0, whole, rf, em);
                if (whole < q1) predict_span16((u16 *)pred, C32, q0, q1 - span_len(), q1, rf, em);
            } else {
                predict_span(pred, C32, q0, q0, whole, rf, em);
                if (whole < q1) predict_span(pred, C32, q0, q1 - span_len(), q1, rf, em);
            }
        }
#define FUSED_SPAN(LO, HI, INL)                                                               \
    fused_span(outv, base, q0, LO, HI, pred, p0, Ar, csq, rsg, bx, Br, lox, Rr, rowv, sum32,  \
               cnt32, nz32, Ri, &ps, &pc, &pa32, W, RB, M, K, E, V3, NIB, mode2, sgn, zcols, CK, \
               ZR, C16, r2, INL)
        if (inl) {
            FUSED_SPAN(q0, whole, 1);
            if (whole < q1) FUSED_SPAN(q1 - span_len(), q1, 1);
        } else {
            FUSED_SPAN(q0, whole, 0);
            if (whole < q1) FUSED_SPAN(q1 - span_len(), q1, 0);
        }
#undef FUSED_SPAN
        if (zcols) { /* the run's values and the zero columns before them to their places */
            spread_row(outv, base, jz, lc[q1 - 1] + 1, rowv, s->livem, W);
            jz = lc[q1 - 1] + 1;
        }
        rsum += ps, rcnt += pc, any |= pa32;
    }
    if (zcols) /* the zero columns after the last live one */
        for (i64 j = jz; j < cols; j++) store_v(outv, W, base + j, 0);
    if (CK) rsm->rsum = rsum, rsm->rcnt = rcnt, rsm->any = any, rsm->done = 1;
    *pa = a + (size_t)n, *pb = b;
}

/* Whether A[0..n) holds a zero symbol (a row that rebuild_row must look at first, where the
 * block's zeros are not listed): out of line, compiled once per instruction set, so that gcc
 * vectorises it whatever the code around the call (inlined, it was left scalar in the AVX2
 * copy of decode_float) */
CLONES __attribute__((noinline)) static unsigned row_zeros(const u16 *A, i64 n) {
    unsigned zeros = 0;
    for (i64 q = 0; q < n; q++) zeros |= A[q] < 2;
    return zeros;
}

/* One row: by fused_row where the values fit 32 bits (a row without zeros, the common case,
 * without the expansion), else (64-bit values) value by value. */
INLINE void rebuild_row(void *outv, i64 base, i64 cols, i64 rfix, u64 rsg, Scratch *s,
                        const u16 *A, size_t *pa, const u8 *B, size_t *pb, const u8 *raw,
                        RowSums *rsm, int room, const int W, const int RB, const int M,
                        const int K, const int E, const int V3, const int NIB, const int mode2,
                        const int sgn, const int zcols, const int CK) {
    const u64 em = ((u64)1 << E) - 1, kmask = ((u64)1 << K) - 1;
    const int LO = 8 * RB; /* the nibble's position */
    const i64 *C = s->C;
    const u8 *cs = s->cs, *zc = s->zc;
    size_t a = *pa, b = *pb;
    i64 p = clamp_pred(rfix, em);
    if (W <= 32) {
        const i64 n = zcols ? s->ncl : cols;
        unsigned zeros = 0;
        if (!s->dense && s->zp) { /* the next listed zero: in this row or later */
            const u32 *zp = s->zp, *ze = s->zend;
            while (zp < ze && *zp < a) zp++;
            s->zp = zp;
            zeros = zp < ze && *zp < a + (size_t)n;
        } else if (!s->dense) {
            zeros = row_zeros(A + a, n);
        }
        if (zeros)
            fused_row(outv, base, cols, rfix, rsg, s, A, pa, B, pb, raw, rsm, room, W, RB, M, K,
                      E, V3, NIB, mode2, sgn, zcols, CK, 1);
        else
            fused_row(outv, base, cols, rfix, rsg, s, A, pa, B, pb, raw, rsm, room, W, RB, M, K,
                      E, V3, NIB, mode2, sgn, zcols, CK, 0);
        return;
    }
    for (i64 j = 0; j < cols; j++) {
        if (zcols && zc[j]) {
            store_v(outv, W, base + j, 0);
            continue;
        }
        u64 sym = A[a++];
        if (sym < 2) {
            store_v(outv, W, base + j, sym << (W - 1));
            continue;
        }
        if (mode2) p = clamp_pred(rfix + C[j], em);
        u64 bs = V3 ? sym - 2 : B[b];
        u64 ex = V3 ? ((sym - 2) >> (K + 1)) + (u64)p - CENTRE : sym + (u64)p - (CENTRE + 2);
        u64 sp = sgn ? rsg ^ cs[j] : 0;
        u64 lo = load_raw(raw + b * (size_t)RB, RB);
        if (V3 && NIB) lo |= (u64)B[b] << LO;
        u64 v = ((((bs >> K) ^ sp) & 1) << (W - 1)) | ((ex & em) << M) |
                ((bs & kmask) << (M - K)) | lo;
        b++;
        store_v(outv, W, base + j, v);
    }
    *pa = a, *pb = b;
}

/* -- the side information's canonical check ------------------------------------------------
 * The decoder refuses side information other than what plan_segment writes for the values it
 * rebuilt (row / column means to the last fraction bit, the exact zero rows / columns, no sign
 * bit of a row or column without a nonzero value, no flag the encoder never sets): those bits
 * need not reach the values, so without this check a changed block could decode. Gathered row
 * by row while each rebuilt row is still in L1 (canon_row), judged per segment (canon_end). */
typedef struct {
    i64 tsum, tcnt, prevR;
    int any_zr, bad;
} Canon;

/* one row's judgement from its sums */
INLINE void canon_judge(i64 i, const Scratch *s, int flags, Canon *c, i64 rsum, i64 rcnt,
                        u64 any) {
    const int mode = flags & F_EXP_MODE, sgn = (flags & F_SIGN) != 0;
    const int zrow = any == 0;
    c->any_zr |= zrow;
    if (((flags & F_ZROWS) && s->zr[i] != zrow) || (sgn && !rcnt && s->rs[i])) c->bad = 1;
    const i64 Ri = rcnt ? floor_div(2 * (rsum << FRAC) + rcnt, 2 * rcnt) : c->prevR;
    if (mode >= 1 && s->R[i] != Ri) c->bad = 1;
    c->prevR = Ri;
    c->tsum += rsum, c->tcnt += rcnt;
}

INLINE void canon_row(const void *outv, i64 base, i64 i, i64 cols, Scratch *s, int flags,
                      Canon *c, const int W, const int M, const int E) {
    const u64 sb = (u64)1 << (W - 1), em = ((u64)1 << E) - 1;
    const int mode = flags & F_EXP_MODE, sgn = (flags & F_SIGN) != 0;
    i64 rsum = 0, rcnt = 0;
    u64 any = 0;
    if (!((flags & F_ZROWS) && s->zr[i])) { /* a zero row is all +0: written so */
        if (mode == 2) { /* one pass: the row's sums and the columns' (against R[i], checked
                          * below to be the row's mean) */
            const i64 Ri = s->R[i];
            for (i64 j = 0; j < cols; j++) {
                u64 v = load_v(outv, W, base + j);
                i64 nz = !is_zero(v, sb), ex = (i64)((v >> M) & em);
                any |= v;
                rsum += nz ? ex : 0;
                rcnt += nz;
                s->neg_c[j] |= (i64)(v != 0);
                s->cnt_c[j] += nz;
                s->sum_c[j] += nz ? (ex << FRAC) - Ri : 0;
            }
        } else {
            for (i64 j0 = 0; j0 < cols; j0 += 65536) { /* 32-bit sums vectorise better */
                const i64 j1 = cols - j0 > 65536 ? j0 + 65536 : cols;
                u32 ps = 0, pc = 0;
                for (i64 j = j0; j < j1; j++) {
                    u64 v = load_v(outv, W, base + j);
                    u32 nz = !is_zero(v, sb);
                    any |= v;
                    ps += nz ? (u32)((v >> M) & em) : 0;
                    pc += nz;
                }
                rsum += ps, rcnt += pc;
            }
            if (sgn && rcnt)
                for (i64 j = 0; j < cols; j++) s->cnt_c[j] += !is_zero(load_v(outv, W, base + j), sb);
        }
    }
    canon_judge(i, s, flags, c, rsum, rcnt, any);
}

/* the 32-bit column sums of the fused rows into the segment's */
static void canon_flush(i64 cols, Scratch *s, int flags) {
    const int mode = flags & F_EXP_MODE;
    if (!s->nfused) return;
    if (mode == 2) { /* with zero columns, the sums are of the live ones (s->lc) */
        const int zc = (flags & F_ZCOLS) != 0;
        const i64 n = zc ? s->ncl : cols;
        for (i64 q = 0; q < n; q++) {
            const i64 j = zc ? s->lc[q] : q;
            s->sum_c[j] += s->sum32[q], s->cnt_c[j] += s->cnt32[q], s->neg_c[j] |= s->nz32[q];
            s->sum32[q] = s->cnt32[q] = s->nz32[q] = 0;
        }
    } else if (mode != 2 && (flags & F_SIGN)) {
        for (i64 j = 0; j < cols; j++) s->cnt_c[j] += s->cnt32[j], s->cnt32[j] = 0;
    }
    s->nfused = 0;
}

static void canon_start(i64 cols, Scratch *s, int flags, Canon *c) {
    memset(c, 0, sizeof *c);
    if ((flags & F_EXP_MODE) == 2 || (flags & F_SIGN))
        for (i64 j = 0; j < cols; j++) {
            s->cnt_c[j] = s->sum_c[j] = s->neg_c[j] = 0;
            s->sum32[j] = s->cnt32[j] = s->nz32[j] = 0;
        }
    s->nfused = 0;
}

/* 1 when the segment's side information is what the encoder writes; adds its nonzero values
 * to *nonzero (every coded symbol must give one: none decodes to a zero). */
static int canon_end(i64 cols, const Scratch *s, int flags, i64 R0, const Canon *c,
                     u64 *nonzero) {
    const int mode = flags & F_EXP_MODE, sgn = (flags & F_SIGN) != 0;
    const int zrows = (flags & F_ZROWS) != 0, zcols = (flags & F_ZCOLS) != 0;
    if (c->bad || (mode >= 1 && c->any_zr != zrows) || (sgn && !c->tcnt)) return 0;
    if (mode == 0 &&
        R0 != (c->tcnt ? floor_div(2 * (c->tsum << FRAC) + c->tcnt, 2 * c->tcnt) : 0))
        return 0;
    if (mode == 2 || sgn) {
        i64 prevC = 0;
        int any_zc = 0;
        for (i64 j = 0; j < cols; j++) {
            const i64 n = s->cnt_c[j];
            if (sgn && !n && s->cs[j]) return 0;
            if (mode != 2) continue;
            const int zcol = s->neg_c[j] == 0;
            any_zc |= zcol;
            if (zcols && s->zc[j] != zcol) return 0;
            const i64 Cj = n ? floor_div(2 * s->sum_c[j] + n, 2 * n) : prevC;
            if (s->C[j] != Cj) return 0;
            prevC = Cj;
        }
        if (mode == 2 && any_zc != zcols) return 0;
    }
    *nonzero += (u64)c->tcnt;
    return 1;
}

/* A segment's rows lie one after another in the output, so their bytes are hashed in runs of
 * at least HASH_RUN bytes rather than row by row: the checksum is of one message either way,
 * but each update of a short row paid for a partial stripe copied and the tail kept (PP-OCRv4
 * averages 153 values per row). A run is still in L1 when it is hashed. */
#define HASH_RUN 4096
INLINE void hash_run(BlockSum *h, const void *outv, size_t vb, i64 *hashed, i64 upto,
                     size_t least) {
    if (h && (size_t)(upto - *hashed) * vb >= least && upto > *hashed) {
        sum_bytes(h, (const u8 *)outv + (size_t)*hashed * vb, (size_t)(upto - *hashed) * vb);
        *hashed = upto;
    }
}

/* Reconstruct one segment; the caller checked that its coded values fit in A, B and raw.
 * CK (a compile-time constant, like the format's arguments): gather the canonical checks' sums
 * into *cn; without it nothing of them is compiled in. */
INLINE void rebuild_segment(void *outv, i64 off, i64 rows, i64 cols, Scratch *s, int flags,
                            i64 R0, const u16 *A, size_t *na, const u8 *B, size_t *nb,
                            const u8 *raw, BlockSum *h, Canon *cn, const int W, const int RB,
                            const int M, const int K, const int E, const int V3, const int NIB,
                            const int CK) {
    const int mode = flags & F_EXP_MODE, zrows = flags & F_ZROWS;
    const int variant = (mode == 2) * 4 + ((flags & F_SIGN) ? 2 : 0) + ((flags & F_ZCOLS) ? 1 : 0);
    if (flags & F_ZCOLS) { /* the live columns first, then the zero ones (see fused_row) */
        Scratch *w = (Scratch *)s;
        i64 q = 0, z = cols;
        memset(w->livem, 0, (size_t)cols / 8 + 4);
        for (i64 j = 0; j < cols; j++) {
            w->livem[j >> 3] |= (u8)(!s->zc[j] << (j & 7));
            if (s->zc[j]) {
                w->lc[--z] = (int32_t)j;
                continue;
            }
            w->lc[q] = (int32_t)j, w->C32c[q] = s->C32[j], w->csc[q] = s->cs[j];
            w->C16c[q] = s->C16[j];
            q++;
        }
        w->ncl = q;
    }
    RowSums rsm = {0};
    const size_t vb = (size_t)(W / 8);
    i64 hashed = off; /* the segment's values hashed so far */
    for (i64 i = 0; i < rows; i++) {
        i64 base = off + i * cols;
        if (zrows && s->zr[i]) {
            for (i64 j = 0; j < cols; j++) store_v(outv, W, base + j, 0);
            hash_run(h, outv, vb, &hashed, base + cols, HASH_RUN);
            if (CK) canon_row(outv, base, i, cols, s, flags, cn, W, M, E);
            continue;
        }
        i64 rfix = mode == 0 ? R0 : s->R[i];
        u64 rsg = (flags & F_SIGN) ? s->rs[i] : 0;
        const int room = (rows - i) * cols >= SPAN; /* fused_row's short rows */
#define ROW(M2, SG, ZC)                                                                    \
    rebuild_row(outv, base, cols, rfix, rsg, s, A, na, B, nb, raw, &rsm, room, W, RB, M, K, E, V3, \
                NIB, M2, SG, ZC, CK);                                                      \
    break;
        switch (variant) {
            case 0: ROW(0, 0, 0)
            case 1: ROW(0, 0, 1)
            case 2: ROW(0, 1, 0)
            case 3: ROW(0, 1, 1)
            case 4: ROW(1, 0, 0)
            case 5: ROW(1, 0, 1)
            case 6: ROW(1, 1, 0)
            default: ROW(1, 1, 1)
        }
#undef ROW
        /* the run's bytes are in L1 now, and the hash's dependent multiplies overlap with the
         * next row's reconstruction */
        hash_run(h, outv, vb, &hashed, base + cols, HASH_RUN);
        if (!CK) continue;
        if (rsm.done) {
            canon_judge(i, s, flags, cn, (i64)rsm.rsum, (i64)rsm.rcnt, rsm.any);
            rsm.done = 0;
            if (++s->nfused == FLUSH_ROWS) canon_flush(cols, s, flags);
        } else {
            canon_row(outv, base, i, cols, s, flags, cn, W, M, E);
        }
    }
    hash_run(h, outv, vb, &hashed, off + rows * cols, 0);
    if (CK) canon_flush(cols, s, flags);
}

/* The zero symbols (A < 2) of A[0..na): how many; their positions go to zl while they fit
 * (*listed: 1 when all of them did), so that rebuild_row finds a row's zeros without scanning
 * it. AVX-512BW: 64 symbols per mask. */
#define ZLIST_SHARE 16 /* at most na / ZLIST_SHARE + 64 positions listed */
#ifdef KC_HAVE_AVX2
__attribute__((target("avx2,avx512f,avx512bw,avx512vl,bmi,popcnt"))) static size_t zeros_v4(
    const u16 *A, size_t na, u32 *zl, size_t cap, int *listed) {
    const __m512i two = _mm512_set1_epi16(2);
    size_t nz = 0, q = 0;
    int over = 0;
    for (; q + 64 <= na; q += 64) {
        u64 m = (u64)_mm512_cmplt_epu16_mask(_mm512_loadu_si512((const void *)(A + q)), two) |
                (u64)_mm512_cmplt_epu16_mask(_mm512_loadu_si512((const void *)(A + q + 32)), two)
                    << 32;
        if (!m) continue;
        const size_t c = (size_t)__builtin_popcountll(m);
        if (!over && nz + c <= cap) {
            for (size_t e = nz + c; nz < e; m &= m - 1) zl[nz++] = (u32)(q + (size_t)__builtin_ctzll(m));
        } else {
            over = 1;
            nz += c;
        }
    }
    for (; q < na; q++)
        if (A[q] < 2) {
            if (!over && nz < cap) zl[nz] = (u32)q;
            else over = 1;
            nz++;
        }
    *listed = !over;
    return nz;
}
#endif

/* NULL on success, else what is wrong with the block (`v3`: a version-3 block, else version 2).
 * `canonical`: also refuse side information other than what the encoder computes from the
 * rebuilt values, and a coded value that decodes to a zero (the checks that read every value;
 * see py_decode). Compiled twice (AVX2 and baseline, chosen when the module loads) so the
 * reconstruction loops use wider vectors where the CPU has them. */
INLINE const char *decode_float_body(const u8 *blk, size_t len, void *outv, const i64 *segs,
                                     i64 nsegs, const Fmt *f, int v3, int sb3, int ns3,
                                     int canonical, BlockSum *h) {
    i64 n = total_values(segs, nsegs);
    Rd r = {blk, len, 1, 0};
    u64 na = get_cvarint(&r), nb = get_cvarint(&r), side_len = get_cvarint(&r);
    if (r.bad || na > (u64)n || nb > na || side_len > r.len - r.pos) return "bad block header";
    Rd side = {r.p + r.pos, (size_t)side_len, 0, 0};
    r.pos += (size_t)side_len;
    const char *err = NULL;
    /* (SPAN entries past the fields: what fused_row's short rows may read) */
    u16 *A = work(W_A, ((size_t)na + SPAN) * 2 + 2);
    u8 *B = work(W_B, (size_t)nb + SPAN + 2);
    DecTab *t = work(W_TMP, sizeof(DecTab));
    Scratch s = {0};
    const size_t mc = (size_t)max_of(segs, nsegs, 2) + 1;
    const size_t np = mc < SPAN ? SPAN : mc < 65536 ? mc : 65536;
    /* (rowv: np values and 8 that spread_row may read past them) */
    int32_t *c32 = work(W_COLS, (3 * mc + 2 * np + 8 + 2 * ZCHUNK) * 4); /* kept: fresh pages
                                                                            * cost more */
    if (!A || !B || !t || !c32 ||
        !scratch_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2), 1)) {
        err = "out of memory";
        goto done;
    }
    s.sum32 = c32, s.cnt32 = c32 + mc, s.nz32 = c32 + 2 * mc, s.pred = c32 + 3 * mc;
    s.rowv = (u32 *)(c32 + 3 * mc + np);
    s.lox = (u32 *)(c32 + 3 * mc + 2 * np + 8), s.bx = s.lox + ZCHUNK, s.nbtot = nb;
    if (!read_stream(&r, v3 ? f->nJ : f->nA, (size_t)na, 1, A, t, v3 ? sb3 : SCALE_BITS,
                     v3 ? ns3 : NSTATES,
                     TMAP(f->width, v3, f->mbits, f->mbits % 4, f->ebits, f->nib, f->rb3))) {
        err = v3 ? "damaged symbol stream" : "damaged exponent stream";
        goto done;
    }
    /* symbols 0 and 1 are the zeros: where A's table lists neither, none decoded (every
     * symbol is a table entry), so every value is coded and A need not be counted */
    const int zeros_listed = t->lowest < 2;
    if (!v3 && !read_stream(&r, f->nB, (size_t)nb, 0, B, t, SCALE_BITS, NSTATES, 0)) {
        err = "damaged sign/mantissa stream";
        goto done;
    }
    u64 nonzero = zeros_listed ? 0 : na;
    int counted = !zeros_listed;
#ifdef KC_HAVE_AVX2
    if (zeros_listed && kc_v4 && kc_use_simd && kc_use_avx512 && na < UINT32_MAX) {
        const size_t cap = (size_t)na / ZLIST_SHARE + 64;
        u32 *zl = work(W_ZPOS, cap * 4);
        int listed = 0;
        if (zl) {
            const size_t nz = zeros_v4(A, (size_t)na, zl, cap, &listed);
            nonzero = na - nz, counted = 1;
            if (listed) s.zp = zl, s.zend = zl + nz;
        }
    }
#endif
    for (size_t q0 = 0; !counted && q0 < (size_t)na; q0 += 65536) { /* 32-bit counts
                                                                         * vectorise better */
        size_t q1 = q0 + 65536 < (size_t)na ? q0 + 65536 : (size_t)na;
        u32 part = 0;
        for (size_t q = q0; q < q1; q++) part += A[q] >= 2;
        nonzero += part;
    }
    s.dense = nonzero == na;
    u64 nibbytes = v3 && f->nib ? (nb + 1) / 2 : 0;
    if (nonzero != nb ||
        (u64)(r.len - r.pos) != nibbytes + nb * (u64)(v3 ? f->rb3 : f->rawbytes)) {
        err = "field counts disagree with the block's length";
        goto done;
    }
    if (nibbytes) { /* one nibble per coded value, low nibble first */
        const u8 *q = r.p + r.pos;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        typedef u16 __attribute__((may_alias, aligned(1))) u16a;
        u16a *B16 = (u16a *)B; /* both nibbles of a byte by one 16-bit store */
        for (size_t i = 0; i < (size_t)nibbytes; i++)
            B16[i] = (u16)(((u32)q[i] << 4 | q[i]) & 0x0F0F);
#else
        for (size_t i = 0; i < (size_t)nibbytes; i++) {
            B[2 * i] = q[i] & 15;
            B[2 * i + 1] = q[i] >> 4;
        }
#endif
        r.pos += (size_t)nibbytes;
        if ((nb & 1) && q[nibbytes - 1] >> 4) {
            err = "nonzero padding after the last nibble";
            goto done;
        }
    }
    memset(A + na, 0, SPAN * 2), memset(B + nb, 0, SPAN); /* the padding fused_row may read */
    const u8 *raw = r.p + r.pos;
    size_t ai = 0, bi = 0;
    u64 nzout = 0; /* nonzero values rebuilt: every coded (not zero) symbol gives one */
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        int flags = get_u8(&side);
        i64 R0 = 0;
        if (side.bad || !read_side(&side, flags, rows, cols, &s, &R0, canonical)) {
            err = "bad side information";
            goto done;
        }
        /* how many values this segment codes: all but those in zero rows / columns */
        i64 zr = 0, zc = 0;
        if (flags & F_ZROWS)
            for (i64 i = 0; i < rows; i++) zr += s.zr[i];
        if (flags & F_ZCOLS)
            for (i64 j = 0; j < cols; j++) zc += s.zc[j];
        u64 coded = (u64)(rows - zr) * (u64)(cols - zc);
        if (coded > na - ai) {
            err = "side information names more values than the block codes";
            goto done;
        }
        Canon cn = {0};
        if (canonical) canon_start(cols, &s, flags, &cn);
        /* B and raw are bounded by the nonzero count checked above: every B read follows an
         * A symbol that is not a zero, and A holds exactly nb of those. */
        switch (v3 * 4096 + f->width * 64 + f->mbits) { /* one loop per version and format */
#define REBUILD(V, WW, RB, MM, KK, EE, NIB)                                                     \
    case V * 4096 + WW * 64 + MM:                                                               \
        if (canonical)                                                                          \
            SEGMENT(V, WW, RB, MM, KK, EE, NIB, 1);                                             \
        else                                                                                    \
            SEGMENT(V, WW, RB, MM, KK, EE, NIB, 0);                                             \
        break;
#define SEGMENT(V, WW, RB, MM, KK, EE, NIB, CK)                                                 \
    rebuild_segment(outv, off, rows, cols, &s, flags, R0, A, &ai, B, &bi, raw, h, &cn, WW, RB,  \
                    MM, KK, EE, V, NIB, CK)
            REBUILD(0, 32, 2, 23, 7, 8, 0)
            REBUILD(0, 16, 0, 7, 7, 8, 0)
            REBUILD(0, 16, 1, 10, 2, 5, 0)
            REBUILD(0, 64, 6, 52, 4, 11, 0)
            REBUILD(0, 8, 0, 3, 3, 4, 0)
            REBUILD(0, 8, 0, 2, 2, 5, 0)
            REBUILD(1, 32, 2, 23, 3, 8, 1)
            REBUILD(1, 16, 0, 7, 3, 8, 1)
            REBUILD(1, 16, 1, 10, 2, 5, 0)
            REBUILD(1, 64, 6, 52, 0, 11, 1)
            REBUILD(1, 8, 0, 3, 3, 4, 0)
            REBUILD(1, 8, 0, 2, 2, 5, 0)
#undef REBUILD
#undef SEGMENT
            default:
                err = "unsupported float format";
                goto done;
        }
        if (canonical && !canon_end(cols, &s, flags, R0, &cn, &nzout)) {
            err = "side information is not what the encoder writes for these values";
            goto done;
        }
    }
    if (ai != na || bi != nb || side.pos != side.len) err = "block holds more than its values";
    else if (canonical && nzout != nb) err = "a coded value decodes to a zero";
done:
    scratch_free(&s);
    return err;
}

#define DECODE_FLOAT(NAME, ATTR)                                                                 \
    ATTR static const char *NAME(const u8 *blk, size_t len, void *outv, const i64 *segs,         \
                                 i64 nsegs, const Fmt *f, int v3, int sb3, int ns3,              \
                                 int canonical, BlockSum *h) {                                   \
        return decode_float_body(blk, len, outv, segs, nsegs, f, v3, sb3, ns3, canonical, h);   \
    }
DECODE_FLOAT(decode_float, CLONES)
#ifdef ZEN_TARGET
DECODE_FLOAT(decode_float_zen, ZEN_TARGET) /* kc_zen */
#define ZEN_DECODE (kc_zen && kc_v4 && kc_use_simd && kc_use_avx512)
#else
#define decode_float_zen decode_float
#define ZEN_DECODE 0
#endif
#undef DECODE_FLOAT

/* -- integers: byte planes, order-0 ---------------------------------------------------------- */
static int encode_int(const void *vals, const i64 *segs, i64 nsegs, int width, Buf *out) {
    i64 n = total_values(segs, nsegs);
    int nbytes = width / 8;
    u8 *plane = work(W_PLANE, (size_t)n + 1);
    u64 *cnt = malloc(256 * 8);
    int ok = plane && cnt;
    if (ok) put_u8(out, KIND_INT | KIND_XXH3);
    for (int q = 0; ok && q < nbytes; q++) {
        memset(cnt, 0, 256 * 8);
        size_t m = 0;
        for (i64 g = 0; g < nsegs; g++) {
            i64 off = segs[3 * g], cnt_g = segs[3 * g + 1] * segs[3 * g + 2];
            for (i64 k = 0; k < cnt_g; k++) {
                u8 byte = (u8)(load_v(vals, width, off + k) >> (8 * q));
                plane[m++] = byte;
                cnt[byte]++;
            }
        }
        ok = code_stream(out, plane, 0, m, cnt, 256, SCALE_BITS);
    }
    free(cnt);
    return ok && !out->fail;
}

static const char *decode_int(const u8 *blk, size_t len, void *outv, const i64 *segs, i64 nsegs,
                              int width) {
    i64 n = total_values(segs, nsegs);
    Rd r = {blk, len, 1, 0};
    u8 *plane = work(W_PLANE, (size_t)n + 1);
    DecTab *t = work(W_TMP, sizeof(DecTab));
    const char *err = NULL;
    if (!plane || !t) err = "out of memory";
    for (int q = 0; !err && q < width / 8; q++) {
        if (!read_stream(&r, 256, (size_t)n, 0, plane, t, SCALE_BITS, NSTATES, 0)) {
            err = "damaged byte plane";
            break;
        }
        size_t m = 0;
        for (i64 g = 0; g < nsegs; g++) {
            i64 off = segs[3 * g], cnt_g = segs[3 * g + 1] * segs[3 * g + 2];
            for (i64 k = 0; k < cnt_g; k++) {
                u64 v = q ? load_v(outv, width, off + k) : 0;
                store_v(outv, width, off + k, v | ((u64)plane[m++] << (8 * q)));
            }
        }
    }
    if (!err && r.pos != r.len) err = "block holds more than its values";
    return err;
}

/* -- stored blocks ----------------------------------------------------------------------------- */
/* The values as little-endian bytes, on every host (a big-endian one wrote its own byte order,
 * which no other machine decoded: the checksum is of little-endian bytes). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define STORED_SWAPS 1
#else
#define STORED_SWAPS 0
#endif

static void copy_swapped(u8 *dst, const u8 *src, size_t n, size_t w) {
    for (size_t i = 0; i < n; i += w)
        for (size_t b = 0; b < w; b++) dst[i + b] = src[i + w - 1 - b];
}

static void encode_stored(const void *vals, const i64 *segs, i64 nsegs, int width, Buf *out) {
    put_u8(out, KIND_STORED | KIND_XXH3);
    const size_t w = (size_t)width / 8;
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], cnt = segs[3 * g + 1] * segs[3 * g + 2];
        const u8 *src = (const u8 *)vals + off * (i64)w;
        if (!STORED_SWAPS || w == 1) {
            put_bytes(out, src, (size_t)cnt * w);
            continue;
        }
        u8 le[4096];
        for (size_t done = 0, n = (size_t)cnt * w; done < n; done += sizeof le) {
            size_t m = n - done < sizeof le ? n - done : sizeof le;
            copy_swapped(le, src + done, m, w);
            put_bytes(out, le, m);
        }
    }
}

static const char *decode_stored(const u8 *blk, size_t len, void *outv, const i64 *segs,
                                 i64 nsegs, int width) {
    if ((u64)(len - 1) != (u64)total_values(segs, nsegs) * (u64)(width / 8))
        return "stored block has the wrong length";
    const size_t w = (size_t)width / 8;
    size_t pos = 1;
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], cnt = segs[3 * g + 1] * segs[3 * g + 2];
        u8 *dst = (u8 *)outv + off * (i64)w;
        if (STORED_SWAPS && w > 1)
            copy_swapped(dst, blk + pos, (size_t)cnt * w, w);
        else
            memcpy(dst, blk + pos, (size_t)cnt * w);
        pos += (size_t)cnt * w;
    }
    return NULL;
}

/* -- Python bindings ------------------------------------------------------------------------- */
static int check_call(Py_buffer *vals, Py_buffer *segs, int width, int ebits, int mbits) {
    if (!kc_check_width(width, "")) return 0;
    const int fw = width * 64 + mbits; /* the formats decode_float has loops for */
    if (ebits != 0 && (ebits < 1 || ebits > MAX_EBITS || mbits < 0 ||
                       ebits + mbits + 1 != width ||
                       (fw != 32 * 64 + 23 && fw != 16 * 64 + 7 && fw != 16 * 64 + 10 &&
                        fw != 64 * 64 + 52 && fw != 8 * 64 + 3 && fw != 8 * 64 + 2)))
        return kc_bad_layout(ebits, mbits);
    return kc_check_segs(vals, segs, width);
}

/* Code the values of segs as one block, or (split) as consecutive runs of them: outs[0..m), each
 * the smaller of coded and stored, then the checksum of its values; cuts[0..m] the runs' segment
 * bounds. Returns m, 0 when out of memory. */
static int encode_runs(const void *vals, const i64 *sg, i64 nsegs, int width, int ebits,
                       int mbits, int split, Buf *outs, i64 *cuts) {
    int m;
    if (ebits) {
        Fmt f = make_fmt(width, ebits, mbits);
        m = encode_float(vals, sg, nsegs, &f, split, outs, cuts);
    } else {
        buf_reserve(&outs[0], (size_t)total_values(sg, nsegs) * (size_t)(width / 8) + 4096);
        m = encode_int(vals, sg, nsegs, width, &outs[0]);
        cuts[0] = 0, cuts[1] = nsegs;
    }
    for (int r = 0; r < m; r++) {
        const i64 *s = sg + 3 * cuts[r], ns = cuts[r + 1] - cuts[r];
        Buf *out = &outs[r];
        u64 stored = 1 + (u64)total_values(s, ns) * (u64)(width / 8);
        if (out->len >= stored) {
            out->len = 0;
            encode_stored(vals, s, ns, width, out);
        }
        if (out->fail || !kc_seal(out, vals, s, ns, width, SUM_XXH3)) m = 0;
    }
    return m;
}

PyDoc_STRVAR(encode_doc,
             "encode(vals, segs, width, ebits, mbits) -> bytes\n\n"
             "One fast-level block of the values the (offset, rows, cols) int64 segments name; "
             "ebits = 0 codes integers by byte planes. The smaller of coded and stored, then the "
             "16-byte checksum of the values.");

static PyObject *py_encode(PyObject *self, PyObject *args) {
    Py_buffer vals, segs;
    int width, ebits, mbits;
    if (!PyArg_ParseTuple(args, "y*y*iii:encode", &vals, &segs, &width, &ebits, &mbits))
        return NULL;
    PyObject *res = NULL;
    if (check_call(&vals, &segs, width, ebits, mbits)) {
        Buf out = {0};
        i64 cuts[2];
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = encode_runs(vals.buf, segs.buf, segs.len / 24, width, ebits, mbits, 0, &out, cuts);
        Py_END_ALLOW_THREADS
        res = kc_block_bytes(&out, ok == 1);
    }
    PyBuffer_Release(&vals);
    PyBuffer_Release(&segs);
    return res;
}

PyDoc_STRVAR(encode_split_doc,
             "encode_split(vals, segs, width, ebits, mbits) -> list[tuple[bytes, int]]\n\n"
             "encode(), cut into consecutive runs of segments where separate frequency tables "
             "pay for themselves: each run's block and its number of segments (one run: what "
             "encode() writes).");

static PyObject *py_encode_split(PyObject *self, PyObject *args) {
    Py_buffer vals, segs;
    int width, ebits, mbits;
    if (!PyArg_ParseTuple(args, "y*y*iii:encode_split", &vals, &segs, &width, &ebits, &mbits))
        return NULL;
    PyObject *res = NULL;
    if (check_call(&vals, &segs, width, ebits, mbits)) {
        Buf outs[MAX_UNITS] = {{0}};
        i64 cuts[MAX_UNITS + 1];
        int m;
        Py_BEGIN_ALLOW_THREADS
        m = encode_runs(vals.buf, segs.buf, segs.len / 24, width, ebits, mbits, 1, outs, cuts);
        Py_END_ALLOW_THREADS
        res = m ? PyList_New(m) : PyErr_NoMemory();
        for (int r = 0; res && r < m; r++) {
            PyObject *item = Py_BuildValue("(y#L)", (const char *)outs[r].p,
                                           (Py_ssize_t)outs[r].len,
                                           (long long)(cuts[r + 1] - cuts[r]));
            if (!item) Py_CLEAR(res);
            else PyList_SET_ITEM(res, r, item);
        }
        for (int r = 0; r < MAX_UNITS; r++) free(outs[r].p);
    }
    PyBuffer_Release(&vals);
    PyBuffer_Release(&segs);
    return res;
}

PyDoc_STRVAR(decode_doc,
             "decode(block, out, segs, width, ebits, mbits, *, canonical=True) -> None\n\n"
             "Decode one fast-level block into `out` and check the values against its checksum; "
             "ValueError names what is wrong with a damaged block (CHECKSUM_MISMATCH: the "
             "values decoded are not the ones coded).\n\n"
             "canonical=True also refuses every block the encoder would not write, so that no "
             "changed byte decodes: side information other than what the encoder computes from "
             "the rebuilt values, a coded value decoding to a zero (checks that read every value "
             "again). Only for a block whose CRC32 nobody checked: with canonical=False a changed "
             "byte may still decode, but only to the very values coded (the checksum). Bounds, "
             "lengths, tables, counts and the cheap per-block checks (varints, padding bits, "
             "final rANS states) are checked either way.");

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"block", "out", "segs", "width", "ebits", "mbits", "canonical", NULL};
    Py_buffer blk, out, segs;
    int width, ebits, mbits, canonical = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*w*y*iii|$p:decode", kwlist, &blk, &out,
                                     &segs, &width, &ebits, &mbits, &canonical))
        return NULL;
    const char *err = NULL;
    int called = check_call(&out, &segs, width, ebits, mbits);
    if (called) {
        i64 nsegs = segs.len / 24;
        const i64 *sg = segs.buf;
        const u8 *b = blk.buf;
        size_t len = (size_t)blk.len;
        Py_BEGIN_ALLOW_THREADS
        if (len <= DIGEST) {
            err = "block is too short";
        } else {
            len -= DIGEST; /* the body, then its values' digest */
            const int states = (b[0] >> KIND_STATES_SHIFT) & 3;
            const int base_kind = b[0] & ((1 << KIND_STATES_SHIFT) - 1), v3 = base_kind == KIND_FLOAT3;
            const int down = b[0] >> KIND_SCALE_SHIFT, sum = b[0] & KIND_XXH3 ? SUM_XXH3 : SUM_MURMUR;
            /* a scale other than 15 (version 5) and more states (version 6) only in a block of
             * version 3's fields with XXH3-128 */
            const int kind = (down || states) && (!v3 || sum != SUM_XXH3 ||
                                                  states > MAX_STATES_CODE ||
                                                  down > SCALE_BITS3 - MIN_SCALE_BITS3) ? -1
                             : v3 ? KIND_FLOAT : base_kind;
            BlockSum hash, *fused = &hash; /* float blocks hash each row as it is built */
            sum_start(&hash, sum);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            fused = NULL;
#endif
            if (kind != KIND_STORED &&
                (u64)len >= 1 + (u64)total_values(sg, nsegs) * (u64)(width / 8))
                err = "coded block is not shorter than the values"; /* the encoder stores it */
            else if (kind == KIND_STORED)
                err = decode_stored(b, len, out.buf, sg, nsegs, width);
            else if (kind == KIND_FLOAT && ebits) {
                Fmt f = make_fmt(width, ebits, mbits);
                err = (ZEN_DECODE && long_rows(sg, nsegs) ? decode_float_zen : decode_float)(
                    b, len, out.buf, sg, nsegs, &f, v3, SCALE_BITS3 - down, NSTATES << states,
                    canonical, fused);
            } else if (kind == KIND_INT && !ebits)
                err = decode_int(b, len, out.buf, sg, nsegs, width);
            else
                err = "unknown block kind for this dtype";
            if (!err) { /* the values are still in cache: check them against the digest */
                u8 digest[DIGEST];
                if (fused && kind == KIND_FLOAT)
                    sum_final(fused, digest);
                else
                    block_digest(out.buf, sg, nsegs, width, sum, digest);
                if (memcmp(digest, b + len, DIGEST) != 0) err = CHECKSUM_MISMATCH;
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&blk);
    PyBuffer_Release(&out);
    PyBuffer_Release(&segs);
    return called ? kc_decoded(err) : NULL;
}

PyDoc_STRVAR(avx512_doc,
             "avx512(on: bool | None = None) -> bool\n\n"
             "Whether the AVX2 decoding path renormalises with AVX-512VL (set it with `on`; the "
             "CPU must have it). Both give the same values.");

static PyObject *py_avx512(PyObject *self, PyObject *args) {
#ifdef KC_HAVE_AVX2
    return kc_switch(args, "|O:avx512", &kc_use_avx512,
                     __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"),
                     zen_sync);
#else
    static int none = 0;
    return kc_switch(args, "|O:avx512", &none, 0, NULL);
#endif
}

PyDoc_STRVAR(xxh3_doc,
             "xxh3_128(data, cuts=()) -> bytes\n\n"
             "The checksum of version-4 blocks: XXH3-128 of `data` in its canonical 16 bytes (as "
             "xxhash.xxh3_128_digest gives), fed to the streaming hash in pieces split at the "
             "offsets `cuts` (ascending), as the decoder feeds it row by row.");

static PyObject *py_xxh3(PyObject *self, PyObject *args) {
    Py_buffer data;
    PyObject *cuts = NULL;
    if (!PyArg_ParseTuple(args, "y*|O:xxh3_128", &data, &cuts)) return NULL;
    PyObject *seq = cuts ? PySequence_Fast(cuts, "cuts must be a sequence") : NULL;
    Py_ssize_t m = seq ? PySequence_Fast_GET_SIZE(seq) : 0, done = 0;
    Xxh3 h;
    xh_start(&h);
    for (Py_ssize_t i = 0; i <= m; i++) {
        Py_ssize_t at = i < m ? PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i)) : data.len;
        if (at == -1 && PyErr_Occurred()) break;
        if (at < done || at > data.len) {
            PyErr_SetString(PyExc_ValueError, "cuts must ascend within the data");
            break;
        }
        xh_update(&h, (const u8 *)data.buf + done, (size_t)(at - done));
        done = at;
    }
    Py_XDECREF(seq);
    PyBuffer_Release(&data);
    if (PyErr_Occurred()) return NULL;
    u8 out[16];
    xh_digest(&h, out);
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

PyDoc_STRVAR(zen_doc,
             "zen(on: bool | None = None) -> bool\n\n"
             "Whether decoding takes the path tuned on AMD Zen (table entries by scalar loads, "
             "not gathers, effective with simd() on; with avx512() on and x86-64-v4, the rebuild "
             "in 512-bit vectors): on by default on AMD CPUs with AVX2. Set it with `on` (the CPU "
             "must have AVX2). Every path gives the same values.");

/* 1 where this CPU runs decode_float_zen's instructions (x86-64-v4) */
static int v4_runs(void) {
#ifdef ZEN_TARGET
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512cd");
#else
    return 0;
#endif
}

/* The checksum's 512-bit loop goes with the Zen 4 path (it is slower on Intel CPUs) */
static void zen_sync(void) {
#ifdef KC_HAVE_AVX2
    xh_use_avx512 = ZEN_DECODE;
#endif
}

static PyMethodDef methods[] = {
    {"xxh3_128", py_xxh3, METH_VARARGS, xxh3_doc},
    KC_SIMD_METHOD,
    {"avx512", py_avx512, METH_VARARGS, avx512_doc},
    {"zen", kc_py_zen, METH_VARARGS, zen_doc},
    {"encode", py_encode, METH_VARARGS, encode_doc},
    {"encode_split", py_encode_split, METH_VARARGS, encode_split_doc},
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS, decode_doc},
    {NULL, NULL, 0, NULL},
};

/* The module's state and constants. */
static int setup(PyObject *m) {
    if (kc_module_setup(m) < 0) return -1;
#ifdef KC_HAVE_AVX2
    kc_v4 = v4_runs(); /* after kc_module_setup's __builtin_cpu_init */
    zen_sync();
#endif
    if (PyModule_AddIntConstant(m, "FAST_VERSION", FAST_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "NSTATES", NSTATES) < 0)
        return -1;
    return PyModule_AddIntConstant(m, "SCALE_BITS", SCALE_BITS3);
}

KC_MODULE(_fast_kernels,
          "The float prior's fast level: semi-static fields coded with interleaved rANS.", setup)
