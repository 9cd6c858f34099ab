#!/bin/sh
# Installs the build tree into a temporary prefix and builds a program
# against it through pkg-config's file, statically and shared, then runs
# both and the installed qkv; includes qkv.h from C++ when a C++ compiler
# is there. Usage: install_check.sh BUILD_DIR C_COMPILER
set -eu
build=$1
cc=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/qkv.h bin/qkv; do
    [ -e "$prefix/$f" ] || { echo "install_check: $f not installed"; exit 1; }
done
pc=$(find "$prefix" -name qkv.pc | head -n 1)
[ -n "$pc" ] || { echo "install_check: qkv.pc not installed"; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
# Read the flags from the installed .pc file itself (pkg-config may be absent).
pcvar() { sed -n "s/^$1: //p" "$pc" | sed "s|\${libdir}|$libdir|g; s|\${includedir}|$prefix/include|g"; }
cflags=$(pcvar Cflags)
libs=$(pcvar Libs)
libs_private=$(pcvar Libs.private)
cat >"$prefix/app.c" <<'EOF'
#include <qkv.h>
#include <stdio.h>
int main(void)
{
    float q[2] = {1, 0}, k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4}, o[2];
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 1, 1, 2);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, 1, 2, 2);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, 1, 2, 2);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, 1, 2);
    if (qkv_attention_forward(NULL, &to, NULL, NULL, &tq, &tk, &tv, NULL) != QKV_OK) return 1;
    /* scores 1/sqrt2 and 0: weights 0.669761, 0.330239, o = (1.660477, 2.660477) */
    printf("%s %.6f %.6f\n", qkv_version_string(), o[0], o[1]);
    return 0;
}
EOF
# shellcheck disable=SC2086
"$cc" -std=c11 $cflags "$prefix/app.c" -o "$prefix/app_shared" $libs $libs_private
# shellcheck disable=SC2086
"$cc" -std=c11 $cflags "$prefix/app.c" -o "$prefix/app_static" "$libdir/libqkv.a" $libs_private
want="$("$prefix/bin/qkv" --version | sed 's/.*libqkv \([^)]*\)).*/\1/') 1.660477 2.660477"
for app in app_shared app_static; do
    got=$(LD_LIBRARY_PATH="$libdir" "$prefix/$app")
    [ "$got" = "$want" ] || { echo "install_check: $app printed '$got', expected '$want'"; exit 1; }
done
if command -v c++ >/dev/null 2>&1; then
    printf '#include <qkv.h>\nint main() { return qkv_version_number() == QKV_VERSION_NUMBER ? 0 : 1; }\n' \
        >"$prefix/app.cpp"
    # shellcheck disable=SC2086
    c++ $cflags "$prefix/app.cpp" -o "$prefix/app_cpp" "$libdir/libqkv.a" $libs_private
    "$prefix/app_cpp"
fi
echo "install_check: library, header, qkv.pc and qkv install; programs link shared and static"
