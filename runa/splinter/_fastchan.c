/* The channel fast path in C: append + wake, and wait + read, each one call from Python.
 *
 * Why: the bus's wake-up latency (bench/bus.py) is dominated, after an idle pause, by the
 * Python of the append/read path and its four ctypes calls (trylock, unlock, futex wake; futex
 * wait), each ~1.5 us with cold caches. This module does exactly what channel.py's pure-Python
 * path does, in the same order and with the same bytes written (docs/protocol.md, "Channels"),
 * and hands every unusual case back to Python: the lock not free at once, a stale channel, a
 * full queue, a dropped or overtaken subscriber, a record that is too large. Python then re-runs
 * its own path, which raises the proper exception or waits for the lock. So this file holds
 * mechanism only; the layout's word indices come from layout.py through the constructor.
 *
 * The segment is reached through its ``words`` memoryview, exported for the duration of each
 * call (never while sleeping), so a closed segment raises ValueError here as it does in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    PyObject *words;       /* the segment's memoryview (u64 words) */
    Py_ssize_t w_state, w_tail, w_head, w_reserve, w_sent, w_received, w_recovered;
    Py_ssize_t w_position; /* reader: its head (queue) or cursor (subscriber); -1 = sender */
    Py_ssize_t w_substate; /* subscriber: its entry's state word; -1 = none */
    Py_ssize_t flags, nflags, flag; /* byte offsets: waiting flags, their count, own flag */
    Py_ssize_t ring, cap, max_record, lock;
    uint64_t state, sub_state, wrap;
    int queue;
} Channel;

/* The segment's bytes for one call; ValueError if the segment was closed. */
static int
seg_get(Channel *self, Py_buffer *view, Py_ssize_t need)
{
    if (PyObject_GetBuffer(self->words, view, PyBUF_WRITABLE) < 0)
        return -1;
    if (view->len < need) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "segment mapping is smaller than the channel");
        return -1;
    }
    return 0;
}

#define W(base, i) (((uint64_t *)(base))[(i)])
#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static Py_ssize_t
channel_end(Channel *self)
{
    return self->ring + self->cap;
}

static int
Channel_init(Channel *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {
        "words", "state", "state_word", "tail_word", "head_word", "reserve_word", "sent_word",
        "received_word", "recovered_word", "flags", "nflags", "ring", "cap", "max_record",
        "lock", "wrap", "queue", "position_word", "flag", "substate_word", "sub_state", NULL};
    PyObject *words;
    unsigned long long state, wrap, sub_state = 0;
    Py_ssize_t position = -1, flag = -1, substate = -1;
    int queue;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OKnnnnnnnnnnnnnKp|nnnK", names, &words, &state, &self->w_state,
            &self->w_tail, &self->w_head, &self->w_reserve, &self->w_sent, &self->w_received,
            &self->w_recovered, &self->flags, &self->nflags, &self->ring, &self->cap,
            &self->max_record, &self->lock, &wrap, &queue, &position, &flag, &substate,
            &sub_state))
        return -1;
    if (self->cap <= 0 || self->ring % 8 || self->cap % 8 || self->lock % 8) {
        PyErr_SetString(PyExc_ValueError, "ring, capacity and lock must be 8-byte aligned");
        return -1;
    }
    Py_XSETREF(self->words, Py_NewRef(words));
    self->state = state;
    self->wrap = wrap;
    self->queue = queue;
    self->w_position = position;
    self->flag = flag;
    self->w_substate = substate;
    self->sub_state = sub_state;
    Py_buffer view;
    if (seg_get(self, &view, channel_end(self)) < 0)
        return -1;
    PyBuffer_Release(&view);
    return 0;
}

