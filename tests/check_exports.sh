#!/usr/bin/env bash
# The installed libstatecache.so exports exactly the functions the installed
# headers declare: no internal function leaks out, no documented function
# is missing (a declaration without SC_API is hidden by -fvisibility=hidden).
#
#   tests/check_exports.sh PREFIX    (a `make install PREFIX=...` tree)
#
# The declarations come from the compiler itself: gcc -aux-info lists every
# function a translation unit that includes all installed headers declares,
# with the header it comes from; static inline functions are left out. The
# exports are the defined dynamic symbols of the library (nm -D).
set -u
prefix=${1:?usage: check_exports.sh PREFIX}
inc="$prefix/include/statecache"
so="$prefix/lib/libstatecache.so"
cc=${CHECK_CC:-gcc}
for f in "$inc" "$so"; do
	if [ ! -e "$f" ]; then
		echo "check_exports: $f does not exist; install first" >&2
		exit 1
	fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sc_check_exports.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# cluster.h declares the functions of libstatecache_cluster.a (built only
# with the NATS client), not of libstatecache.so.
for h in "$inc"/*.h; do
	[ "$(basename "$h")" != cluster.h ] || continue
	echo "#include \"statecache/$(basename "$h")\""
done >"$tmp/all.c"
# shellcheck disable=SC2046
if ! "$cc" -std=c11 -D_GNU_SOURCE -I"$prefix/include" \
	$(pkg-config --cflags lmdb 2>/dev/null) \
	-aux-info "$tmp/aux.txt" -c "$tmp/all.c" -o "$tmp/all.o"; then
	echo "check_exports: the installed headers do not compile" >&2
	exit 1
fi
# "/* PATH:LINE:NC */ extern int sc_x (int);" for a declaration of ours.
grep -F "$inc/" "$tmp/aux.txt" | grep -v '\*/ static ' |
	sed -n 's/^.*\*\/ extern .*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\) (.*$/\1/p' |
	sort -u >"$tmp/declared"
# Defined dynamic symbols, less the ones the linker adds to every object.
nm -D --defined-only "$so" | awk '{print $NF}' |
	grep -v -x -E '_init|_fini|_edata|_end|__bss_start' |
	sort -u >"$tmp/exported"

fail=0
if [ ! -s "$tmp/declared" ]; then
	echo "check_exports: found no function declared in $inc" >&2
	fail=1
fi
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
if [ -n "$missing" ]; then
	echo "check_exports: declared in the installed headers but not exported" \
		"by $so (mark the declaration SC_API, or define it):" >&2
	echo "$missing" | sed 's/^/  /' >&2
	fail=1
fi
if [ -n "$extra" ]; then
	echo "check_exports: exported by $so but declared in no installed" \
		"header (an internal function: give it no SC_API; a public one:" \
		"declare and document it in include/statecache/):" >&2
	echo "$extra" | sed 's/^/  /' >&2
	fail=1
fi
[ $fail = 0 ] &&
	echo "check_exports: $(wc -l <"$tmp/exported") functions exported," \
		"each declared in $inc"
exit $fail
