/* The float prior's delta model: a tensor coded against a reference of the same dtype and shape
 * (a checkpoint against the previous one, a fine-tune against its base).
 *
 * Why: between two checkpoints most weights move by a few hundred ulps, and by about the same
 * amount in absolute terms (Adam normalises its steps), so the ulp distance's bit length is
 * predicted by the base value's exponent: L + e_base is nearly constant along rows and columns.
 * Each value is split into fields, like the float fields:
 *   L    = bit length of |d| (0: unchanged), in the context of its prediction;
 *   sign = of d (ulp transform only), in the context of the base's sign and the neighbours';
 *   top  = (level 2) the TOP2 bits below the leading one;
 *   raw  = the rest, noise, stored as raw bits.
 * where d is, per block, either the ulp distance (both bit patterns mapped to ordered integers,
 * sign-magnitude to monotone unsigned, then the wrapping difference; for integers the wrapping
 * difference of the raw bits) or the XOR of the raw bits (no sign field). Both are bijections
 * given the base, so every bit pattern (NaN payloads, infinities, -0.0, subnormals) comes back.
 *
 * The prediction of q = L + e_base is a rank-1 model: per-row and per-column means of q, stored
 * as side information (so no value's context waits for decoded values).
 * Level 2 (highest): adaptive binary context models over an LZMA-style range coder: the changed
 * flag and L in the context of the prediction and the neighbours, the sign in the context of the
 * base's sign and the neighbours' signs, TOP2 bits below the leading one in the context of L.
 * Level 1 (fast): one symbol per value, S = 2 L + sign, semi-static (a frequency table per
 * predicted L, written in the block) with NSTATES interleaved rANS states; the L - 1 bits below
 * the leading one raw, so decoding is one table lookup and one bit read per value.
 * A block's q uses e_base only if that narrows q's spread (exp_avg_sq's changes, a log ratio,
 * do not scale with the exponent): one flag per block.
 *
 * Level 1 decodes ~CHUNK1 values at a time in three passes (contexts; symbols, by gathers from
 * the tables; values, by gathers of their raw bits at prefix-summed bit positions), each in AVX2
 * where the CPU has it (symbols: every width; contexts and values: 16- and 32-bit values), then
 * feeds the chunk to the block checksum, all while the chunk is in the cache.
 *
 * Block layout (after delta.py's kind byte): u8 kq (q uses e_base) | varint side length | side
 * information per segment | level 1: the present tables, varint length, rANS stream; level 2:
 * varint length, range-coded part | raw bits, packed LSB first | 16-byte checksum of the values.
 *
 * Everything the decoder computes is integer arithmetic (portable bytes). The decoder checks
 * every length, table and count before using it and never reads or writes outside its buffers
 * on garbage input: a bad block raises ValueError. Every block ends with the 128-bit checksum
 * of the decoded values (not of the delta), so a wrong base is caught as well.
 *
 * Bump DELTA_VERSION whenever the bytes change: the loader refuses a stale build. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_kernel_common.h"
#include "_kernel_py.h"

#define DELTA_VERSION 3
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define BIG_ENDIAN_HOST 1 /* the checksum is of little-endian bytes: block_digest swaps them */
#else
#define BIG_ENDIAN_HOST 0
#endif
#define RANS_L (1u << 16)
#define NSTATES 32
#define MAXW 64
#define NSYM_A (MAXW + 1)      /* L in 0..W (estimates) */
#define TOP2 4                 /* level 2: modelled bits below the leading one */
#define NSYM1 (2 * MAXW + 2)   /* level 1: S = 2 L + sign */
#define NTAB1 (MAXW + 1)       /* level 1: a table per predicted L */
#define FRAC1 2                /* fraction bits of the side information */
#define CHUNK1 8192            /* level-1 decoding: values per pass over contexts and symbols */
#define PCTX2 (2 * MAXW + 1)   /* level 2: predicted L in half steps */
#define SIDE_LIMIT (INT64_C(1) << 20)

enum { T_ULP = 0, T_XOR = 1 };

typedef struct {
    int W, E, M, xor;
    u64 mask, sb, emask;
} Fm;

static Fm make_fm(int width, int ebits, int mbits, int transform) {
    Fm f;
    f.W = width, f.E = ebits, f.M = mbits, f.xor = transform == T_XOR;
    f.mask = width == 64 ? ~(u64)0 : (((u64)1 << width) - 1);
    f.sb = (u64)1 << (width - 1);
    f.emask = ebits ? (((u64)1 << ebits) - 1) : 0;
    return f;
}

/* sign-magnitude bits -> monotone unsigned (integers: as they are) */
INLINE u64 ordv(u64 u, const Fm *f) {
    if (!f->E) return u;
    return (u >> (f->W - 1)) ? (u ^ f->mask) : (u ^ f->sb);
}

INLINE u64 unordv(u64 o, const Fm *f) {
    if (!f->E) return o;
    return (o >> (f->W - 1)) ? (o ^ f->sb) : (o ^ f->mask);
}

/* |d| and its sign */
INLINE u64 split(u64 n, u64 b, const Fm *f, int *neg) {
    if (f->xor) {
        *neg = 0;
        return n ^ b;
    }
    u64 d = (ordv(n, f) - ordv(b, f)) & f->mask;
    int s = (int)(d >> (f->W - 1));
    *neg = s;
    return s ? ((0 - d) & f->mask) : d;
}

INLINE u64 join(u64 mag, int neg, u64 b, const Fm *f) {
    if (f->xor) return (mag ^ b) & f->mask;
    u64 d = neg ? ((0 - mag) & f->mask) : (mag & f->mask);
    return unordv((ordv(b, f) + d) & f->mask, f);
}

INLINE int bitlen(u64 v) { return v ? 64 - __builtin_clzll(v) : 0; }

INLINE i64 ebase(u64 b, const Fm *f) { return f->E ? (i64)((b >> f->M) & f->emask) : 0; }


static i64 total_values(const i64 *segs, i64 nsegs) {
    i64 n = 0;
    for (i64 s = 0; s < nsegs; s++) n += segs[3 * s + 1] * segs[3 * s + 2];
    return n;
}

static i64 max_of(const i64 *segs, i64 nsegs, int field) {
    i64 m = 0;
    for (i64 s = 0; s < nsegs; s++)
        if (segs[3 * s + field] > m) m = segs[3 * s + field];
    return m;
}

/* Whether q = L + e_base varies less than L over the block's changed values (an encoder-only
 * choice, recorded in the block: floating point is fine here). */
static int choose_kq(const void *nv, const void *bv, const i64 *segs, i64 nsegs, const Fm *f) {
    if (!f->E) return 0;
    double n = 0, sl = 0, sll = 0, sq = 0, sqq = 0;
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], cnt = segs[3 * g + 1] * segs[3 * g + 2];
        i64 step = cnt > 65536 ? cnt / 65536 : 1; /* a sample is enough */
        for (i64 k = 0; k < cnt; k += step) {
            u64 b = load_v(bv, f->W, off + k);
            int neg;
            int L = bitlen(split(load_v(nv, f->W, off + k), b, f, &neg));
            if (!L) continue;
            double q = (double)(L + ebase(b, f));
            n += 1, sl += L, sll += (double)L * L, sq += q, sqq += q * q;
        }
    }
    if (n < 2) return 1;
    return sqq - sq * sq / n < sll - sl * sl / n;
}

/* -- raw bits: LSB first, packed ------------------------------------------------------------- */
typedef struct {
    u8 *p;
    size_t pos;
    u64 acc;
    int n;
} BitW;

/* v's low n bits (n <= 32) after the bits written so far; whole 32-bit words are stored */
INLINE void bw_put32(BitW *w, u64 v, int n) {
    w->acc |= (v & (((u64)1 << n) - 1)) << w->n;
    w->n += n;
    if (w->n >= 32) {
        u8 *q = w->p + w->pos;
        q[0] = (u8)w->acc, q[1] = (u8)(w->acc >> 8), q[2] = (u8)(w->acc >> 16);
        q[3] = (u8)(w->acc >> 24);
        w->pos += 4;
        w->acc >>= 32;
        w->n -= 32;
    }
}

INLINE void bw_put(BitW *w, u64 v, int n) { /* n <= 64; the caller sized p */
    if (n > 32) {
        bw_put32(w, v, 32);
        v >>= 32;
        n -= 32;
    }
    bw_put32(w, v, n);
}

static void bw_flush(BitW *w) {
    while (w->n > 0) {
        w->p[w->pos++] = (u8)w->acc;
        w->acc >>= 8;
        w->n -= 8;
    }
    w->acc = 0, w->n = 0;
}

/* Reading raw bits by position: value k's bits start where value k - 1's end, so the only serial
 * step between values is one addition (no refill state). */
typedef struct {
    const u8 *p;
    size_t len;
    u64 pos; /* in bits */
    int bad;
} BitR;

INLINE u64 br_get(BitR *r, int k) { /* k <= 64; past the end: zeros, and bad is set */
    u64 v = 0;
    if (r->pos + (u64)k > 8 * (u64)r->len) r->bad = 1;
    if (k <= 56 && (r->pos >> 3) + 8 <= r->len) {
        v = (le64(r->p + (r->pos >> 3)) >> (r->pos & 7)) & (((u64)1 << k) - 1);
    } else {
        for (int got = 0; got < k;) {
            u64 at = r->pos + (u64)got, byte = (at >> 3) < r->len ? r->p[at >> 3] : 0;
            int sh = (int)(at & 7), take = 8 - sh < k - got ? 8 - sh : k - got;
            v |= ((byte >> sh) & (((u64)1 << take) - 1)) << got;
            got += take;
        }
    }
    r->pos += (u64)k;
    return v;
}

/* the bit stream held exactly the bits read (its last byte padded) */
static int br_done(const BitR *r) { return !r->bad && (r->pos + 7) / 8 == (u64)r->len; }

