#!/usr/bin/env bash
# Command-line tests of `statecache watch`: a watcher in its own process
# follows a store that `statecache ingest` appends to in another; its
# changes, folded in order onto the state it started from, equal
# `statecache scan` at the end (--initial from the empty state, --from POS
# from the scan taken at POS, --prefix against the scan's matching lines).
# It ends with exit 0 on SIGTERM and SIGINT. The watcher writes into a
# FIFO and the test reads its lines with bounded waits (read -t), never
# sleeps; the ingest's --ack gives the last position to wait for.
# Run with STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
. "$(dirname "$0")/support/cli_testkit.sh" watch-cli
export LC_ALL=C
expect_same_file() {
	if cmp -s "$1" "$2"; then ok; else
		bad "$3: $(diff "$1" "$2" | head -c 800)"
	fi
}

# fold [STATE_FILE] < WATCH_LINES: the state after applying the watch
# lines in order to the entity lines of STATE_FILE (scan output), one
# entity a line, sorted like scan.
fold() {
	awk -v init="${1:-}" '
	function id_of(s) {
		match(s, /"id":"[^"]*"/)
		return substr(s, RSTART + 6, RLENGTH - 7)
	}
	BEGIN {
		if (init != "")
			while ((getline l < init) > 0)
				st[id_of(l)] = l
	}
	/^\{"op":"(added|updated)"/ {
		i = index($0, ",\"state\":")
		s = substr($0, i + 9)
		st[id_of($0)] = substr(s, 1, length(s) - 1)
		next
	}
	/^\{"op":"removed"/ { delete st[id_of($0)]; next }
	/^\{"op":"heartbeat"/ { next }
	{ print "unexpected line: " $0 > "/dev/stderr"; exit 1 }
	END { for (k in st) print st[k] }
	' | sort
}

# events FROM TO FILE: set/unset/delete lines over 40 ids, deterministic
events() {
	awk -v from="$1" -v to="$2" 'BEGIN {
		for (i = from; i <= to; i++) {
			id = "e" (i * 7 % 40)
			if (i % 11 == 0)
				printf "{\"entity\":\"%s\",\"type\":\"delete\"}\n", id
			else if (i % 5 == 0)
				printf "{\"entity\":\"%s\",\"type\":\"unset\",\"attrs\":[\"b\"]}\n", id
			else
				printf "{\"entity\":\"%s\",\"type\":\"set\",\"attrs\":{\"a\":%d,\"b\":\"v%d\"}}\n", id, i, i % 3
		}
	}' >"$3"
}

# start_watch ARGS...: a watcher writing into the FIFO $T/wf, read on fd 3
start_watch() {
	rm -f "$T/wf" "$T/wout"
	mkfifo "$T/wf"
	"$S" --db "$DB" watch "$@" >"$T/wf" 2>"$T/werr" &
	wpid=$!
	exec 3<"$T/wf"
}
# read_until POS NAME: read the watcher's lines into $T/wout until one at
# position >= POS (each line within 60 s)
read_until() {
	local line p
	while :; do
		if ! IFS= read -r -t 60 line <&3; then
			bad "$2: no line at position $1 within 60 s: $(head -c 600 "$T/werr")"
			return 1
		fi
		printf '%s\n' "$line" >>"$T/wout"
		p=$(printf '%s\n' "$line" | sed -n 's/.*"version":[0-9]*,"position":\([0-9]*\).*/\1/p')
		if [ -n "$p" ] && [ "$p" -ge "$1" ]; then
			ok
			return 0
		fi
	done
}
# read_heartbeat NAME: read the watcher's lines into $T/wout until a
# heartbeat (each line within 60 s)
read_heartbeat() {
	local line
	while :; do
		if ! IFS= read -r -t 60 line <&3; then
			bad "$1: no heartbeat within 60 s: $(head -c 600 "$T/werr")"
			return 1
		fi
		printf '%s\n' "$line" >>"$T/wout"
		case "$line" in
		'{"op":"heartbeat"'*)
			ok
			return 0
			;;
		esac
	done
}
# stop_watch SIGNAL NAME: send SIGNAL, expect exit 0, keep the rest of
# the output
stop_watch() {
	kill -s "$1" "$wpid"
	cat <&3 >>"$T/wout"
	wait "$wpid"
	expect_eq "$?" "0" "$2: exit status"
	exec 3<&-
}
last_ack() {
	tail -n 1 "$1" | sed -n 's/.*"last_position":\([0-9]*\).*/\1/p'
}

DB="$T/db"
events 1 200 "$T/a.jsonl"
run 0 "ingest a" -- "$S" --db "$DB" ingest "$T/a.jsonl" --batch 13
"$S" --db "$DB" scan >"$T/scan200"
events 201 3000 "$T/b.jsonl"

run 0 "help" -- "$S" watch --help
expect_in "$T/out" "--from POS" "help names --from"
run 2 "unknown option" -- "$S" --db "$DB" watch --bogus
run 2 "--from and --initial" -- "$S" --db "$DB" watch --initial --from 3
run 2 "--from beyond the end" -- "$S" --db "$DB" watch --from 201
expect_in "$T/err" "the log ends at 200" "--from beyond the end says so"
run 1 "no store" -- "$S" --db "$T/none" watch
[ ! -e "$T/none" ] && ok || bad "watch created a store"

# ---- --initial during an ingest, from the empty state ---------------------
start_watch --initial --heartbeat --idle 50
read_until 200 "initial state"
run 0 "ingest b while watching" -- "$S" --db "$DB" ingest "$T/b.jsonl" \
	--batch 7 --idle-ms 0 --ack
last=$(last_ack "$T/out")
expect_eq "$last" "3000" "ingest b acknowledged every event"
read_until 3000 "changes of ingest b"
read_heartbeat "a heartbeat once the ingest is done"
stop_watch TERM "watch ended by SIGTERM"
"$S" --db "$DB" scan >"$T/scan3000"
fold <"$T/wout" >"$T/folded"
expect_same_file "$T/folded" "$T/scan3000" "initial + changes == scan"
expect_in "$T/wout" '"op":"removed"' "deletes show as removed"
expect_in "$T/wout" '"op":"updated"' "updates show"
expect_in "$T/wout" '"op":"heartbeat"' "heartbeats with --heartbeat"

# ---- --from a position, resumed after the restart of the watcher ---------
start_watch --from 200
read_until 3000 "from 200"
stop_watch INT "watch ended by SIGINT"
fold "$T/scan200" <"$T/wout" >"$T/folded"
expect_same_file "$T/folded" "$T/scan3000" "scan at 200 + changes == scan"
if grep -q '"op":"heartbeat"' "$T/wout"; then
	bad "heartbeat lines without --heartbeat"
else
	ok
fi

# ---- --prefix, with another ingest ----------------------------------------
events 3001 3500 "$T/c.jsonl"
start_watch --initial --prefix e1 --heartbeat --idle 50
read_until 3000 "prefix: initial"
run 0 "ingest c while watching" -- "$S" --db "$DB" ingest "$T/c.jsonl" \
	--batch 5 --idle-ms 0 --ack
expect_eq "$(last_ack "$T/out")" "3500" "ingest c acknowledged"
read_until 3500 "prefix: changes"
stop_watch TERM "prefix watch ended"
"$S" --db "$DB" scan --prefix e1 >"$T/scan_e1"
fold <"$T/wout" >"$T/folded"
expect_same_file "$T/folded" "$T/scan_e1" "prefix: folded == scan --prefix"

cli_finish
