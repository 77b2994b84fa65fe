/* The id ledger's usual write without the interpreter lock (the Python code in
 * tsmeter/adapters/influxdb/ledger.py stays the reference and takes every other case).
 *
 * A Python thread that runs SQLite statements gives up the interpreter lock for each one
 * and waits for it again after it; while other threads run Python code that wait is up to
 * the switch interval, and an add of 10,000 entries made a dozen of them. Here an add is one
 * transaction in C: the entries are taken from the rows while the lock is held, then the
 * range check and the inserts (into blocks, or into the index) run without it, and the
 * thread waits for it once.
 *
 * SQLite is not linked: its functions are taken from the library the sqlite3 module has
 * already loaded (one library in the process, so the file locks of its connections and
 * of this one are known to each other). Where it is not loaded as a shared library, this
 * module offers nothing and the Python code does every write.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <string.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

enum {
    SQ_OK = 0,
    SQ_ROW = 100,
    SQ_DONE = 101,
    SQ_OPEN_READWRITE = 0x2,
    SQ_OPEN_NOMUTEX = 0x8000,
};

static struct {
    int (*open_v2)(const char *, sqlite3 **, int, const char *);
    int (*close_v2)(sqlite3 *);
    int (*busy_timeout)(sqlite3 *, int);
    int (*exec)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *,
                char **);
    int (*prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int (*bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int (*bind_int64)(sqlite3_stmt *, int, long long);
    int (*bind_blob)(sqlite3_stmt *, int, const void *, int, void (*)(void *));
    int (*changes)(sqlite3 *);
    int (*step)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*finalize)(sqlite3_stmt *);
    long long (*column_int64)(sqlite3_stmt *, int);
    const char *(*errmsg)(sqlite3 *);
    const char *(*libversion)(void);
} sq;

static int sq_state; /* 0 not looked for yet, 1 found, -1 not available */

static int
sq_load(void)
{
    if (sq_state != 0)
        return sq_state;
    sq_state = -1;
    void *lib = dlopen("libsqlite3.so.0", RTLD_LAZY | RTLD_NOLOAD);
    if (lib == NULL)
        return sq_state;
#define TAKE(field, name)                                                                          \
    if ((*(void **)&sq.field = dlsym(lib, name)) == NULL)                                         \
        return sq_state;
    TAKE(open_v2, "sqlite3_open_v2");
    TAKE(close_v2, "sqlite3_close_v2");
    TAKE(busy_timeout, "sqlite3_busy_timeout");
    TAKE(exec, "sqlite3_exec");
    TAKE(prepare_v2, "sqlite3_prepare_v2");
    TAKE(bind_text, "sqlite3_bind_text");
    TAKE(bind_int64, "sqlite3_bind_int64");
    TAKE(bind_blob, "sqlite3_bind_blob");
    TAKE(changes, "sqlite3_changes");
    TAKE(step, "sqlite3_step");
    TAKE(reset, "sqlite3_reset");
    TAKE(finalize, "sqlite3_finalize");
    TAKE(column_int64, "sqlite3_column_int64");
    TAKE(errmsg, "sqlite3_errmsg");
    TAKE(libversion, "sqlite3_libversion");
#undef TAKE
    sq_state = 1;
    return sq_state;
}

/* sqlite_version() -> str | None: the version of the SQLite this module would use. */
static PyObject *
sqlite_version(PyObject *self, PyObject *unused)
{
    if (sq_load() < 0)
        Py_RETURN_NONE;
    return PyUnicode_FromString(sq.libversion());
}

enum { S_BEGIN, S_STATE, S_INSERT, S_COMMIT, S_ROLLBACK, S_BLOCK, S_INSERT_MANY, S_COUNT };

/* entries per multi-row insert: 1 + 3 * PER parameters stay under the 999 of old SQLites;
 * one statement per row took half as long again as the Python code's statements of
 * 1,000 rows */
enum { PER = 250 };

static const char *const statements[S_COUNT] = {
    "BEGIN IMMEDIATE",
    /* as ledger._STATE: entries of the target in the batch's id range (counted up to a
       limit), the log's last entry and the last one merged */
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM influx_ids WHERE target_no = ?1"
    " AND id BETWEEN ?2 AND ?3 LIMIT ?4)), (SELECT coalesce(max(seq), 0) FROM"
    " influx_ids_log), merged_upto FROM influx_ledger_state",
    "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts) VALUES (?1, ?2, ?3, ?4)",
    "COMMIT",
    "ROLLBACK",
    /* as ledger._BLOCKS_HEAD and _BLOCKS_TAIL, taking nothing into a full block (then no
       row changes) */
    "INSERT INTO influx_id_blocks (target_no, block, n, entries) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (target_no, block) DO UPDATE SET n = n + excluded.n,"
    " entries = CAST(entries || excluded.entries AS BLOB) WHERE n < ?5",
    NULL, /* S_INSERT_MANY: PER rows of S_INSERT's values, made by insert_many_sql */
};

