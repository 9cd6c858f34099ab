#!/bin/sh
# Installs what building and testing qkv needs, on a Debian/Ubuntu machine
# that may have only the compiler toolchain: cmake, libpng-dev (PNG output of
# `qkv heatmap`; the build goes on without it), and with --test clang
# for the libFuzzer run and Chromium (with a font) for the page's browser
# test, and ThreadSanitizer's runtime for clang (make test-tsan). Does
# nothing for what is already there; never fails the build for the optional
# libpng, clang, its TSan runtime and Chromium.
set -eu

# Can clang link a -fsanitize=thread program? Debian's clang only
# recommends its sanitizer runtimes (libclang-rt-N-dev), and the installs
# below leave recommendations out.
tsan_links() {
    command -v clang >/dev/null 2>&1 || return 1
    t=$(mktemp)
    if printf 'int main(void) { return 0; }\n' |
        clang -x c -fsanitize=thread -o "$t" - >/dev/null 2>&1; then ok=0; else ok=1; fi
    rm -f "$t"
    return "$ok"
}

# After clang is there: its TSan runtime, when missing (a warning, never a
# failure: only make test-tsan needs it, and it says so itself).
tsan_runtime() {
    [ "${1:-}" = "--test" ] || return 0
    command -v clang >/dev/null 2>&1 || return 0
    tsan_links && return 0
    pkg="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "deps: missing: $pkg (clang's ThreadSanitizer runtime; as root on Debian:" \
            "apt-get install $pkg)" >&2
        return 0
    fi
    echo "deps: installing $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
        >/dev/null || echo "deps: could not install $pkg; make test-tsan needs it" >&2
}
need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v cc >/dev/null 2>&1 || need="$need gcc"
dpkg -s libpng-dev >/dev/null 2>&1 || [ -e /usr/include/png.h ] || need="$need libpng-dev"
if [ "${1:-}" = "--test" ]; then
    command -v clang >/dev/null 2>&1 || need="$need clang"
    # test_html renders the attention page in headless Chromium, with a font.
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
        command -v google-chrome >/dev/null 2>&1 || need="$need chromium"
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need="$need fonts-dejavu-core"
fi
if [ -z "$need" ]; then
    tsan_runtime "${1:-}"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: missing:$need; install them (as root on Debian: apt-get install$need)" >&2
    command -v cmake >/dev/null 2>&1 || exit 1
    tsan_runtime "${1:-}"
    exit 0
fi
echo "deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
tsan_runtime "${1:-}"