static BitR br_open(const u8 *p, size_t len) {
    BitR r = {p, len, 0, 0};
    return r;
}

/* ======================= side information (both levels) =================================== */
/* Per segment: mode (0: block mean, 1: row means, 2: rank-1: row means + column means) and the
 * fixed-point means of q = L + kq * e_base over the changed values; the prediction of L is
 * R[i] + C[j] - kq * e_base. Stored, so no value's context waits for decoded values. */
typedef struct {
    i64 *R, *C, *cnt_c, *sum_c;
    int32_t *C32; /* C for vector loops (decoding: |C| <= SIDE_LIMIT) */
} Side;

static void side_free(Side *s) {
    free(s->R), free(s->C), free(s->cnt_c), free(s->sum_c), free(s->C32);
}

static int side_alloc(Side *s, i64 rows, i64 cols) {
    s->R = malloc(8 * ((size_t)rows + 1)), s->C = malloc(8 * ((size_t)cols + 1));
    s->cnt_c = malloc(8 * ((size_t)cols + 1)), s->sum_c = malloc(8 * ((size_t)cols + 1));
    s->C32 = malloc(4 * ((size_t)cols + 1));
    return s->R && s->C && s->cnt_c && s->sum_c && s->C32;
}

INLINE i64 round_mean(i64 sum, i64 cnt) { /* floor(sum / cnt + 1/2), cnt > 0 */
    i64 a = 2 * sum + cnt, b = 2 * cnt, q = a / b;
    if ((a % b) != 0 && a < 0) q--;
    return q;
}

/* the predicted L in steps of 2^-step (FRAC1 >= step), rounded, clamped to 0..W << step */
INLINE int pred_at(i64 rfix, i64 cfix, i64 eq, int W, int step) {
    i64 p = rfix + cfix - (eq << FRAC1);
    int sh = FRAC1 - step;
    p = p <= 0 ? 0 : sh ? (p + (1 << (sh - 1))) >> sh : p;
    i64 top = (i64)W << step;
    return (int)(p > top ? top : p);
}

INLINE void plan_side_w(const int W, const void *nv, const void *bv, const Fm *f, int kq, i64 off,
                        i64 rows, i64 cols, Side *s, Buf *side, int *mode_out, u8 *Lc) {
    /* Lc: the segment's bit lengths, kept from the row pass for the column pass */
    int mode = rows >= 8 && cols >= 2 ? 2 : rows >= 2 ? 1 : 0;
    i64 tsum = 0, tcnt = 0;
    for (i64 i = 0; i < rows; i++) {
        i64 rsum = 0, rcnt = 0;
        for (i64 j = 0; j < cols; j++) {
            i64 k = off + i * cols + j;
            u64 b = load_v(bv, W, k);
            int neg, L = bitlen(split(load_v(nv, W, k), b, f, &neg));
            Lc[i * cols + j] = (u8)L;
            if (!L) continue;
            rsum += (i64)L + (kq ? ebase(b, f) : 0), rcnt++;
        }
        s->R[i] = rcnt ? round_mean(rsum << FRAC1, rcnt) : (i ? s->R[i - 1] : 0);
        tsum += rsum, tcnt += rcnt;
    }
    i64 R0 = tcnt ? round_mean(tsum << FRAC1, tcnt) : 0;
    if (mode == 0) s->R[0] = R0;
    if (mode == 2) {
        for (i64 j = 0; j < cols; j++) s->cnt_c[j] = s->sum_c[j] = 0;
        for (i64 i = 0; i < rows; i++)
            for (i64 j = 0; j < cols; j++) {
                i64 k = off + i * cols + j;
                int L = Lc[i * cols + j];
                if (!L) continue;
                u64 b = load_v(bv, W, k);
                s->sum_c[j] += (((i64)L + (kq ? ebase(b, f) : 0)) << FRAC1) - s->R[i];
                s->cnt_c[j]++;
            }
        for (i64 j = 0; j < cols; j++)
            s->C[j] = s->cnt_c[j] ? round_mean(s->sum_c[j], s->cnt_c[j]) : 0;
    } else {
        for (i64 j = 0; j < cols; j++) s->C[j] = 0;
    }
    put_u8(side, (u8)mode);
    i64 prev = 0, nr = mode == 0 ? 1 : rows;
    for (i64 i = 0; i < nr; i++) put_varint(side, zz(s->R[i] - prev)), prev = s->R[i];
    if (mode == 2) {
        prev = 0;
        for (i64 j = 0; j < cols; j++) put_varint(side, zz(s->C[j] - prev)), prev = s->C[j];
    }
    *mode_out = mode;
}

/* plan_side_w for a compile-time width (the loads and stores then need no switch per value) */
static void plan_side(const void *nv, const void *bv, const Fm *f, int kq, i64 off, i64 rows,
                      i64 cols, Side *s, Buf *side, int *mode_out, u8 *Lc) {
    switch (f->W) {
        case 8: plan_side_w(8, nv, bv, f, kq, off, rows, cols, s, side, mode_out, Lc); break;
        case 16: plan_side_w(16, nv, bv, f, kq, off, rows, cols, s, side, mode_out, Lc); break;
        case 32: plan_side_w(32, nv, bv, f, kq, off, rows, cols, s, side, mode_out, Lc); break;
        default: plan_side_w(64, nv, bv, f, kq, off, rows, cols, s, side, mode_out, Lc); break;
    }
}

static int read_side(Rd *r, Side *s, i64 rows, i64 cols) {
    int mode = get_u8(r);
    if (r->bad || mode > 2) return 0;
    i64 prev = 0, nr = mode == 0 ? 1 : rows;
    for (i64 i = 0; i < nr; i++) {
        i64 v = prev + unzz(get_varint(r));
        if (r->bad || v < -SIDE_LIMIT || v > SIDE_LIMIT) return 0;
        s->R[i] = prev = v;
    }
    if (mode == 0)
        for (i64 i = 1; i < rows; i++) s->R[i] = s->R[0];
    prev = 0;
    for (i64 j = 0; j < cols; j++) {
        i64 v = 0;
        if (mode == 2) {
            v = prev + unzz(get_varint(r));
            if (r->bad || v < -SIDE_LIMIT || v > SIDE_LIMIT) return 0;
            prev = v;
        }
        s->C[j] = v, s->C32[j] = (int32_t)v;
    }
    return 1;
}

/* ================================ level 2: adaptive ======================================== */
#define WK2_LC 7 /* work slot of the bit lengths (slot 0: raw bits) */
typedef struct {
    u64 low, csize;
    u32 rng;
    u8 cache;
    Buf *b;
} RcEnc;

typedef struct {
    u32 rng, code;
    const u8 *p;
    size_t len, pos;
} RcDec;

static void rc_shift(RcEnc *e) {
    if ((u32)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        u8 carry = (u8)(e->low >> 32), temp = e->cache;
        do {
            put_u8(e->b, (u8)(temp + carry));
            temp = 0xFF;
        } while (--e->csize != 0);
        e->cache = (u8)(e->low >> 24);
    }
    e->csize++;
    e->low = (e->low & 0x00FFFFFF) << 8;
}

/* p[0], p[1]: P(bit = 0) in 16 bits at two adaptation rates; their mean is used */
INLINE void adapt(u16 *p, int bit) {
    if (!bit) {
        p[0] += (u16)((65536 - p[0]) >> 4);
        p[1] += (u16)((65536 - p[1]) >> 7);
    } else {
        p[0] -= p[0] >> 4;
        p[1] -= p[1] >> 7;
    }
}

INLINE void rc_bit(RcEnc *e, u16 *p, int bit) {
    u32 bound = (e->rng >> 16) * (((u32)p[0] + p[1]) >> 1);
    if (!bit) {
        e->rng = bound;
    } else {
        e->low += bound;
        e->rng -= bound;
    }
    adapt(p, bit);
    while (e->rng < (1u << 24)) {
        e->rng <<= 8;
        rc_shift(e);
    }
}

static void rc_finish(RcEnc *e) {
    for (int i = 0; i < 5; i++) rc_shift(e);
}

INLINE u8 rc_byte(RcDec *d) {
    u8 c = d->pos < d->len ? d->p[d->pos] : 0;
    d->pos++;
    return c;
}

INLINE int rd_bit(RcDec *d, u16 *p) {
    u32 bound = (d->rng >> 16) * (((u32)p[0] + p[1]) >> 1);
    int bit = d->code >= bound;
    if (!bit) {
        d->rng = bound;
    } else {
        d->code -= bound;
        d->rng -= bound;
    }
    adapt(p, bit);
    while (d->rng < (1u << 24)) {
        d->rng <<= 8;
        d->code = (d->code << 8) | rc_byte(d);
    }
    return bit;
}

/* The level-2 model of one block: every table starts at p = 1/2. */
typedef struct {
    u16 (*zero)[2];        /* PCTX2 x 4: predicted L, left zero, above zero */
    u16 (*len)[2];         /* PCTX2 x 3 x 64 tree nodes over L - 1: predicted L, left's L */
    u16 (*sign)[2];        /* 54 */
    u16 (*top)[2];         /* (MAXW + 1) x 16 tree nodes */
    u8 *rowL[2], *rowS[2]; /* this row and the one above: L, sign (0 zero, 1 +, 2 -) */
} Model2;

enum { NZERO2 = PCTX2 * 4, NLEN2 = PCTX2 * 3 * 64, NSIGN2 = 54, NTOP2 = (MAXW + 1) * 16 };

static void model2_free(Model2 *m) {
    free(m->zero), free(m->len), free(m->sign), free(m->top);
    free(m->rowL[0]), free(m->rowL[1]), free(m->rowS[0]), free(m->rowS[1]);
}

