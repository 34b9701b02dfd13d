#!/usr/bin/env bash
# Tests of the ingest pipeline (cli/ingest.c): the same store whatever the
# number of decoding threads and batches in flight; a bad line deep inside
# a later batch commits exactly the lines before it; a slow producer's
# events are committed and acknowledged while it keeps its pipe open, and
# the result equals ingesting the same lines in one go.
# Run with STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
#
# Nothing here waits for a time to pass: the slow producer waits for the
# command's acknowledgement (--ack) with a blocking read; the read's
# timeout only turns a hang into a failure.
. "$(dirname "$0")/support/cli_testkit.sh" pipeline
same_files() { # A B NAME
	if cmp -s "$1" "$2"; then ok; else bad "$3: $1 and $2 differ"; fi
}
# The events of store $1 without their positions, in $T/got.jsonl.
log_lines() {
	"$S" --db "$1" events --limit 100000000 |
		sed -e 's/^{"position":[0-9]*,/{/' >"$T/got.jsonl"
}

# ---- options ----------------------------------------------------------------
run 0 "ingest --help" -- "$S" ingest --help
expect_in "$T/out" "--idle-ms" "help names --idle-ms"
expect_in "$T/out" "--threads" "help names --threads"
expect_in "$T/out" "--ack" "help names --ack"
run 2 "bad --threads" -- "$S" --db "$T/u" ingest --threads 65
run 2 "bad --idle-ms" -- "$S" --db "$T/u" ingest --idle-ms soon
run 2 "demo bad --threads" -- "$S" --db "$T/u" demo --threads x

# ---- the same store whatever the pipeline -----------------------------------
"$S" gen --count 5000 --entities 300 --seed 21 >"$T/g.jsonl"
# a blank line and a CRLF line inside the stream
{
	head -n 1234 "$T/g.jsonl"
	echo
	sed -n 1235p "$T/g.jsonl" | tr -d '\n'
	printf '\r\n'
	tail -n +1236 "$T/g.jsonl"
} >"$T/in.jsonl"
run 0 "reference: one thread" -- "$S" --db "$T/ref" ingest "$T/in.jsonl" --batch 5000 --threads 0
"$S" --db "$T/ref" events --limit 10000 >"$T/ref.events"
"$S" --db "$T/ref" scan --limit 10000 >"$T/ref.scan"
for cfg in "0 1" "1 7" "2 100" "3 333" "4 1000" "8 64"; do
	set -- $cfg
	D="$T/t$1-b$2"
	run 0 "threads $1 batch $2" -- "$S" --db "$D" ingest "$T/in.jsonl" --threads "$1" --batch "$2" --ack --nosync
	expect_in "$T/err" "ingested 5000 events" "threads $1 batch $2: count"
	want=$(((5000 + $2 - 1) / $2))
	expect_eq "$(wc -l <"$T/out")" "$want" "threads $1 batch $2: one ack per transaction"
	expect_eq "$(tail -n 1 "$T/out")" '{"lines":5001,"events":5000,"last_position":5000}' \
		"threads $1 batch $2: last ack"
	"$S" --db "$D" events --limit 10000 >"$T/got.events"
	same_files "$T/got.events" "$T/ref.events" "threads $1 batch $2: the log"
	"$S" --db "$D" scan --limit 10000 >"$T/got.scan"
	same_files "$T/got.scan" "$T/ref.scan" "threads $1 batch $2: the states"
done
# stdin, the same
run 0 "stdin, 3 threads" -- "$S" --db "$T/stdin" ingest - --threads 3 --batch 250 <"$T/in.jsonl"
"$S" --db "$T/stdin" events --limit 10000 >"$T/got.events"
same_files "$T/got.events" "$T/ref.events" "stdin: the log"

