#!/bin/sh
# Installs what building and testing qkv needs, on a Debian/Ubuntu machine
# that may have only the compiler toolchain: cmake, and clang for the
# libFuzzer run. Does nothing for what is already there; never fails the
# build for the optional clang.
set -eu
need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v cc >/dev/null 2>&1 || need="$need gcc"
if [ "${1:-}" = "--test" ]; then
    command -v clang >/dev/null 2>&1 || need="$need clang"
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
