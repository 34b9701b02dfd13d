#!/usr/bin/env bash
# Command-line tests of `statecache events` queries: --tag, --partition
# (through their indexes, values up to 4096 bytes), and --follow, which
# prints the events another process commits and ends with exit 0 on
# SIGTERM, on SIGINT, or at --limit. The follower writes into a FIFO and
# the test reads its lines with bounded waits (read -t), never sleeps.
# Run with STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
. "$(dirname "$0")/support/cli_testkit.sh" query-cli
# positions FILE: the positions of the JSON lines in FILE, space-separated
positions() {
	sed -n 's/^{"position":\([0-9]*\),.*/\1/p' "$1" | tr '\n' ' '
}

DB="$T/db"
BIG=$(head -c 4096 /dev/zero | tr '\0' B)
BIG2=$(head -c 4095 /dev/zero | tr '\0' B)C
# event i: tags "even" (i even) and BIG (i % 3 == 0), partition "eu"
# (i % 4 == 1) or BIG2 (i % 4 == 2)
for i in $(seq 1 12); do
	tags='"any"'
	[ $((i % 2)) = 0 ] && tags="$tags,\"even\""
	[ $((i % 3)) = 0 ] && tags="$tags,\"$BIG\""
	part=
	[ $((i % 4)) = 1 ] && part=',"partition":"eu"'
	[ $((i % 4)) = 2 ] && part=",\"partition\":\"$BIG2\""
	echo "{\"entity\":\"e$((i % 3))\",\"type\":\"set\",\"attrs\":{\"n\":$i},\"tags\":[$tags]$part}"
done >"$T/a.jsonl"
run 0 "ingest" -- "$S" --db "$DB" ingest "$T/a.jsonl" --batch 5

# ---- --tag, --partition ------------------------------------------------------
run 0 "events --tag even" -- "$S" --db "$DB" events --tag even
expect_eq "$(positions "$T/out")" "2 4 6 8 10 12 " "events of tag even"
run 0 "events --tag (4096 bytes)" -- "$S" --db "$DB" events --tag "$BIG"
expect_eq "$(positions "$T/out")" "3 6 9 12 " "events of a 4096-byte tag"
run 0 "events --tag --from --limit" -- "$S" --db "$DB" events --tag even --from 5 --limit 2
expect_eq "$(positions "$T/out")" "6 8 " "tag from 5, limit 2"
run 0 "events --tag none" -- "$S" --db "$DB" events --tag none
expect_eq "$(wc -c <"$T/out")" "0" "no event of an unknown tag"
run 0 "events --partition eu" -- "$S" --db "$DB" events --partition eu
expect_eq "$(positions "$T/out")" "1 5 9 " "events of partition eu"
run 0 "events --partition (4096 bytes)" -- "$S" --db "$DB" events --partition="$BIG2"
expect_eq "$(positions "$T/out")" "2 6 10 " "events of a 4096-byte partition"
run 0 "events --entity" -- "$S" --db "$DB" events --entity e1
expect_eq "$(positions "$T/out")" "4 7 " "events of entity e1 of the default partition"
run 0 "events --entity --partition" -- "$S" --db "$DB" events --entity e1 --partition eu
expect_eq "$(positions "$T/out")" "1 " "events of entity e1 of partition eu"
run 0 "events --partition --entity" -- "$S" --db "$DB" events --partition eu --entity e1
expect_eq "$(positions "$T/out")" "1 " "events of entity e1 of partition eu, options swapped"
run 2 "--partition and --tag" -- "$S" --db "$DB" events --partition eu --tag a
run 2 "--tag and --partition" -- "$S" --db "$DB" events --tag a --partition b
expect_in "$T/err" "give one of" "one key only"
run 2 "--tag too long" -- "$S" --db "$DB" events --tag "${BIG}x"
expect_in "$T/err" "a tag is 1 to 4096 bytes" "tag limit"
run 2 "--tag empty" -- "$S" --db "$DB" events --tag ""
run 2 "--poll 0" -- "$S" --db "$DB" events --follow --poll 0
run 0 "events --help" -- "$S" events --help
expect_in "$T/out" "--follow" "help names --follow"

# ---- --follow ----------------------------------------------------------------
# --limit ends a follow that already has its events
run 0 "follow --limit (committed)" -- "$S" --db "$DB" events --follow --limit 3
expect_eq "$(positions "$T/out")" "1 2 3 " "follow limit 3"

# start_follow ARGS...: a follower writing into the FIFO $T/ff, read on fd 3
start_follow() {
	rm -f "$T/ff"
	mkfifo "$T/ff"
	"$S" --db "$DB" events --follow --poll 20 "$@" >"$T/ff" 2>"$T/ferr" &
	fpid=$!
	exec 3<"$T/ff"
}
# read_lines N NAME: read N lines from the follower within 60 s each
read_lines() {
	got=
	for _ in $(seq 1 "$1"); do
		local line
		if ! IFS= read -r -t 60 line <&3; then
			bad "$2: the follower printed no line within 60 s"
			return
		fi
		got="$got$(echo "$line" | sed -n 's/^{"position":\([0-9]*\),.*/\1/p') "
	done
	ok
}
# stop_follow SIGNAL NAME: send SIGNAL, expect exit 0
stop_follow() {
	kill -s "$1" "$fpid"
	wait "$fpid"
	expect_eq "$?" "0" "$2: exit status"
	exec 3<&-
}

start_follow --tag even
read_lines 6 "follow tag even (committed)"
expect_eq "$got" "2 4 6 8 10 12 " "follow prints the committed events"
# events another process commits reach the follower
for i in 13 14 15 16; do
	echo "{\"entity\":\"e0\",\"type\":\"set\",\"attrs\":{\"n\":$i},\"tags\":[\"even\"]}"
done >"$T/b.jsonl"
run 0 "ingest while following" -- "$S" --db "$DB" ingest "$T/b.jsonl" --batch 2
read_lines 4 "follow tag even (new)"
expect_eq "$got" "13 14 15 16 " "follow prints the new events"
stop_follow TERM "follow ended by SIGTERM"

start_follow --from 16
read_lines 1 "follow from 16"
expect_eq "$got" "16 " "follow from 16"
stop_follow INT "follow ended by SIGINT"

# --limit ends a follow once the new events arrive
start_follow --from 15 --limit 4
read_lines 2 "follow limit (committed)"
echo '{"entity":"e9","type":"delete"}' >"$T/c.jsonl"
echo '{"entity":"e8","type":"delete"}' >>"$T/c.jsonl"
run 0 "ingest for the limit" -- "$S" --db "$DB" ingest "$T/c.jsonl"
read_lines 2 "follow limit (new)"
expect_eq "$got" "17 18 " "follow limit: the new events"
wait "$fpid"
expect_eq "$?" "0" "follow ended by --limit: exit status"
exec 3<&-

cli_finish
