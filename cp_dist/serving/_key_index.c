/* KeyIndex: item key -> catalogue row, for ranking requests, in one native pass over the candidates.
 *
 * A ranking request names its candidates by id, strings freshly decoded from JSON. In Python, each
 * lookup hashes a new string object (SipHash), probes a dict whose entries and key objects the
 * previous request's forward pass has evicted, and compares Python objects. Here each id's UTF-8
 * bytes are hashed (FNV-1a, then a 64-bit finaliser), probed in an open-addressing table of
 * (hash, row) pairs and confirmed against the key's bytes, and the item's row of the catalogue is
 * added to the request's row of ids, with no Python object built on the way. Independent candidates
 * let the CPU overlap their cache misses, which an interpreted loop cannot.
 *
 * Keys are fixed when the index is built and the table is at most half full, so a request cannot
 * lengthen a probe chain. A number stands for its string form (242 -> "242"), as everywhere in
 * cp_dist's serving; an id of another type is a TypeError naming its position.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    uint64_t *slots;      /* the hash's high 32 bits, then the key's row (1-based); 0 = an empty slot */
    uint64_t mask;        /* slots - 1 */
    char *key_bytes;      /* every key's UTF-8 bytes, back to back */
    int64_t *key_offsets; /* [keys + 1]: row r's key is key_bytes[key_offsets[r - 1], key_offsets[r]) */
    Py_ssize_t keys;
} KeyIndex;

#define ROW(slot) ((int64_t)((slot) & 0xffffffffULL))
#define TAG(hash) ((hash) & ~0xffffffffULL)
#define CHUNK 64 /* candidates whose memory accesses are in flight together */

static uint64_t hash_bytes(const char *data, Py_ssize_t size) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        h = (h ^ (unsigned char)data[i]) * 0x100000001b3ULL;
    }
    h ^= h >> 33;  /* MurmurHash3's finaliser: FNV's low bits alone, the slot's, mix poorly */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static int same_key(const KeyIndex *self, int64_t row, const char *data, Py_ssize_t size) {
    int64_t start = self->key_offsets[row - 1];
    return self->key_offsets[row] - start == size && memcmp(self->key_bytes + start, data, (size_t)size) == 0;
}

/* The first slot from the hash's home that is empty or holds the hash's tag. */
static uint64_t probe(const KeyIndex *self, uint64_t hash, uint64_t slot) {
    while (self->slots[slot] != 0 && TAG(self->slots[slot]) != TAG(hash)) {
        slot = (slot + 1) & self->mask;
    }
    return slot;
}

/* The key's row, 0 when the index does not hold it. */
static int64_t find(const KeyIndex *self, const char *data, Py_ssize_t size) {
    uint64_t hash = hash_bytes(data, size);
    for (uint64_t slot = probe(self, hash, hash & self->mask); self->slots[slot] != 0;
         slot = probe(self, hash, (slot + 1) & self->mask)) {
        if (same_key(self, ROW(self->slots[slot]), data, size)) {
            return ROW(self->slots[slot]);
        }
    }
    return 0;
}

/* A string without UTF-8 bytes (a lone surrogate, which JSON can carry) is no key: size -1. */
static const char *utf8_or_no_key(PyObject *text, Py_ssize_t *size) {
    const char *data = PyUnicode_AsUTF8AndSize(text, size);
    if (data == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        *size = -1;
        return "";
    }
    return data;
}

/* An item id's UTF-8 bytes: strings as they are, numbers by their string form (a new reference in
 * *held, for the caller to release). NULL with an exception set. */
static const char *item_bytes(PyObject *item, Py_ssize_t position, Py_ssize_t *size, PyObject **held) {
    *held = NULL;
    if (PyUnicode_Check(item)) {
        return utf8_or_no_key(item, size);
    }
    if (!PyLong_Check(item) && !PyFloat_Check(item)) {
        PyErr_Format(PyExc_TypeError, "items[%zd]: a %s", position, Py_TYPE(item)->tp_name);
        return NULL;
    }
    *held = PyObject_Str(item);
    return *held == NULL ? NULL : utf8_or_no_key(*held, size);
}

/* rows[i] = the row of items[i] (0: not held), for up to CHUNK items. Each pass starts the memory
 * reads that the next one needs (home slot, then the key's offsets, then its bytes), so a chunk
 * waits for memory about three times instead of three times per candidate. -1 with an exception. */
