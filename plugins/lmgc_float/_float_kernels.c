/* The float prior's coding kernels: the float field model and the two integer models (levels
 * around a centre, repeats with a match model), over a byte-oriented range coder (LZMA's
 * carry-propagating design) with adaptive binary and multi-symbol models. The only
 * implementation (it replaced a numba twin that cost every fresh process about a second and
 * ~160 MB before the first value); this module imports in a millisecond.
 *
 * Everything the coder sees is integer arithmetic (binary probabilities are 16-bit integers
 * updated by shifts, multi-symbol models integer counts turned into frequency tables that sum
 * to exactly 2**TOTAL_BITS); the one division (a running mean) goes through one IEEE 754 float64
 * division, exactly rounded on every CPU; do not build with -ffast-math. So streams are
 * bit-identical on every CPU. The bytes are the format: tests/test_float_kernels.py holds
 * digests of blocks of fixed inputs, tests/fixtures committed streams; keep both.
 *
 * A decoder fed damaged bytes never reads or writes out of bounds: past the end it reads zeros,
 * the code register stays 32 bits and every decoded symbol stays in its alphabet; the stream's
 * checksum then reports the damage. It stops, though, once it has read past the end of its
 * bytes (checked every CHECK values and at the end): the encoder's flush leaves exactly the
 * bytes its decoder reads (see encoder_finish), so a block whose values outrun its bytes is
 * damaged, and a crafted header that declares 2**28 values for a block of a few kilobytes costs
 * what those kilobytes carry, not a walk over 2**28 values. The kernels release the GIL, so
 * blocks code on several threads.
 *
 * Bump KERNEL_VERSION whenever the kernels change: the loader refuses a stale build. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_kernel_common.h"
#include "_kernel_py.h"

#define KERNEL_VERSION 4

/* coder constants (tables.py) */
#define TOTAL_BITS 15
#define TOTAL (INT64_C(1) << TOTAL_BITS)
#define TOP (INT64_C(1) << 24)
#define PROB_BITS 16
#define PROB_ONE (INT64_C(1) << PROB_BITS)
#define COUNT_STEP 24
#define COUNT_LIMIT (INT64_C(1) << 16)
#define MAX_REBUILD 256
/* float fields (tables.py) */
#define RESID 15
#define ESCAPE (2 * RESID + 1)
#define EXP_SYMBOLS (ESCAPE + 1)
#define MANT_BITS 4
#define FRAC 4
#define ZERO_CONTEXTS 81
#define SIGN_CONTEXTS 28
#define EXP_CONTEXTS 16
#define MANT_CONTEXTS 5
#define CHECK 4096
#define ROOM (8 * CHECK + 64)


/* -- range coder ------------------------------------------------------------------------- */
typedef struct {
    i64 low, rng, cache, csize, pos, cap;
    uint8_t *out;
} Enc;

typedef struct {
    i64 code, rng, pos, len;
    const uint8_t *in;
} Dec;

typedef struct {
    i64 *counts, *cum, *ticks, n; /* n symbols: rows of n counts, n + 1 cum, 2 ticks */
} Model;

INLINE void shift_low(Enc *e) {
    if (e->low < INT64_C(0xFF000000) || e->low >= INT64_C(0x100000000)) {
        i64 carry = e->low >> 32, temp = e->cache;
        for (;;) {
            if (e->pos < e->cap) e->out[e->pos] = (uint8_t)((temp + carry) & 0xFF);
            e->pos++;
            temp = 0xFF;
            if (--e->csize == 0) break;
        }
        e->cache = (e->low >> 24) & 0xFF;
    }
    e->csize++;
    e->low = (e->low & 0x00FFFFFF) << 8;
}

INLINE void enc_norm(Enc *e) {
    while (e->rng < TOP) {
        e->rng <<= 8;
        shift_low(e);
    }
}

INLINE void enc_bit(Enc *e, i64 *probs, i64 ctx, i64 bit) {
    i64 *p2 = probs + 2 * ctx;
    i64 bound = (e->rng >> PROB_BITS) * ((p2[0] + p2[1]) >> 1);
    if (bit == 0) {
        e->rng = bound;
        p2[0] += (PROB_ONE - p2[0]) >> 4;
        p2[1] += (PROB_ONE - p2[1]) >> 6;
    } else {
        e->low += bound;
        e->rng -= bound;
        p2[0] -= p2[0] >> 4;
        p2[1] -= p2[1] >> 6;
    }
    enc_norm(e);
}

/* Frequencies from counts: every symbol >= 1, total exactly TOTAL, the remainder of the
 * integer division going to the most frequent symbol (first on ties). */
static void rebuild(Model *m, i64 ctx) {
    i64 n = m->n, *c = m->counts + ctx * n, *cum = m->cum + ctx * (n + 1);
    i64 total = 0, acc = 0, best = 0, best_count = -1, avail = TOTAL - n;
    for (i64 i = 0; i < n; i++) total += c[i];
    for (i64 i = 0; i < n; i++) {
        cum[i] = acc;
        acc += 1 + c[i] * avail / total;
        if (c[i] > best_count) {
            best_count = c[i];
            best = i;
        }
    }
    i64 rest = TOTAL - acc;
    for (i64 i = best + 1; i < n; i++) cum[i] += rest;
    cum[n] = TOTAL;
    if (total > COUNT_LIMIT)
        for (i64 i = 0; i < n; i++) c[i] = (c[i] + 1) >> 1;
}

INLINE void update(Model *m, i64 ctx, i64 sym) {
    i64 *t = m->ticks + 2 * ctx;
    m->counts[ctx * m->n + sym] += COUNT_STEP;
    if (++t[0] >= t[1]) {
        t[0] = 0;
        if (t[1] < MAX_REBUILD) t[1] <<= 1;
        rebuild(m, ctx);
    }
}

INLINE void enc_sym(Enc *e, Model *m, i64 ctx, i64 sym) {
    const i64 *cum = m->cum + ctx * (m->n + 1);
    i64 r = e->rng >> TOTAL_BITS, lo = cum[sym];
    e->low += r * lo;
    e->rng = r * (cum[sym + 1] - lo);
    update(m, ctx, sym);
    enc_norm(e);
}

INLINE void dec_norm(Dec *d) {
    while (d->rng < TOP) {
        d->rng <<= 8;
        i64 byte = d->pos < d->len ? (i64)d->in[d->pos] : 0;
        d->pos++;
        d->code = ((d->code << 8) | byte) & INT64_C(0xFFFFFFFF);
    }
}

INLINE i64 dec_bit(Dec *d, i64 *probs, i64 ctx) {
    i64 *p2 = probs + 2 * ctx, bit;
    i64 bound = (d->rng >> PROB_BITS) * ((p2[0] + p2[1]) >> 1);
    if (d->code < bound) {
        p2[0] += (PROB_ONE - p2[0]) >> 4;
        p2[1] += (PROB_ONE - p2[1]) >> 6;
        d->rng = bound;
        bit = 0;
    } else {
        p2[0] -= p2[0] >> 4;
        p2[1] -= p2[1] >> 6;
        d->code -= bound;
        d->rng -= bound;
        bit = 1;
    }
    dec_norm(d);
    return bit;
}

/* The symbol is the last one with cum * r <= code: cum rises strictly (frequencies are >= 1),
 * so it is the number of k in 1..n-1 with cum[k] * r <= code. Counted branch-free in two
 * levels for small alphabets: every 8th entry first, then the 7 after the last one passed (10
 * multiplications for 32 symbols instead of 31). It stays in the alphabet for damaged input. */
