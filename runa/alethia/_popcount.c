/* The Hamming scan of alethia's index in C: the distance from one code to each of n codes.
 *
 * Why: bookworm's numpy (1.24) has no bitwise_count, and its SWAR popcount in numpy makes
 * five passes over temporaries; one pass with the CPU's popcount instruction is several times
 * faster (docs/bench.md, "Memory index"). Optional: runa/alethia/index.py runs the numpy path
 * when this is not built, and tests check both give the same distances.
 *
 * hamming(codes, query, out): codes is n x w uint64 words (C order), query w words, out n
 * uint16 (writable). Buffers are exported for the call; the scan runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define SCAN_BODY                                                              \
    for (Py_ssize_t i = 0; i < n; i++) {                                       \
        const uint64_t *row = codes + i * w;                                   \
        unsigned d = 0;                                                        \
        for (Py_ssize_t j = 0; j < w; j++)                                     \
            d += (unsigned)__builtin_popcountll(row[j] ^ query[j]);            \
        out[i] = (uint16_t)d;                                                  \
    }

static void
scan_generic(const uint64_t *codes, const uint64_t *query, Py_ssize_t n, Py_ssize_t w,
             uint16_t *out)
{
    SCAN_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same loop compiled for the popcnt instruction, used where the CPU has it. */
__attribute__((target("popcnt"))) static void
scan_popcnt(const uint64_t *codes, const uint64_t *query, Py_ssize_t n, Py_ssize_t w,
            uint16_t *out)
{
    SCAN_BODY
}
#endif

static PyObject *
hamming(PyObject *self, PyObject *args)
{
    Py_buffer codes, query, out;
    if (!PyArg_ParseTuple(args, "y*y*w*", &codes, &query, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t w = query.len / 8;
    if (w <= 0 || query.len % 8) {
        PyErr_SetString(PyExc_ValueError, "the query is not whole uint64 words");
        goto done;
    }
    if (codes.len % (w * 8)) {
        PyErr_SetString(PyExc_ValueError, "the codes are not whole rows of the query's width");
        goto done;
    }
    Py_ssize_t n = codes.len / (w * 8);
    if (out.len != n * (Py_ssize_t)sizeof(uint16_t)) {
        PyErr_SetString(PyExc_ValueError, "out is not one uint16 a row");
        goto done;
    }
    if (w > 1000) {  /* distances must fit a uint16 */
        PyErr_SetString(PyExc_ValueError, "codes wider than 1000 words");
        goto done;
    }
    const uint64_t *c = (const uint64_t *)codes.buf, *q = (const uint64_t *)query.buf;
    uint16_t *o = (uint16_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("popcnt"))
        scan_popcnt(c, q, n, w, o);
    else
#endif
        scan_generic(c, q, n, w, o);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&query);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef popcount_methods[] = {
    {"hamming", hamming, METH_VARARGS,
     "hamming(codes, query, out): out[i] = popcount(codes[i] ^ query), uint16 a row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef popcount_module = {
    PyModuleDef_HEAD_INIT, "_popcount",
    "alethia's Hamming scan (runa/alethia/index.py).", -1, popcount_methods,
};

PyMODINIT_FUNC
PyInit__popcount(void)
{
    return PyModule_Create(&popcount_module);
}