static int model2_alloc(Model2 *m, i64 cols) {
    m->zero = malloc(sizeof(*m->zero) * NZERO2), m->len = malloc(sizeof(*m->len) * NLEN2);
    m->sign = malloc(sizeof(*m->sign) * NSIGN2), m->top = malloc(sizeof(*m->top) * NTOP2);
    int rows_ok = 1;
    for (int i = 0; i < 2; i++) {
        m->rowL[i] = malloc((size_t)cols + 1), m->rowS[i] = malloc((size_t)cols + 1);
        rows_ok &= m->rowL[i] && m->rowS[i];
    }
    if (!(m->zero && m->len && m->sign && m->top && rows_ok)) return 0;
    u16 half[2] = {32768, 32768};
    for (int i = 0; i < NZERO2; i++) memcpy(m->zero[i], half, 4);
    for (int i = 0; i < NLEN2; i++) memcpy(m->len[i], half, 4);
    for (int i = 0; i < NSIGN2; i++) memcpy(m->sign[i], half, 4);
    for (int i = 0; i < NTOP2; i++) memcpy(m->top[i], half, 4);
    return 1;
}

/* What both sides compute before a value: its contexts (pc: predicted L in half steps). */
typedef struct {
    int zctx, lctx, sctx;
} Ctx2;

INLINE Ctx2 ctx2(const Model2 *m, int pc, i64 i, i64 j, int sbase) {
    Ctx2 c;
    const u8 *cuL = m->rowL[i & 1], *cuS = m->rowS[i & 1];
    const u8 *upL = m->rowL[(i + 1) & 1], *upS = m->rowS[(i + 1) & 1];
    int leftL = j ? cuL[j - 1] : 0, leftS = j ? cuS[j - 1] : 0;
    int zu = i ? upL[j] == 0 : 1, su = i ? upS[j] : 0, upleftS = i && j ? upS[j - 1] : 0;
    c.zctx = pc * 4 + (leftL == 0) * 2 + zu;
    c.lctx = pc * 3 + (leftL == 0 ? 0 : leftL <= (pc >> 1) ? 1 : 2);
    int r = 0;
    if (leftS && su && upleftS) r = 1 + (((leftS == 2) ^ (su == 2) ^ (upleftS == 2)) & 1);
    c.sctx = ((sbase * 3 + leftS) * 3 + su) * 3 + r;
    return c;
}

static int depth_of(int W) { return W == 64 ? 6 : W == 32 ? 5 : W == 16 ? 4 : 3; }

static int encode2(const void *nv, const void *bv, const i64 *segs, i64 nsegs, const Fm *f,
                   int kq, Buf *out) {
    const int D = depth_of(f->W), W = f->W;
    Model2 m = {0};
    Side s = {0};
    Buf side = {0}, rc = {0};
    i64 n = total_values(segs, nsegs);
    BitW raw = {work(0, (size_t)n * (size_t)(W / 8) + 16), 0, 0, 0};
    u8 *Lc = work(WK2_LC, (size_t)n + 1);
    int ok = raw.p && Lc && model2_alloc(&m, max_of(segs, nsegs, 2)) &&
             side_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2));
    RcEnc e = {0, 1, 0xFFFFFFFFu, 0, &rc};
    for (i64 g = 0; ok && g < nsegs; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        int mode;
        plan_side(nv, bv, f, kq, off, rows, cols, &s, &side, &mode, Lc);
        for (i64 i = 0; i < rows; i++) {
            for (i64 j = 0; j < cols; j++) {
                i64 k = off + i * cols + j;
                u64 b = load_v(bv, W, k);
                int neg, sbase = (int)(b >> (W - 1));
                u64 mag = split(load_v(nv, W, k), b, f, &neg);
                int L = bitlen(mag);
                int pc = pred_at(s.R[i], s.C[j], kq ? ebase(b, f) : 0, W, 1);
                Ctx2 c = ctx2(&m, pc, i, j, sbase);
                rc_bit(&e, m.zero[c.zctx], L == 0);
                int S = 0;
                if (L) {
                    u16 (*lp)[2] = m.len + (size_t)c.lctx * 64;
                    int node = 1, v = L - 1;
                    for (int t = D - 1; t >= 0; t--) {
                        int bit = (v >> t) & 1;
                        rc_bit(&e, lp[node], bit);
                        node = node * 2 + bit;
                    }
                    if (!f->xor) rc_bit(&e, m.sign[c.sctx], neg);
                    S = 1 + neg;
                    int t = L - 1 < TOP2 ? L - 1 : TOP2, rb = L - 1 - t;
                    u16 (*tp)[2] = m.top + (size_t)L * 16;
                    node = 1;
                    for (int q = t - 1; q >= 0; q--) {
                        int bit = (int)((mag >> (rb + q)) & 1);
                        rc_bit(&e, tp[node], bit);
                        node = node * 2 + bit;
                    }
                    if (rb) bw_put(&raw, mag, rb);
                }
                m.rowL[i & 1][j] = (u8)L, m.rowS[i & 1][j] = (u8)S;
            }
        }
    }
    ok = ok && !side.fail;
    if (ok) {
        rc_finish(&e);
        bw_flush(&raw);
        put_u8(out, (u8)kq);
        put_varint(out, side.len);
        put_bytes(out, side.p, side.len);
        put_varint(out, rc.len);
        put_bytes(out, rc.p, rc.len);
        put_bytes(out, raw.p, raw.pos);
        ok = !rc.fail && !out->fail;
    }
    free(rc.p), free(side.p);
    side_free(&s);
    model2_free(&m);
    return ok;
}

/* A block's head (both levels): kq, then the side information, which `side` reads; r is left
 * at what follows. 0 for a bad head. */
static int read_head(Rd *r, Rd *side, int *kq) {
    *kq = get_u8(r);
    u64 side_len = get_varint(r);
    if (r->bad || *kq > 1 || side_len > r->len - r->pos) return 0;
    *side = (Rd){r->p + r->pos, (size_t)side_len, 0, 0};
    r->pos += (size_t)side_len;
    return 1;
}

static const char *decode2(const u8 *blk, size_t len, void *outv, const void *bv, const i64 *segs,
                           i64 nsegs, Fm *f) {
    const int D = depth_of(f->W), W = f->W;
    Rd r = {blk, len, 0, 0}, sr;
    int kq;
    if (!read_head(&r, &sr, &kq)) return "bad block header";
    u64 rc_len = get_varint(&r);
    if (r.bad || rc_len > r.len - r.pos || rc_len < 5) return "bad block header";
    RcDec d = {0xFFFFFFFFu, 0, r.p + r.pos, (size_t)rc_len, 0};
    for (int i = 0; i < 5; i++) d.code = (d.code << 8) | rc_byte(&d);
    BitR raw = br_open(r.p + r.pos + rc_len, r.len - r.pos - (size_t)rc_len);
    Model2 m = {0};
    Side s = {0};
    const char *err = NULL;
    if (!model2_alloc(&m, max_of(segs, nsegs, 2)) ||
        !side_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2))) {
        err = "out of memory";
        goto done;
    }
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        if (!read_side(&sr, &s, rows, cols)) {
            err = "bad side information";
            goto done;
        }
        for (i64 i = 0; i < rows; i++) {
            for (i64 j = 0; j < cols; j++) {
                i64 k = off + i * cols + j;
                u64 b = load_v(bv, W, k), mag = 0;
                int sbase = (int)(b >> (W - 1)), neg = 0, L = 0, S = 0;
                int pc = pred_at(s.R[i], s.C[j], kq ? ebase(b, f) : 0, W, 1);
                Ctx2 c = ctx2(&m, pc, i, j, sbase);
                if (!rd_bit(&d, m.zero[c.zctx])) {
                    u16 (*lp)[2] = m.len + (size_t)c.lctx * 64;
                    int node = 1;
                    for (int t = 0; t < D; t++) node = node * 2 + rd_bit(&d, lp[node]);
                    L = node - (1 << D) + 1; /* 1..2^D, and 2^D = W */
                    if (!f->xor) neg = rd_bit(&d, m.sign[c.sctx]);
                    S = 1 + neg;
                    int t = L - 1 < TOP2 ? L - 1 : TOP2, rb = L - 1 - t;
                    u16 (*tp)[2] = m.top + (size_t)L * 16;
                    node = 1;
                    for (int q = 0; q < t; q++) node = node * 2 + rd_bit(&d, tp[node]);
                    u64 top = (u64)(node - (1 << t));
                    mag = ((((u64)1 << t) | top) << rb) | (rb ? br_get(&raw, rb) : 0);
                }
                store_v(outv, W, k, join(mag, neg, b, f));
                m.rowL[i & 1][j] = (u8)L, m.rowS[i & 1][j] = (u8)S;
            }
        }
    }
    if (sr.pos != sr.len) err = "side information has the wrong length";
    else if (d.pos != d.len) err = "range-coded part has the wrong length";
    else if (!br_done(&raw)) err = "raw bits have the wrong length";
done:
    side_free(&s);
    model2_free(&m);
    return err;
}

/* ================================ level 1: semi-static ===================================== */
enum { WK_LA = 1, WK_TA, WK_RAW, WK_OUT, WK_TAB, WK_LC };

/* -- rANS over several tables: symbol k uses table tab[k] ------------------------------------ */
static size_t rans_encode_tabs(const u8 *syms, const u8 *tabs, size_t n, const u32 *freq,
                               const u32 *cum, int stride, u8 *out, size_t cap) {
    u32 x[NSTATES];
    for (int i = 0; i < NSTATES; i++) x[i] = RANS_L;
    u8 *p = out + cap;
    for (size_t k = n; k-- > 0;) {
        size_t at = (size_t)tabs[k] * (size_t)stride + syms[k];
        u32 fr = freq[at];
        u32 *xs = &x[k & (NSTATES - 1)], v = *xs;
        if ((u64)v >= ((u64)fr << (32 - SCALE_BITS))) {
            p -= 2;
            p[0] = (u8)v;
            p[1] = (u8)(v >> 8);
            v >>= 16;
        }
        *xs = ((v / fr) << SCALE_BITS) + (v % fr) + cum[at];
    }
    for (int i = NSTATES; i-- > 0;) {
        p -= 4;
        p[0] = (u8)x[i], p[1] = (u8)(x[i] >> 8), p[2] = (u8)(x[i] >> 16), p[3] = (u8)(x[i] >> 24);
    }
    return (size_t)(out + cap - p);
}

