/* The InfluxDB adapter's compiled fast paths: point placement and line protocol encoding
 * (benchmarks/compiled_paths.py measures each against its Python code).
 *
 * Every function here is a fast path of a Python function that stays the reference
 * (tsmeter/adapters/influxdb/v1.py, .../placement.py, .../lineprotocol.py). A fast path
 * takes only the cases it can decide without doubt and otherwise stops and returns the
 * index where it stopped; the Python code handles that item (raising the error, or
 * taking the slow route) and calls it again. So both give the same rows, bytes and
 * errors; tests/unit/test_speedups.py compares them on random and hostile input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *empty_str;

/* The arguments of series_spans and span_bounds, ``(list, span > 0)``: 0, or -1 with an
 * error set. */
static int
span_args(PyObject *const *args, Py_ssize_t nargs, const char *name, long long *span)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(list, int)", name);
        return -1;
    }
    *span = PyLong_AsLongLong(args[1]);
    if (*span == -1 && PyErr_Occurred())
        return -1;
    if (*span <= 0) {
        PyErr_Format(PyExc_ValueError, "%s: span must be positive", name);
        return -1;
    }
    return 0;
}

/* A RecordRow's time (item 6) and time // span, floored as Python's //: 0, or -1 with an
 * error set. */
static int
row_span(PyObject *row, long long span, const char *name, long long *ts, long long *q)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 7 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(row, 6))) {
        PyErr_Format(PyExc_TypeError, "%s: rows must be RecordRows", name);
        return -1;
    }
    *ts = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 6));
    if (*ts == -1 && PyErr_Occurred())
        return -1;
    *q = *ts / span;
    if (*ts % span != 0 && *ts < 0)
        *q -= 1;
    return 0;
}

/* series_spans(rows, span) -> set
 *
 * The set of (metric key, org, time // span) of the rows (items 1, 4 and 6). Rows of one
 * series and span mostly follow each other, so the last few triples are remembered (by
 * identity of the strings) and a repeat costs no tuple. */
static PyObject *
series_spans(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long span;
    if (span_args(args, nargs, "series_spans", &span) < 0)
        return NULL;
    PyObject *rows = args[0];
    PyObject *out = PySet_New(NULL);
    if (out == NULL)
        return NULL;
    enum { SEEN = 8 };
    PyObject *seen_metric[SEEN] = {NULL}, *seen_org[SEEN] = {NULL};
    long long seen_span[SEEN] = {0};
    int next = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        long long ts, q;
        if (row_span(row, span, "series_spans", &ts, &q) < 0)
            goto error;
        PyObject *metric = PyTuple_GET_ITEM(row, 1), *org = PyTuple_GET_ITEM(row, 4);
        /* a str subclass may run code when hashed (and free what the cache points at) */
        int plain = PyUnicode_CheckExact(metric) && (org == Py_None || PyUnicode_CheckExact(org));
        int hit = 0;
        for (int k = 0; k < SEEN; k++)
            if (seen_metric[k] == metric && seen_org[k] == org && seen_span[k] == q) {
                hit = 1;
                break;
            }
        if (hit)
            continue;
        PyObject *number = PyLong_FromLongLong(q);
        if (number == NULL)
            goto error;
        PyObject *triple = PyTuple_Pack(3, metric, org, number);
        Py_DECREF(number);
        if (triple == NULL)
            goto error;
        int failed = PySet_Add(out, triple);
        Py_DECREF(triple);
        if (failed)
            goto error;
        if (!plain) {
            memset(seen_metric, 0, sizeof seen_metric);
            continue;
        }
        /* borrowed: the rows keep these strings alive (no code ran that could drop them) */
        seen_metric[next] = metric;
        seen_org[next] = org;
        seen_span[next] = q;
        next = (next + 1) % SEEN;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* span_bounds(rows, span) -> dict | None
 * {time // span: (smallest time, largest time)} of rows (RecordRows: time at index 6), or
 * None for rows over more than SPANS_MAX spans (the Python code takes those). */
enum { SPANS_MAX = 256 };

static PyObject *
span_bounds(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long span;
    if (span_args(args, nargs, "span_bounds", &span) < 0)
        return NULL;
    PyObject *rows = args[0];
    long long qs[SPANS_MAX], lo[SPANS_MAX], hi[SPANS_MAX];
    int count = 0, last = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        long long ts, q;
        if (row_span(PyList_GET_ITEM(rows, i), span, "span_bounds", &ts, &q) < 0)
            return NULL;
        if (last < 0 || qs[last] != q) {
            last = -1;
            for (int k = 0; k < count; k++)
                if (qs[k] == q) {
                    last = k;
                    break;
                }
            if (last < 0) {
                if (count == SPANS_MAX)
                    Py_RETURN_NONE;
                last = count++;
                qs[last] = q;
                lo[last] = hi[last] = ts;
                continue;
            }
        }
        if (ts < lo[last])
            lo[last] = ts;
        if (ts > hi[last])
            hi[last] = ts;
    }
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int k = 0; k < count; k++) {
        PyObject *key = PyLong_FromLongLong(qs[k]);
        PyObject *value = Py_BuildValue("(LL)", lo[k], hi[k]);
        int failed = key == NULL || value == NULL || PyDict_SetItem(out, key, value) < 0;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* An exact tuple of plain values (or of such tuples) cannot be part of a cycle: CPython
 * takes it off the collector's lists on its first collection; this does it at once. */
static void
untrack_plain(PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))
            return;
    }
    if (PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
}