static int lookup_chunk(const KeyIndex *self, PyObject **items, Py_ssize_t first, Py_ssize_t count, int64_t *rows) {
    const char *data[CHUNK];
    Py_ssize_t size[CHUNK];
    uint64_t hash[CHUNK], slot[CHUNK];
    PyObject *held[CHUNK];
    int failed = 0;
    Py_ssize_t converted = 0;
    for (; converted < count; converted++) {
        data[converted] = item_bytes(items[converted], first + converted, &size[converted], &held[converted]);
        if (data[converted] == NULL) {
            failed = 1;
            Py_XDECREF(held[converted]);
            break;
        }
        hash[converted] = hash_bytes(data[converted], size[converted]);
        __builtin_prefetch(&self->slots[hash[converted] & self->mask]);
    }
    if (!failed) {
        for (Py_ssize_t i = 0; i < count; i++) {
            slot[i] = probe(self, hash[i], hash[i] & self->mask);
            rows[i] = ROW(self->slots[slot[i]]);
            __builtin_prefetch(&self->key_offsets[rows[i] > 0 ? rows[i] - 1 : 0]);
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            __builtin_prefetch(self->key_bytes + self->key_offsets[rows[i] > 0 ? rows[i] - 1 : 0]);
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            if (rows[i] != 0 && !same_key(self, rows[i], data[i], size[i])) {
                rows[i] = find(self, data[i], size[i]);  /* a tag collision: go on along the chain */
            }
        }
    }
    for (Py_ssize_t i = 0; i < converted; i++) {
        Py_XDECREF(held[i]);
    }
    return failed ? -1 : 0;
}

static void free_table(KeyIndex *self) {
    PyMem_Free(self->slots);
    PyMem_Free(self->key_bytes);
    PyMem_Free(self->key_offsets);
    self->slots = NULL, self->key_bytes = NULL, self->key_offsets = NULL;
    self->keys = 0;
}

static void KeyIndex_dealloc(KeyIndex *self) {
    free_table(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int KeyIndex_init(KeyIndex *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"keys", NULL};
    PyObject *keys_arg;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", names, &keys_arg)) {
        return -1;
    }
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "KeyIndex is already built");
        return -1;
    }
    PyObject *keys = PySequence_Fast(keys_arg, "keys: expected a sequence of strings");
    if (keys == NULL) {
        return -1;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(keys), total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        Py_ssize_t size;
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "keys[%zd]: a %s; expected a string", i, Py_TYPE(key)->tp_name);
            goto fail;
        }
        if (PyUnicode_AsUTF8AndSize(key, &size) == NULL) {
            goto fail;
        }
        total += size;
    }
    if ((uint64_t)count >= 0xffffffffULL) {
        PyErr_Format(PyExc_ValueError, "%zd keys; a KeyIndex holds fewer than 2**32", count);
        goto fail;
    }
    uint64_t slots = 8;
    while (slots < 2 * (uint64_t)count) {
        slots <<= 1;
    }
    self->keys = count;
    self->mask = slots - 1;
    self->slots = PyMem_Calloc(slots, sizeof(uint64_t));
    self->key_bytes = PyMem_Malloc(total > 0 ? (size_t)total : 1);
    self->key_offsets = PyMem_Malloc((size_t)(count + 1) * sizeof(int64_t));
    if (!self->slots || !self->key_bytes || !self->key_offsets) {
        PyErr_NoMemory();
        goto fail;
    }
    self->key_offsets[0] = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(keys, i), &size);
        int64_t start = self->key_offsets[i];
        self->key_offsets[i + 1] = start + size;
        if (find(self, data, size) != 0) {
            PyErr_Format(PyExc_ValueError, "keys[%zd]: %R appears twice", i, PySequence_Fast_GET_ITEM(keys, i));
            goto fail;
        }
        memcpy(self->key_bytes + start, data, (size_t)size);
        uint64_t hash = hash_bytes(data, size), slot = hash & self->mask;
        while (self->slots[slot] != 0) {
            slot = (slot + 1) & self->mask;
        }
        self->slots[slot] = TAG(hash) | (uint64_t)(i + 1);
    }
    Py_DECREF(keys);
    return 0;
fail:
    Py_DECREF(keys);
    free_table(self);  /* a half-built index is "not built" */
    return -1;
}

/* A C-contiguous buffer of `count` int64 values (its shape and item type are the caller's: an int64
 * array, or bytes packed by struct). */
static int int64_buffer(PyObject *object, Py_buffer *view, Py_ssize_t count, int writable, const char *name) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        return -1;
    }
    if (view->len != count * 8) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd int64 values, got %zd bytes", name, count, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int built(const KeyIndex *self) {
    if (self->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "KeyIndex was not built");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(rows_doc, "rows(items, out): out[i] = the row of items[i], 0 for an id the index does not hold.");