INLINE i64 dec_sym(Dec *d, Model *m, i64 ctx) {
    const i64 *cum = m->cum + ctx * (m->n + 1);
    i64 r = d->rng >> TOTAL_BITS, n = m->n, code = d->code, sym = 0;
    if (n <= 64) {
        for (i64 k = 8; k < n; k += 8) sym += (cum[k] * r <= code) << 3;
        i64 stop = sym + 8 < n ? sym + 8 : n;
        for (i64 k = sym + 1; k < stop; k++) sym += cum[k] * r <= code;
    } else {
        i64 lo = 0, hi = n - 1;
        while (lo < hi) {
            i64 mid = (lo + hi + 1) >> 1;
            if (cum[mid] * r <= code)
                lo = mid;
            else
                hi = mid - 1;
        }
        sym = lo;
    }
    i64 low = cum[sym];
    d->code -= r * low;
    d->rng = r * (cum[sym + 1] - low);
    update(m, ctx, sym);
    dec_norm(d);
    return sym;
}

/* -- raw bits ---------------------------------------------------------------------------- */
typedef struct {
    u64 acc;
    i64 nb, pos, cap;
    uint8_t *buf;
} BitsOut;

typedef struct {
    u64 acc;
    i64 nb, pos, len;
    const uint8_t *buf;
} BitsIn;

INLINE void put(BitsOut *w, u64 value, i64 nbits) { /* nbits <= 56 */
    if (nbits == 0) return;
    w->acc |= (value & ((UINT64_C(1) << nbits) - 1)) << w->nb;
    w->nb += nbits;
    while (w->nb >= 8) {
        if (w->pos < w->cap) w->buf[w->pos] = (uint8_t)(w->acc & 0xFF);
        w->pos++;
        w->acc >>= 8;
        w->nb -= 8;
    }
}

INLINE u64 take(BitsIn *r, i64 nbits) { /* nbits <= 56 */
    if (nbits == 0) return 0;
    while (r->nb < nbits) {
        u64 byte = r->pos < r->len ? r->buf[r->pos] : 0;
        r->acc |= byte << r->nb;
        r->nb += 8;
        r->pos++;
    }
    u64 value = r->acc & ((UINT64_C(1) << nbits) - 1);
    r->acc >>= nbits;
    r->nb -= nbits;
    return value;
}

/* -- float fields ------------------------------------------------------------------------ */
INLINE i64 zigzag(i64 r) { return r >= 0 ? 2 * r : -2 * r - 1; }
INLINE i64 unzigzag(i64 z) { return (z & 1) == 0 ? z >> 1 : -((z + 1) >> 1); }

/* floor(total * 2**FRAC / count) through one exactly rounded float64 division (totals and
 * counts stay far below 2**53). Totals are sums of exponent fields, never negative, so the
 * truncating conversion is the floor (and needs no libm call). */
INLINE i64 mean(i64 total, i64 count) {
    return (i64)((double)(total << FRAC) / (double)count);
}

typedef struct {
    i64 rsum, rcnt, csum, ccnt, tsum, tcnt;
} Means;

/* (predicted exponent, context) from the running means. */
INLINE i64 exp_context(const Means *s, i64 emax, i64 *ctx) {
    i64 pred = 0, state = 3;
    if (s->rcnt > 0 && s->ccnt > 0) {
        pred = mean(s->rsum, s->rcnt) + mean(s->csum, s->ccnt) - mean(s->tsum, s->tcnt);
        state = 0;
    } else if (s->rcnt > 0) {
        pred = mean(s->rsum, s->rcnt);
        state = 1;
    } else if (s->ccnt > 0) {
        pred = mean(s->csum, s->ccnt);
        state = 2;
    } else if (s->tcnt > 0) {
        pred = mean(s->tsum, s->tcnt);
    }
    i64 half = INT64_C(1) << (FRAC - 1);
    i64 p_int = (pred + half) >> FRAC;
    if (p_int < 0)
        p_int = 0;
    else if (p_int > emax)
        p_int = emax;
    *ctx = state * 4 + (((pred + half) >> (FRAC - 2)) & 3);
    return p_int;
}

INLINE i64 mant_context(i64 sym) {
    if (sym == ESCAPE) return 4;
    i64 r = unzigzag(sym);
    if (r <= -2) return 0;
    if (r >= 2) return 3;
    return r <= 0 ? 1 : 2;
}

INLINE i64 zero_context(int left, int up, i64 i, i64 j, int row_zero, int col_zero_j) {
    i64 lz = j == 0 ? 2 : (left == 0 ? 1 : 0);
    i64 uz = i == 0 ? 2 : (up == 0 ? 1 : 0);
    i64 rs = j == 0 ? 0 : (row_zero ? 1 : 2);
    i64 cs = i == 0 ? 0 : (col_zero_j ? 1 : 2);
    return ((lz * 3 + uz) * 3 + rs) * 3 + cs;
}

INLINE i64 sign_context(int left, int up, int upleft, i64 i, i64 j) {
    i64 ls = (j > 0 && left != 0) ? left : 0;
    i64 us = (i > 0 && up != 0) ? up : 0;
    i64 lp = 0;
    if (ls != 0 && us != 0 && upleft != 0) lp = 1 + (((ls - 1) ^ (us - 1) ^ (upleft - 1)) & 1);
    return (ls * 3 + us) * 3 + lp;
}

/* Per-segment scratch: neighbour signs (0 zero, 1 positive, 2 negative; [0] pads) of the row
 * above and the current row, and the per-column state. */
typedef struct {
    int8_t *above, *cur;
    uint8_t *col_zero;
    i64 *csum, *ccnt;
} Scratch;

static int scratch_alloc(Scratch *s, i64 cols) {
    size_t n = (size_t)cols + 1; /* malloc, not calloc: scratch_reset sets what is read */
    s->above = malloc(n);
    s->cur = malloc(n);
    s->col_zero = malloc(n);
    s->csum = malloc(n * sizeof(i64));
    s->ccnt = malloc(n * sizeof(i64));
    return s->above && s->cur && s->col_zero && s->csum && s->ccnt;
}

static void scratch_free(Scratch *s) {
    free(s->above);
    free(s->cur);
    free(s->col_zero);
    free(s->csum);
    free(s->ccnt);
}

/* A segment's scratch before its first row: only the pads. The rest is set a chunk at a time as
 * the first row reaches it (scratch_chunk), so memory is touched only as far as the walk gets:
 * a damaged block that declares 2**28 values stops after a few kilobytes of input (see the
 * top), before setting the gigabytes of scratch so many columns would take. A row writes its
 * `cur` entry before reading it, so `cur` needs only its pad. */
static void scratch_reset(Scratch *s) {
    s->above[0] = 0;
    s->cur[0] = 0;
}

/* The first row's chunk of columns [j, j + CHECK): the row above (read, though row 0 ignores
 * it) cleared and, for a segment of several rows, the column state reset. The column state is
 * read from the second row on and written up to the last row but one, so a one-row segment (a
 * flat run, a chunk of a few long rows) never touches it: for a row of a million values that is
 * 17 MB less memory set, faulted in and streamed through per block. */
static void scratch_chunk(Scratch *s, i64 rows, i64 cols, i64 j) {
    size_t n = (size_t)(cols - j < CHECK ? cols - j : CHECK);
    memset(s->above + j + 1, 0, n);
    if (rows < 2) return;
    memset(s->col_zero + j, 1, n);
    memset(s->csum + j, 0, n * sizeof(i64));
    memset(s->ccnt + j, 0, n * sizeof(i64));
}

