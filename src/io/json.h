/* A strict JSON tokenizer for the headers of file formats (safetensors.c
 * reads its header with it): strings, non-negative integers, arrays of
 * them and the punctuation of objects, which a caller puts together in the
 * one shape it expects, so there is no value tree and no recursion. Errors
 * are details "FILE: WHAT: ..." that give the offset in the file and say
 * what was expected there. Also the two pieces a JSON writer needs: a
 * string's escapes and a UTF-8 check. */
#ifndef QKV_IO_JSON_H
#define QKV_IO_JSON_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

/* A position in a JSON text. Fill every field, i and used 0 to start. */
typedef struct qkv_json {
    const unsigned char *s; /* the text; need not end in a NUL */
    size_t n, i;            /* its length; the next byte to read */
    size_t base;            /* the file offset of s[0]: details count from the file's start */
    const char *file;       /* the name details start with */
    const char *what;       /* what the text is, after that name ("header") */
    /* Decoded strings go here one after another, each NUL-terminated; n + 1
     * bytes always hold them all. A caller may wind `used` back to a value
     * it read before, to drop strings it no longer needs. */
    char *arena;
    size_t used;
} qkv_json;

/* The next byte, or -1 at the end of the text. */
int qkv_json_peek(const qkv_json *j);

/* Moves past JSON whitespace (space, tab, LF, CR). */
void qkv_json_skip_ws(qkv_json *j);

/* Moves past the next byte if it is ch; 1 if it did. */
int qkv_json_take(qkv_json *j, int ch);

/* The file offset of the next byte, for details. */
size_t qkv_json_offset(const qkv_json *j);

/* qkv_file_fail with "WHAT: " in front of the detail. */
qkv_status qkv_json_fail(const qkv_json *j, qkv_status st, const char *fmt, ...) QKV_PRINTF(3, 4);

/* QKV_ERR_FORMAT: "WHAT: expected EXPECTED at offset N, found 'x'" (or
 * "byte 0xNN", or "the end of the WHAT"). */
qkv_status qkv_json_expected(const qkv_json *j, const char *expected);

/* The bracket `open` that starts an object or array ('{' or '['), then
 * whitespace; *more = 0 when the closing bracket follows at once (empty:
 * moved past it), else 1. expected names `open` when it is missing. */
qkv_status qkv_json_open(qkv_json *j, int open, const char *expected, int *more);

/* The ':' between a member's name and its value, and the whitespace on
 * either side; expected names it in the detail when it is missing. */
qkv_status qkv_json_colon(qkv_json *j, const char *expected);

/* After an element of an object or array: whitespace, then either `close`
 * ('}' or ']'; *more = 0) or ',' (*more = 1), moving past it; expected
 * names the two in the detail when neither is there. */
qkv_status qkv_json_next(qkv_json *j, int close, const char *expected, int *more);

/* A string, decoded into the arena: *out points at it, *len is its length
 * without the NUL (it may hold U+0000 itself, from \u0000). Rejects what
 * JSON does (unescaped control bytes, bad escapes, lone surrogates) and
 * UTF-8 that is not well formed. expected names the string when the next
 * byte is not a '"'. */
qkv_status qkv_json_string(qkv_json *j, const char *expected, const char **out, size_t *len);

/* A number that must be a non-negative integer of at most 64 bits (no
 * sign, fraction, exponent or leading zero); what names it in details
 * ("'shape'"). Too large a one is QKV_ERR_OVERFLOW. */
qkv_status qkv_json_uint(qkv_json *j, const char *what, uint64_t *v);

/* '[' a, b, ... ']' of qkv_json_uint values into vals[0..*count). Past
 * max of them it stops with *too_many = 1 and QKV_OK, so that the caller
 * says what its limit is. */
qkv_status qkv_json_uint_array(qkv_json *j, const char *what, uint64_t *vals, int max,
                               int *count, int *too_many);

/* Is the NUL-terminated s well-formed UTF-8 (as qkv_json_string accepts)? */
int qkv_json_valid_utf8(const char *s);

/* How byte ch is written inside a JSON string: its escape ("\\n",
 * "\\u0001", ...), in buf or static, or NULL when ch stands for itself. */
const char *qkv_json_escape(unsigned char ch, char buf[8]);

#endif
