# Thin wrapper over CMake so that two commands do everything:
#   make        build (Release, warnings as errors) and run a demonstration
#   make test   the whole test suite: Release, then ASan+UBSan, then
#               ThreadSanitizer on the tests that run threads, then the
#               attention tests on a build with only the generic C kernels,
#               the Python binding's tests, then a bounded libFuzzer run of
#               the .npy and .safetensors parsers
# Other targets: build, install (PREFIX=/usr/local), fuzz (FUZZ_SECONDS=60),
# clean. Build trees live under build/.

PREFIX ?= /usr/local
FUZZ_SECONDS ?= 30
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SAN_CC ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo cc)
CMAKE_FLAGS ?=

.PHONY: all build demo test test-release test-sanitize test-tsan test-generic test-python fuzz \
        install clean deps

all: build demo

deps:
	@sh scripts/deps.sh

build: deps
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DQKV_WERROR=ON \
	    -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)
	cmake --build build/release -j $(JOBS)

demo: build
	@sh scripts/demo.sh build/release

test: test-release test-sanitize test-tsan test-generic test-python fuzz

test-release: build
	@sh scripts/deps.sh --test
	cd build/release && ctest --output-on-failure -j $(JOBS)

test-sanitize:
	@sh scripts/deps.sh --test
	cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DQKV_WERROR=ON \
	    -DQKV_SANITIZE=ON -DCMAKE_C_COMPILER=$(SAN_CC) $(CMAKE_FLAGS)
	cmake --build build/sanitize -j $(JOBS)
	cd build/sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer (-O1, the generic kernels only: CMakeLists.txt says why)
# on the programs that run the thread pool: the forward's units and decode's
# key chunks, the backward's dQ turns, GEMM, the layer, progress, several
# callers at once; test_threads takes 1, 2, 3 and 7 threads through each.
# scripts/tsan.sh runs them, with halt_on_error, under setarch -R where
# this kernel's address layout needs it.
TSAN_TESTS = test_threads test_properties test_backward test_gemm test_mha test_progress \
             test_api test_options test_oracle test_backends test_merge test_positions test_context \
             test_dtypes test_quant
empty :=
space := $(empty) $(empty)

test-tsan:
	@sh scripts/deps.sh --test
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DQKV_WERROR=ON \
	    -DQKV_TSAN=ON -DCMAKE_C_COMPILER=$(SAN_CC) $(CMAKE_FLAGS)
	cmake --build build/tsan -j $(JOBS) --target $(TSAN_TESTS)
	@sh scripts/tsan.sh build/tsan '^($(subst $(space),|,$(strip $(TSAN_TESTS))))$$' $(JOBS)

# The portable path alone: no SIMD kernel sets compiled in.
test-generic:
	cmake -S . -B build/generic -DCMAKE_BUILD_TYPE=Release -DQKV_WERROR=ON -DQKV_SIMD=OFF \
	    $(CMAKE_FLAGS)
	cmake --build build/generic -j $(JOBS)
	cd build/generic && ctest --output-on-failure -j $(JOBS) \
	    -R 'test_(kernels|options|properties|oracle|api|worked_example|progress|gemm|backends|merge|positions|context|dtypes|quant)'

# The Python binding: pytest on the build tree's library, then a pip install
# into a fresh virtual environment and an import from elsewhere.
test-python: build
	@sh scripts/python.sh

fuzz:
	@sh scripts/deps.sh --test
	@sh scripts/fuzz.sh $(FUZZ_SECONDS)

install: build
	cmake --install build/release

clean:
	rm -rf build