/* Whether a decoder has read past the end of its range-coded or raw bytes (both count every
 * byte they consume, those past the end read as zeros). A block the encoder wrote never does:
 * encoder_finish leaves exactly the bytes the decoder reads, flush_bits those the bit reader
 * takes. */
INLINE int read_past_end(const Dec *d, const BitsIn *r) {
    return d->pos > d->len || (r != NULL && r->pos > r->len);
}

/* The exponent's prediction and context at column j, from the running means. */
INLINE i64 predict_at(const Scratch *sc, Means *mn, i64 i, i64 j, i64 emask, i64 *ectx) {
    mn->csum = i > 0 ? sc->csum[j] : 0;
    mn->ccnt = i > 0 ? sc->ccnt[j] : 0;
    return exp_context(mn, emask, ectx);
}

/* After a non-zero value at column j of a row that is not the segment's last (``more_rows``):
 * its sign for the neighbours, and its exponent in the row, column and tensor means. */
INLINE void seen_nonzero(Scratch *sc, Means *mn, i64 j, i64 ex, i64 sign, int more_rows) {
    sc->cur[j + 1] = (int8_t)(1 + sign);
    mn->rsum += ex;
    mn->rcnt++;
    mn->tsum += ex;
    mn->tcnt++;
    if (more_rows) {
        sc->col_zero[j] = 0;
        sc->csum[j] += ex;
        sc->ccnt[j]++;
    }
}

/* -- the integer models ------------------------------------------------------------------ */
#define LENGTH_CONTEXTS 65
#define TOP_BITS 4
#define LEVEL_ROOM (CHECK * 24 + 64)
#define REPEAT_CONTEXTS (3 * 3 * 3 * 2)
#define MATCH_CONTEXTS (16 * 2)
#define HASH_BITS 18
#define MATCH_MIN 4
#define TREE_CONTEXTS (257 * 256)

/* The item at k as a signed integer of its width (sign-extended). */
INLINE i64 load_signed(const void *vals, int width, i64 k) {
    switch (width) {
        case 8: return ((const int8_t *)vals)[k];
        case 16: return ((const int16_t *)vals)[k];
        case 32: return ((const int32_t *)vals)[k];
        default: return ((const int64_t *)vals)[k];
    }
}

INLINE i64 bit_length(u64 a) {
    i64 n = 0;
    while (a > 0) {
        a >>= 1;
        n++;
    }
    return n;
}

/* The models of a field walk: zero flags, signs, exponents (levels: bit lengths) and top
 * mantissa bits (levels: the bits below the leading one). */
typedef struct {
    i64 *zp, *sp;
    Model em, mm;
} Models;

static i64 max_cols(const i64 *segs, i64 nsegs) {
    i64 m = 0;
    for (i64 s = 0; s < nsegs; s++)
        if (segs[3 * s + 2] > m) m = segs[3 * s + 2];
    return m;
}

/* One field kernel's call: the values (read when encoding, written when decoding), their layout
 * and the coder states. */
typedef struct {
    void *vals;
    int ebits, mbits; /* a float's layout */
    i64 centre;       /* the level model's most common value */
    Enc *e;
    BitsOut *w;
    Dec *d;
    BitsIn *r;
    Models *md;
} Fields;

enum { FLOAT_ENCODE, FLOAT_DECODE, LEVELS_ENCODE, LEVELS_DECODE };

/* What one value of a walk gets: where it is, its zero-flag context, its neighbours' signs
 * (left, above, above-left) and the state its exponent is predicted from. */
typedef struct {
    const Scratch *sc;
    Means *mn;
    i64 i, j, t, zctx;
    int left, up, upleft;
} Site;

/* The sign's context (computed only for non-zero values). */
INLINE i64 site_sign_context(const Site *at) {
    return sign_context(at->left, at->up, at->upleft, at->i, at->j);
}

/* The step of each kernel codes the value at `at` and returns 0 for a zero, 1 for a non-zero
 * (with its exponent or bit length and its sign), -1 to stop (an output buffer is full). */
INLINE int float_encode_step(Fields *f, int width, const Site *at, i64 *ex_out, i64 *sign_out) {
    Enc *e = f->e;
    BitsOut *w = f->w;
    Models *md = f->md;
    if ((at->j & (CHECK - 1)) == 0 && (e->pos + ROOM > e->cap || w->pos + ROOM > w->cap))
        return -1;
    i64 emask = (INT64_C(1) << f->ebits) - 1, mmask = (INT64_C(1) << f->mbits) - 1;
    i64 mtop = f->mbits < MANT_BITS ? f->mbits : MANT_BITS, low_bits = f->mbits - mtop;
    u64 v = load_v(f->vals, width, at->t);
    i64 sign = (i64)((v >> (width - 1)) & 1);
    i64 ex = (i64)(v >> f->mbits) & emask;
    i64 m = (i64)v & mmask;
    if (ex == 0 && m == 0) {
        enc_bit(e, md->zp, at->zctx, 1);
        enc_bit(e, md->sp, SIGN_CONTEXTS - 1, sign);
        return 0;
    }
    enc_bit(e, md->zp, at->zctx, 0);
    enc_bit(e, md->sp, site_sign_context(at), sign);
    i64 ectx, p_int = predict_at(at->sc, at->mn, at->i, at->j, emask, &ectx);
    i64 r = ex - p_int;
    i64 sym = (-RESID <= r && r <= RESID) ? zigzag(r) : ESCAPE;
    enc_sym(e, &md->em, ectx, sym);
    if (sym == ESCAPE) put(w, (u64)ex, f->ebits);
    if (mtop > 0) enc_sym(e, &md->mm, mant_context(sym), m >> low_bits);
    put(w, (u64)m, low_bits);
    *ex_out = ex;
    *sign_out = sign;
    return 1;
}

INLINE int float_decode_step(Fields *f, int width, const Site *at, i64 *ex_out, i64 *sign_out) {
    Dec *d = f->d;
    Models *md = f->md;
    i64 emask = (INT64_C(1) << f->ebits) - 1;
    i64 mtop = f->mbits < MANT_BITS ? f->mbits : MANT_BITS, low_bits = f->mbits - mtop;
    if (dec_bit(d, md->zp, at->zctx) == 1) {
        u64 sign = (u64)dec_bit(d, md->sp, SIGN_CONTEXTS - 1);
        store_v(f->vals, width, at->t, sign << (width - 1));
        return 0;
    }
    i64 sign = dec_bit(d, md->sp, site_sign_context(at));
    i64 ectx, p_int = predict_at(at->sc, at->mn, at->i, at->j, emask, &ectx);
    i64 sym = dec_sym(d, &md->em, ectx);
    i64 ex = sym == ESCAPE ? (i64)take(f->r, f->ebits) : (p_int + unzigzag(sym)) & emask;
    u64 m = 0;
    if (mtop > 0) m = (u64)dec_sym(d, &md->mm, mant_context(sym)) << low_bits;
    m |= take(f->r, low_bits);
    store_v(f->vals, width, at->t, ((u64)sign << (width - 1)) | ((u64)ex << f->mbits) | m);
    *ex_out = ex;
    *sign_out = sign;
    return 1;
}

/* Levels: the distance d of each item from the centre, in the item's width, coded like a float:
 * zero flag, sign, the bit length of |d| against the prediction, the next TOP_BITS bits below
 * the leading one in the context of that length, the rest raw. */