/* decoding tables, SCALE entries each: entry = freq - 1 | (slot - cum) << 12 | sym << 24. Only
 * present tables are written; a missing one that a value needs is filled with symbol 255, outside
 * every alphabet (so the per-value loops need no check). */
typedef struct {
    u32 *e;
    u8 *empty;
    int ntab;
} Tabs;

static void tabs_free(Tabs *t) { free(t->empty); }

static int tabs_alloc(Tabs *t, int ntab) {
    t->ntab = ntab;
    t->e = work(WK_TAB, sizeof(u32) * SCALE * (size_t)ntab);
    t->empty = malloc((size_t)ntab);
    if (!t->e || !t->empty) return 0;
    memset(t->empty, 1, (size_t)ntab);
    return 1;
}

static void tabs_fill_missing(Tabs *t, int lo, int hi) {
    for (int c = lo; c <= hi && c < t->ntab; c++) {
        if (!t->empty[c]) continue;
        u32 *e = t->e + (size_t)c * SCALE;
        for (u32 j = 0; j < SCALE; j++) e[j] = (SCALE - 1) | (j << 12) | (0xFFu << 24);
        t->empty[c] = 0;
    }
}

/* counts -> tables: `count of present tables | (table index, table)...` */
static void write_tables(Buf *b, const u64 *cnt, int ntab, int nsym, u32 *freq, u32 *cum) {
    int present = 0;
    for (int t = 0; t < ntab; t++) {
        u64 tot = 0;
        for (int s = 0; s < nsym; s++) tot += cnt[t * nsym + s];
        present += tot != 0;
    }
    put_varint(b, (u64)present);
    for (int t = 0; t < ntab; t++) {
        u32 *fr = freq + t * nsym;
        normalize(cnt + t * nsym, nsym, fr);
        u32 acc = 0;
        int any = 0;
        for (int s = 0; s < nsym; s++) cum[t * nsym + s] = acc, acc += fr[s], any |= fr[s] != 0;
        if (!any) continue;
        put_varint(b, (u64)t);
        write_table(b, fr, nsym);
    }
}

static int read_tables(Rd *r, Tabs *t, int nsym) {
    u64 present = get_varint(r);
    if (r->bad || present > (u64)t->ntab) return 0;
    i64 prev = -1;
    for (u64 i = 0; i < present; i++) {
        u64 idx = get_varint(r);
        if (r->bad || (i64)idx <= prev || idx >= (u64)t->ntab) return 0;
        prev = (i64)idx;
        u64 k = get_varint(r);
        if (r->bad || k == 0 || k > (u64)nsym) return 0;
        u32 *e = t->e + (size_t)idx * SCALE, acc = 0;
        i64 ps = -1;
        for (u64 q = 0; q < k; q++) {
            u64 gap = get_varint(r), f1 = get_varint(r);
            if (r->bad || gap >= (u64)nsym || f1 >= SCALE) return 0;
            i64 s = ps + 1 + (i64)gap;
            u32 fr = (u32)f1 + 1;
            if (s >= nsym || acc + fr > SCALE) return 0;
            for (u32 j = 0; j < fr; j++) e[acc + j] = (fr - 1) | (j << 12) | ((u32)s << 24);
            acc += fr;
            ps = s;
        }
        if (acc != SCALE) return 0;
        t->empty[idx] = 0;
    }
    return 1;
}

typedef struct {
    u32 x[NSTATES];
    const u8 *p, *end;
    int bad;
} RansDec;

static int rans_open(RansDec *d, const u8 *in, size_t len) {
    d->bad = 0;
    if (len < 4 * NSTATES) return 0;
    for (int i = 0; i < NSTATES; i++) d->x[i] = rd16(in + 4 * i) | (rd16(in + 4 * i + 2) << 16);
    d->p = in + 4 * NSTATES, d->end = in + len;
    return 1;
}

INLINE int rans_get(RansDec *d, const u32 *tab, size_t k) {
    u32 *xs = &d->x[k & (NSTATES - 1)], v = *xs, e = tab[v & (SCALE - 1)];
    v = ((e & (SCALE - 1)) + 1) * (v >> SCALE_BITS) + ((e >> 12) & (SCALE - 1));
    if (v < RANS_L) {
        if (d->end - d->p >= 2) {
            v = (v << 16) | rd16(d->p);
            d->p += 2;
        } else {
            d->bad = 1;
            v = RANS_L;
        }
    }
    *xs = v;
    return (int)(e >> 24);
}

static int rans_close(const RansDec *d) {
    if (d->bad || d->p != d->end) return 0;
    for (int i = 0; i < NSTATES; i++)
        if (d->x[i] != RANS_L) return 0;
    return 1;
}


/* A segment's symbols, tables and raw bits (level 1 encoding), for a compile-time width;
 * returns the symbols so far. */
INLINE size_t symbols1(const int W, const void *nv, const void *bv, const Fm *f, int kq, i64 off,
                       i64 rows, i64 cols, const Side *s, u8 *A, u8 *TA, u64 *cA, BitW *raw,
                       size_t na) {
    for (i64 i = 0; i < rows; i++)
        for (i64 j = 0; j < cols; j++) {
            i64 k = off + i * cols + j;
            u64 b = load_v(bv, W, k);
            int neg;
            u64 mag = split(load_v(nv, W, k), b, f, &neg);
            int L = bitlen(mag), c = pred_at(s->R[i], s->C[j], kq ? ebase(b, f) : 0, W, 0);
            int S = 2 * L + neg;
            A[na] = (u8)S, TA[na++] = (u8)c, cA[c * NSYM1 + S]++;
            if (L > 1) bw_put(raw, mag, L - 1);
        }
    return na;
}

/* Level 1 codes one symbol per value, S = 2 L + sign, in the table of its predicted L, and the
 * L - 1 bits below the leading one raw: one table lookup and one bit read per value. */
static int encode1(const void *nv, const void *bv, const i64 *segs, i64 nsegs, const Fm *f,
                   int kq, Buf *out) {
    const int W = f->W;
    i64 n = total_values(segs, nsegs);
    Side s = {0};
    Buf side = {0};
    u8 *A = work(WK_LA, (size_t)n + 1), *TA = work(WK_TA, (size_t)n + 1);
    u8 *Lc = work(WK_LC, (size_t)n + 1);
    BitW raw = {work(WK_RAW, (size_t)n * (size_t)(W / 8) + 16), 0, 0, 0};
    u64 *cA = calloc((size_t)NTAB1 * NSYM1, 8);
    u32 *fA = malloc(4 * NTAB1 * NSYM1), *uA = malloc(4 * NTAB1 * NSYM1);
    int ok = A && TA && Lc && raw.p && cA && fA && uA &&
             side_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2));
    size_t na = 0;
    for (i64 g = 0; ok && g < nsegs; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        int mode;
        plan_side(nv, bv, f, kq, off, rows, cols, &s, &side, &mode, Lc);
        switch (W) {
            case 8: na = symbols1(8, nv, bv, f, kq, off, rows, cols, &s, A, TA, cA, &raw, na); break;
            case 16: na = symbols1(16, nv, bv, f, kq, off, rows, cols, &s, A, TA, cA, &raw, na); break;
            case 32: na = symbols1(32, nv, bv, f, kq, off, rows, cols, &s, A, TA, cA, &raw, na); break;
            default: na = symbols1(64, nv, bv, f, kq, off, rows, cols, &s, A, TA, cA, &raw, na); break;
        }
    }
    ok = ok && !side.fail;
    if (ok) {
        bw_flush(&raw);
        put_u8(out, (u8)kq);
        put_varint(out, side.len);
        put_bytes(out, side.p, side.len);
        size_t cap = 2 * na + 4 * NSTATES + 16;
        u8 *tmp = work(WK_OUT, cap);
        ok = tmp != NULL;
        if (ok) {
            write_tables(out, cA, NTAB1, NSYM1, fA, uA);
            size_t len = na ? rans_encode_tabs(A, TA, na, fA, uA, NSYM1, tmp, cap) : 0;
            put_varint(out, len);
            put_bytes(out, tmp + cap - len, len);
            put_bytes(out, raw.p, raw.pos);
            ok = !out->fail;
        }
    }
    free(cA), free(fA), free(uA), free(side.p);
    side_free(&s);
    return ok;
}

/* Pass 1: every value's table (its predicted L) from the side information and the base;
 * branch-free 32-bit arithmetic (|R|, |C| <= SIDE_LIMIT), which the compiler vectorises. */
INLINE void contexts1(const int W, const void *bv, const Fm *f, int kq, i64 off, i64 rows,
                      i64 cols, const Side *s, u8 *ctx, int *cmin, int *cmax) {
    const int M = f->M, ek = kq ? 1 : 0;
    const u32 em = (u32)f->emask;
    const int32_t *C = s->C32;
    int lo = *cmin, hi = *cmax;
    for (i64 i = 0; i < rows; i++) {
        const int32_t R = (int32_t)s->R[i] + (1 << (FRAC1 - 1));
        u8 *c = ctx + i * cols;
        int rlo = W, rhi = 0;
        if (W == 32 || W == 16 || W == 8) {
            for (i64 j = 0; j < cols; j++) {
                u32 b = (u32)load_v(bv, W, off + i * cols + j);
                int32_t eq = (int32_t)((b >> M) & em) * ek;
                int32_t p = R + C[j] - eq * (1 << FRAC1);
                p = (p < 0 ? 0 : p) >> FRAC1; /* as pred_at: rounded, clamped to 0..W */
                p = p > W ? W : p;
                c[j] = (u8)p;
                rlo = p < rlo ? p : rlo;
                rhi = p > rhi ? p : rhi;
            }
        } else {
            for (i64 j = 0; j < cols; j++) {
                u64 b = load_v(bv, W, off + i * cols + j);
                int p = pred_at(s->R[i], s->C[j], kq ? (i64)((b >> M) & f->emask) : 0, W, 0);
                c[j] = (u8)p;
                rlo = p < rlo ? p : rlo;
                rhi = p > rhi ? p : rhi;
            }
        }
        if (cols) lo = rlo < lo ? rlo : lo, hi = rhi > hi ? rhi : hi;
    }
    *cmin = lo, *cmax = hi;
}

