/* Helpers shared by the file formats (io.h). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* strerror_r, the XSI variant */
#endif
#include "io/io.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

qkv_status qkv_file_fail(qkv_status st, const char *file, const char *fmt, ...)
{
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qkv_fail(st, "%s: %s", file, msg);
}

qkv_status qkv_io_fail(const char *path, const char *what, int err)
{
    char buf[128];
    if (strerror_r(err, buf, sizeof buf) != 0) /* the XSI variant: thread-safe */
        snprintf(buf, sizeof buf, "error %d", err);
    return qkv_fail(QKV_ERR_IO, "%s: %s: %s", path, what, buf);
}

const char *qkv_byte_name(char buf[24], int ch, const char *end)
{
    if (ch < 0)
        snprintf(buf, 24, "%s", end);
    else if (ch >= 0x20 && ch < 0x7f)
        snprintf(buf, 24, "'%c'", ch);
    else
        snprintf(buf, 24, "byte 0x%02x", ch);
    return buf;
}

int qkv_host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void qkv_swap_elements(unsigned char *p, size_t nbytes, size_t size)
{
    for (size_t i = 0; i + size <= nbytes; i += size)
        for (size_t j = 0; j < size / 2; j++) {
            unsigned char t = p[i + j];
            p[i + j] = p[i + size - 1 - j];
            p[i + size - 1 - j] = t;
        }
}

int qkv_write_le(FILE *f, const void *p, size_t n, size_t size)
{
    const unsigned char *b = p;
    unsigned char buf[4096];
    if (qkv_host_little_endian()) return n == 0 || fwrite(b, 1, n, f) == n;
    for (size_t off = 0; off < n; off += sizeof buf) {
        size_t k = n - off < sizeof buf ? n - off : sizeof buf;
        memcpy(buf, b + off, k);
        qkv_swap_elements(buf, k, size); /* sizeof buf is a multiple of 8 */
        if (fwrite(buf, 1, k, f) != k) return 0;
    }
    return 1;
}

qkv_status qkv_close_written(FILE *f, const char *path, int ok)
{
    if (!ok) {
        int err = errno;
        fclose(f);
        return qkv_io_fail(path, "write failed", err);
    }
    if (fclose(f) != 0) return qkv_io_fail(path, "write failed on close", errno);
    return QKV_OK;
}
