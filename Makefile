# ring3 — the two commands a user needs are `make demo` and `make test` (see README.md).
# Everything else here is a building block of those two.

.PHONY: all deps build demo test check format format-check clean bench bench-nvme bench-blk bench-net bench-broker bench-emu

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B build/gcc -G Ninja -DCMAKE_CXX_COMPILER=g++
	cmake --build build/gcc

demo: build
	tests/guest/demo build/gcc

# The full check that CI runs: formatting, g++ build with unit and guest tests, clang build with
# ASan+UBSan running the unit tests, and a short libFuzzer run.
test: deps
	scripts/check

# Benchmarks (not tests): figures on the last line, `name: value unit`.
bench: build
	build/gcc/bench/ring3_dma_bench

# ring3's NVMe driver against the kernel's nvme + fio (io_uring) in one QEMU guest boot (root, ~5 min).
bench-nvme: build
	bench/guest-nvme/run build/gcc

# The same for virtio-blk: the kernel's virtio_blk + fio (io_uring) against ring3 perf blk (root, ~5 min).
bench-blk: build
	bench/guest-blk/run build/gcc

# virtio-net transmit: the kernel's pktgen through virtio_net against ring3 perf net --tx, 64-byte
# frames, in one QEMU guest boot (root, ~3 min).
bench-net: build
	bench/guest-net/run build/gcc

# ring3d: claim -> first I/O through the I/O server against a direct open, and the restart time of
# a supervised driver after SIGKILL, in one QEMU guest boot (root, ~10 min).
bench-broker: build
	bench/broker/run build/gcc

# The drivers' own CPU cost, natively against ring3's vfio-user devices (no root, ~1 minute).
bench-emu: build
	bench/emu-cost/run build/gcc

format:
	git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

format-check:
	git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror

clean:
	rm -rf build