/* Pass 2: n symbols, NSTATES at a time: the table lookups of a group are independent, and
 * only the short renormalisation chain (compare, read) is serial through the read position.
 * Symbol k is decoded with table ctx[k] of `tbl` (SCALE entries each). */
#ifdef KC_HAVE_AVX2
/* On AMD CPUs (kc_zen) the vector loops read their table entries and raw bits by eight scalar
 * loads instead of the gather instruction; the same values either way (tests compare them). */

/* tbl[idx] for the eight lanes, by loads */
__attribute__((target("avx2"), always_inline)) static inline __m256i loads_epi32(const u32 *tbl,
                                                                                 __m256i idx) {
    KC_LANES8(idx);
    return _mm256_setr_epi32((int)tbl[KC_LANE(i01, 0)], (int)tbl[KC_LANE(i01, 1)],
                             (int)tbl[KC_LANE(i23, 0)], (int)tbl[KC_LANE(i23, 1)],
                             (int)tbl[KC_LANE(i45, 0)], (int)tbl[KC_LANE(i45, 1)],
                             (int)tbl[KC_LANE(i67, 0)], (int)tbl[KC_LANE(i67, 1)]);
}

INLINE u32 ld32u(const u8 *p) {
    u32 v;
    memcpy(&v, p, 4);
    return v;
}

/* The same arithmetic as the scalar loop, eight states per vector (as _fast_kernels.c). */
__attribute__((target("avx2"), always_inline)) static inline size_t rans_groups_body(
    u32 *xs, const u8 **pp, const u8 *end, const u32 *tbl, const u8 *ctx, u8 *out, size_t n,
    const int LOADS) {
    __m256i x[NSTATES / 8];
    for (int v = 0; v < NSTATES / 8; v++) x[v] = _mm256_loadu_si256((const __m256i *)(xs + 8 * v));
    const __m256i m12 = _mm256_set1_epi32(SCALE - 1), one = _mm256_set1_epi32(1);
    const u8 *p = *pp;
    size_t k = 0;
    for (; k + NSTATES <= n && end - p >= 2 * NSTATES; k += NSTATES) {
        for (int v = 0; v < NSTATES / 8; v++) {
            __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ctx + k + 8 * v)));
            __m256i idx = _mm256_or_si256(_mm256_slli_epi32(c, SCALE_BITS), _mm256_and_si256(x[v], m12));
            __m256i e = LOADS ? loads_epi32(tbl, idx) : _mm256_i32gather_epi32((const int *)tbl, idx, 4);
            __m256i f = _mm256_add_epi32(_mm256_and_si256(e, m12), one);
            __m256i bias = _mm256_and_si256(_mm256_srli_epi32(e, 12), m12);
            x[v] = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(x[v], SCALE_BITS)), bias);
            __m256i sy = _mm256_srli_epi32(e, 24);
            __m256i w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(sy, sy), 0x08);
            __m128i lo = _mm256_castsi256_si128(w16);
            _mm_storel_epi64((__m128i *)(out + k + 8 * v), _mm_packus_epi16(lo, lo));
        }
        for (int v = 0; v < NSTATES / 8; v++) x[v] = kc_renorm8(x[v], &p);
    }
    for (int v = 0; v < NSTATES / 8; v++) _mm256_storeu_si256((__m256i *)(xs + 8 * v), x[v]);
    *pp = p;
    return k;
}

__attribute__((target("avx2"))) static size_t rans_groups_avx2(u32 *xs, const u8 **pp,
                                                                const u8 *end, const u32 *tbl,
                                                                const u8 *ctx, u8 *out, size_t n) {
    return kc_zen ? rans_groups_body(xs, pp, end, tbl, ctx, out, n, 1)
                  : rans_groups_body(xs, pp, end, tbl, ctx, out, n, 0);
}
#endif

/* one symbol on state (k0 + k) mod NSTATES; 0: the stream ran out */
INLINE int rans_one(u32 *x, const u8 **pp, const u8 *end, const u32 *tbl, const u8 *ctx, u8 *out,
                    size_t k0, size_t k) {
    u32 *xs = &x[(k0 + k) & (NSTATES - 1)], v = *xs;
    u32 e = tbl[((size_t)ctx[k] << SCALE_BITS) | (v & (SCALE - 1))];
    out[k] = (u8)(e >> 24);
    v = ((e & (SCALE - 1)) + 1) * (v >> SCALE_BITS) + ((e >> 12) & (SCALE - 1));
    if (v < RANS_L) {
        if (end - *pp < 2) return 0;
        v = (v << 16) | rd16(*pp);
        *pp += 2;
    }
    *xs = v;
    return 1;
}

/* n symbols, the first on state k0 mod NSTATES (chunks of a block continue its states) */
static int rans_symbols(RansDec *d, const u32 *tbl, const u8 *ctx, u8 *out, size_t n, size_t k0) {
    u32 *x = d->x;
    const u8 *p = d->p, *end = d->end;
    size_t k = 0;
    for (; k < n && ((k0 + k) & (NSTATES - 1)); k++) /* up to the next whole group */
        if (!rans_one(x, &p, end, tbl, ctx, out, k0, k)) return 0;
    size_t g = 0;
#ifdef KC_HAVE_AVX2
    if (kc_use_simd) g = rans_groups_avx2(x, &p, end, tbl, ctx + k, out + k, n - k);
#endif
    k += g;
    for (; k + NSTATES <= n && end - p >= 2 * NSTATES; k += NSTATES) {
        for (int i = 0; i < NSTATES; i++) {
            u32 v = x[i], e = tbl[((size_t)ctx[k + i] << SCALE_BITS) | (v & (SCALE - 1))];
            out[k + i] = (u8)(e >> 24);
            x[i] = ((e & (SCALE - 1)) + 1) * (v >> SCALE_BITS) + ((e >> 12) & (SCALE - 1));
        }
        for (int i = 0; i < NSTATES; i++) {
            u32 v = x[i];
            int r = v < RANS_L;
            x[i] = r ? (v << 16) | rd16(p) : v;
            p += 2 * r;
        }
    }
    for (; k < n; k++)
        if (!rans_one(x, &p, end, tbl, ctx, out, k0, k)) return 0;
    d->p = p;
    return 1;
}

/* Pass 3: the values from their symbols, raw bits and base, for a compile-time width W
 * (branch-free: the sign-magnitude mapping by masks). 0: a symbol outside the alphabet. */
INLINE int values1(const int W, void *outv, const void *bv, const Fm *f, i64 off, i64 cnt,
                   const u8 *S, BitR *raw) {
    const u64 mask = W == 64 ? ~(u64)0 : (((u64)1 << W) - 1), sb = (u64)1 << (W - 1);
    const u64 smax = 2 * (u64)W + 1, xor = (u64)f->xor, isf = f->E != 0;
    /* the reader's position in a local: the stores to outv could alias it otherwise */
    const u8 *rp = raw->p;
    const u64 fast_end = raw->len >= 8 ? 8 * (u64)(raw->len - 8) : 0; /* 8 bytes readable */
    u64 pos = raw->pos, bad = 0;
    i64 q = 0;
    if (W <= 32 && raw->len >= 8)
        for (; q < cnt && pos <= fast_end; q++) {
            u64 b = load_v(bv, W, off + q), sym = S[q], neg = sym & 1;
            u64 L = sym > smax ? 0 : sym >> 1; /* a damaged symbol: flagged, no wild shift */
            bad |= (sym > smax) | (neg & xor);
            int rb = L ? (int)L - 1 : 0; /* <= 31, so (pos & 7) + rb < 64 */
            u64 bits = (le64(rp + (pos >> 3)) >> (pos & 7)) & (((u64)1 << rb) - 1);
            pos += (u64)rb;
            u64 mag = (L ? (u64)1 << rb : 0) | bits, nv;
            if (xor) {
                nv = (mag ^ b) & mask;
            } else { /* ordered base + signed distance, back to sign-magnitude */
                u64 ob = isf ? b ^ (((0 - (b >> (W - 1))) & mask) | sb) : b;
                u64 o = (ob + (((mag ^ (0 - neg)) + neg) & mask)) & mask;
                nv = isf ? o ^ ((((o >> (W - 1)) - 1) & mask) | sb) : o;
            }
            store_v(outv, W, off + q, nv);
        }
    raw->pos = pos;
    for (; q < cnt; q++) { /* near the end of the raw bits, and 64-bit values */
        u64 b = load_v(bv, W, off + q), sym = S[q], L = sym > smax ? 0 : sym >> 1, neg = sym & 1;
        bad |= (sym > smax) | (neg & xor);
        int rb = L ? (int)L - 1 : 0;
        u64 mag = (L ? (u64)1 << rb : 0) | br_get(raw, rb), nv;
        if (xor) {
            nv = (mag ^ b) & mask;
        } else {
            u64 ob = isf ? b ^ (((0 - (b >> (W - 1))) & mask) | sb) : b;
            u64 o = (ob + (((mag ^ (0 - neg)) + neg) & mask)) & mask;
            nv = isf ? o ^ ((((o >> (W - 1)) - 1) & mask) | sb) : o;
        }
        store_v(outv, W, off + q, nv);
    }
    return !bad;
}