/* Whether two rows (or a row and a stand-in) are of one series: items 1 to 4 equal.
 * Returns 1 or 0, or -1 when C cannot tell without running Python code (an item that is
 * neither an exact str nor None, e.g. a str subclass with its own __eq__). */
static int
same_series(PyObject *a, PyObject *b)
{
    if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) < 5)
        return -1;
    /* every item plain first: the caller then hashes b's items, which must not run code */
    for (Py_ssize_t k = 1; k <= 4; k++) {
        PyObject *x = PyTuple_GET_ITEM(a, k), *y = PyTuple_GET_ITEM(b, k);
        if ((x != Py_None && !PyUnicode_CheckExact(x)) || (y != Py_None && !PyUnicode_CheckExact(y)))
            return -1;
    }
    for (Py_ssize_t k = 1; k <= 4; k++) {
        PyObject *x = PyTuple_GET_ITEM(a, k), *y = PyTuple_GET_ITEM(b, k);
        if (x == y)
            continue;
        if (x == Py_None || y == Py_None || PyUnicode_GET_LENGTH(x) != PyUnicode_GET_LENGTH(y) ||
            PyUnicode_Compare(x, y) != 0)
            return 0;
    }
    return 1;
}

/* place_fast(rows, start, first, more, times, overflow) -> int
 *
 * For rows[start:] whose exact time is free in their series, marks the slot taken (in
 * ``first``, time -> row, when no point has that time yet; else as a (series, "", time)
 * tuple in ``more``) and appends the time and overflow 0; stops at the first row whose
 * time is taken, or that C cannot compare, (the Python code places that one) and returns
 * its index. */
