#!/bin/sh
# Power-loss test of one durability mode: record a workload, then build
# and check crash states (tests/powerloss/check.c). Prints one JSON line.
#
#   run.sh BUILD_DIR MODE STATES [SEED] [--gate|--gate-create]
#
# BUILD_DIR holds recorder.so, pl_workload and pl_check. The work files go
# to $PL_WORK (default: a new directory under ${TMPDIR:-/tmp}), kept when
# the check fails.
set -eu
bin=$1 mode=$2 states=$3 seed=${4:-1} gate=${5:-}
case "$bin" in /*) ;; *) bin=$(pwd)/$bin ;; esac
work=${PL_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/powerloss.XXXXXX")}
mkdir -p "$work"
rm -rf "$work/fs" "$work/$mode"
mkdir -p "$work/fs" "$work/$mode"
SC_PL_PREFIX="$work/fs" SC_PL_TRACE="$work/$mode/trace" \
SC_PL_ACK="$work/$mode/ack" SC_PL_IGNORE=lock.mdb \
LD_PRELOAD="$bin/recorder.so" \
	"$bin/pl_workload" "$work/fs/store" "$mode" "$work/$mode/ack" 120 "$seed"
if "$bin/pl_check" "$work/$mode/trace" "$work/fs" store "$mode" \
	"$work/$mode" "$states" "$seed" $gate; then
	[ -n "${PL_WORK:-}" ] || rm -rf "$work"
else
	echo "powerloss: $mode broke its promise; states and log in $work/$mode" >&2
	exit 1
fi