INLINE int levels_encode_step(Fields *f, int width, const Site *at, i64 *ex_out, i64 *sign_out) {
    Enc *e = f->e;
    BitsOut *w = f->w;
    Models *md = f->md;
    if ((at->j & (CHECK - 1)) == 0 &&
        (e->pos + LEVEL_ROOM > e->cap || w->pos + LEVEL_ROOM > w->cap))
        return -1;
    u64 full = width == 64 ? ~UINT64_C(0) : (UINT64_C(1) << width) - 1;
    u64 du = ((u64)load_signed(f->vals, width, at->t) - (u64)f->centre) & full;
    if (width < 64 && du >= (UINT64_C(1) << (width - 1))) du -= UINT64_C(1) << width;
    i64 d = (i64)du; /* signed distance in the item's width */
    if (d == 0) {
        enc_bit(e, md->zp, at->zctx, 1);
        return 0;
    }
    enc_bit(e, md->zp, at->zctx, 0);
    i64 sign = d < 0;
    enc_bit(e, md->sp, site_sign_context(at), sign);
    u64 a = sign ? (u64)0 - du : du; /* |d|; 2**63 for width 64's most negative */
    i64 n = bit_length(a);
    i64 ectx, p_int = predict_at(at->sc, at->mn, at->i, at->j, 64, &ectx);
    i64 r = n - p_int;
    i64 sym = (-RESID <= r && r <= RESID) ? zigzag(r) : ESCAPE;
    enc_sym(e, &md->em, ectx, sym);
    if (sym == ESCAPE) put(w, (u64)n, 7);
    i64 below = n - 1, top = below < TOP_BITS ? below : TOP_BITS;
    if (top > 0)
        enc_sym(e, &md->mm, n, (i64)((a >> (below - top)) & ((UINT64_C(1) << top) - 1)));
    i64 rest = below - top;
    if (rest > 32) { /* put() takes at most 56 bits at a time */
        put(w, a, 32);
        put(w, a >> 32, rest - 32);
    } else if (rest > 0) {
        put(w, a, rest);
    }
    *ex_out = n;
    *sign_out = sign;
    return 1;
}

INLINE int levels_decode_step(Fields *f, int width, const Site *at, i64 *ex_out, i64 *sign_out) {
    Dec *d = f->d;
    Models *md = f->md;
    u64 full = width == 64 ? ~UINT64_C(0) : (UINT64_C(1) << width) - 1;
    if (dec_bit(d, md->zp, at->zctx) == 1) {
        store_v(f->vals, width, at->t, (u64)f->centre & full);
        return 0;
    }
    i64 sign = dec_bit(d, md->sp, site_sign_context(at));
    i64 ectx, p_int = predict_at(at->sc, at->mn, at->i, at->j, 64, &ectx);
    i64 sym = dec_sym(d, &md->em, ectx);
    i64 n = sym == ESCAPE ? (i64)take(f->r, 7) : p_int + unzigzag(sym);
    if (n < 1)
        n = 1;
    else if (n > 64)
        n = 64;
    i64 below = n - 1, top = below < TOP_BITS ? below : TOP_BITS;
    u64 a = UINT64_C(1) << below;
    if (top > 0) {
        u64 t = (u64)dec_sym(d, &md->mm, n);
        a |= (t & ((UINT64_C(1) << top) - 1)) << (below - top);
    }
    i64 rest = below - top;
    if (rest > 32) {
        u64 lo = take(f->r, 32);
        a |= lo | (take(f->r, rest - 32) << 32);
    } else if (rest > 0) {
        a |= take(f->r, rest);
    }
    u64 dv = sign ? (u64)0 - a : a;
    store_v(f->vals, width, at->t, (dv + (u64)f->centre) & full);
    *ex_out = n;
    *sign_out = sign;
    return 1;
}

/* Walks the segments' values row by row for one kernel (`kind`, a constant once inlined, as is
 * `width`), keeping what the field models' contexts read: the neighbours' signs, which columns
 * are all zero so far, and the row, column and tensor means of the exponents.
 * 1: done, 0: an output buffer ran out (the caller retries with larger ones), -1: no memory,
 * -2: the decoder read past the end of its bytes (a damaged block). */
INLINE int walk_fields(Fields *f, int kind, int width, const i64 *segs, i64 nsegs) {
    const int decoding = kind == FLOAT_DECODE || kind == LEVELS_DECODE;
    Scratch sc;
    if (!scratch_alloc(&sc, max_cols(segs, nsegs))) {
        scratch_free(&sc);
        return -1;
    }
    int ok = 1;
    for (i64 s = 0; s < nsegs && ok > 0; s++) {
        i64 off = segs[3 * s], rows = segs[3 * s + 1], cols = segs[3 * s + 2];
        scratch_reset(&sc);
        Means mn = {0, 0, 0, 0, 0, 0};
        for (i64 i = 0; i < rows && ok > 0; i++) {
            int row_zero = 1;
            mn.rsum = mn.rcnt = 0;
            i64 base = off + i * cols;
            for (i64 j = 0; j < cols; j++) {
                if ((j & (CHECK - 1)) == 0) {
                    if (i == 0) scratch_chunk(&sc, rows, cols, j);
                    if (decoding && read_past_end(f->d, f->r)) {
                        ok = -2;
                        break;
                    }
                }
                int left = sc.cur[j], up = sc.above[j + 1];
                Site at = {&sc,
                           &mn,
                           i,
                           j,
                           base + j,
                           zero_context(left, up, i, j, row_zero, i > 0 && sc.col_zero[j]),
                           left,
                           up,
                           sc.above[j]};
                i64 ex = 0, sign = 0;
                int got;
                switch (kind) {
                    case FLOAT_ENCODE: got = float_encode_step(f, width, &at, &ex, &sign); break;
                    case FLOAT_DECODE: got = float_decode_step(f, width, &at, &ex, &sign); break;
                    case LEVELS_ENCODE: got = levels_encode_step(f, width, &at, &ex, &sign); break;
                    default: got = levels_decode_step(f, width, &at, &ex, &sign); break;
                }
                if (got < 0) {
                    ok = 0;
                    break;
                }
                if (got == 0) {
                    sc.cur[j + 1] = 0;
                    continue;
                }
                seen_nonzero(&sc, &mn, j, ex, sign, i + 1 < rows);
                row_zero = 0;
            }
            int8_t *t = sc.above;
            sc.above = sc.cur;
            sc.cur = t;
        }
    }
    scratch_free(&sc);
    if (decoding && ok > 0 && read_past_end(f->d, f->r)) return -2;
    return ok;
}

/* One specialised loop per kernel and width. */
static int fields_any(Fields *f, int kind, int width, const i64 *segs, i64 nsegs) {
#define WIDTHS(kind)                                                   \
    switch (width) {                                                   \
        case 8: return walk_fields(f, kind, 8, segs, nsegs);           \
        case 16: return walk_fields(f, kind, 16, segs, nsegs);         \
        case 32: return walk_fields(f, kind, 32, segs, nsegs);         \
        default: return walk_fields(f, kind, 64, segs, nsegs);         \
    }
    switch (kind) {
        case FLOAT_ENCODE: WIDTHS(FLOAT_ENCODE)
        case FLOAT_DECODE: WIDTHS(FLOAT_DECODE)
        case LEVELS_ENCODE: WIDTHS(LEVELS_ENCODE)
        default: WIDTHS(LEVELS_DECODE)
    }
#undef WIDTHS
}

typedef struct {
    i64 *matches, *table, *repeat, *tree;
    Model model;
    i64 items; /* of vals: a match pointer never leaves them */
} IntModels;

/* Hash of the MATCH_MIN values ending at flat index t. */
INLINE i64 match_hash(const void *vals, int width, i64 t) {
    u64 h = 0;
    for (int k = 0; k < MATCH_MIN; k++)
        h = (h * UINT64_C(0x2F0B3C5) + ((u64)load_signed(vals, width, t - k) & 0xFFFFFFFF) + 1) &
            UINT64_C(0xFFFFFFFFFFFF);
    return (i64)((h ^ (h >> 21)) & ((UINT64_C(1) << HASH_BITS) - 1));
}

