/* The collector's compiled fast path: a read's lines as COPY rows, in one pass, when every line is plain.
 *
 * A plain line is the shape a JSON encoder writes for the contract's event: the eight keys in column order, each
 * once, no spaces around them, no backslash anywhere (so no string holds an escape, and COPY needs none), a time
 * stamp PostgreSQL parses as written, six non-empty texts, and data an object or null. For such a line the COPY
 * row is the line's own bytes, cut at the keys: the stamp, the six texts and data, joined by tabs.
 *
 * This file only ever says "this row" or "I cannot tell": a line it does not fully understand goes to the Python
 * contract (reference/contract.py), which judges it exactly and names every rejection. So what it accepts must be
 * a subset of what the contract accepts, with the same rows: tests/unit/test_fastrows.py checks that against
 * parse_line with Hypothesis (plain, damaged, differently written lines, any bytes) and every hostile corpus kind.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Deeper data is left to the contract (which allows 256 levels): a fixed bound keeps the C recursion small. */
#define MAX_DATA_DEPTH 64
/* Fraction digits PostgreSQL parses exactly (reference/contract.py PG_FRACTION_DIGITS). */
#define MAX_FRACTION_DIGITS 6
/* Offsets beyond +-15:59 PostgreSQL refuses (reference/contract.py PG_MAX_OFFSET_HOUR). */
#define MAX_OFFSET_HOUR 15

typedef const unsigned char *cursor;

/* What separates the fields of a plain line, and the line's first bytes. */
static const char *const OPENING = "{\"time\":\"";
static const char *const SEPARATORS[] = {
    "\",\"application_name\":\"", "\",\"environment_name\":\"", "\",\"log_event\":\"", "\",\"trace_id\":\"",
    "\",\"file_path\":\"",        "\",\"host_ip\":\"",          "\",\"data\":",
};
#define TEXTS 6

/* Past one well-formed UTF-8 sequence starting at p (a byte >= 0x80), or NULL (Unicode's table 3-7). */
static cursor utf8_sequence(cursor p, cursor end) {
    unsigned char c = p[0];
    int more;
    unsigned char low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) low = 0xA0;       /* no overlong forms */
        else if (c == 0xED) high = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) low = 0x90;
        else if (c == 0xF4) high = 0x8F; /* nothing above U+10FFFF */
    } else {
        return NULL;
    }
    if (end - p <= more || p[1] < low || p[1] > high) return NULL;
    for (int i = 2; i <= more; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return NULL;
    return p + more + 1;
}

/* Past a JSON string's closing quote, p just after its opening one; NULL for an escape, a control byte, bad UTF-8. */
static cursor string_end(cursor p, cursor end) {
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') return p + 1;
        if (c == '\\' || c < 0x20) return NULL;
        if (c < 0x80) {
            p++;
        } else if ((p = utf8_sequence(p, end)) == NULL) {
            return NULL;
        }
    }
    return NULL;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Past a JSON number (RFC 8259 grammar), or NULL. */
static cursor number_end(cursor p, cursor end) {
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    return p;
}

/* Spaces are the only JSON whitespace a plain line holds: a tab or CR would need COPY escaping, LF ends the line. */
static cursor skip_spaces(cursor p, cursor end) {
    while (p < end && *p == ' ') p++;
    return p;
}

static cursor literal_end(cursor p, cursor end, const char *word, size_t length) {
    if ((size_t)(end - p) < length || memcmp(p, word, length) != 0) return NULL;
    return p + length;
}

/* Past one JSON value nested depth levels deep, or NULL. */
static cursor value_end(cursor p, cursor end, int depth) {
    if (p >= end) return NULL;
    switch (*p) {
    case '"':
        return string_end(p + 1, end);
    case 't':
        return literal_end(p, end, "true", 4);
    case 'f':
        return literal_end(p, end, "false", 5);
    case 'n':
        return literal_end(p, end, "null", 4);
    case '{':
    case '[': {
        unsigned char closing = *p == '{' ? '}' : ']';
        int object = *p == '{';
        if (depth >= MAX_DATA_DEPTH) return NULL;
        p = skip_spaces(p + 1, end);
        if (p < end && *p == closing) return p + 1;
        for (;;) {
            if (object) {
                if (p >= end || *p != '"' || (p = string_end(p + 1, end)) == NULL) return NULL;
                p = skip_spaces(p, end);
                if (p >= end || *p != ':') return NULL;
                p = skip_spaces(p + 1, end);
            }
            if ((p = value_end(p, end, depth + 1)) == NULL) return NULL;
            p = skip_spaces(p, end);
            if (p >= end) return NULL;
            if (*p == closing) return p + 1;
            if (*p != ',') return NULL;
            p = skip_spaces(p + 1, end);
        }
    }
    default:
        return number_end(p, end);
    }
}

static int two_digits(cursor p, int *value) {
    if (!is_digit(p[0]) || !is_digit(p[1])) return 0;
    *value = (p[0] - '0') * 10 + (p[1] - '0');
    return 1;
}

static int days_in_month(int year, int month) {
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : DAYS[month - 1];
}

/* True when stamp (between the quotes) is one PostgreSQL stores exactly as written:
 * YYYY-MM-DDTHH:MM:SS[.1-6 digits](Z|+HH:MM|-HH:MM), a real date, years 0002-9998, offsets up to 15:59. */
