/* Helpers shared by the file formats (npy.c, safetensors.c): error
 * details that start with the file's name, and byte order. */
#ifndef QKV_IO_H
#define QKV_IO_H

#include "common.h"

#include <stddef.h>
#include <stdio.h>

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

/* Writes the n bytes at p, elements of `size` bytes, little-endian (a
 * big-endian host swaps a copy); 1 on success. */
int qkv_write_le(FILE *f, const void *p, size_t n, size_t size);

/* Closes a file opened for writing: QKV_OK when ok (every write went
 * through) and fclose succeeds, else QKV_ERR_IO naming path and errno. */
qkv_status qkv_close_written(FILE *f, const char *path, int ok);

/* The format's own name for the dtype of tensor `name` in st: "F32",
 * "I8", "F8_E4M3", ... (a static string), also for the dtypes that have no
 * qkv_dtype, which qkv_safetensors_find reports as -1; for details that
 * name them. NULL when st has no such tensor. Defined in safetensors.c. */
const char *qkv_safetensors_dtype_str(const qkv_safetensors *st, const char *name);

#endif
