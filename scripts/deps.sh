#!/bin/sh
# Installs what building and testing qkv needs, on a Debian/Ubuntu machine
# that may have only the compiler toolchain: cmake, libpng-dev (PNG output of
# `qkv heatmap`; the build goes on without it), and with --test clang
# for the libFuzzer run and Chromium (with a font) for the page's browser
# test. Does nothing for what is already there; never fails the build for
# the optional libpng, clang and Chromium.
set -eu
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
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: missing:$need; install them (as root on Debian: apt-get install$need)" >&2
    command -v cmake >/dev/null 2>&1 || exit 1
    exit 0
fi
echo "deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
