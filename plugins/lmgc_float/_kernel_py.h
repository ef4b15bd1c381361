/* Argument checks shared by the Python bindings of the float prior's kernels (_float_kernels.c,
 * _delta_kernels.c).
 *
 * Why: formats and segments come from our own code, but a bad call must not write out of bounds;
 * one copy of the checks keeps the kernels' errors alike. Include after <Python.h> and
 * _kernel_common.h. */
#ifndef LMGC_KERNEL_PY_H
#define LMGC_KERNEL_PY_H

/* Release the n buffers a call holds. */
KC_FN void kc_release(Py_buffer *bufs, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&bufs[i]);
}

/* The values' width is 8, 16, 32 or 64 bits; `what` ("float ", "integer ", "") names them. */
KC_FN int kc_check_width(int width, const char *what) {
    if (width != 8 && width != 16 && width != 32 && width != 64) {
        PyErr_Format(PyExc_ValueError, "unsupported %swidth %d", what, width);
        return 0;
    }
    return 1;
}

/* The error of a float layout a kernel has no loops for: 0. */
KC_FN int kc_bad_layout(int ebits, int mbits) {
    PyErr_Format(PyExc_ValueError, "bad float layout: %d exponent, %d mantissa bits", ebits, mbits);
    return 0;
}

/* Every segment is an int64 triple (offset, rows, cols) inside the values (items of width
 * bits), with rows and cols below 2**40 (no endless walk over empty rows). */
KC_FN int kc_check_segs(Py_buffer *vals, Py_buffer *segs, int width) {
    if (segs->len % (3 * (Py_ssize_t)sizeof(i64)) != 0) {
        PyErr_SetString(PyExc_ValueError, "segments must be int64 triples");
        return 0;
    }
    i64 items = vals->len / (width / 8), nsegs = segs->len / (3 * (Py_ssize_t)sizeof(i64));
    const i64 *sg = segs->buf;
    for (i64 s = 0; s < nsegs; s++) {
        i64 off = sg[3 * s], rows = sg[3 * s + 1], cols = sg[3 * s + 2];
        if (off < 0 || rows < 0 || cols < 0 || off > items ||
            (cols > 0 && rows > (items - off) / cols) || rows > (INT64_C(1) << 40) ||
            cols > (INT64_C(1) << 40)) {
            PyErr_SetString(PyExc_ValueError, "a segment lies outside the values");
            return 0;
        }
    }
    return 1;
}

/* What a checksummed kernel module holds besides its own constants: the work-buffer key, the
 * AVX2 choice, DIGEST and CHECKSUM_MISMATCH. 0, or -1 with a Python error set. */
KC_FN int kc_module_setup(PyObject *m) {
    kc_init_simd();
    if (kc_init() != 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyModule_AddIntConstant(m, "DIGEST", DIGEST) < 0 ||
        PyModule_AddStringConstant(m, "CHECKSUM_MISMATCH", CHECKSUM_MISMATCH) < 0)
        return -1;
    return 0;
}

/* The extension module `name` (its PyInit_ function) over the file's `methods` table; `setup`
 * adds what the module holds besides its functions (0, or -1 with a Python error set). */
#define KC_MODULE(name, doc, setup)                                                            \
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, #name, doc, -1, methods,          \
                                        NULL, NULL, NULL, NULL};                               \
    PyMODINIT_FUNC PyInit_##name(void) {                                                       \
        PyObject *m = PyModule_Create(&module);                                                \
        if (m != NULL && setup(m) < 0) Py_CLEAR(m);                                            \
        return m;                                                                              \
    }

/* Append the checksum (`kind`: SUM_MURMUR, SUM_XXH3) of the values the segments name to a coded
 * block (GIL released): 1, or 0 when out of memory. */
KC_FN int kc_seal(Buf *out, const void *vals, const i64 *sg, i64 nsegs, int width, int kind) {
    u8 digest[DIGEST];
    block_digest(vals, sg, nsegs, width, kind, digest);
    put_bytes(out, digest, DIGEST);
    return !out->fail;
}

/* The coded block as bytes (MemoryError when !ok); frees it. */
KC_FN PyObject *kc_block_bytes(Buf *out, int ok) {
    PyObject *res = ok ? PyBytes_FromStringAndSize((const char *)out->p, (Py_ssize_t)out->len)
                       : PyErr_NoMemory();
    free(out->p);
    return res;
}

/* A decode's outcome: None, or the error it names (MemoryError, else ValueError). */
KC_FN PyObject *kc_decoded(const char *err) {
    if (!err) Py_RETURN_NONE;
    if (strcmp(err, "out of memory") == 0) return PyErr_NoMemory();
    PyErr_SetString(PyExc_ValueError, err);
    return NULL;
}

/* A switch's method, `name(on: bool | None = None) -> bool` (`format`: "|O:name"): with `on`,
 * *flag = on and `supported`, then `after` (what depends on the flag; NULL for nothing); returns
 * the flag. */
KC_FN PyObject *kc_switch(PyObject *args, const char *format, int *flag, int supported,
                          void (*after)(void)) {
    PyObject *on = Py_None;
    if (!PyArg_ParseTuple(args, format, &on)) return NULL;
    if (on != Py_None) {
        int want = PyObject_IsTrue(on);
        if (want < 0) return NULL;
        *flag = want && supported;
        if (after) after();
    }
    return PyBool_FromLong(*flag);
}

#ifdef KC_HAVE_AVX2
/* after simd() or zen() changed */
KC_FN void kc_switched(void) {
    xh_use_avx2 = kc_use_simd; /* the block checksum's AVX2 loop too */
#ifdef KC_ON_SWITCH
    KC_ON_SWITCH(); /* the kernel's own choices that depend on them */
#endif
}
#endif

/* simd(on: bool | None = None) -> bool, for a kernel with an AVX2 decoding path. */
KC_FN PyObject *kc_py_simd(PyObject *self, PyObject *args) {
#ifdef KC_HAVE_AVX2
    return kc_switch(args, "|O:simd", &kc_use_simd, __builtin_cpu_supports("avx2"), kc_switched);
#else
    static int none = 0;
    return kc_switch(args, "|O:simd", &none, 0, NULL);
#endif
}

/* zen(on: bool | None = None) -> bool (kc_zen), for a kernel whose AVX2 loops read by loads on
 * AMD CPUs (its own docstring: what the switch changes there) */
KC_FN PyObject *kc_py_zen(PyObject *self, PyObject *args) {
#ifdef KC_HAVE_AVX2
    return kc_switch(args, "|O:zen", &kc_zen, __builtin_cpu_supports("avx2"), kc_switched);
#else
    static int none = 0;
    return kc_switch(args, "|O:zen", &none, 0, NULL);
#endif
}

/* kc_py_simd's entry in a methods table */
#define KC_SIMD_METHOD                                                                             \
    {"simd", kc_py_simd, METH_VARARGS,                                                          \
     "simd(on: bool | None = None) -> bool\n\nWhether level-1 decoding uses the AVX2 path (set " \
     "it with `on`; the CPU must have AVX2). Both paths give the same values."}

#endif
