/* The compiled fast path of the intake: validation of plain records (rows_fast).
 *
 * It is a fast path of Intake.rows in intake.py beside it, which stays the reference: it
 * takes only the records it can decide without doubt (names already found valid by the
 * Python checkers, no metadata, int quantities whose units fit 64 bits and float ones whose
 * shortest repr has at most the metric's places (converted to units as to_units does), UTC
 * datetimes, one spelling per field, no unknown key) and otherwise stops and returns the
 * index where it stopped; the Python loop handles that record (raising the error, or
 * taking the slow route) and calls it again. So both give the same rows and errors;
 * tests/unit/test_intake_paths.py and tests/unit/test_fuzz_intake.py compare them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <limits.h>
#include <math.h>

/* tsmeter.domain.quantities: floats below this magnitude hold every integer exactly; the
 * largest scale (10 ** MAX_PRECISION) */
#define EXACT 9007199254740992.0
#define MAX_SCALE 1000000000000LL

static PyObject *k_orgId, *k_org_id, *k_metricKey, *k_metric_key, *k_subjectType,
    *k_subject_type, *k_subjectId, *k_subject_id, *k_id, *k_quantity, *k_timestamp,
    *k_metadata, *k_source;

/* dict.get(key) with None for missing: a borrowed reference or NULL (no error set unless
 * the lookup itself failed; the caller checks PyErr_Occurred only where it matters). */
static inline PyObject *
get(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    return v == Py_None ? NULL : v;
}

static inline PyObject *
get2(PyObject *d, PyObject *camel, PyObject *snake)
{
    PyObject *v = get(d, camel);
    return v != NULL ? v : get(d, snake);
}

/* 1 when ``v`` is an exact str already found valid (a member of ``valid``). */
static inline int
known_name(PyObject *v, PyObject *valid)
{
    if (v == NULL || !PyUnicode_CheckExact(v))
        return 0;
    int found = PySet_Contains(valid, v);
    if (found < 0) {
        PyErr_Clear();
        return 0;
    }
    return found;
}

/* days since 1970-01-01 of a proleptic Gregorian date */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int
check_row_type(PyTypeObject *tp)
{
    if (!PyType_Check(tp) || !PyType_IsSubtype(tp, &PyTuple_Type) ||
        tp->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "row type must be a plain tuple subclass");
        return -1;
    }
    return 0;
}

/* A tuple of type ``tp`` holding ``items`` (new references are stolen).
 *
 * A row whose items are all strings, numbers or None can never be part of a reference
 * cycle, so it is taken off the cyclic collector's lists (CPython does the same for plain
 * tuples on their first collection, but never for tuple subclasses such as RecordRow):
 * otherwise every collection would walk every row a large batch keeps alive. */
static PyObject *
new_row(PyTypeObject *tp, PyObject **items, Py_ssize_t n)
{
    PyObject *row = tp->tp_alloc(tp, n);
    if (row == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_DECREF(items[i]);
        return NULL;
    }
    int atomic = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(row, i, items[i]);
        if (PyObject_IS_GC(items[i]))
            atomic = 0;
    }
    if (atomic && PyObject_GC_IsTracked(row))
        PyObject_GC_UnTrack(row);
    return row;
}

/* quantity_units(q, scale, &units): 1 with ``units`` set where ``q`` is a float whose
 * shortest repr has at most log10(scale) places (round(q * scale) half to even divides back
 * to q; beyond 2**53 the Python path decides) or an int within ±(2**63 - 1) units; else 0
 * (the Python path decides: another type, too many places, out of range, NaN). */
static int quantity_units(PyObject *q, long long scale, long long *units)
{
    if (PyFloat_CheckExact(q)) {
        double v = PyFloat_AS_DOUBLE(q), d = (double)scale;
        double scaled = v * d;
        if (!(scaled > -EXACT && scaled < EXACT)) /* NaN, infinities, out of range */
            return 0;
        double whole = nearbyint(scaled);
        if (whole / d != v)
            return 0; /* more places than the metric keeps */
        *units = (long long)whole;
        return 1;
    }
    if (PyLong_CheckExact(q)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(q, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        if (__builtin_mul_overflow(v, scale, units) || *units == LLONG_MIN)
            return 0;
        return 1;
    }
    return 0;
}

/* units_column(quantities, scale) -> list[int] | None: each quantity in units of ``scale``
 * where every one of them converts as quantity_units says, else None. */
static PyObject *units_column(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "units_column(list, int)");
        return NULL;
    }
    PyObject *quantities = args[0];
    long long scale = PyLong_AsLongLong(args[1]);
    if (scale < 1 || scale > MAX_SCALE) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(quantities);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long units;
        if (quantity_units(PyList_GET_ITEM(quantities, i), scale, &units) <= 0) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        PyObject *value = PyLong_FromLongLong(units);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, value);
    }
    return out;
}