# ---- a bad line deep inside a later batch of several in flight --------------
# batch 1000, 4 decoding threads (6 batches in flight): the bad line is
# line 777 of the second batch; the third to sixth batches are read and
# maybe decoded before the writer reaches it, and must not be committed.
bad_line='{"entity":"x","type":"set","attrs":{"v":[1,2]}}'
check_bad_at() { # LINE BATCH THREADS
	local at=$1 batch=$2 threads=$3 E="$T/bad-$1-$2-$3"
	{
		head -n $((at - 1)) "$T/g.jsonl"
		echo "$bad_line"
		tail -n +"$at" "$T/g.jsonl"
	} >"$T/bad.jsonl"
	run 2 "bad line $at, batch $batch, $threads threads" -- \
		"$S" --db "$E" ingest "$T/bad.jsonl" --batch "$batch" --threads "$threads" --ack --nosync
	expect_in "$T/err" "line $at: attrs.v: arrays are not attribute values" \
		"bad line $at, batch $batch, $threads threads: names the line"
	local before=$(((at - 1) / batch)) ack_lines
	# one ack per full batch before it, one for the lines of its batch
	# before it (when there are any)
	[ $(((at - 1) % batch)) = 0 ] || before=$((before + 1))
	expect_eq "$(wc -l <"$T/out")" "$before" \
		"bad line $at, batch $batch, $threads threads: acks"
	if [ "$before" != 0 ]; then
		expect_eq "$(tail -n 1 "$T/out")" \
			"{\"lines\":$((at - 1)),\"events\":$((at - 1)),\"last_position\":$((at - 1))}" \
			"bad line $at, batch $batch, $threads threads: last ack"
	fi
	log_lines "$E"
	head -n $((at - 1)) "$T/g.jsonl" >"$T/want.jsonl"
	same_files "$T/got.jsonl" "$T/want.jsonl" \
		"bad line $at, batch $batch, $threads threads: exactly the lines before it"
	run 0 "stats after bad line $at" -- "$S" --db "$E" stats
	expect_in "$T/out" "\"last_position\":$((at - 1))," \
		"bad line $at, batch $batch, $threads threads: last position"
}
check_bad_at 1777 1000 4
check_bad_at 1001 1000 4 # the first line of the second batch
check_bad_at 2000 1000 4 # the last line of the second batch
check_bad_at 1 1000 4
check_bad_at 250 100 2
check_bad_at 4999 7 3
check_bad_at 1777 1000 0
# an over-long line (refused by the reader, not a decoder) in the third
# batch: the lines before it are committed
E="$T/long"
{
	head -n 2100 "$T/g.jsonl"
	printf '{"entity":"e","type":"set","attrs":{"s":"'
	head -c 1100000 /dev/zero | tr '\0' a
	printf '"}}\n'
	tail -n +2101 "$T/g.jsonl"
} >"$T/long.jsonl"
run 2 "over-long line in the third batch" -- "$S" --db "$E" ingest "$T/long.jsonl" --batch 1000 --threads 2
expect_in "$T/err" "line 2101: longer than the limit" "over-long line: names the line"
log_lines "$E"
head -n 2100 "$T/g.jsonl" >"$T/want.jsonl"
same_files "$T/got.jsonl" "$T/want.jsonl" "over-long line: exactly the lines before it"