static PyObject *KeyIndex_rows(KeyIndex *self, PyObject *args) {
    PyObject *items_arg, *out_arg;
    Py_buffer out;
    if (!built(self) || !PyArg_ParseTuple(args, "OO", &items_arg, &out_arg)) {
        return NULL;
    }
    PyObject *items = PySequence_Tuple(items_arg);  /* a copy: an id's __str__ cannot change it under us */
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    if (int64_buffer(out_arg, &out, count, 1, "out") < 0) {
        Py_DECREF(items);
        return NULL;
    }
    int64_t *rows = out.buf;
    PyObject **item = &PyTuple_GET_ITEM(items, 0);
    int failed = 0;
    for (Py_ssize_t first = 0; first < count && !failed; first += CHUNK) {
        Py_ssize_t chunk = count - first < CHUNK ? count - first : CHUNK;
        failed = lookup_chunk(self, item + first, first, chunk, rows + first) < 0;
    }
    PyBuffer_Release(&out);
    Py_DECREF(items);
    return failed ? NULL : Py_NewRef(Py_None);
}

PyDoc_STRVAR(add_rows_doc,
             "add_rows(items, table, base, out): out[i, :] = base + table[row of items[i], :].\n\n"
             "table: int64 [keys + 1, width] (row 0 for ids the index does not hold); base: int64 [width];\n"
             "out: int64 [len(items), width].");

static PyObject *KeyIndex_add_rows(KeyIndex *self, PyObject *args) {
    PyObject *items_arg, *table_arg, *base_arg, *out_arg;
    Py_buffer table, base, out;
    if (!built(self) || !PyArg_ParseTuple(args, "OOOO", &items_arg, &table_arg, &base_arg, &out_arg)) {
        return NULL;
    }
    if (PyObject_GetBuffer(table_arg, &table, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    Py_ssize_t width = table.itemsize == 8 ? table.len / 8 / (self->keys + 1) : 0;
    if (width == 0 || table.len != (self->keys + 1) * width * 8) {
        PyErr_Format(PyExc_ValueError, "table: expected int64 [%zd, width], got %zd bytes", self->keys + 1, table.len);
        PyBuffer_Release(&table);
        return NULL;
    }
    PyObject *items = PySequence_Tuple(items_arg);  /* a copy: an id's __str__ cannot change it under us */
    if (items == NULL) {
        PyBuffer_Release(&table);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    if (count > 0 && width > PY_SSIZE_T_MAX / 8 / count) {
        PyErr_Format(PyExc_ValueError, "out: %zd x %zd int64 values overflow", count, width);
        Py_DECREF(items);
        PyBuffer_Release(&table);
        return NULL;
    }
    int failed = int64_buffer(base_arg, &base, width, 0, "base") < 0;
    if (!failed && int64_buffer(out_arg, &out, count * width, 1, "out") < 0) {
        PyBuffer_Release(&base);
        failed = 1;
    }
    if (failed) {
        Py_DECREF(items);
        PyBuffer_Release(&table);
        return NULL;
    }
    const int64_t *source = table.buf, *request = base.buf;
    int64_t *ids = out.buf;
    PyObject **item = &PyTuple_GET_ITEM(items, 0);
    int64_t rows[CHUNK];
    for (Py_ssize_t first = 0; first < count && !failed; first += CHUNK) {
        Py_ssize_t chunk = count - first < CHUNK ? count - first : CHUNK;
        failed = lookup_chunk(self, item + first, first, chunk, rows) < 0;
        for (Py_ssize_t i = 0; i < chunk && !failed; i++) {
            __builtin_prefetch(source + rows[i] * width);
        }
        for (Py_ssize_t i = 0; i < chunk && !failed; i++) {
            const int64_t *values = source + rows[i] * width;
            int64_t *target = ids + (first + i) * width;
            for (Py_ssize_t k = 0; k < width; k++) {
                target[k] = request[k] + values[k];
            }
        }
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&base);
    PyBuffer_Release(&table);
    Py_DECREF(items);
    return failed ? NULL : Py_NewRef(Py_None);
}

static Py_ssize_t KeyIndex_len(KeyIndex *self) {
    return self->keys;
}

static PyMethodDef KeyIndex_methods[] = {
    {"rows", (PyCFunction)KeyIndex_rows, METH_VARARGS, rows_doc},
    {"add_rows", (PyCFunction)KeyIndex_add_rows, METH_VARARGS, add_rows_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods KeyIndex_as_sequence = {.sq_length = (lenfunc)KeyIndex_len};

static PyTypeObject KeyIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cp_dist.serving._key_index.KeyIndex",
    .tp_doc = PyDoc_STR("KeyIndex(keys): keys[r] -> row r + 1, looked up natively (rows, add_rows)."),
    .tp_basicsize = sizeof(KeyIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)KeyIndex_init,
    .tp_dealloc = (destructor)KeyIndex_dealloc,
    .tp_methods = KeyIndex_methods,
    .tp_as_sequence = &KeyIndex_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_key_index", "Item key -> catalogue row, natively (see KeyIndex).", -1, NULL,
};

PyMODINIT_FUNC PyInit__key_index(void) {
    if (PyType_Ready(&KeyIndexType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "KeyIndex", (PyObject *)&KeyIndexType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