/* rows_fast(items, start, out, valid, metrics, ids, now, utc, max_id, row_type) -> int
 *
 * Appends to ``out`` a row for each of items[start:] that is a plain record with nothing
 * to check beyond what is already known valid, and returns the index of the first item
 * it did not take (len(items) when it took them all). See Intake.rows for the rules.
 * ``metrics`` maps (metric key, org id) to (scope org id, default units or None, 10 **
 * precision); a quantity becomes units as tsmeter.domain.quantities.to_units makes them
 * where that needs no rounding and fits (anything else stops it: str, Decimal, a float
 * whose shortest repr has more places, a value beyond 64 bits, NaN);
 * ``ids`` is a stack of fresh record ids (popped from the end). */
static PyObject *
rows_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "rows_fast takes 10 arguments");
        return NULL;
    }
    PyObject *items = args[0], *out = args[2], *valid = args[3], *metrics = args[4],
             *ids = args[5], *now = args[6], *utc = args[7];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_id = PyLong_AsSsize_t(args[8]);
    PyTypeObject *row_type = (PyTypeObject *)args[9];
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(items) || !PyList_CheckExact(out) || !PyAnySet_Check(valid) ||
        !PyDict_CheckExact(metrics) || !PyList_CheckExact(ids) || !PyLong_CheckExact(now)) {
        PyErr_SetString(PyExc_TypeError, "rows_fast: wrong argument types");
        return NULL;
    }
    if (check_row_type(row_type) < 0)
        return NULL;

    Py_ssize_t n = PyList_GET_SIZE(items), i = start;
    PyObject *scale_of = NULL; /* the metric entry ``scale`` was read from (borrowed) */
    long long scale = 1;
    for (; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyDict_CheckExact(item))
            break;
        Py_ssize_t present = 3;
        PyObject *org = get2(item, k_orgId, k_org_id);
        if (org != NULL) {
            if (!known_name(org, valid))
                break;
            present++;
        }
        PyObject *metric_key = get2(item, k_metricKey, k_metric_key);
        if (metric_key == NULL || !PyUnicode_CheckExact(metric_key))
            break;
        PyObject *mkey = PyTuple_Pack(2, metric_key, org != NULL ? org : Py_None);
        if (mkey == NULL)
            return NULL;
        PyObject *metric = PyDict_GetItemWithError(metrics, mkey);
        Py_DECREF(mkey);
        if (metric == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break;
        }
        if (!PyTuple_CheckExact(metric) || PyTuple_GET_SIZE(metric) != 3)
            break;
        if (metric != scale_of) {
            PyObject *scale_obj = PyTuple_GET_ITEM(metric, 2);
            if (!PyLong_CheckExact(scale_obj))
                break;
            scale = PyLong_AsLongLong(scale_obj);
            if (scale < 1 || scale > MAX_SCALE) {
                PyErr_Clear();
                scale_of = NULL;
                break;
            }
            scale_of = metric;
        }
        PyObject *subject_type = get2(item, k_subjectType, k_subject_type);
        if (!known_name(subject_type, valid))
            break;
        PyObject *subject_id = get2(item, k_subjectId, k_subject_id);
        if (!known_name(subject_id, valid))
            break;

        PyObject *rid = get(item, k_id);
        int rid_given = rid != NULL;
        if (rid_given) {
            if (!PyUnicode_CheckExact(rid) || !PyUnicode_IS_ASCII(rid))
                break;
            Py_ssize_t len = PyUnicode_GET_LENGTH(rid);
            if (len == 0 || len > max_id)
                break;
            const unsigned char *s = PyUnicode_1BYTE_DATA(rid);
            Py_ssize_t k = 0;
            while (k < len && s[k] >= 0x20 && s[k] < 0x7f)
                k++;
            if (k < len)
                break;
            present++;
        }
        else if (PyList_GET_SIZE(ids) == 0)
            break;

        PyObject *quantity = get(item, k_quantity);
        PyObject *qvalue; /* new reference once set */
        if (quantity == NULL) {
            PyObject *fallback = PyTuple_GET_ITEM(metric, 1);
            if (fallback == Py_None)
                break;
            qvalue = Py_NewRef(fallback);
        }
        else {
            long long units;
            int done = quantity_units(quantity, scale, &units);
            if (done <= 0)
                break; /* not a number the Python path need not decide */
            qvalue = PyLong_FromLongLong(units);
            if (qvalue == NULL)
                return NULL;
            present++;
        }

        PyObject *ts = get(item, k_timestamp);
        PyObject *ns;
        if (ts == NULL)
            ns = Py_NewRef(now);
        else {
            if (!PyDateTime_CheckExact(ts) || PyDateTime_DATE_GET_TZINFO(ts) != utc) {
                Py_DECREF(qvalue);
                break;
            }
            int year = PyDateTime_GET_YEAR(ts);
            if (year <= 1970 || year >= 2261) {
                Py_DECREF(qvalue);
                break;
            }
            long long days = days_from_civil(year, PyDateTime_GET_MONTH(ts), PyDateTime_GET_DAY(ts));
            long long secs = days * 86400 + PyDateTime_DATE_GET_HOUR(ts) * 3600LL +
                             PyDateTime_DATE_GET_MINUTE(ts) * 60LL + PyDateTime_DATE_GET_SECOND(ts);
            ns = PyLong_FromLongLong((secs * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(ts)) * 1000LL);
            if (ns == NULL) {
                Py_DECREF(qvalue);
                return NULL;
            }
            present++;
        }

        if (get(item, k_metadata) != NULL) {
            Py_DECREF(qvalue);
            Py_DECREF(ns);
            break;
        }
        PyObject *source = get(item, k_source);
        if (source != NULL) {
            if (!known_name(source, valid)) {
                Py_DECREF(qvalue);
                Py_DECREF(ns);
                break;
            }
            present++;
        }
        if (PyDict_GET_SIZE(item) > present || PyErr_Occurred()) {
            PyErr_Clear();
            Py_DECREF(qvalue);
            Py_DECREF(ns);
            break;
        }
        PyObject *rid_value;
        if (rid_given)
            rid_value = Py_NewRef(rid);
        else {
            Py_ssize_t last = PyList_GET_SIZE(ids) - 1;
            rid_value = Py_NewRef(PyList_GET_ITEM(ids, last));
            if (PyList_SetSlice(ids, last, last + 1, NULL) < 0) {
                Py_DECREF(rid_value);
                Py_DECREF(qvalue);
                Py_DECREF(ns);
                return NULL;
            }
        }
        PyObject *fields[9] = {
            rid_value,
            Py_NewRef(metric_key),
            Py_NewRef(subject_type),
            Py_NewRef(subject_id),
            Py_NewRef(PyTuple_GET_ITEM(metric, 0)),
            qvalue,
            ns,
            Py_NewRef(Py_None),
            Py_NewRef(source != NULL ? source : Py_None),
        };
        PyObject *row = new_row(row_type, fields, 9);
        if (row == NULL)
            return NULL;
        int failed = PyList_Append(out, row);
        Py_DECREF(row);
        if (failed)
            return NULL;
    }
    if (PyErr_Occurred())
        PyErr_Clear(); /* a failed lookup only means: not the fast path */
    return PyLong_FromSsize_t(i);
}

