#!/usr/bin/env bash
# Include rules, checked over the source tree (run from its top):
#
# 1. No file includes a .c file: code is shared by linking it.
# 2. The library's layers (common < hamt < cache < snapshot, watch < store) keep
#    their headers private. A file under one of these folders includes,
#    of another layer, only that layer's library-internal seam, and only
#    of a layer below its own:
#        common/*.h            any layer
#        hamt/hamt_internal.h  cache/ (the queued and hashed updates)
#        cache/cache_lib.h     snapshot/, watch/, store/
#        snapshot/snapshot.h   store/
#    Every other header of a layer (cache/cache_internal.h, cache/entity.h,
#    store/event_codec.h, ...) is private to its folder. The public
#    headers (statecache/*.h) are for everyone.
#
# tests/include_c_allowlist and tests/include_rule_allowlist name, one
# "FILE INCLUDED" pair a line, the exceptions still in the tree; an entry
# that no longer matches an include is an error too, so the lists only
# shrink.
set -u
top=$(pwd)
[ -d "$top/include/statecache" ] || {
	echo "check_includes: run from the top of the source tree" >&2
	exit 1
}
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	files=$(git -C "$top" ls-files --cached --others --exclude-standard \
		'*.c' '*.h')
else
	files=$(find . -path ./build -prune -o \( -name '*.c' -o -name '*.h' \) \
		-print | sed 's|^\./||')
fi

# "FILE INCLUDED" for every quoted include of every file.
includes() {
	for f in $files; do
		[ -f "$f" ] || continue
		sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' \
			"$f" | sed "s|^|$f |"
	done
}
all=$(includes)

fail=0
# check NAME ALLOWLIST VIOLATIONS: report violations not allowed and
# allowlist entries that match none.
check() {
	local name=$1 list=$2 found=$3 allowed=""
	if [ -f "$list" ]; then
		allowed=$(grep -v -e '^#' -e '^[[:space:]]*$' "$list" | sort -u)
	fi
	local new stale
	new=$(comm -23 <(printf '%s\n' "$found" | grep . | sort -u) \
		<(printf '%s\n' "$allowed" | grep . | sort -u))
	stale=$(comm -13 <(printf '%s\n' "$found" | grep . | sort -u) \
		<(printf '%s\n' "$allowed" | grep . | sort -u))
	if [ -n "$new" ]; then
		echo "check_includes: $name:" >&2
		printf '%s\n' "$new" | sed 's/ / includes /; s/^/  /' >&2
		fail=1
	fi
	if [ -n "$stale" ]; then
		echo "check_includes: $list lists includes that are gone;" \
			"remove these lines:" >&2
		printf '%s\n' "$stale" | sed 's/^/  /' >&2
		fail=1
	fi
}

# 1. Includes of .c files.
dot_c=$(printf '%s\n' "$all" | awk '$2 ~ /\.c$/')
check "a .c file is included (link it instead)" \
	tests/include_c_allowlist "$dot_c"

# 2. Layer headers.
rank() {
	case $1 in
	common) echo 0 ;; hamt) echo 1 ;; cache) echo 2 ;;
	snapshot | watch) echo 3 ;; store) echo 4 ;; *) echo -1 ;;
	esac
}
layer_bad=$(printf '%s\n' "$all" | while read -r f inc; do
	[ -n "$f" ] || continue
	from=${f%%/*}
	to=${inc%%/*}
	[ "$inc" != "$to" ] || continue # no folder: not a layer header
	rf=$(rank "$from")
	rt=$(rank "$to")
	[ "$rf" -ge 0 ] && [ "$rt" -ge 0 ] || continue
	[ "$from" != "$to" ] || continue
	[ "$to" != common ] || continue
	case "$inc" in
	hamt/hamt_internal.h) seam_for=cache ;;
	cache/cache_lib.h | snapshot/snapshot.h) seam_for=above ;;
	*) seam_for=none ;;
	esac
	if [ "$seam_for" = above ] && [ "$rt" -lt "$rf" ]; then
		continue
	fi
	if [ "$seam_for" = "$from" ]; then
		continue
	fi
	echo "$f $inc"
done)
check "a layer includes another layer's private header (or a layer above it)" \
	tests/include_rule_allowlist "$layer_bad"

[ $fail = 0 ] && echo "check_includes: no .c file included; every layer" \
	"includes only the seams of the layers below it"
exit $fail