# ---- a slow producer ----------------------------------------------------------
# The producer writes a few lines at a time into a FIFO it keeps open and
# waits for the acknowledgement of those lines before it writes more; each
# time the lines must already be visible to another process (stats, get).
# A batch of 1000 never fills, so every commit is the idle timer's.
slow_producer() { # NAME THREADS IDLE_MS
	local name=$1 threads=$2 idle=$3 P="$T/slow-$1"
	rm -f "$T/in.fifo" "$T/ack.fifo"
	mkfifo "$T/in.fifo" "$T/ack.fifo"
	"$S" --db "$P" ingest "$T/in.fifo" --batch 1000 --threads "$threads" \
		--idle-ms "$idle" --ack >"$T/ack.fifo" 2>"$T/slow.err" &
	local pid=$!
	# open the acknowledgements first: the command's stdout is opened
	# before it opens its input
	exec 6<"$T/ack.fifo"
	exec 5>"$T/in.fifo"
	local sent=0 acked=0 ack chunk
	for chunk in 3 1 40 2 1 17 200; do
		sed -n "$((sent + 1)),$((sent + chunk))p" "$T/g.jsonl" >&5
		sent=$((sent + chunk))
		# the lines may be committed in more than one batch
		while [ "$acked" -lt "$sent" ]; do
			if ! read -r -t 120 ack <&6; then
				bad "$name: no acknowledgement of line $sent"
				break 2
			fi
			acked=$(echo "$ack" | sed -n 's/^{"lines":\([0-9]*\),.*/\1/p')
			[ -n "$acked" ] || {
				bad "$name: bad acknowledgement '$ack'"
				break 2
			}
		done
		expect_eq "$ack" "{\"lines\":$sent,\"events\":$sent,\"last_position\":$sent}" \
			"$name: acknowledgement after $sent lines"
		# committed means visible to another process
		"$S" --db "$P" stats >"$T/out" 2>"$T/err"
		expect_in "$T/out" "\"last_position\":$sent," "$name: stats after $sent lines"
		# ... and the last line is the log's last event
		"$S" --db "$P" events --from "$sent" |
			sed -e 's/^{"position":[0-9]*,/{/' >"$T/got.jsonl"
		sed -n "${sent}p" "$T/g.jsonl" >"$T/want.jsonl"
		same_files "$T/got.jsonl" "$T/want.jsonl" "$name: line $sent is the last event"
	done
	exec 5>&-
	local rc=0
	wait "$pid" || rc=$?
	exec 6<&-
	expect_eq "$rc" 0 "$name: ingest exit code"
	expect_in "$T/slow.err" "ingested $sent events" "$name: summary"
	# the same as ingesting those lines in one go
	head -n "$sent" "$T/g.jsonl" >"$T/part.jsonl"
	rm -rf "$T/whole"
	"$S" --db "$T/whole" ingest "$T/part.jsonl" --batch 1000 2>/dev/null
	"$S" --db "$P" events --limit 10000 >"$T/a.events"
	"$S" --db "$T/whole" events --limit 10000 >"$T/b.events"
	same_files "$T/a.events" "$T/b.events" "$name: the log equals one ingest"
	"$S" --db "$P" scan --limit 10000 >"$T/a.scan"
	"$S" --db "$T/whole" scan --limit 10000 >"$T/b.scan"
	same_files "$T/a.scan" "$T/b.scan" "$name: the states equal one ingest"
}
slow_producer "pipeline" 2 100
slow_producer "one thread" 0 100
slow_producer "idle 0" 1 0

# a slow producer's bad line: what it sent before is committed, the
# command stops with exit 2 although the producer keeps the pipe open
P="$T/slow-bad"
rm -f "$T/in.fifo" "$T/ack.fifo"
mkfifo "$T/in.fifo" "$T/ack.fifo"
"$S" --db "$P" ingest "$T/in.fifo" --batch 1000 --ack >"$T/ack.fifo" 2>"$T/slow.err" &
pid=$!
exec 6<"$T/ack.fifo"
exec 5>"$T/in.fifo"
head -n 5 "$T/g.jsonl" >&5
read -r -t 120 ack <&6
expect_eq "$ack" '{"lines":5,"events":5,"last_position":5}' "slow bad line: first acknowledgement"
echo "$bad_line" >&5
rc=0
wait "$pid" || rc=$?
expect_eq "$rc" 2 "slow bad line: exit code with the pipe still open"
expect_in "$T/slow.err" "line 6: attrs.v" "slow bad line: names the line"
exec 5>&- 6<&-
log_lines "$P"
head -n 5 "$T/g.jsonl" >"$T/want.jsonl"
same_files "$T/got.jsonl" "$T/want.jsonl" "slow bad line: exactly the lines before it"

# ---- the demo through the pipeline and without it -----------------------------
for th in 0 2; do
	run 0 "demo, $th threads" -- "$S" --db "$T/demo$th" demo --events 3000 --entities 300 --more 1000 --batch 500 --threads "$th"
	expect_in "$T/out" '{"name":"ingest_json","durability":"full","batch":500,' "demo $th threads: ingest_json line"
done
"$S" --db "$T/demo0" events --limit 10000 >"$T/a.events"
"$S" --db "$T/demo2" events --limit 10000 >"$T/b.events"
same_files "$T/a.events" "$T/b.events" "demo: the same log with and without the pipeline"

cli_finish