static PyObject *
place_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "place_fast takes 6 arguments");
        return NULL;
    }
    PyObject *rows = args[0], *first = args[2], *more = args[3], *times = args[4],
             *overflow = args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(rows) || !PyDict_CheckExact(first) || !PySet_CheckExact(more) ||
        !PyList_CheckExact(times) || !PyList_CheckExact(overflow)) {
        PyErr_SetString(PyExc_TypeError, "place_fast: wrong argument types");
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 7) {
            PyErr_SetString(PyExc_TypeError, "place_fast: rows must be RecordRows");
            goto error;
        }
        PyObject *ts = PyTuple_GET_ITEM(row, 6);
        if (!PyLong_CheckExact(ts))
            break; /* the Python code decides */
        PyObject *holder = PyDict_GetItemWithError(first, ts); /* borrowed */
        if (holder == NULL) {
            if (PyErr_Occurred() || PyDict_SetItem(first, ts, row) < 0)
                goto error;
        }
        else {
            Py_INCREF(holder);
            int same = same_series(holder, row);
            Py_DECREF(holder);
            if (same != 0)
                break; /* taken (or not for C to say): the Python code places this row */
            /* a second series at this time: its slot is a tuple in ``more`` */
            PyObject *key = PyTuple_GetSlice(row, 1, 5);
            if (key == NULL)
                goto error;
            untrack_plain(key);
            PyObject *slot = PyTuple_Pack(3, key, empty_str, ts);
            Py_DECREF(key);
            if (slot == NULL)
                goto error;
            untrack_plain(slot);
            /* add and see whether it was there: one hash of the slot instead of two */
            Py_ssize_t size = PySet_GET_SIZE(more);
            int failed = PySet_Add(more, slot);
            Py_DECREF(slot);
            if (failed)
                goto error;
            if (PySet_GET_SIZE(more) == size)
                break; /* taken: the Python code moves this row */
        }
        if (PyList_Append(times, ts) || PyList_Append(overflow, zero))
            goto error;
    }
    Py_DECREF(zero);
    return PyLong_FromSsize_t(i);
error:
    Py_DECREF(zero);
    return NULL;
}

/* A growing byte buffer. */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

/* ``s`` with ``\`` and ``"`` escaped (a string field value without its quotes) */
static int
buf_put_escaped(Buf *b, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL)
        return -1;
    if (buf_reserve(b, 2 * n) < 0)
        return -1;
    char *o = b->data + b->len;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (s[k] == '\\' || s[k] == '"')
            *o++ = '\\';
        *o++ = s[k];
    }
    b->len = o - b->data;
    return 0;
}

static int
buf_put_str(Buf *b, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : buf_put(b, s, n);
}

/* the decimal digits of ``v`` */
static inline int
buf_put_ll(Buf *b, long long v)
{
    char digits[24], *end = digits + sizeof digits, *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return buf_put(b, p, end - p);
}

/* str(value) of an int, as Python writes it */
static int
buf_put_int(Buf *b, PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (!overflow && !(v == -1 && PyErr_Occurred()))
            return buf_put_ll(b, v);
        PyErr_Clear();
    }
    PyObject *text = PyObject_Str(value);
    if (text == NULL)
        return -1;
    int failed = buf_put_str(b, text);
    Py_DECREF(text);
    return failed;
}

#define PUT_LITERAL(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* encode_usage(rows, times, overflow, prefixes, slow) -> bytes
 *
 * The lines UsageEncoder.encode writes (``times`` and ``overflow`` may be None: the record
 * times and no overflow tag). ``prefixes`` maps (metric, subject type, subject id,
 * org, overflow) to the escaped series prefix; ``slow(row, overflow)`` makes a missing one. */
