/* The collector's compiled fast path: a read's lines as COPY rows, in one pass, for every line it fully understands.
 *
 * It understands the lines JSON encoders write for the contract's event: the eight keys in any order, each once,
 * spaces between tokens, escapes in the texts and in data; a time stamp PostgreSQL parses as written; six non-empty
 * texts; data an object or null. For such a line the COPY row is the stamp, the six texts (escapes decoded, then
 * COPY's backslash, tab, newline and CR escaped) and data (as written, its backslashes doubled), joined by tabs.
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

/* The contract's columns, in the logs table's order: the row is built in it, whatever the line's key order. */
static const struct {
    const char *name;
    size_t length;
} COLUMNS[] = {
    {"time", 4},     {"application_name", 16}, {"environment_name", 16}, {"log_event", 9},
    {"trace_id", 8}, {"file_path", 9},         {"host_ip", 7},           {"data", 4},
};
enum { TIME = 0, DATA = 7, FIELDS = 8 };

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

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The value of 4 hex digits at p, or -1. */
static long hex4(cursor p, cursor end) {
    long value = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(p[i]);
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

/* Past one JSON escape at p (a backslash), or NULL: \u0000 (no NUL is stored) and lone surrogates are left to the
 * contract. */
static cursor escape_end(cursor p, cursor end) {
    if (end - p < 2) return NULL;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return p + 2;
    case 'u': {
        long unit = hex4(p + 2, end);
        if (unit <= 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) return NULL;
        if (unit < 0xD800 || unit > 0xDBFF) return p + 6;
        if (end - p < 12 || p[6] != '\\' || p[7] != 'u') return NULL;
        long low = hex4(p + 8, end);
        return low >= 0xDC00 && low <= 0xDFFF ? p + 12 : NULL;
    }
    default:
        return NULL;
    }
}

/* Past a JSON string's closing quote, p just after its opening one; NULL for a control byte, bad UTF-8, an escape
 * escape_end refuses. *escaped is set when the string holds an escape. */
