#!/bin/sh
# The recorder records writes through a shared writable mapping as page
# writes, in order with the syncs and acknowledgements (maptest.c).
#
#   maptest.sh BUILD_DIR
set -eu
bin=$1
case "$bin" in /*) ;; *) bin=$(pwd)/$bin ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/powerloss-map.XXXXXX")
mkdir -p "$work/fs"
SC_PL_PREFIX="$work/fs" SC_PL_TRACE="$work/trace" SC_PL_ACK="$work/ack" \
LD_PRELOAD="$bin/recorder.so" "$bin/pl_maptest" "$work/fs/f" "$work/ack"
"$bin/pl_check" --dump "$work/trace" >"$work/dump"
expected='create 0 0 0
trunc 0 16384 0
write 0 4096 4096
write 0 12288 4096
sync 0 0 16384
write 0 8192 4096
ack 0 1 0'
if [ "$(cat "$work/dump")" = "$expected" ]; then
	echo "powerloss: the recorder sees writes through a mapping"
	rm -rf "$work"
else
	echo "powerloss: recorder trace of maptest differs; expected:" >&2
	echo "$expected" >&2
	echo "got:" >&2
	cat "$work/dump" >&2
	exit 1
fi