static PyObject *
encode_usage(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "encode_usage takes 5 arguments");
        return NULL;
    }
    PyObject *rows = args[0], *times = args[1], *overflow = args[2], *prefixes = args[3],
             *slow = args[4];
    if (!PyList_CheckExact(rows) || !(times == Py_None || PyList_CheckExact(times)) ||
        !(overflow == Py_None || PyList_CheckExact(overflow)) || !PyDict_CheckExact(prefixes)) {
        PyErr_SetString(PyExc_TypeError, "encode_usage: wrong argument types");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if ((times != Py_None && PyList_GET_SIZE(times) != n) ||
        (overflow != Py_None && PyList_GET_SIZE(overflow) != n)) {
        PyErr_SetString(PyExc_ValueError, "encode_usage: rows, times and overflow differ in length");
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    Buf b = {NULL, 0, 0};
    if (buf_reserve(&b, n * 160 + 16) < 0)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject *c = overflow == Py_None ? zero : PyList_GET_ITEM(overflow, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 9) {
            PyErr_SetString(PyExc_TypeError, "encode_usage: rows must be RecordRows");
            goto error;
        }
        PyObject *key = PyTuple_Pack(5, PyTuple_GET_ITEM(row, 1), PyTuple_GET_ITEM(row, 2),
                                     PyTuple_GET_ITEM(row, 3), PyTuple_GET_ITEM(row, 4), c);
        if (key == NULL)
            goto error;
        PyObject *prefix = PyDict_GetItemWithError(prefixes, key);
        Py_DECREF(key);
        int failed;
        if (prefix != NULL && PyUnicode_Check(prefix))
            failed = buf_put_str(&b, prefix);
        else {
            if (PyErr_Occurred())
                goto error;
            PyObject *made = PyObject_CallFunctionObjArgs(slow, row, c, NULL);
            if (made == NULL)
                goto error;
            failed = PyUnicode_Check(made) ? buf_put_str(&b, made) : -1;
            if (failed && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "encode_usage: a prefix must be a str");
            Py_DECREF(made);
        }
        if (failed)
            goto error;
        PyObject *units = PyTuple_GET_ITEM(row, 5);
        if (!PyLong_CheckExact(units)) {
            PyErr_Format(PyExc_TypeError, "encode: a record's units must be an int, got %R", units);
            goto error;
        }
        if (PUT_LITERAL(&b, " units=") || buf_put_int(&b, units) || PUT_LITERAL(&b, "i,rid=\""))
            goto error;
        PyObject *rid = PyTuple_GET_ITEM(row, 0);
        if (!PyUnicode_Check(rid)) {
            PyErr_SetString(PyExc_TypeError, "encode_usage: a record id must be a str");
            goto error;
        }
        if (buf_put_escaped(&b, rid) || PUT_LITERAL(&b, "\",tsn=") ||
            buf_put_int(&b, PyTuple_GET_ITEM(row, 6)) || PUT_LITERAL(&b, "i"))
            goto error;
        PyObject *metadata = PyTuple_GET_ITEM(row, 7), *source = PyTuple_GET_ITEM(row, 8);
        if (metadata != Py_None) {
            PyObject *text = PyObject_Str(metadata);
            if (text == NULL)
                goto error;
            failed = PUT_LITERAL(&b, ",metadata=\"") || buf_put_escaped(&b, text) || PUT_LITERAL(&b, "\"");
            Py_DECREF(text);
            if (failed)
                goto error;
        }
        if (source != Py_None) {
            PyObject *text = PyObject_Str(source);
            if (text == NULL)
                goto error;
            failed = PUT_LITERAL(&b, ",source=\"") || buf_put_escaped(&b, text) || PUT_LITERAL(&b, "\"");
            Py_DECREF(text);
            if (failed)
                goto error;
        }
        if (PUT_LITERAL(&b, " ") || buf_put_int(&b, times == Py_None ? PyTuple_GET_ITEM(row, 6) : PyList_GET_ITEM(times, i)) || PUT_LITERAL(&b, "\n"))
            goto error;
    }
    PyObject *result = PyBytes_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    Py_DECREF(zero);
    return result;
error:
    PyMem_Free(b.data);
    Py_DECREF(zero);
    return NULL;
}

static PyMethodDef methods[] = {
    {"series_spans", (PyCFunction)(void (*)(void))series_spans, METH_FASTCALL,
     "The (metric, org, time // span) triples of rows."},
    {"span_bounds", (PyCFunction)(void (*)(void))span_bounds, METH_FASTCALL,
     "The smallest and largest time of rows per time // span (None past 256 spans)."},
    {"place_fast", (PyCFunction)(void (*)(void))place_fast, METH_FASTCALL,
     "Point times for rows whose exact time is free; returns where it stopped."},
    {"encode_usage", (PyCFunction)(void (*)(void))encode_usage, METH_FASTCALL,
     "Line protocol for usage rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tsmeter.adapters.influxdb._speedups",
    "The InfluxDB adapter's compiled fast paths (the Python code is the reference).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text)                                                                          \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                          \
        return NULL;
    INTERN(empty_str, "");
#undef INTERN
    return PyModule_Create(&module);
}