/* After the value at flat index t (v): extend or drop the match, look a new one up, and
 * remember this position. */
INLINE void match_step(const void *vals, int width, i64 t, i64 start, i64 v, i64 *ptr,
                       i64 *length, IntModels *md) {
    if (*ptr >= 0 && load_signed(vals, width, *ptr) == v) {
        ++*ptr;
        ++*length;
    } else {
        *ptr = -1;
        *length = 0;
    }
    if (t - start + 1 >= MATCH_MIN) {
        i64 h = match_hash(vals, width, t);
        if (*ptr < 0 && md->table[h] >= 0) *ptr = md->table[h];
        md->table[h] = t + 1;
    }
    if (*ptr >= md->items) *ptr = -1; /* only after the last item, never read */
}

INLINE i64 repeat_context(i64 i, i64 j, int row_const, int col_const_j, int up_same,
                          int left_repeat) {
    i64 rs = j < 2 ? 0 : (row_const ? 1 : 2);
    i64 cs = i == 0 ? 0 : (col_const_j ? 1 : 2);
    i64 us = i == 0 ? 0 : (up_same ? 1 : 2);
    return ((rs * 3 + cs) * 3 + us) * 2 + (left_repeat ? 1 : 0);
}

INLINE void col_seen(uint8_t *col_const, i64 i, i64 j, i64 v, i64 up) {
    if (i > 0) col_const[j] = col_const[j] && v == up;
}

/* The first byte goes down a binary tree in the context of the left value's first byte, the
 * others through 256-symbol models in the context of the byte before them. */
INLINE int encode_ints_width(const void *vals, int width, const i64 *segs, i64 nsegs, Enc *e,
                             IntModels *md) {
    i64 itemsize = width / 8, shift = width - 8;
    i64 room = CHECK * (itemsize + 2) * 2 + 64;
    i64 start = nsegs ? segs[0] : 0, ptr = -1, length = 0;
    uint8_t *col_const = malloc((size_t)max_cols(segs, nsegs) + 1);
    if (col_const == NULL) return -1;
    int ok = 1;
    for (i64 s = 0; s < nsegs && ok; s++) {
        i64 off = segs[3 * s], rows = segs[3 * s + 1], cols = segs[3 * s + 2];
        memset(col_const, 1, (size_t)cols);
        for (i64 i = 0; i < rows && ok; i++) {
            i64 base = off + i * cols, left = 0;
            int row_const = 1, left_repeat = 0;
            for (i64 j = 0; j < cols; j++) {
                if ((j & (CHECK - 1)) == 0 && e->pos + room > e->cap) {
                    ok = 0;
                    break;
                }
                i64 t = base + j, v = load_signed(vals, width, t);
                i64 up = i > 0 ? load_signed(vals, width, t - cols) : v;
                int hit = 0;
                if (ptr >= 0) {
                    i64 guess = load_signed(vals, width, ptr);
                    i64 mctx = (length < 15 ? length : 15) * 2 + (j > 0 && guess == left);
                    hit = guess == v;
                    enc_bit(e, md->matches, mctx, hit);
                }
                match_step(vals, width, t, start, v, &ptr, &length, md);
                if (hit) {
                    col_seen(col_const, i, j, v, up);
                    int same = j > 0 && v == left;
                    left_repeat = same;
                    row_const = row_const && (same || j == 0);
                    left = v;
                    continue;
                }
                i64 node_base = 256 * 256;
                if (j > 0) {
                    i64 ctx = repeat_context(i, j, row_const, col_const[j], up == left,
                                             left_repeat);
                    int same = v == left;
                    enc_bit(e, md->repeat, ctx, same);
                    left_repeat = same;
                    row_const = row_const && same;
                    col_seen(col_const, i, j, v, up);
                    if (same) continue;
                    node_base = ((left >> shift) & 0xFF) * 256;
                } else {
                    col_seen(col_const, i, j, v, up);
                }
                left = v;
                i64 top = (v >> shift) & 0xFF, node = 1;
                for (int b = 7; b >= 0; b--) {
                    i64 bit = (top >> b) & 1;
                    enc_bit(e, md->tree, node_base + node, bit);
                    node = 2 * node + bit;
                }
                i64 byte = top;
                for (i64 k = itemsize - 2; k >= 0; k--) {
                    i64 ctx = (itemsize - 2 - k) * 256 + byte;
                    byte = (v >> (8 * k)) & 0xFF;
                    enc_sym(e, &md->model, ctx, byte);
                }
            }
        }
    }
    free(col_const);
    return ok;
}

INLINE int decode_ints_width(void *out, int width, const i64 *segs, i64 nsegs, Dec *d,
                             IntModels *md) {
    i64 itemsize = width / 8, shift = width - 8;
    i64 start = nsegs ? segs[0] : 0, ptr = -1, length = 0;
    uint8_t *col_const = malloc((size_t)max_cols(segs, nsegs) + 1);
    if (col_const == NULL) return -1;
    int ok = 1;
    for (i64 s = 0; s < nsegs && ok > 0; s++) {
        i64 off = segs[3 * s], rows = segs[3 * s + 1], cols = segs[3 * s + 2];
        for (i64 i = 0; i < rows && ok > 0; i++) {
            i64 base = off + i * cols, left = 0;
            int row_const = 1, left_repeat = 0;
            for (i64 j = 0; j < cols; j++) {
                /* as walk_fields: the column state set as the first row reaches it, and a stop
                 * once the decoder has read past the end of its bytes */
                if ((j & (CHECK - 1)) == 0) {
                    if (i == 0)
                        memset(col_const + j, 1, (size_t)(cols - j < CHECK ? cols - j : CHECK));
                    if (read_past_end(d, NULL)) {
                        ok = -2;
                        break;
                    }
                }
                i64 t = base + j;
                i64 up = i > 0 ? load_signed(out, width, t - cols) : 0;
                if (ptr >= 0) {
                    i64 guess = load_signed(out, width, ptr);
                    i64 mctx = (length < 15 ? length : 15) * 2 + (j > 0 && guess == left);
                    if (dec_bit(d, md->matches, mctx) == 1) {
                        store_v(out, width, t, (u64)guess);
                        match_step(out, width, t, start, guess, &ptr, &length, md);
                        col_seen(col_const, i, j, guess, up);
                        int same = j > 0 && guess == left;
                        left_repeat = same;
                        row_const = row_const && (same || j == 0);
                        left = guess;
                        continue;
                    }
                }
                i64 node_base = 256 * 256;
                if (j > 0) {
                    i64 ctx = repeat_context(i, j, row_const, col_const[j], up == left,
                                             left_repeat);
                    left_repeat = dec_bit(d, md->repeat, ctx) == 1;
                    row_const = row_const && left_repeat;
                    if (left_repeat) {
                        store_v(out, width, t, (u64)left);
                        match_step(out, width, t, start, left, &ptr, &length, md);
                        col_seen(col_const, i, j, left, up);
                        continue;
                    }
                    node_base = ((left >> shift) & 0xFF) * 256;
                }
                i64 node = 1;
                for (int b = 0; b < 8; b++)
                    node = 2 * node + dec_bit(d, md->tree, node_base + node);
                i64 byte = node - 256;
                u64 v = (u64)byte << shift;
                for (i64 k = itemsize - 2; k >= 0; k--) {
                    i64 ctx = (itemsize - 2 - k) * 256 + byte;
                    byte = dec_sym(d, &md->model, ctx);
                    v |= (u64)byte << (8 * k);
                }
                store_v(out, width, t, v);
                i64 sv = load_signed(out, width, t); /* as the encoder reads it */
                match_step(out, width, t, start, sv, &ptr, &length, md);
                col_seen(col_const, i, j, sv, up);
                left = sv;
            }
        }
    }
    free(col_const);
    if (ok > 0 && read_past_end(d, NULL)) return -2;
    return ok;
}