static cursor string_end(cursor p, cursor end, int *escaped) {
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if ((p = escape_end(p, end)) == NULL) return NULL;
            *escaped = 1;
        } else if (c < 0x80) {
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

/* Spaces are the only JSON whitespace taken here: a tab or CR in data would need COPY escaping (the contract does
 * it), LF ends the line. */
static cursor skip_spaces(cursor p, cursor end) {
    while (p < end && *p == ' ') p++;
    return p;
}

static cursor literal_end(cursor p, cursor end, const char *word, size_t length) {
    if ((size_t)(end - p) < length || memcmp(p, word, length) != 0) return NULL;
    return p + length;
}

/* Past one JSON value nested depth levels deep, or NULL; *escaped is set when a string in it holds an escape. */
static cursor value_end(cursor p, cursor end, int depth, int *escaped) {
    if (p >= end) return NULL;
    switch (*p) {
    case '"':
        return string_end(p + 1, end, escaped);
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
                if (p >= end || *p != '"' || (p = string_end(p + 1, end, escaped)) == NULL) return NULL;
                p = skip_spaces(p, end);
                if (p >= end || *p != ':') return NULL;
                p = skip_spaces(p + 1, end);
            }
            if ((p = value_end(p, end, depth + 1, escaped)) == NULL) return NULL;
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

/* A text's value as COPY text: JSON escapes decoded to UTF-8, then backslash, tab, LF and CR escaped for COPY.
 * [p, end) holds only escapes escape_end accepted. Never longer than its JSON form. */
static char *copy_text(char *out, cursor p, cursor end) {
    while (p < end) {
        if (*p != '\\') {
            *out++ = (char)*p++;
            continue;
        }
        long point;
        switch (p[1]) {
        case 'u':
            point = hex4(p + 2, end);
            if (point >= 0xD800 && point <= 0xDBFF) {
                point = 0x10000 + ((point - 0xD800) << 10) + (hex4(p + 8, end) - 0xDC00);
                p += 6;
            }
            p += 6;
            break;
        case 'b':
            point = '\b', p += 2;
            break;
        case 'f':
            point = '\f', p += 2;
            break;
        case 'n':
            point = '\n', p += 2;
            break;
        case 'r':
            point = '\r', p += 2;
            break;
        case 't':
            point = '\t', p += 2;
            break;
        default: /* " \ / */
            point = p[1], p += 2;
        }
        switch (point) {
        case '\\':
            *out++ = '\\', *out++ = '\\';
            break;
        case '\t':
            *out++ = '\\', *out++ = 't';
            break;
        case '\n':
            *out++ = '\\', *out++ = 'n';
            break;
        case '\r':
            *out++ = '\\', *out++ = 'r';
            break;
        default:
            if (point < 0x80) {
                *out++ = (char)point;
            } else if (point < 0x800) {
                *out++ = (char)(0xC0 | (point >> 6));
                *out++ = (char)(0x80 | (point & 0x3F));
            } else if (point < 0x10000) {
                *out++ = (char)(0xE0 | (point >> 12));
                *out++ = (char)(0x80 | ((point >> 6) & 0x3F));
                *out++ = (char)(0x80 | (point & 0x3F));
            } else {
                *out++ = (char)(0xF0 | (point >> 18));
                *out++ = (char)(0x80 | ((point >> 12) & 0x3F));
                *out++ = (char)(0x80 | ((point >> 6) & 0x3F));
                *out++ = (char)(0x80 | (point & 0x3F));
            }
        }
    }
    return out;
}

/* data as COPY text: as written, each backslash doubled. */
static char *copy_data(char *out, cursor p, cursor end) {
    for (; p < end; p++) {
        if (*p == '\\') *out++ = '\\';
        *out++ = (char)*p;
    }
    return out;
}

/* Where one field's value is in the line: the string's content between its quotes, or data's whole value. */
struct span {
    cursor start, end;
    int escaped;
};

/* The fields of a line the fast path understands, in column order; 0 when it does not understand the line. */
static int line_fields(cursor p, cursor end, struct span fields[FIELDS]) {
    unsigned seen = 0;
    if (p >= end || *p != '{') return 0;
    p = skip_spaces(p + 1, end);
    for (int member = 0; member < FIELDS; member++) {
        if (member > 0) {
            if (p >= end || *p != ',') return 0;
            p = skip_spaces(p + 1, end);
        }
        int key_escaped = 0;
        if (p >= end || *p != '"') return 0;
        cursor key = p + 1;
        if ((p = string_end(key, end, &key_escaped)) == NULL || key_escaped) return 0;
        size_t length = (size_t)(p - 1 - key);
        int column = 0;
        while (column < FIELDS && (COLUMNS[column].length != length || memcmp(key, COLUMNS[column].name, length) != 0))
            column++;
        if (column == FIELDS || seen & (1u << column)) return 0; /* an unknown or a repeated key */
        seen |= 1u << column;
        p = skip_spaces(p, end);
        if (p >= end || *p != ':') return 0;
        p = skip_spaces(p + 1, end);
        struct span *field = &fields[column];
        field->escaped = 0;
        if (column == DATA) {
            field->start = p;
            if (p >= end || (*p != '{' && *p != 'n')) return 0; /* an object or null */
            if ((p = value_end(p, end, 0, &field->escaped)) == NULL) return 0;
            field->end = p;
        } else {
            if (p >= end || *p != '"') return 0;
            field->start = p + 1;
            if ((p = string_end(p + 1, end, &field->escaped)) == NULL) return 0;
            field->end = p - 1;
            if (field->end == field->start) return 0; /* the texts are non-empty */
        }
        p = skip_spaces(p, end);
    }
    if (end - p != 1 || *p != '}') return 0;
    return !fields[TIME].escaped && plain_stamp(fields[TIME].start, fields[TIME].end);
}

/* The COPY row of the line [p, end), or NULL: with a Python error set when memory ran out, else (*understood = 0)
 * when the fast path does not understand the line. */
static PyObject *line_row(cursor p, cursor end, int *understood) {
    struct span fields[FIELDS];
    *understood = line_fields(p, end, fields);
    if (!*understood) return NULL;
    int null_data = fields[DATA].end - fields[DATA].start == 4 && memcmp(fields[DATA].start, "null", 4) == 0;
    /* Decoded texts are never longer than their JSON; doubled backslashes at most double data. */
    Py_ssize_t size = FIELDS; /* seven tabs and the newline */
    for (int column = 0; column < DATA; column++) size += fields[column].end - fields[column].start;
    Py_ssize_t data_size = fields[DATA].end - fields[DATA].start;
    size += null_data ? 2 : fields[DATA].escaped ? 2 * data_size : data_size;
    PyObject *row = PyBytes_FromStringAndSize(NULL, size);
    if (row == NULL) return NULL;
    char *out = PyBytes_AS_STRING(row);
    for (int column = 0; column < DATA; column++) {
        const struct span *field = &fields[column];
        if (field->escaped) {
            out = copy_text(out, field->start, field->end);
        } else {
            memcpy(out, field->start, field->end - field->start);
            out += field->end - field->start;
        }
        *out++ = '\t';
    }
    if (null_data) {
        memcpy(out, "\\N", 2);
        out += 2;
    } else if (fields[DATA].escaped) {
        out = copy_data(out, fields[DATA].start, fields[DATA].end);
    } else {
        memcpy(out, fields[DATA].start, data_size);
        out += data_size;
    }
    *out++ = '\n';
    Py_ssize_t written = out - PyBytes_AS_STRING(row);
    if (written != size && _PyBytes_Resize(&row, written) != 0) return NULL;
    return row;
}

PyDoc_STRVAR(copy_rows_doc,
             "copy_rows(block, /)\n--\n\n"
             "(items, unjudged) for the lines of block (joined by newlines): each item is a line's COPY row\n"
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
        int understood;
        PyObject *item = line_row(p, line_end, &understood);
        if (item == NULL) {
            if (understood || PyErr_Occurred()) goto failed;
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
    .m_doc = "The collector's compiled fast path: a read's lines as COPY rows where it can (see _fastrows.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastrows(void) { return PyModule_Create(&module); }