#ifdef KC_HAVE_AVX2
/* Pass 3 for 16- and 32-bit values, eight at a time, the same values as values1: a lane's raw
 * bits start at the block's position plus the exclusive prefix sum of the lanes' bit counts, and
 * a gather reads them. 16-bit values sit in the top half of 32-bit lanes, so one wrapping 32-bit
 * addition serves both widths. It stops where a gather could read past the raw bits (values1
 * does the rest); returns the values done, advances raw->pos and sets *bad for a symbol outside
 * the alphabet. */
__attribute__((target("avx2"), always_inline)) static inline i64
values1_avx2_body(const int W, const int xor, const int isf, const int LOADS, void *outv,
                  const void *bv, i64 off, i64 cnt, const u8 *S, BitR *raw, int *bad) {
    const int sh = 32 - W;
    const __m256i smax = _mm256_set1_epi32(2 * W + 1), one = _mm256_set1_epi32(1);
    const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi32(-1);
    const __m256i seven = _mm256_set1_epi32(7), sb = _mm256_set1_epi32(INT32_MIN);
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const u8 *rp = raw->p;
    const u64 len = raw->len;
    u64 pos = raw->pos;
    __m256i badv = zero;
    i64 q = 0;
    for (; q + 8 <= cnt; q += 8) {
        __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(S + q)));
        __m256i inval = _mm256_cmpgt_epi32(s, smax), neg = _mm256_and_si256(s, one);
        __m256i L = _mm256_andnot_si256(inval, _mm256_srli_epi32(s, 1));
        __m256i nz = _mm256_cmpgt_epi32(L, zero);
        __m256i rb = _mm256_add_epi32(L, nz); /* L - 1, or 0 */
        __m256i x = _mm256_add_epi32(rb, _mm256_slli_si256(rb, 4));
        x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));
        __m256i top = _mm256_shuffle_epi32(x, 0xFF);
        x = _mm256_add_epi32(x, _mm256_permute2x128_si256(top, top, 0x08));
        u64 total = (u32)_mm256_extract_epi32(x, 7);
        if (((pos + total) >> 3) + 8 > len) break; /* every lane's 8 bytes lie in the bits */
        __m256i at = _mm256_add_epi32(_mm256_sub_epi32(x, rb), _mm256_set1_epi32((int)(pos & 7)));
        __m256i idx = _mm256_srli_epi32(at, 3), sft = _mm256_and_si256(at, seven);
        const u8 *base = rp + (pos >> 3);
        __m256i bits;
        if (W == 16 && LOADS) {
            KC_LANES8(idx);
            bits = _mm256_setr_epi32(
                (int)ld32u(base + KC_LANE(i01, 0)), (int)ld32u(base + KC_LANE(i01, 1)),
                (int)ld32u(base + KC_LANE(i23, 0)), (int)ld32u(base + KC_LANE(i23, 1)),
                (int)ld32u(base + KC_LANE(i45, 0)), (int)ld32u(base + KC_LANE(i45, 1)),
                (int)ld32u(base + KC_LANE(i67, 0)), (int)ld32u(base + KC_LANE(i67, 1)));
            bits = _mm256_srlv_epi32(bits, sft);
        } else if (W == 16) {
            bits = _mm256_srlv_epi32(_mm256_i32gather_epi32((const int *)base, idx, 1), sft);
        } else {
            __m256i g0, g1;
            if (LOADS) {
                KC_LANES8(idx);
                g0 = _mm256_setr_epi64x(
                    (long long)le64(base + KC_LANE(i01, 0)), (long long)le64(base + KC_LANE(i01, 1)),
                    (long long)le64(base + KC_LANE(i23, 0)), (long long)le64(base + KC_LANE(i23, 1)));
                g1 = _mm256_setr_epi64x(
                    (long long)le64(base + KC_LANE(i45, 0)), (long long)le64(base + KC_LANE(i45, 1)),
                    (long long)le64(base + KC_LANE(i67, 0)), (long long)le64(base + KC_LANE(i67, 1)));
            } else {
                g0 = _mm256_i32gather_epi64((const long long *)base,
                                            _mm256_castsi256_si128(idx), 1);
                g1 = _mm256_i32gather_epi64((const long long *)base,
                                            _mm256_extracti128_si256(idx, 1), 1);
            }
            g0 = _mm256_srlv_epi64(g0, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(sft)));
            g1 = _mm256_srlv_epi64(g1, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(sft, 1)));
            g0 = _mm256_permutevar8x32_epi32(g0, even);
            g1 = _mm256_permutevar8x32_epi32(g1, even);
            bits = _mm256_permute2x128_si256(g0, g1, 0x20);
        }
        __m256i lead = _mm256_sllv_epi32(one, rb);
        __m256i mag = _mm256_or_si256(_mm256_and_si256(bits, _mm256_sub_epi32(lead, one)),
                                      _mm256_and_si256(lead, nz));
        __m256i b = W == 16 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const u16 *)bv + off + q)))
                            : _mm256_loadu_si256((const __m256i *)((const u32 *)bv + off + q));
        __m256i nv;
        badv = _mm256_or_si256(badv, inval);
        if (xor) {
            badv = _mm256_or_si256(badv, neg);
            nv = _mm256_xor_si256(mag, b);
        } else { /* ordered base + signed distance, back to sign-magnitude (as values1) */
            __m256i nm = _mm256_sub_epi32(zero, neg), ob = _mm256_sll_epi32(b, _mm_cvtsi32_si128(sh));
            __m256i d = _mm256_sub_epi32(_mm256_xor_si256(_mm256_sll_epi32(mag, _mm_cvtsi32_si128(sh)), nm), nm);
            if (isf) ob = _mm256_xor_si256(ob, _mm256_or_si256(_mm256_srai_epi32(ob, 31), sb));
            __m256i o = _mm256_add_epi32(ob, d);
            if (isf)
                o = _mm256_xor_si256(o, _mm256_or_si256(_mm256_xor_si256(_mm256_srai_epi32(o, 31), ones), sb));
            nv = _mm256_srl_epi32(o, _mm_cvtsi32_si128(sh));
        }
        if (W == 16) {
            __m256i p16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(nv, nv), 0x08);
            _mm_storeu_si128((__m128i *)((u16 *)outv + off + q), _mm256_castsi256_si128(p16));
        } else {
            _mm256_storeu_si256((__m256i *)((u32 *)outv + off + q), nv);
        }
        pos += total;
    }
    raw->pos = pos;
    *bad |= !_mm256_testz_si256(badv, badv);
    return q;
}

/* values1_avx2_body for constant width, transform and loads: no branch on them per group */
#define VALUES1(W, X, F)                                                                           \
    (kc_zen ? values1_avx2_body(W, X, F, 1, outv, bv, off, cnt, S, raw, bad)                       \
            : values1_avx2_body(W, X, F, 0, outv, bv, off, cnt, S, raw, bad))
__attribute__((target("avx2"))) static i64 values1_avx2(const int W, void *outv, const void *bv,
                                                        const Fm *f, i64 off, i64 cnt,
                                                        const u8 *S, BitR *raw, int *bad) {
    const int isf = f->E != 0;
    if (W == 16) {
        if (f->xor) return VALUES1(16, 1, 0);
        if (isf) return VALUES1(16, 0, 1);
        return VALUES1(16, 0, 0);
    }
    if (f->xor) return VALUES1(32, 1, 0);
    if (isf) return VALUES1(32, 0, 1);
    return VALUES1(32, 0, 0);
}
#undef VALUES1

/* Pass 1 compiled for AVX2 (eight contexts per instruction instead of four, and min/max in one
 * instruction each): the same arithmetic as contexts1. */
__attribute__((target("avx2"))) static void contexts1_avx2(const int W, const void *bv,
                                                           const Fm *f, int kq, i64 off,
                                                           i64 rows, i64 cols, const Side *s,
                                                           u8 *ctx, int *cmin, int *cmax) {
    if (W == 16) contexts1(16, bv, f, kq, off, rows, cols, s, ctx, cmin, cmax);
    else contexts1(32, bv, f, kq, off, rows, cols, s, ctx, cmin, cmax);
}
#endif

/* digest: the checksum of the values decoded, computed chunk by chunk while they are in the
 * cache (the chunks are the segments' values in order) */