#define BY_WIDTH(call_8, call_16, call_32, call_64) \
    switch (width) {                                  \
        case 8: return call_8;                        \
        case 16: return call_16;                      \
        case 32: return call_32;                      \
        default: return call_64;                      \
    }

static int encode_ints_any(const void *v, int width, const i64 *sg, i64 n, Enc *e,
                           IntModels *md) {
    BY_WIDTH(encode_ints_width(v, 8, sg, n, e, md), encode_ints_width(v, 16, sg, n, e, md),
             encode_ints_width(v, 32, sg, n, e, md), encode_ints_width(v, 64, sg, n, e, md))
}

static int decode_ints_any(void *v, int width, const i64 *sg, i64 n, Dec *d, IntModels *md) {
    BY_WIDTH(decode_ints_width(v, 8, sg, n, d, md), decode_ints_width(v, 16, sg, n, d, md),
             decode_ints_width(v, 32, sg, n, d, md), decode_ints_width(v, 64, sg, n, d, md))
}

/* -- Python bindings: numpy arrays in, through the buffer protocol ------------------------
 * Every buffer is a top-level argument: PyArg_ParseTuple sizes its cleanup list by the
 * top-level units, so buffers ("w*") inside a nested "(...)" overrun it. */
static int need(Py_buffer *b, Py_ssize_t bytes, const char *what) {
    if (b->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes given, %zd needed", what, b->len, bytes);
        return 0;
    }
    return 1;
}

/* Formats and segments come from our own code, but a bad call must not write out of bounds. */
static int check_call(Py_buffer *vals, Py_buffer *segs, int width, int ebits, int mbits) {
    if (!kc_check_width(width, "float ")) return 0;
    if (ebits < 1 || mbits < 0 || ebits + mbits + 1 != width || ebits > 56 || mbits > 60)
        return kc_bad_layout(ebits, mbits);
    return kc_check_segs(vals, segs, width);
}

static int models_from(Models *md, Py_buffer *zp, Py_buffer *sp, Py_buffer em[3],
                       Py_buffer mm[3]) {
    const Py_ssize_t w = sizeof(i64);
    if (!need(zp, ZERO_CONTEXTS * 2 * w, "zero model") ||
        !need(sp, SIGN_CONTEXTS * 2 * w, "sign model") ||
        !need(&em[0], EXP_CONTEXTS * EXP_SYMBOLS * w, "exponent counts") ||
        !need(&em[1], EXP_CONTEXTS * (EXP_SYMBOLS + 1) * w, "exponent frequencies") ||
        !need(&em[2], EXP_CONTEXTS * 2 * w, "exponent ticks") ||
        !need(&mm[0], MANT_CONTEXTS * (1 << MANT_BITS) * w, "mantissa counts") ||
        !need(&mm[1], MANT_CONTEXTS * ((1 << MANT_BITS) + 1) * w, "mantissa frequencies") ||
        !need(&mm[2], MANT_CONTEXTS * 2 * w, "mantissa ticks"))
        return 0;
    md->zp = zp->buf;
    md->sp = sp->buf;
    md->em = (Model){em[0].buf, em[1].buf, em[2].buf, EXP_SYMBOLS};
    md->mm = (Model){mm[0].buf, mm[1].buf, mm[2].buf, 1 << MANT_BITS};
    return 1;
}

/* Both segment kernels take (values, segments, width, ebits, mbits, coder state, coder bytes,
 * bit state, bit bytes, 8 model arrays); `fmt` says which buffers are writable. On success the
 * 14 buffers are held (release them), else they are released and a Python error is set. */
static int parse_segments_call(PyObject *args, const char *fmt, Py_buffer b[14], int layout[3],
                               Py_ssize_t state_bytes, Models *md) {
    if (!PyArg_ParseTuple(args, fmt, &b[0], &b[1], &layout[0], &layout[1], &layout[2], &b[2],
                          &b[3], &b[4], &b[5], &b[6], &b[7], &b[8], &b[9], &b[10], &b[11], &b[12],
                          &b[13]))
        return 0;
    if (!check_call(&b[0], &b[1], layout[0], layout[1], layout[2]) ||
        !need(&b[2], state_bytes, "range coder state") || !need(&b[4], 3 * 8, "raw bit state") ||
        !models_from(md, &b[6], &b[7], &b[8], &b[11])) {
        kc_release(b, 14);
        return 0;
    }
    return 1;
}

/* The ValueError of a block whose values outrun its bytes (the Python side: StreamError). */
static PyObject *past_end_error(void) {
    PyErr_SetString(PyExc_ValueError,
                    "its values run past the end of its coded bytes (damaged or truncated)");
    return NULL;
}

/* Coder states travel as int64 arrays: encoder (low, rng, cache, csize, pos), decoder (code,
 * rng, pos), bit writer and reader (acc, nb, pos). */
static Enc enc_from(const i64 *s, Py_buffer *out) {
    return (Enc){s[0], s[1], s[2], s[3], s[4], (i64)out->len, out->buf};
}

static void enc_to(i64 *s, const Enc *e) {
    s[0] = e->low, s[1] = e->rng, s[2] = e->cache, s[3] = e->csize, s[4] = e->pos;
}

static Dec dec_from(const i64 *s, Py_buffer *in) {
    return (Dec){s[0], s[1], s[2], (i64)in->len, in->buf};
}

static void dec_to(i64 *s, const Dec *d) { s[0] = d->code, s[1] = d->rng, s[2] = d->pos; }

/* Run a field coder on parsed buffers (b[0] values, b[1] segments, b[2..5] coder state and
 * bytes, bit state and bytes), store the states back and release the buffers. Encoding: True,
 * or False when an output buffer ran out; decoding: None. */
static PyObject *run_fields(Py_buffer b[14], Fields *f, int kind, int width) {
    const int encoding = kind == FLOAT_ENCODE || kind == LEVELS_ENCODE;
    i64 *cs = b[2].buf, *bs = b[4].buf;
    Enc e = {0};
    Dec d = {0};
    BitsOut w = {0};
    BitsIn r = {0};
    if (encoding) {
        e = enc_from(cs, &b[3]);
        w = (BitsOut){(u64)bs[0], bs[1], bs[2], (i64)b[5].len, b[5].buf};
    } else {
        d = dec_from(cs, &b[3]);
        r = (BitsIn){(u64)bs[0], bs[1], bs[2], (i64)b[5].len, b[5].buf};
    }
    f->vals = b[0].buf;
    f->e = &e;
    f->w = &w;
    f->d = &d;
    f->r = &r;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = fields_any(f, kind, width, b[1].buf, b[1].len / 24);
    Py_END_ALLOW_THREADS
    if (encoding) {
        enc_to(cs, &e);
        bs[0] = (i64)w.acc, bs[1] = w.nb, bs[2] = w.pos;
    } else {
        dec_to(cs, &d);
        bs[0] = (i64)r.acc, bs[1] = r.nb, bs[2] = r.pos;
    }
    kc_release(b, 14);
    if (ok == -2) return past_end_error();
    if (ok < 0) return PyErr_NoMemory();
    if (encoding) return PyBool_FromLong(ok);
    Py_RETURN_NONE;
}

