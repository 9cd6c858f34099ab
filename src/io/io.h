/* Helpers shared by the file formats (npy.c, safetensors.c): error
 * details that start with the file's name, and byte order. */
#ifndef QKV_IO_H
#define QKV_IO_H

#include "common.h"

#include <stddef.h>

/* qkv_fail with "FILE: " in front, as every detail of a file starts. */
qkv_status qkv_file_fail(qkv_status st, const char *file, const char *fmt, ...) QKV_PRINTF(3, 4);

/* QKV_ERR_IO: "PATH: WHAT: strerror(err)". */
qkv_status qkv_io_fail(const char *path, const char *what, int err);

/* How a found byte reads in a syntax error: 'x' when printable, else
 * "byte 0xNN"; `end` for ch < 0 (past the end). Returns buf (24 bytes). */
const char *qkv_byte_name(char buf[24], int ch, const char *end);

/* Both formats store little-endian numbers; a big-endian host swaps. */
int qkv_host_little_endian(void);

/* Reverses the bytes of each size-byte element of the nbytes at p. */
void qkv_swap_elements(unsigned char *p, size_t nbytes, size_t size);

#endif
