#!/usr/bin/env bash
# Compiles the eBPF probes (src/*.bpf.c) into the committed objects in bpf/.
#   probes/build.sh           rebuild the objects
#   probes/build.sh --check   rebuild into a temp dir and fail if a committed
#                             object differs (CI runs this)
# Needs clang (14 or newer) and libbpf's headers (Debian: clang libbpf-dev llvm).
set -euo pipefail
cd "$(dirname "$0")"
CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}
out=bpf
if [[ "${1:-}" == "--check" ]]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out/test"
for src in src/*.bpf.c test/*.bpf.c; do
    name=$(basename "$src" .c)
    [[ "$src" == test/* ]] && name="test/$name"
    # -g emits BTF (needed for CO-RE); the DWARF is stripped afterwards.
    # The prefix map keeps the build directory out of the object, so the
    # output is the same on every machine.
    "$CLANG" -O2 -g -target bpfel -mcpu=v3 -Wall -Werror \
        -fdebug-prefix-map="$PWD"=. -fno-ident \
        -Iinclude -c "$src" -o "$out/$name.o"
    "$STRIP" -g "$out/$name.o"
done
if [[ "${1:-}" == "--check" ]]; then
    status=0
    for obj in "$out"/*.o "$out"/test/*.o; do
        rel=${obj#"$out"/}
        if ! cmp -s "$obj" "bpf/$rel"; then
            echo "probes/bpf/$rel is stale: run probes/build.sh and commit" >&2
            status=1
        fi
    done
    exit $status
fi