static char *
insert_many_sql(void)
{
    const char *head = "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts) VALUES ";
    size_t size = strlen(head) + (size_t)PER * 32 + 1;
    char *sql = PyMem_Malloc(size), *at;
    if (sql == NULL)
        return NULL;
    at = sql + sprintf(sql, "%s", head);
    for (int k = 0; k < PER; k++)
        at += sprintf(at, "%s(?1,?%d,?%d,?%d)", k ? "," : "", 2 + 3 * k, 3 + 3 * k, 4 + 3 * k);
    return sql;
}

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
} writer;

static void
writer_free(writer *w)
{
    for (int k = 0; k < S_COUNT; k++)
        if (w->stmt[k] != NULL)
            sq.finalize(w->stmt[k]);
    if (w->db != NULL)
        sq.close_v2(w->db);
    PyMem_Free(w);
}

static void
capsule_free(PyObject *capsule)
{
    writer *w = PyCapsule_GetPointer(capsule, "tsmeter.ledgerwrite");
    if (w != NULL)
        writer_free(w);
}

/* open(path) -> capsule | str: a connection to the ledger file (in WAL mode already, with
 * its tables), or the reason there is none. */
static PyObject *
open_writer(PyObject *self, PyObject *arg)
{
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    if (sq_load() < 0)
        return PyUnicode_FromString("SQLite is not loaded as a shared library");
    writer *w = PyMem_Calloc(1, sizeof(writer));
    if (w == NULL)
        return PyErr_NoMemory();
    int rc = sq.open_v2(path, &w->db, SQ_OPEN_READWRITE | SQ_OPEN_NOMUTEX, NULL);
    if (rc == SQ_OK)
        rc = sq.busy_timeout(w->db, 30000);
    /* as open_wal: a commit is on disk before it returns */
    if (rc == SQ_OK)
        rc = sq.exec(w->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    char *many = insert_many_sql();
    if (many == NULL) {
        writer_free(w);
        return PyErr_NoMemory();
    }
    for (int k = 0; rc == SQ_OK && k < S_COUNT; k++)
        rc = sq.prepare_v2(w->db, k == S_INSERT_MANY ? many : statements[k], -1, &w->stmt[k],
                           NULL);
    PyMem_Free(many);
    if (rc != SQ_OK) {
        PyObject *reason = PyUnicode_FromFormat(
            "%s", w->db != NULL ? sq.errmsg(w->db) : "cannot open");
        writer_free(w);
        return reason;
    }
    PyObject *capsule = PyCapsule_New(w, "tsmeter.ledgerwrite", capsule_free);
    if (capsule == NULL)
        writer_free(w);
    return capsule;
}

/* close(capsule): close the connection now (the capsule then holds nothing). */
static PyObject *
close_writer(PyObject *self, PyObject *capsule)
{
    writer *w = PyCapsule_GetPointer(capsule, "tsmeter.ledgerwrite");
    if (w == NULL)
        return NULL;
    if (PyCapsule_SetDestructor(capsule, NULL) < 0)
        return NULL;
    writer_free(w);
    if (PyCapsule_SetPointer(capsule, (void *)&sq_state) < 0) /* any non-NULL: closed */
        return NULL;
    if (PyCapsule_SetName(capsule, "tsmeter.ledgerwrite.closed") < 0)
        return NULL;
    Py_RETURN_NONE;
}

typedef struct {
    const char *id;
    Py_ssize_t len, cut; /* cut: the bytes of the id's block (all but its last TAIL chars) */
    long long series, ts;
} entry;

/* as ledger._TAIL_CHARS and ledger._ENTRY: an entry of a block is the UTF-8 length of the
 * id's last TAIL characters, those bytes (8 at most, zero-padded), the series number and
 * the time, little-endian */
enum { TAIL = 2, TAIL_BYTES = 8, ENTRY_SIZE = 1 + TAIL_BYTES + 8 + 8 };

static Py_ssize_t
block_cut(const char *id, Py_ssize_t len)
{
    Py_ssize_t at = len;
    for (int k = 0; k < TAIL && at > 0; k++) {
        at--;
        while (at > 0 && ((unsigned char)id[at] & 0xC0) == 0x80) /* a continuation byte */
            at--;
    }
    return at;
}

static int
block_cmp(const void *pa, const void *pb)
{
    const entry *a = *(const entry *const *)pa, *b = *(const entry *const *)pb;
    size_t n = (size_t)(a->cut < b->cut ? a->cut : b->cut);
    int c = memcmp(a->id, b->id, n);
    if (c == 0)
        c = (a->cut > b->cut) - (a->cut < b->cut);
    return c != 0 ? c : (a > b) - (a < b); /* then in the order of the rows */
}

static int
same_block(const entry *a, const entry *b)
{
    return a->cut == b->cut && memcmp(a->id, b->id, (size_t)a->cut) == 0;
}

static void
put_le64(unsigned char *at, long long value)
{
    unsigned long long v = (unsigned long long)value;
    for (int k = 0; k < 8; k++)
        at[k] = (unsigned char)(v >> (8 * k));
}

static int
id_less(const entry *a, const entry *b)
{
    size_t n = (size_t)(a->len < b->len ? a->len : b->len);
    int c = memcmp(a->id, b->id, n);
    return c < 0 || (c == 0 && a->len < b->len);
}

/* Append the entries to their blocks (``by`` the entries sorted by block; ``packed`` room
 * for n entries), inside the transaction: 1 done, 0 a block is full (nothing to keep: the
 * caller rolls back), -1 an SQLite error. */
static int
write_blocks(writer *w, long long target, const entry *const *by, Py_ssize_t n,
             long long cap, unsigned char *packed)
{
    sqlite3_stmt *block = w->stmt[S_BLOCK];
    int done = 1;
    sq.bind_int64(block, 1, target);
    sq.bind_int64(block, 5, cap);
    for (Py_ssize_t first = 0, end; first < n && done == 1; first = end) {
        unsigned char *at = packed;
        for (end = first; end < n && same_block(by[first], by[end]); end++, at += ENTRY_SIZE) {
            const entry *x = by[end];
            Py_ssize_t tail = x->len - x->cut;
            memset(at, 0, 1 + TAIL_BYTES);
            at[0] = (unsigned char)tail;
            memcpy(at + 1, x->id + x->cut, (size_t)tail);
            put_le64(at + 1 + TAIL_BYTES, x->series);
            put_le64(at + 1 + TAIL_BYTES + 8, x->ts);
        }
        sq.bind_text(block, 2, by[first]->id, (int)by[first]->cut, NULL);
        sq.bind_int64(block, 3, end - first);
        sq.bind_blob(block, 4, packed, (int)(at - packed), NULL);
        int rc = sq.step(block);
        sq.reset(block);
        done = rc != SQ_DONE ? -1 : sq.changes(w->db) == 1 ? 1 : 0;
    }
    return done;
}

static int write_chosen(writer *w, long long target, const entry *e, const entry *const *by,
                        unsigned char *packed, Py_ssize_t n, const entry *lo,
                        const entry *hi, Py_ssize_t blocks, long long near,
                        long long clustered, long long cap, char *error, size_t size);

/* The transaction, without the interpreter lock: 1 stored, 0 the Python code's case (the
 * ids lie among more than ``near`` times their number of entries, or the log holds
 * entries, or one of their blocks is full), -1 an SQLite error (its message in
 * ``error``). Ids that are new to the index and at least ``clustered`` per block go to
 * blocks (which take entries while they hold fewer than ``cap``), others to the index. */
static int
write_entries(writer *w, long long target, const entry *e, Py_ssize_t n, long long near,
              long long clustered, long long cap, char *error, size_t size)
{
    const entry *lo = &e[0], *hi = &e[0];
    for (Py_ssize_t i = 1; i < n; i++) {
        if (id_less(&e[i], lo))
            lo = &e[i];
        if (id_less(hi, &e[i]))
            hi = &e[i];
    }
    /* the entries by block, in the order of the rows within each: ids of a block usually
       follow each other, so the runs of one block are sorted, not the entries */
    const entry **by = malloc(sizeof(entry *) * (size_t)n);
    const entry **runs = malloc(sizeof(entry *) * (size_t)n); /* each run's first entry */
    unsigned char *packed = malloc((size_t)n * ENTRY_SIZE);  /* one block's entries */
    if (by == NULL || runs == NULL || packed == NULL) {
        free(by);
        free(runs);
        free(packed);
        snprintf(error, size, "out of memory");
        return -1;
    }
    Py_ssize_t nruns = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (i == 0 || !same_block(&e[i - 1], &e[i]))
            runs[nruns++] = &e[i];
    qsort(runs, (size_t)nruns, sizeof(entry *), block_cmp); /* by block, then position */
    for (Py_ssize_t r = 0, at = 0; r < nruns; r++) {
        const entry *x = runs[r];
        do
            by[at++] = x++;
        while (x < e + n && same_block(x - 1, x));
    }
    free(runs);
    Py_ssize_t blocks = 1;
    for (Py_ssize_t i = 1; i < n; i++)
        blocks += !same_block(by[i - 1], by[i]);
    int result = write_chosen(w, target, e, by, packed, n, lo, hi, blocks, near, clustered,
                              cap, error, size);
    free(by);
    free(packed);
    return result;
}

/* write_entries' transaction, the entries given in row order (``e``) and by block
 * (``by``), their smallest and largest id and the number of their blocks. */
static int
write_chosen(writer *w, long long target, const entry *e, const entry *const *by,
             unsigned char *packed, Py_ssize_t n, const entry *lo, const entry *hi,
             Py_ssize_t blocks, long long near, long long clustered, long long cap,
             char *error, size_t size)
{
    sqlite3_stmt *state = w->stmt[S_STATE], *insert = w->stmt[S_INSERT];
    int rc = sq.step(w->stmt[S_BEGIN]);
    sq.reset(w->stmt[S_BEGIN]);
    if (rc != SQ_DONE)
        goto failed;
    sq.bind_int64(state, 1, target);
    sq.bind_text(state, 2, lo->id, (int)lo->len, NULL);
    sq.bind_text(state, 3, hi->id, (int)hi->len, NULL);
    sq.bind_int64(state, 4, near * n + 1);
    rc = sq.step(state);
    if (rc != SQ_ROW) {
        sq.reset(state);
        goto rollback;
    }
    long long inside = sq.column_int64(state, 0), logged = sq.column_int64(state, 1),
              merged = sq.column_int64(state, 2);
    sq.reset(state);
    if (logged > merged)
        goto python;
    if (inside == 0 && blocks * clustered <= n) {
        int done = write_blocks(w, target, by, n, cap, packed);
        if (done < 0)
            goto rollback;
        if (done == 0)
            goto python;
        goto commit;
    }
    if (inside > near * n)
        goto python;
    sqlite3_stmt *many = w->stmt[S_INSERT_MANY];
    sq.bind_int64(many, 1, target);
    Py_ssize_t i = 0;
    for (; i + PER <= n; i += PER) {
        for (int k = 0; k < PER; k++) {
            sq.bind_text(many, 2 + 3 * k, e[i + k].id, (int)e[i + k].len, NULL);
            sq.bind_int64(many, 3 + 3 * k, e[i + k].series);
            sq.bind_int64(many, 4 + 3 * k, e[i + k].ts);
        }
        rc = sq.step(many);
        sq.reset(many);
        if (rc != SQ_DONE)
            goto rollback;
    }
    sq.bind_int64(insert, 1, target);
    for (; i < n; i++) {
        sq.bind_text(insert, 2, e[i].id, (int)e[i].len, NULL);
        sq.bind_int64(insert, 3, e[i].series);
        sq.bind_int64(insert, 4, e[i].ts);
        rc = sq.step(insert);
        sq.reset(insert);
        if (rc != SQ_DONE)
            goto rollback;
    }
commit:
    rc = sq.step(w->stmt[S_COMMIT]);
    sq.reset(w->stmt[S_COMMIT]);
    if (rc == SQ_DONE)
        return 1;
    goto rollback;
python:
    sq.step(w->stmt[S_ROLLBACK]);
    sq.reset(w->stmt[S_ROLLBACK]);
    return 0;
rollback:
    snprintf(error, size, "%s", sq.errmsg(w->db));
    sq.step(w->stmt[S_ROLLBACK]);
    sq.reset(w->stmt[S_ROLLBACK]);
    return -1;
failed:
    snprintf(error, size, "%s", sq.errmsg(w->db));
    return -1;
}

/* add(capsule, rows, numbers, target, near, clustered, cap) -> True | False | list | str
 *
 * Enter the rows (RecordRows: id at 0, series key at 1..4, time at 6) into blocks or
 * straight into the index in one transaction when their ids lie together and the log is
 * empty (as IdLedger.add, see write_entries): True.
 * False when they do not, or are not plain (nothing written: the Python code adds them,
 * or says what is wrong with them). A list of series
 * keys missing from ``numbers`` (nothing written: number them and call again). A str: the
 * SQLite error (nothing written). */
static PyObject *
add_entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyList_CheckExact(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "add(capsule, list, dict, int, int, int, int)");
        return NULL;
    }
    writer *w = PyCapsule_GetPointer(args[0], "tsmeter.ledgerwrite");
    if (w == NULL)
        return NULL;
    PyObject *rows = args[1], *numbers = args[2];
    long long target = PyLong_AsLongLong(args[3]), near = PyLong_AsLongLong(args[4]),
              clustered = PyLong_AsLongLong(args[5]), cap = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if (n == 0)
        Py_RETURN_TRUE;
    entry *e = PyMem_Malloc(sizeof(entry) * (size_t)n);
    PyObject *missing = PyList_New(0), *seen = PySet_New(NULL), *result = NULL;
    PyObject *items = PyList_New(n); /* the rows, held while the lock is released */
    if (e == NULL || missing == NULL || seen == NULL || items == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *last_key[4] = {NULL}; /* compared, never used: the rows keep them alive */
    long long last_series = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 7 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(row, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(row, 6)))
            goto python; /* not plain rows: the Python code decides */
        PyList_SET_ITEM(items, i, Py_NewRef(row));
        e[i].id = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(row, 0), &e[i].len);
        if (e[i].id == NULL || e[i].len > 0x7fffffff)
            goto python; /* a lone surrogate, or too long: as the Python code says */
        e[i].cut = block_cut(e[i].id, e[i].len);
        e[i].ts = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 6));
        if (e[i].ts == -1 && PyErr_Occurred())
            goto python;
        /* the series number; rows of one series usually follow each other (the same
           objects: the rows hold them, so the pointers stay valid) */
        PyObject **field = &PyTuple_GET_ITEM(row, 1);
        if (last_series >= 0 && field[0] == last_key[0] && field[1] == last_key[1] &&
            field[2] == last_key[2] && field[3] == last_key[3]) {
            e[i].series = last_series;
            continue;
        }
        for (int k = 0; k < 4; k++) /* a str subclass could run code when hashed */
            if (!PyUnicode_CheckExact(field[k]) && !(k == 3 && field[k] == Py_None))
                goto python;
        PyObject *key = PyTuple_GetSlice(row, 1, 5);
        if (key == NULL)
            goto done;
        PyObject *number = PyDict_GetItemWithError(numbers, key);
        if (number == NULL) {
            int failed = PyErr_Occurred() != NULL;
            if (!failed) {
                int found = PySet_Contains(seen, key);
                failed = found < 0 ||
                         (!found && (PySet_Add(seen, key) || PyList_Append(missing, key)));
            }
            Py_DECREF(key);
            if (failed)
                goto done;
            last_series = -1;
            continue;
        }
        e[i].series = PyLong_AsLongLong(number);
        Py_DECREF(key);
        if (e[i].series == -1 && PyErr_Occurred())
            goto done;
        memcpy(last_key, field, sizeof last_key);
        last_series = e[i].series;
    }
    if (PyList_GET_SIZE(missing) > 0) {
        result = Py_NewRef(missing);
        goto done;
    }
    char error[512] = "";
    int written;
    Py_BEGIN_ALLOW_THREADS
    written = write_entries(w, target, e, n, near, clustered, cap, error, sizeof error);
    Py_END_ALLOW_THREADS
    if (written < 0)
        result = PyUnicode_FromString(error);
    else
        result = PyBool_FromLong(written);
    goto done;
python:
    PyErr_Clear();
    result = Py_NewRef(Py_False);
done:
    PyMem_Free(e);
    Py_XDECREF(missing);
    Py_XDECREF(seen);
    Py_XDECREF(items);
    return result;
}

static PyMethodDef methods[] = {
    {"sqlite_version", sqlite_version, METH_NOARGS,
     "The SQLite version this module would use, or None when it is not available."},
    {"open", open_writer, METH_O, "A connection to a ledger file, or why there is none."},
    {"close", close_writer, METH_O, "Close a connection now."},
    {"add", (PyCFunction)(void (*)(void))add_entries, METH_FASTCALL,
     "Enter rows into blocks or the id index in one transaction, where that is the case."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tsmeter._ledgerwrite",
    "The id ledger's usual write without the interpreter lock.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__ledgerwrite(void)
{
    return PyModule_Create(&module);
}
