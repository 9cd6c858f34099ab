#!/bin/sh
# The dynamic symbols libqkv.so defines are exactly the functions qkv.h
# declares with QKV_API: nothing internal leaks (the library is built with
# hidden visibility), and nothing declared is missing.
# usage: symbols_check.sh LIBQKV_SO QKV_H
set -eu
lib=$1
header=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
command -v nm >/dev/null || { echo "symbols_check: nm not found (binutils)"; exit 1; }
# Text (and weak) symbols the object defines; sanitizer builds add their
# runtime's hooks, which are not ours: only qkv_ names and anything else
# that is not a sanitizer's are counted.
nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwiDdBbRrVv]$/ { print $3 }' |
    grep -v -E '^(__|_init$|_fini$|_edata$|_end$|__bss_start$)' | sed 's/@.*//' | sort -u >"$tmp/exported"
# Every QKV_API declaration: the name before the first '(' on its line.
grep -E '^QKV_API ' "$header" | sed -E 's/\(.*//; s/.*[ *]//' | sort -u >"$tmp/declared"
if [ ! -s "$tmp/declared" ]; then
    echo "symbols_check: no QKV_API declarations found in $header"
    exit 1
fi
if ! cmp -s "$tmp/exported" "$tmp/declared"; then
    echo "symbols_check: $lib exports other symbols than $header declares"
    echo "  exported but not declared:"
    comm -23 "$tmp/exported" "$tmp/declared" | sed 's/^/    /'
    echo "  declared but not exported:"
    comm -13 "$tmp/exported" "$tmp/declared" | sed 's/^/    /'
    exit 1
fi
echo "symbols_check: $(wc -l <"$tmp/declared") functions, exported and declared alike"