/* A module function that hands its arguments to `call` with its format and direction. */
#define KERNEL_FN(name, call, fmt, kind)                       \
    static PyObject *py_##name(PyObject *self, PyObject *args) { \
        (void)self;                                              \
        return call(args, fmt ":" #name, kind);                  \
    }

/* One float-field call: `fmt` names the writable buffers, `kind` the direction. */
static PyObject *segments_call(PyObject *args, const char *fmt, int kind) {
    /* vals/out segs es/ds rc bw/br raw zp sp em0 em1 em2 mm0 mm1 mm2 */
    Py_buffer b[14];
    int lay[3];
    Models md;
    if (!parse_segments_call(args, fmt, b, lay, kind == FLOAT_ENCODE ? 5 * 8 : 3 * 8, &md))
        return NULL;
    Fields f = {NULL, lay[1], lay[2], 0, NULL, NULL, NULL, NULL, &md};
    return run_fields(b, &f, kind, lay[0]);
}

PyDoc_STRVAR(encode_doc,
             "encode_segments(vals, segs, width, ebits, mbits, es, rc_out, bw, raw_out, zp, sp,"
             " em_counts, em_cum, em_ticks, mm_counts, mm_cum, mm_ticks) -> bool\n\n"
             "Code the float values of segs, the models' arrays passed flat; releases the GIL.");

KERNEL_FN(encode_segments, segments_call, "y*y*iiiw*w*w*w*w*w*w*w*w*w*w*w*", FLOAT_ENCODE)

PyDoc_STRVAR(decode_doc,
             "decode_segments(out, segs, width, ebits, mbits, ds, rc_in, br, raw_in, zp, sp,"
             " em_counts, em_cum, em_ticks, mm_counts, mm_cum, mm_ticks) -> None\n\n"
             "Decode float values into segs, the models' arrays passed flat; releases the GIL.");

KERNEL_FN(decode_segments, segments_call, "w*y*iiiw*y*w*y*w*w*w*w*w*w*w*w*", FLOAT_DECODE)

PyDoc_STRVAR(finish_doc, "encoder_finish(es, out) -> int: flush the range coder; its length.");

/* Five shifts push out the pending bytes and the four of `low`, so the coder writes one byte
 * per renormalising shift plus 5 (its leading 0 among them), and its decoder reads exactly as
 * many: the leading byte it skips (tables.decoder_state), the 4 decoder_init loads, one per
 * shift. A decoder that reads past the end of a block's bytes decodes no encoder's block. */

static PyObject *py_encoder_finish(PyObject *self, PyObject *args) {
    Py_buffer b[2];
    if (!PyArg_ParseTuple(args, "w*w*:encoder_finish", &b[0], &b[1])) return NULL;
    if (!need(&b[0], 5 * 8, "encoder state")) {
        kc_release(b, 2);
        return NULL;
    }
    Enc e = enc_from(b[0].buf, &b[1]);
    for (int k = 0; k < 5; k++) shift_low(&e);
    enc_to(b[0].buf, &e);
    kc_release(b, 2);
    return PyLong_FromLongLong(e.pos);
}

PyDoc_STRVAR(flush_doc, "flush_bits(bw, out) -> int: write the last partial byte; the length.");

static PyObject *py_flush_bits(PyObject *self, PyObject *args) {
    Py_buffer b[2];
    if (!PyArg_ParseTuple(args, "w*w*:flush_bits", &b[0], &b[1])) return NULL;
    if (!need(&b[0], 3 * 8, "bit writer state")) {
        kc_release(b, 2);
        return NULL;
    }
    i64 *bw = b[0].buf;
    uint8_t *out = b[1].buf;
    while (bw[1] > 0) {
        if (bw[2] < (i64)b[1].len) out[bw[2]] = (uint8_t)(bw[0] & 0xFF);
        bw[2]++;
        bw[0] = (i64)((u64)bw[0] >> 8);
        bw[1] -= 8;
    }
    bw[1] = 0;
    kc_release(b, 2);
    return PyLong_FromLongLong(bw[2]);
}

PyDoc_STRVAR(init_doc, "decoder_init(ds, inp): load the first code bytes into a decoder state.");

static PyObject *py_decoder_init(PyObject *self, PyObject *args) {
    Py_buffer b[2];
    if (!PyArg_ParseTuple(args, "w*y*:decoder_init", &b[0], &b[1])) return NULL;
    if (!need(&b[0], 3 * 8, "decoder state")) {
        kc_release(b, 2);
        return NULL;
    }
    i64 *ds = b[0].buf;
    const uint8_t *in = b[1].buf;
    for (int k = 0; k < 4; k++) {
        i64 pos = ds[2]++;
        i64 byte = pos < (i64)b[1].len ? in[pos] : 0;
        ds[0] = ((ds[0] << 8) | byte) & INT64_C(0xFFFFFFFF);
    }
    kc_release(b, 2);
    Py_RETURN_NONE;
}

/* -- Python bindings of the integer models --------------------------------------------------
 * Same shape as the float ones: the models' arrays passed flat. */
static int check_int_call(Py_buffer *vals, Py_buffer *segs, int width) {
    return kc_check_width(width, "integer ") && kc_check_segs(vals, segs, width);
}

static int level_models_from(Models *md, Py_buffer *b) { /* zp sp lm0 lm1 lm2 tm0 tm1 tm2 */
    const Py_ssize_t w = sizeof(i64), tn = 1 << TOP_BITS;
    if (!need(&b[0], ZERO_CONTEXTS * 2 * w, "zero model") ||
        !need(&b[1], SIGN_CONTEXTS * 2 * w, "sign model") ||
        !need(&b[2], EXP_CONTEXTS * EXP_SYMBOLS * w, "length counts") ||
        !need(&b[3], EXP_CONTEXTS * (EXP_SYMBOLS + 1) * w, "length frequencies") ||
        !need(&b[4], EXP_CONTEXTS * 2 * w, "length ticks") ||
        !need(&b[5], LENGTH_CONTEXTS * tn * w, "top-bits counts") ||
        !need(&b[6], LENGTH_CONTEXTS * (tn + 1) * w, "top-bits frequencies") ||
        !need(&b[7], LENGTH_CONTEXTS * 2 * w, "top-bits ticks"))
        return 0;
    md->zp = b[0].buf;
    md->sp = b[1].buf;
    md->em = (Model){b[2].buf, b[3].buf, b[4].buf, EXP_SYMBOLS};
    md->mm = (Model){b[5].buf, b[6].buf, b[7].buf, tn};
    return 1;
}

/* (values, segments, width, centre, coder state, coder bytes, bit state, bit bytes, 8 models) */
static int parse_levels_call(PyObject *args, const char *fmt, Py_buffer b[14], int *width,
                             long long *centre, Py_ssize_t state_bytes, Models *md) {
    if (!PyArg_ParseTuple(args, fmt, &b[0], &b[1], width, centre, &b[2], &b[3], &b[4], &b[5],
                          &b[6], &b[7], &b[8], &b[9], &b[10], &b[11], &b[12], &b[13]))
        return 0;
    if (!check_int_call(&b[0], &b[1], *width) || !need(&b[2], state_bytes, "range coder state") ||
        !need(&b[4], 3 * 8, "raw bit state") || !level_models_from(md, &b[6])) {
        kc_release(b, 14);
        return 0;
    }
    return 1;
}

