package sockmap

// The generated objects (redirect_bpfel.o/.go, redirect_bpfeb.o/.go) are committed, so
// `go build` needs no clang; TestObjectsFresh regenerates them where clang-14 is present
// and fails when they differ. bpf2go is pinned in go.mod (tool directive); clang 14 is the
// compiler the objects are made with (bpf2go supports LLVM 11 and later; the output
// differs between major versions, so the freshness test only runs with the same one).
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -no-global-types redirect bpf/redirect.c