static const char *decode1(const u8 *blk, size_t len, void *outv, const void *bv, const i64 *segs,
                           i64 nsegs, Fm *f, int sum, u8 digest[DIGEST]) {
    const int W = f->W;
    i64 n = total_values(segs, nsegs);
    Rd r = {blk, len, 0, 0}, sr;
    int kq;
    if (!read_head(&r, &sr, &kq)) return "bad block header";
    const char *err = NULL;
    Side s = {0};
    Tabs ta = {0};
    u8 *ctx = work(WK_TA, (size_t)n + 1), *S = work(WK_LA, (size_t)n + 1);
    if (!ctx || !S || !tabs_alloc(&ta, NTAB1) ||
        !side_alloc(&s, max_of(segs, nsegs, 1), max_of(segs, nsegs, 2))) {
        err = "out of memory";
        goto done;
    }
    RansDec d;
    u64 slen;
    if (!read_tables(&r, &ta, NSYM1) || (slen = get_varint(&r), r.bad) ||
        slen > r.len - r.pos || (n && !rans_open(&d, r.p + r.pos, (size_t)slen)) ||
        (!n && slen)) {
        err = "damaged symbol stream";
        goto done;
    }
    r.pos += (size_t)slen;
    /* rows of about CHUNK1 values at a time: contexts, symbols, values, while the chunk's
     * base values, contexts and symbols are still in the cache */
    BitR raw = br_open(r.p + r.pos, r.len - r.pos);
    size_t k0 = 0;
    BlockSum h;
    sum_start(&h, sum);
    for (i64 g = 0; g < nsegs && !err; g++) {
        i64 off = segs[3 * g], rows = segs[3 * g + 1], cols = segs[3 * g + 2];
        if (!read_side(&sr, &s, rows, cols)) {
            err = "bad side information";
            goto done;
        }
        /* chunks: whole rows, or pieces of a row longer than CHUNK1 */
        i64 step = cols >= CHUNK1 ? 1 : CHUNK1 / (cols ? cols : 1);
        const int split = cols > CHUNK1;
        i64 wide = split ? CHUNK1 : cols, pieces = wide ? (cols + wide - 1) / wide : 0;
        i64 chunks = split ? rows * pieces : (rows + step - 1) / step;
        for (i64 t = 0; t < chunks && !err; t++) {
            i64 i0 = split ? t / pieces : t * step, j0 = split ? (t % pieces) * wide : 0;
            i64 nr = split ? 1 : (rows - i0 < step ? rows - i0 : step);
            i64 nc = cols - j0 < wide ? cols - j0 : wide;
            i64 o = off + i0 * cols + j0, cnt = nr * nc;
            int cmin = NTAB1, cmax = 0, ok = 1;
            Side sub = s;
            sub.R = s.R + i0, sub.C = s.C + j0, sub.C32 = s.C32 + j0;
#ifdef KC_HAVE_AVX2
            if (kc_use_simd && (W == 16 || W == 32))
                contexts1_avx2(W, bv, f, kq, o, nr, nc, &sub, ctx, &cmin, &cmax);
            else
#endif
            switch (W) {
                case 8: contexts1(8, bv, f, kq, o, nr, nc, &sub, ctx, &cmin, &cmax); break;
                case 16: contexts1(16, bv, f, kq, o, nr, nc, &sub, ctx, &cmin, &cmax); break;
                case 32: contexts1(32, bv, f, kq, o, nr, nc, &sub, ctx, &cmin, &cmax); break;
                default: contexts1(64, bv, f, kq, o, nr, nc, &sub, ctx, &cmin, &cmax); break;
            }
            tabs_fill_missing(&ta, cmin, cmax);
            if (!rans_symbols(&d, ta.e, ctx, S, (size_t)cnt, k0)) {
                err = "damaged symbol stream";
                break;
            }
            k0 += (size_t)cnt;
            i64 done = 0;
            int vbad = 0;
#ifdef KC_HAVE_AVX2
            if (kc_use_simd && (W == 16 || W == 32))
                done = values1_avx2(W, outv, bv, f, o, cnt, S, &raw, &vbad);
#endif
            const u8 *Sr = S + done;
            o += done, cnt -= done;
            switch (W) {
                case 8: ok = values1(8, outv, bv, f, o, cnt, Sr, &raw); break;
                case 16: ok = values1(16, outv, bv, f, o, cnt, Sr, &raw); break;
                case 32: ok = values1(32, outv, bv, f, o, cnt, Sr, &raw); break;
                default: ok = values1(64, outv, bv, f, o, cnt, Sr, &raw); break;
            }
            if (!ok || vbad) err = "symbol outside the alphabet";
            sum_bytes(&h, (const u8 *)outv + (size_t)(o - done) * (size_t)(W / 8),
                       (size_t)(cnt + done) * (size_t)(W / 8));
        }
    }
    if (err) goto done;
    sum_final(&h, digest);
    if (sr.pos != sr.len) err = "side information has the wrong length";
    else if (n && !rans_close(&d)) err = "damaged symbol stream";
    if (!err && !br_done(&raw)) err = "raw bits have the wrong length";
done:
    side_free(&s);
    tabs_free(&ta);
    return err;
}

/* ============================ choice of the transform ====================================== */
/* Estimated bits (1/65536) of a block as ulp distance, as XOR, and of the values alone (order-0
 * over the exponent, plus sign and mantissa bits), over every 4th value of long segments: the
 * caller codes the smallest (an encoder-only choice; the block records it). */
static void estimate(const void *nv, const void *bv, const i64 *segs, i64 nsegs, int width,
                     int ebits, int mbits, u64 cost[3]) {
    Fm fu = make_fm(width, ebits, mbits, T_ULP), fx = make_fm(width, ebits, mbits, T_XOR);
    u32 hu[NSYM_A] = {0}, hx[NSYM_A] = {0};
    u32 *he = calloc((size_t)(ebits ? (1 << ebits) : 256) + 1, 4);
    u64 bu = 0, bx = 0, ba = 0;
    for (i64 g = 0; g < nsegs; g++) {
        i64 off = segs[3 * g], cnt = segs[3 * g + 1] * segs[3 * g + 2];
        i64 step = cnt >= 4096 ? 4 : 1; /* a sample ranks the three codings as well */
        for (i64 k = off; k < off + cnt; k += step) {
            u64 nvv = load_v(nv, width, k), b = load_v(bv, width, k);
            int neg;
            int L = bitlen(split(nvv, b, &fu, &neg));
            hu[L]++, bu += L ? (u64)L : 0; /* L - 1 bits and a sign */
            L = bitlen(split(nvv, b, &fx, &neg));
            hx[L]++, bx += L ? (u64)L - 1 : 0;
            if (!he) continue;
            if (ebits) {
                u64 mag = nvv & ~fu.sb;
                he[mag ? (int)((nvv >> mbits) & fu.emask) + 1 : 0]++;
                ba += mag ? (u64)mbits + 1 : 0;
            } else {
                he[nvv >> (width - 8) & 255]++;
                ba += (u64)width - 8;
            }
        }
    }
    cost[0] = entropy_cost(hu, NSYM_A) + bu * 65536;
    cost[1] = entropy_cost(hx, NSYM_A) + bx * 65536;
    cost[2] = he ? entropy_cost(he, ebits ? (1 << ebits) + 1 : 256) + ba * 65536 : UINT64_MAX;
    free(he);
}

/* -- Python bindings ------------------------------------------------------------------------- */
static int check_call(Py_buffer *vals, Py_buffer *base, Py_buffer *segs, int width, int ebits,
                      int mbits) {
    if (!kc_check_width(width, "")) return 0;
    if (ebits != 0 && (ebits < 1 || ebits > 11 || mbits < 0 || ebits + mbits + 1 != width))
        return kc_bad_layout(ebits, mbits);
    if (base && base->len != vals->len) {
        PyErr_SetString(PyExc_ValueError, "the base and the values differ in size");
        return 0;
    }
    return kc_check_segs(vals, segs, width);
}

PyDoc_STRVAR(encode_doc,
             "encode(new, base, segs, width, ebits, mbits, level, transform) -> bytes\n\n"
             "One delta block of the values the (offset, rows, cols) int64 segments name, coded "
             "against `base` (transform 0: ulp distance, 1: XOR; ebits = 0 for integers) at "
             "level 1 (semi-static, rANS) or 2 (adaptive), then the 16-byte checksum of `new` "
             "(XXH3-128 since DELTA_VERSION 3).");

static PyObject *py_encode(PyObject *self, PyObject *args) {
    Py_buffer nv, bv, segs;
    int width, ebits, mbits, level, transform;
    if (!PyArg_ParseTuple(args, "y*y*y*iiiii:encode", &nv, &bv, &segs, &width, &ebits, &mbits,
                          &level, &transform))
        return NULL;
    PyObject *res = NULL;
    if ((level != 1 && level != 2) || (transform != T_ULP && transform != T_XOR)) {
        PyErr_SetString(PyExc_ValueError, "level must be 1 or 2, transform 0 or 1");
    } else if (check_call(&nv, &bv, &segs, width, ebits, mbits)) {
        i64 nsegs = segs.len / 24;
        const i64 *sg = segs.buf;
        Buf out = {0};
        int ok;
        Py_BEGIN_ALLOW_THREADS
        Fm f = make_fm(width, ebits, mbits, transform);
        buf_reserve(&out, (size_t)total_values(sg, nsegs) * (size_t)(width / 8) / 2 + 4096);
        int kq = choose_kq(nv.buf, bv.buf, sg, nsegs, &f);
        ok = level == 2 ? encode2(nv.buf, bv.buf, sg, nsegs, &f, kq, &out)
                        : encode1(nv.buf, bv.buf, sg, nsegs, &f, kq, &out);
        ok = ok && kc_seal(&out, nv.buf, sg, nsegs, width, SUM_XXH3);
        Py_END_ALLOW_THREADS
        res = kc_block_bytes(&out, ok);
    }
    PyBuffer_Release(&nv);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&segs);
    return res;
}

PyDoc_STRVAR(decode_doc,
             "decode(block, out, base, segs, width, ebits, mbits, level, transform, xxh3=1) -> "
             "None\n\n"
             "Decode one delta block into `out` and check the values against its checksum "
             "(xxh3: XXH3-128, blocks of DELTA_VERSION 3; 0: MurmurHash3_x64_128, version 2); "
             "ValueError names what is wrong with a damaged block (CHECKSUM_MISMATCH: the values "
             "decoded are not the ones coded, e.g. another base).");

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer blk, out, bv, segs;
    int width, ebits, mbits, level, transform, xxh3 = 1;
    if (!PyArg_ParseTuple(args, "y*w*y*y*iiiii|p:decode", &blk, &out, &bv, &segs, &width, &ebits,
                          &mbits, &level, &transform, &xxh3))
        return NULL;
    const int sum = xxh3 ? SUM_XXH3 : SUM_MURMUR;
    const char *err = NULL;
    int called = 0;
    if ((level != 1 && level != 2) || (transform != T_ULP && transform != T_XOR))
        PyErr_SetString(PyExc_ValueError, "level must be 1 or 2, transform 0 or 1");
    else
        called = check_call(&out, &bv, &segs, width, ebits, mbits);
    if (called) {
        i64 nsegs = segs.len / 24;
        const i64 *sg = segs.buf;
        const u8 *b = blk.buf;
        size_t len = (size_t)blk.len;
        Py_BEGIN_ALLOW_THREADS
        if (len <= DIGEST) {
            err = "block is too short";
        } else {
            len -= DIGEST;
            Fm f = make_fm(width, ebits, mbits, transform);
            u8 digest[DIGEST];
            err = level == 2 ? decode2(b, len, out.buf, bv.buf, sg, nsegs, &f)
                             : decode1(b, len, out.buf, bv.buf, sg, nsegs, &f, sum, digest);
            if (!err) {
                if (level == 2 || BIG_ENDIAN_HOST)
                    block_digest(out.buf, sg, nsegs, width, sum, digest);
                if (memcmp(digest, b + len, DIGEST) != 0) err = CHECKSUM_MISMATCH;
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&blk);
    PyBuffer_Release(&out);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&segs);
    return called ? kc_decoded(err) : NULL;
}