/* One integer-levels call: `fmt` names the writable buffers, `kind` the direction. */
static PyObject *levels_call(PyObject *args, const char *fmt, int kind) {
    Py_buffer b[14];
    int width;
    long long centre;
    Models md;
    if (!parse_levels_call(args, fmt, b, &width, &centre, kind == LEVELS_ENCODE ? 5 * 8 : 3 * 8,
                           &md))
        return NULL;
    Fields f = {NULL, 0, 0, centre, NULL, NULL, NULL, NULL, &md};
    return run_fields(b, &f, kind, width);
}

PyDoc_STRVAR(encode_levels_doc,
             "encode_levels(vals, segs, width, centre, es, out, bw, raw, zp, sp, lm_counts, lm_cum,"
             " lm_ticks, tm_counts, tm_cum, tm_ticks) -> bool\n\n"
             "Code integers as levels around centre; releases the GIL.");

KERNEL_FN(encode_levels, levels_call, "y*y*iLw*w*w*w*w*w*w*w*w*w*w*w*", LEVELS_ENCODE)

PyDoc_STRVAR(decode_levels_doc,
             "decode_levels(out, segs, width, centre, ds, inp, br, raw, zp, sp, lm_counts, lm_cum,"
             " lm_ticks, tm_counts, tm_cum, tm_ticks) -> None\n\n"
             "Decode integers coded as levels around centre; releases the GIL.");

KERNEL_FN(decode_levels, levels_call, "w*y*iLw*y*w*y*w*w*w*w*w*w*w*w*", LEVELS_DECODE)

/* (values, segments, itemsize, coder state, coder bytes, matches, table, repeat, tree, 3 model
 * arrays) */
static int parse_ints_call(PyObject *args, const char *fmt, Py_buffer b[11], int *width,
                           Py_ssize_t state_bytes, IntModels *md) {
    int itemsize;
    if (!PyArg_ParseTuple(args, fmt, &b[0], &b[1], &itemsize, &b[2], &b[3], &b[4], &b[5], &b[6],
                          &b[7], &b[8], &b[9], &b[10]))
        return 0;
    *width = 8 * itemsize;
    const Py_ssize_t w = sizeof(i64), n = itemsize > 1 ? (itemsize - 1) * 256 : 1;
    if (!check_int_call(&b[0], &b[1], *width) || !need(&b[2], state_bytes, "range coder state") ||
        !need(&b[4], MATCH_CONTEXTS * 2 * w, "match model") ||
        !need(&b[5], ((Py_ssize_t)1 << HASH_BITS) * w, "match table") ||
        !need(&b[6], REPEAT_CONTEXTS * 2 * w, "repeat model") ||
        !need(&b[7], TREE_CONTEXTS * 2 * w, "first-byte tree") ||
        !need(&b[8], n * 256 * w, "byte counts") ||
        !need(&b[9], n * 257 * w, "byte frequencies") || !need(&b[10], n * 2 * w, "byte ticks")) {
        kc_release(b, 11);
        return 0;
    }
    *md = (IntModels){b[4].buf, b[5].buf, b[6].buf, b[7].buf,
                      (Model){b[8].buf, b[9].buf, b[10].buf, 256}, b[0].len / itemsize};
    return 1;
}

/* One repeat-and-match call: encoding True (False when the output ran out), decoding None. */
static PyObject *ints_call(PyObject *args, const char *fmt, int encoding) {
    Py_buffer b[11];
    int width;
    IntModels md;
    if (!parse_ints_call(args, fmt, b, &width, encoding ? 5 * 8 : 3 * 8, &md)) return NULL;
    int ok;
    if (encoding) {
        Enc e = enc_from(b[2].buf, &b[3]);
        Py_BEGIN_ALLOW_THREADS
        ok = encode_ints_any(b[0].buf, width, b[1].buf, b[1].len / 24, &e, &md);
        Py_END_ALLOW_THREADS
        enc_to(b[2].buf, &e);
    } else {
        Dec d = dec_from(b[2].buf, &b[3]);
        Py_BEGIN_ALLOW_THREADS
        ok = decode_ints_any(b[0].buf, width, b[1].buf, b[1].len / 24, &d, &md);
        Py_END_ALLOW_THREADS
        dec_to(b[2].buf, &d);
    }
    kc_release(b, 11);
    if (ok == -2) return past_end_error();
    if (ok < 0) return PyErr_NoMemory();
    if (encoding) return PyBool_FromLong(ok);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(encode_ints_doc,
             "encode_ints(vals, segs, itemsize, es, out, matches, table, repeat, tree, counts, cum,"
             " ticks) -> bool\n\nCode integers with the repeat and match models; releases the"
             " GIL.");

KERNEL_FN(encode_ints, ints_call, "y*y*iw*w*w*w*w*w*w*w*w*", 1)

PyDoc_STRVAR(decode_ints_doc,
             "decode_ints(out, segs, itemsize, ds, inp, matches, table, repeat, tree, counts, cum,"
             " ticks) -> None\n\nDecode integers coded with the repeat and match models; releases"
             " the GIL.");

KERNEL_FN(decode_ints, ints_call, "w*y*iw*y*w*w*w*w*w*w*w*", 0)

static PyMethodDef methods[] = {
    {"encode_segments", py_encode_segments, METH_VARARGS, encode_doc},
    {"decode_segments", py_decode_segments, METH_VARARGS, decode_doc},
    {"encoder_finish", py_encoder_finish, METH_VARARGS, finish_doc},
    {"flush_bits", py_flush_bits, METH_VARARGS, flush_doc},
    {"decoder_init", py_decoder_init, METH_VARARGS, init_doc},
    {"encode_levels", py_encode_levels, METH_VARARGS, encode_levels_doc},
    {"decode_levels", py_decode_levels, METH_VARARGS, decode_levels_doc},
    {"encode_ints", py_encode_ints, METH_VARARGS, encode_ints_doc},
    {"decode_ints", py_decode_ints, METH_VARARGS, decode_ints_doc},
    {NULL, NULL, 0, NULL},
};

/* The constants the Python side checks against its own (kernels.py). */
static int setup(PyObject *m) {
    PyObject *c = Py_BuildValue(
        "{s:i,s:L,s:L,s:i,s:i,s:L,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
        "TOTAL_BITS", TOTAL_BITS, "TOP", (long long)TOP, "PROB_ONE", (long long)PROB_ONE,
        "COUNT_STEP", COUNT_STEP, "MAX_REBUILD", MAX_REBUILD, "COUNT_LIMIT", (long long)COUNT_LIMIT,
        "RESID", RESID, "MANT_BITS", MANT_BITS, "FRAC", FRAC, "ZERO_CONTEXTS", ZERO_CONTEXTS,
        "SIGN_CONTEXTS", SIGN_CONTEXTS, "EXP_CONTEXTS", EXP_CONTEXTS, "MANT_CONTEXTS",
        MANT_CONTEXTS, "CHECK", CHECK, "EXP_SYMBOLS", EXP_SYMBOLS, "LENGTH_CONTEXTS",
        LENGTH_CONTEXTS, "TOP_BITS", TOP_BITS, "REPEAT_CONTEXTS", REPEAT_CONTEXTS,
        "MATCH_CONTEXTS", MATCH_CONTEXTS, "HASH_BITS", HASH_BITS, "MATCH_MIN", MATCH_MIN,
        "TREE_CONTEXTS", TREE_CONTEXTS);
    if (c == NULL || PyModule_AddObject(m, "CONSTANTS", c) < 0) {
        Py_XDECREF(c);
        return -1;
    }
    return PyModule_AddIntConstant(m, "KERNEL_VERSION", KERNEL_VERSION);
}

KC_MODULE(_float_kernels,
          "The float prior's coding kernels: float fields, integer levels and repeats.", setup)
