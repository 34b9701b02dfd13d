#!/usr/bin/env bash
# A release build holds no kill point: neither the function that SIGKILLs
# the process (sc_killpoint) nor the environment variable that arms it.
#
#   tests/check_killpoints.sh FILE...   (libraries and programs)
set -u
fail=0
for f in "$@"; do
	if [ ! -f "$f" ]; then
		echo "check_killpoints: $f does not exist; build it first" >&2
		fail=1
		continue
	fi
	if nm -A "$f" 2>/dev/null | grep -w sc_killpoint; then
		echo "check_killpoints: $f has the symbol sc_killpoint: it was" \
			"built with -DSC_KILLPOINTS, which only test builds set" >&2
		fail=1
	fi
	if strings -a "$f" | grep -q SC_KILLPOINT; then
		echo "check_killpoints: $f contains the string SC_KILLPOINT:" \
			"a kill point is compiled in" >&2
		fail=1
	fi
done
[ $fail = 0 ] && echo "check_killpoints: no kill point in $*"
exit $fail
