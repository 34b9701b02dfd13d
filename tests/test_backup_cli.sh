#!/usr/bin/env bash
# Command-line tests of `statecache backup`: copies taken while an ingest
# runs in another process open, verify and hold a prefix of the source's
# log; destination rules, modes and exit codes. Run with
# STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
. "$(dirname "$0")/support/cli_testkit.sh" backup
ingest_pid=
cleanup() {
	exec 3>&- 2>/dev/null
	[ -n "$ingest_pid" ] && kill "$ingest_pid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
# json_u64 FILE KEY: the unsigned integer value of "KEY" in a JSON line.
json_u64() {
	sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1" | head -n 1
}

DB="$T/db"

# ---- usage -------------------------------------------------------------------
run 0 "backup --help" -- "$S" backup --help
expect_in "$T/out" "usage: statecache [--db DIR] backup DEST [--compact]" "help usage"
expect_in "$T/out" "Exit codes" "help lists exit codes"
run 0 "global help" -- "$S" --help
expect_in "$T/out" "backup DEST [--compact]" "global help lists backup"
run 2 "backup without DEST" -- "$S" --db "$DB" backup
run 2 "backup unknown option" -- "$S" --db "$DB" backup "$T/x" --bogus
run 2 "backup two DESTs" -- "$S" --db "$DB" backup "$T/x" "$T/y"
run 1 "backup of a missing store" -- "$S" --db "$DB" backup "$T/x"
expect_in "$T/err" "no store at" "missing store message"
if [ -e "$T/x" ]; then bad "a failed backup left $T/x"; else ok; fi

# ---- backups during an ingest in another process ------------------------------
"$S" gen --count 24000 --entities 700 --seed 21 >"$T/all.jsonl"
head -n 4000 "$T/all.jsonl" >"$T/p0.jsonl"
sed -n '4001,12000p' "$T/all.jsonl" >"$T/p1.jsonl"
sed -n '12001,20000p' "$T/all.jsonl" >"$T/p2.jsonl"
sed -n '20001,24000p' "$T/all.jsonl" >"$T/p3.jsonl"
run 0 "first ingest" -- "$S" --db "$DB" ingest "$T/p0.jsonl" --batch 500

# The background ingest reads a FIFO that this shell holds open (fd 3), so
# it is running, with the store open, until fd 3 is closed.
mkfifo "$T/fifo"
"$S" --db "$DB" ingest "$T/fifo" --batch 100 2>"$T/ingest.err" &
ingest_pid=$!
exec 3>"$T/fifo"

cat "$T/p1.jsonl" >&3
run 0 "backup during ingest" -- "$S" --db "$DB" backup "$T/copy1"
expect_in "$T/out" "written to $T/copy1" "backup output"
cat "$T/p2.jsonl" >&3
run 0 "backup --compact during ingest" -- "$S" --db "$DB" backup "$T/copy2" --compact
expect_in "$T/out" "(compacted)" "compact backup output"
cat "$T/p3.jsonl" >&3
exec 3>&-
wait "$ingest_pid"
rc=$?
ingest_pid=
expect_eq "$rc" 0 "background ingest exit"

run 0 "source stats" -- "$S" --db "$DB" stats
last=$(json_u64 "$T/out" last_position)
expect_eq "$last" 24000 "source holds every event"
run 0 "source events" -- "$S" --db "$DB" events
cp "$T/out" "$T/src.events"

for c in copy1 copy2; do
	expect_eq "$(stat -c %a "$T/$c")" 700 "$c directory mode"
	expect_eq "$(stat -c %a "$T/$c/data.mdb")" 600 "$c data.mdb mode"
	run 0 "$c verify" -- "$S" --db "$T/$c" verify
	run 0 "$c stats" -- "$S" --db "$T/$c" stats
	p=$(json_u64 "$T/out" last_position)
	echo "$c: copy at position $p of $last"
	# Every event of the first ingest was committed before the backup.
	if [ -n "$p" ] && [ "$p" -ge 4000 ] && [ "$p" -le 24000 ]; then ok; else
		bad "$c: last_position '$p' not in 4000..24000"
	fi
	# The copy's log is the source's log up to its last position.
	run 0 "$c events" -- "$S" --db "$T/$c" events
	head -n "${p:-0}" "$T/src.events" >"$T/prefix"
	if cmp -s "$T/out" "$T/prefix"; then ok; else
		bad "$c: its log is not the source's first $p events"
	fi
done

# ---- destinations ------------------------------------------------------------
run 1 "backup into a non-empty directory" -- "$S" --db "$DB" backup "$T/copy1"
expect_in "$T/err" "not empty" "non-empty message"
run 1 "backup onto a file" -- "$S" --db "$DB" backup "$T/all.jsonl"
expect_in "$T/err" "not a directory" "file message"
mkdir -m 0750 "$T/empty"
run 0 "backup into an empty directory" -- "$S" --db "$DB" backup "$T/empty"
expect_eq "$(stat -c %a "$T/empty")" 750 "an existing directory keeps its mode"
run 0 "empty-dir copy stats" -- "$S" --db "$T/empty" stats
expect_eq "$(json_u64 "$T/out" last_position)" 24000 "a quiet store's copy is whole"

cli_finish "backup cli"