static void
Channel_dealloc(Channel *self)
{
    Py_XDECREF(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static long
futex(void *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* append(data: bytes) -> bool. True: appended, published and waiters woken. False: nothing
 * was written (beyond a recovered lock); run the Python path. */
static PyObject *
Channel_append(Channel *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data) || self->w_position >= 0)
        Py_RETURN_FALSE;
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n > self->max_record)
        Py_RETURN_FALSE;
    uint64_t rec = 8 + (((uint64_t)n + 7) & ~(uint64_t)7);
    uint64_t cap = (uint64_t)self->cap;
    Py_buffer view;
    if (seg_get(self, &view, channel_end(self)) < 0)
        return NULL;
    char *base = view.buf;
    pthread_mutex_t *lk = (pthread_mutex_t *)(base + self->lock);
    int rc = pthread_mutex_trylock(lk);
    if (rc == EOWNERDEAD) {
        /* As locks.py's settle: what the dead holder half-wrote is unpublished. */
        pthread_mutex_consistent(lk);
        W(base, self->w_recovered) += 1;
    }
    else if (rc) {
        PyBuffer_Release(&view);
        Py_RETURN_FALSE; /* busy (Python sleeps in pthread_mutex_lock) or an error it names */
    }
    int ok = 0;
    if (W(base, self->w_state) == self->state) {
        uint64_t tail = W(base, self->w_tail);
        uint64_t pos = tail % cap, room = cap - pos;
        uint64_t pad = rec > room ? room : 0, need = pad + rec;
        if (self->queue) {
            ok = need <= cap - (tail - W(base, self->w_head));
        }
        else {
            STORE(&W(base, self->w_reserve), tail + need); /* subscribers: these bytes go */
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            ok = 1;
        }
        if (ok) {
            if (pad) {
                W(base, (self->ring + pos) >> 3) = self->wrap;
                pos = 0;
            }
            char *rp = base + self->ring + pos;
            W(rp, 0) = (uint64_t)n;
            memcpy(rp + 8, PyBytes_AS_STRING(data), (size_t)n);
            STORE(&W(base, self->w_tail), tail + need); /* publish: one store */
            W(base, self->w_sent) += 1;
        }
    }
    pthread_mutex_unlock(lk);
    if (!ok) {
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    /* Like the Python path: the flags are read after the tail store is visible. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    const unsigned char *fl = (const unsigned char *)base + self->flags;
    int waiting = 0;
    for (Py_ssize_t i = 0; i < self->nflags; i++)
        waiting |= fl[i];
    if (waiting && futex(base + ((Py_ssize_t)self->w_tail << 3), FUTEX_WAKE, INT_MAX, NULL) < 0) {
        int err = errno;
        PyBuffer_Release(&view);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyBuffer_Release(&view);
    Py_RETURN_TRUE;
}

/* The next record as bytes, Py_None (nothing), Py_False (Python must look), or NULL. */
static PyObject *
try_read(Channel *self, char *base)
{
    uint64_t cap = (uint64_t)self->cap;
    int sub = self->w_substate >= 0;
    if (W(base, self->w_state) != self->state)
        Py_RETURN_FALSE;
    if (sub && W(base, self->w_substate) != self->sub_state)
        Py_RETURN_FALSE;
    uint64_t cur = W(base, self->w_position);
    for (;;) {
        uint64_t tail = LOAD(&W(base, self->w_tail));
        if (cur == tail)
            Py_RETURN_NONE;
        if (sub && tail - cur > cap)
            Py_RETURN_FALSE;
        uint64_t pos = cur % cap;
        uint64_t n = W(base, (self->ring + pos) >> 3);
        if (n == self->wrap) {
            if (sub && LOAD(&W(base, self->w_reserve)) - cur > cap)
                Py_RETURN_FALSE;
            cur += cap - pos;
            W(base, self->w_position) = cur;
            continue;
        }
        if (n > (uint64_t)self->max_record || n > cap - pos - 8)
            Py_RETURN_FALSE;
        PyObject *data = PyBytes_FromStringAndSize(base + self->ring + pos + 8, (Py_ssize_t)n);
        if (data == NULL)
            return NULL;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (sub && LOAD(&W(base, self->w_reserve)) - cur > cap) {
            Py_DECREF(data); /* the writer may have overwritten what was copied */
            Py_RETURN_FALSE;
        }
        W(base, self->w_position) = cur + 8 + ((n + 7) & ~(uint64_t)7);
        if (self->queue)
            W(base, self->w_received) += 1;
        return data;
    }
}

static double
now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* receive(timeout: float | None) -> bytes | None | False: the next record, waiting up to
 * ``timeout`` seconds in FUTEX_WAIT with the GIL released (None = forever, <= 0 = poll);
 * None on timeout; False when Python must look (and raise). */
static PyObject *
Channel_receive(Channel *self, PyObject *arg)
{
    if (self->w_position < 0)
        Py_RETURN_FALSE;
    int forever = arg == Py_None;
    double timeout = forever ? 0.0 : PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "recv timeout is NaN");
        return NULL;
    }
    double deadline = forever ? 0.0 : now_s() + timeout;
    Py_buffer view;
    for (int first = 1;; first = 0) {
        if (seg_get(self, &view, channel_end(self)) < 0)
            return NULL;
        char *base = view.buf;
        PyObject *r = try_read(self, base);
        if (r != Py_None || (first && !forever && timeout <= 0)) {
            PyBuffer_Release(&view);
            return r;
        }
        Py_DECREF(r);
        volatile unsigned char *flag = (unsigned char *)base + self->flag;
        *flag = 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint64_t tail = LOAD(&W(base, self->w_tail));
        long rc = 0;
        int err = 0;
        if (tail == W(base, self->w_position)) {
            struct timespec ts, *tsp = NULL;
            if (!forever) {
                double left = deadline - now_s();
                if (left <= 0) {
                    *flag = 0;
                    PyBuffer_Release(&view);
                    Py_RETURN_NONE;
                }
                if (left > 86400.0)
                    left = 86400.0; /* a day per wait; the loop goes on waiting */
                ts.tv_sec = (time_t)left;
                ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
                tsp = &ts;
            }
            void *word = base + ((Py_ssize_t)self->w_tail << 3);
            PyBuffer_Release(&view); /* never hold the export while sleeping */
            Py_BEGIN_ALLOW_THREADS
            rc = futex(word, FUTEX_WAIT, (uint32_t)tail, tsp);
            err = errno;
            Py_END_ALLOW_THREADS
            if (seg_get(self, &view, channel_end(self)) < 0)
                return NULL;
            flag = (unsigned char *)view.buf + self->flag;
        }
        *flag = 0;
        PyBuffer_Release(&view);
        if (rc < 0 && err != ETIMEDOUT && err != EAGAIN) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return NULL; /* a signal handler raised: let it through */
            }
            else {
                errno = err;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
        }
    }
}

static PyMethodDef Channel_methods[] = {
    {"append", (PyCFunction)Channel_append, METH_O,
     "append(data) -> bool: append, publish and wake; False = use the Python path."},
    {"receive", (PyCFunction)Channel_receive, METH_O,
     "receive(timeout) -> bytes | None | False: read, waiting with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runa.splinter._fastchan.Channel",
    .tp_basicsize = sizeof(Channel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One channel handle's fast path (see channel.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Channel_init,
    .tp_dealloc = (destructor)Channel_dealloc,
    .tp_methods = Channel_methods,
};

static struct PyModuleDef fastchan_module = {
    PyModuleDef_HEAD_INIT, "_fastchan",
    "The splinter channel fast path in C (optional; channel.py falls back to Python).", -1,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastchan(void)
{
    if (PyType_Ready(&ChannelType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastchan_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Channel", (PyObject *)&ChannelType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