static int plain_stamp(cursor p, cursor end) {
    int century, year2, month, day, hour, minute, second, offset_hour, offset_minute;
    if (end - p < 20 || !two_digits(p, &century) || !two_digits(p + 2, &year2) || p[4] != '-' ||
        !two_digits(p + 5, &month) || p[7] != '-' || !two_digits(p + 8, &day) || p[10] != 'T' ||
        !two_digits(p + 11, &hour) || p[13] != ':' || !two_digits(p + 14, &minute) || p[16] != ':' ||
        !two_digits(p + 17, &second))
        return 0;
    int year = century * 100 + year2;
    /* Years 0000-0001 and 9999 may leave PostgreSQL's range once the offset applies: the contract rewrites them. */
    if (year < 2 || year > 9998 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour > 23 || minute > 59 || second > 59)
        return 0;
    p += 19;
    if (p < end && *p == '.') {
        cursor digits = ++p;
        while (p < end && is_digit(*p)) p++;
        if (p == digits || p - digits > MAX_FRACTION_DIGITS) return 0;
    }
    if (end - p == 1) return *p == 'Z';
    return end - p == 6 && (*p == '+' || *p == '-') && two_digits(p + 1, &offset_hour) && p[3] == ':' &&
           two_digits(p + 4, &offset_minute) && offset_hour <= MAX_OFFSET_HOUR && offset_minute <= 59;
}

/* The COPY row of one plain line [p, end), or NULL (Python error set) when memory runs out; *plain = 0 when the
 * line is not plain (no row then, no error). */
static PyObject *line_row(cursor p, cursor end, int *plain) {
    cursor starts[TEXTS + 2], ends[TEXTS + 2];
    size_t opening = strlen(OPENING);
    *plain = 0;
    if ((size_t)(end - p) < opening || memcmp(p, OPENING, opening) != 0) return NULL;
    p += opening;
    starts[0] = p;
    for (int field = 0; field <= TEXTS; field++) {
        if ((p = string_end(p, end)) == NULL) return NULL;
        ends[field] = p - 1;
        if (field > 0 && ends[field] == starts[field]) return NULL; /* the texts are non-empty */
        size_t length = strlen(SEPARATORS[field]);
        p--; /* the separator starts with the closing quote */
        if ((size_t)(end - p) < length || memcmp(p, SEPARATORS[field], length) != 0) return NULL;
        p += length;
        starts[field + 1] = p;
    }
    if (!plain_stamp(starts[0], ends[0])) return NULL;
    int null_data = end - p == 5 && memcmp(p, "null}", 5) == 0;
    if (!null_data) {
        if (p >= end || *p != '{' || (p = value_end(p, end, 0)) == NULL) return NULL;
        if (end - p != 1 || *p != '}') return NULL;
        ends[TEXTS + 1] = p;
    }
    *plain = 1;
    Py_ssize_t size = null_data ? 2 : ends[TEXTS + 1] - starts[TEXTS + 1];
    for (int field = 0; field <= TEXTS; field++) size += ends[field] - starts[field] + 1; /* and its tab */
    PyObject *row = PyBytes_FromStringAndSize(NULL, size + 1);
    if (row == NULL) return NULL;
    char *out = PyBytes_AS_STRING(row);
    for (int field = 0; field <= TEXTS; field++) {
        memcpy(out, starts[field], ends[field] - starts[field]);
        out += ends[field] - starts[field];
        *out++ = '\t';
    }
    if (null_data) {
        memcpy(out, "\\N", 2);
        out += 2;
    } else {
        memcpy(out, starts[TEXTS + 1], ends[TEXTS + 1] - starts[TEXTS + 1]);
        out += ends[TEXTS + 1] - starts[TEXTS + 1];
    }
    *out = '\n';
    return row;
}

PyDoc_STRVAR(copy_rows_doc,
             "copy_rows(block, /)\n--\n\n"
             "(items, unjudged) for the lines of block (joined by newlines): each item is a plain line's COPY row\n"
             "(it ends with a newline) or, for a line this cannot judge, the line itself (which cannot end so);\n"
             "unjudged counts those lines.");

static PyObject *copy_rows(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0) return NULL;
    Py_ssize_t unjudged = 0;
    PyObject *items = PyList_New(0);
    if (items == NULL) goto failed;
    cursor p = view.buf, end = p + view.len;
    for (;;) {
        cursor newline = memchr(p, '\n', end - p);
        cursor line_end = newline == NULL ? end : newline;
        int plain;
        PyObject *item = line_row(p, line_end, &plain);
        if (item == NULL) {
            if (plain || PyErr_Occurred()) goto failed;
            unjudged++;
            item = PyBytes_FromStringAndSize((const char *)p, line_end - p);
            if (item == NULL) goto failed;
        }
        int appended = PyList_Append(items, item);
        Py_DECREF(item);
        if (appended != 0) goto failed;
        if (newline == NULL) break;
        p = newline + 1;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn)", items, unjudged);
failed:
    Py_XDECREF(items);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"copy_rows", copy_rows, METH_O, copy_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastrows",
    .m_doc = "The collector's compiled fast path: a read's plain lines as COPY rows, or None (see _fastrows.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastrows(void) { return PyModule_Create(&module); }