/* as_rows(tuples, row_type, width) -> list
 *
 * The tuples (each of ``width`` items) as rows of ``row_type``, made like those of
 * rows_fast (rows of plain values are left to reference counting). Raises ValueError if
 * a tuple has another width. */

static PyMethodDef methods[] = {
    {"rows_fast", (PyCFunction)(void (*)(void))rows_fast, METH_FASTCALL,
     "Validated rows for plain records; returns where it stopped."},
    {"units_column", (PyCFunction)(void (*)(void))units_column, METH_FASTCALL,
     "Quantities in units of one scale, or None where one needs the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tsmeter.metering._intake",
    "The compiled fast path of the intake (intake.py is the reference).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__intake(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
#define INTERN(var, text)                                                                          \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                          \
        return NULL;
    INTERN(k_orgId, "orgId");
    INTERN(k_org_id, "org_id");
    INTERN(k_metricKey, "metricKey");
    INTERN(k_metric_key, "metric_key");
    INTERN(k_subjectType, "subjectType");
    INTERN(k_subject_type, "subject_type");
    INTERN(k_subjectId, "subjectId");
    INTERN(k_subject_id, "subject_id");
    INTERN(k_id, "id");
    INTERN(k_quantity, "quantity");
    INTERN(k_timestamp, "timestamp");
    INTERN(k_metadata, "metadata");
    INTERN(k_source, "source");
#undef INTERN
    return PyModule_Create(&module);
}