PyDoc_STRVAR(estimate_doc,
             "estimate(new, base, segs, width, ebits, mbits) -> (ulp, xor, alone)\n\n"
             "Estimated bits of the block as ulp distance, as XOR, and of `new` alone.");

static PyObject *py_estimate(PyObject *self, PyObject *args) {
    Py_buffer b[3]; /* new base segs */
    int width, ebits, mbits;
    if (!PyArg_ParseTuple(args, "y*y*y*iii:estimate", &b[0], &b[1], &b[2], &width, &ebits, &mbits))
        return NULL;
    PyObject *res = NULL;
    if (check_call(&b[0], &b[1], &b[2], width, ebits, mbits)) {
        u64 cost[3];
        Py_BEGIN_ALLOW_THREADS
        estimate(b[0].buf, b[1].buf, b[2].buf, b[2].len / 24, width, ebits, mbits, cost);
        Py_END_ALLOW_THREADS
        res = Py_BuildValue("(KKK)", (unsigned long long)(cost[0] >> 16),
                            (unsigned long long)(cost[1] >> 16),
                            (unsigned long long)(cost[2] >> 16));
    }
    kc_release(b, 3);
    return res;
}

PyDoc_STRVAR(checksum_doc, "checksum(vals, segs, width, xxh3=0) -> bytes\n\n"
             "The 16-byte checksum of the values the segments name: MurmurHash3_x64_128 (a "
             "level-1 stream's level-2 small parts; delta blocks of DELTA_VERSION 2), or with "
             "xxh3 XXH3-128 (delta blocks of version 3).");

static PyObject *py_checksum(PyObject *self, PyObject *args) {
    Py_buffer b[2]; /* vals segs */
    int width, xxh3 = 0;
    if (!PyArg_ParseTuple(args, "y*y*i|p:checksum", &b[0], &b[1], &width, &xxh3)) return NULL;
    PyObject *res = NULL;
    if (check_call(&b[0], NULL, &b[1], width, 0, 0)) {
        u8 digest[DIGEST];
        Py_BEGIN_ALLOW_THREADS
        block_digest(b[0].buf, b[1].buf, b[1].len / 24, width, xxh3 ? SUM_XXH3 : SUM_MURMUR,
                     digest);
        Py_END_ALLOW_THREADS
        res = PyBytes_FromStringAndSize((const char *)digest, DIGEST);
    }
    kc_release(b, 2);
    return res;
}

/* ================================ CRC-32 of a block ========================================
 * zlib's CRC-32 (reflected polynomial 0xEDB88320), the one a stream header lists per block, for
 * the container's check of the blocks a decoder does not check itself (delta blocks): zlib's
 * table-driven loop runs at ~2.4 GB/s, as long as a level-1 delta block takes to decode at a
 * quarter of its size. With PCLMULQDQ (x86-64 since 2010) 64 bytes are folded at a time
 * ("Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction", Intel 2009; the
 * constants and steps of Chromium's zlib crc32_simd.c), the tail byte by byte. Same values as
 * zlib.crc32 for every input (tests/plugins/lmgc_float/test_delta_kernel.py). */
static u32 crc_table[256];
static int crc_use_clmul = 0, crc_use_vclmul = 0;

static void crc_init(void) {
    for (u32 n = 0; n < 256; n++) {
        u32 c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    crc_use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    crc_use_vclmul = crc_use_clmul && __builtin_cpu_supports("avx512f") &&
                     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq");
#endif
}

/* crc: the running CRC before its final inversion (~the CRC so far) */
static u32 crc_bytes(u32 crc, const u8 *p, size_t n) {
    while (n--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* n >= 64, a multiple of 16; crc as crc_bytes takes and returns it */
__attribute__((target("pclmul,sse4.1"))) static u32 crc_clmul(u32 crc, const u8 *p, size_t n) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8;
    x1 = _mm_loadu_si128((const __m128i *)(p + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(p + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(p + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(p + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    x0 = k1k2;
    p += 64, n -= 64;
    while (n >= 64) { /* four lanes folded 512 bits ahead */
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), _mm_loadu_si128((const __m128i *)(p + 0x00)));
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), _mm_loadu_si128((const __m128i *)(p + 0x10)));
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), _mm_loadu_si128((const __m128i *)(p + 0x20)));
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), _mm_loadu_si128((const __m128i *)(p + 0x30)));
        p += 64, n -= 64;
    }
    x0 = k3k4; /* the four lanes into one, 128 bits ahead each */
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), x4), x5);
    while (n >= 16) {
        x2 = _mm_loadu_si128((const __m128i *)p);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), x2), x5);
        p += 16, n -= 16;
    }
    /* 128 -> 64 bits, then Barrett reduction to 32 */
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x0 = k5k0;
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, x3), x0, 0x00), x2);
    x0 = poly;
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, x3), x0, 0x10);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, x3), x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (u32)_mm_extract_epi32(x1, 1);
}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
/* The same four times wider with VPCLMULQDQ (AVX-512): four 512-bit accumulators folded 2,048
 * bits ahead (constants x^2080 and x^2016 mod P, bit-reflected and shifted as in crc_clmul's),
 * ~2.5x crc_clmul's speed. The accumulators are then the message's equivalent (the same
 * remainder), so they go through crc_clmul as 256 bytes of data followed by the tail.
 * n >= 512, a multiple of 16. */
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1"))) static u32 crc_vclmul(
    u32 crc, const u8 *p, size_t n) {
    const __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x(0x01322d1430, 0x011542778a));
    __m512i z0 = _mm512_loadu_si512((const void *)p), z1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i z2 = _mm512_loadu_si512((const void *)(p + 128));
    __m512i z3 = _mm512_loadu_si512((const void *)(p + 192));
    z0 = _mm512_xor_si512(z0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256, n -= 256;
#define FOLD(z, off)                                                                          \
    z = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z, k, 0x00),                      \
                                  _mm512_clmulepi64_epi128(z, k, 0x11),                      \
                                  _mm512_loadu_si512((const void *)(p + (off))), 0x96)
    while (n >= 256) {
        FOLD(z0, 0);
        FOLD(z1, 64);
        FOLD(z2, 128);
        FOLD(z3, 192);
        p += 256, n -= 256;
    }
#undef FOLD
    u8 buf[512] __attribute__((aligned(64)));
    _mm512_store_si512((void *)buf, z0);
    _mm512_store_si512((void *)(buf + 64), z1);
    _mm512_store_si512((void *)(buf + 128), z2);
    _mm512_store_si512((void *)(buf + 192), z3);
    memcpy(buf + 256, p, n);
    return crc_clmul(0, buf, 256 + n);
}
#endif

/* zlib.crc32(p[:n], crc) */
static u32 crc32_of(u32 crc, const u8 *p, size_t n) {
    u32 c = ~crc;
#if defined(__GNUC__) && defined(__x86_64__)
    if (crc_use_vclmul && n >= 512) {
        size_t m = n & ~(size_t)15;
        c = crc_vclmul(c, p, m);
        p += m, n -= m;
    } else if (crc_use_clmul && n >= 64) {
        size_t m = n & ~(size_t)15;
        c = crc_clmul(c, p, m);
        p += m, n -= m;
    }
#endif
    return ~crc_bytes(c, p, n);
}

PyDoc_STRVAR(crc32_doc, "crc32(data, value=0) -> int\n\n"
             "zlib.crc32(data, value), faster where the CPU has PCLMULQDQ.");

static PyObject *py_crc32(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned int value = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32", &b, &value)) return NULL;
    u32 c;
    Py_BEGIN_ALLOW_THREADS
    c = crc32_of((u32)value, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

PyDoc_STRVAR(zen_doc,
             "zen(on: bool | None = None) -> bool\n\n"
             "Whether the AVX2 loops read table entries and raw bits by scalar loads instead of "
             "gathers (slower on AMD CPUs): on by default on AMD CPUs with AVX2, effective with "
             "simd() on. Set it with `on` (the CPU must have AVX2). Every path gives the same "
             "values.");

static PyMethodDef methods[] = {
    KC_SIMD_METHOD,
    {"zen", kc_py_zen, METH_VARARGS, zen_doc},
    {"crc32", py_crc32, METH_VARARGS, crc32_doc},
    {"encode", py_encode, METH_VARARGS, encode_doc},
    {"decode", py_decode, METH_VARARGS, decode_doc},
    {"estimate", py_estimate, METH_VARARGS, estimate_doc},
    {"checksum", py_checksum, METH_VARARGS, checksum_doc},
    {NULL, NULL, 0, NULL},
};

/* The module's state and constants. */
static int setup(PyObject *m) {
    if (kc_module_setup(m) < 0) return -1;
    crc_init();
    return PyModule_AddIntConstant(m, "DELTA_VERSION", DELTA_VERSION);
}

KC_MODULE(_delta_kernels,
          "The float prior's delta model: a tensor coded against a reference of the same shape.",
          setup)
