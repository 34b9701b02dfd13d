#!/usr/bin/env bash
# Command-line tests of `statecache partition checkpoints P`: --take writes
# a checkpoint of one partition, the listing shows each checkpoint and the
# partition's catalog figures, --use POS deletes the newer ones (and is
# refused for a position that is not a checkpoint); usage and exit codes.
# Run with STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/support/cli_testkit.sh" partition
DB="$T/db"

# ---- usage -------------------------------------------------------------------
run 0 "partition --help" -- "$S" partition --help
expect_in "$T/out" "usage: statecache [--db DIR] partition checkpoints P" "help usage"
expect_in "$T/out" "Exit codes" "help lists exit codes"
run 0 "global help" -- "$S" --help
expect_in "$T/out" "partition checkpoints P" "global help lists partition"
run 2 "no subcommand" -- "$S" --db "$DB" partition
run 2 "no partition" -- "$S" --db "$DB" partition checkpoints
run 2 "unknown subcommand" -- "$S" --db "$DB" partition list p1
run 2 "unknown option" -- "$S" --db "$DB" partition checkpoints p1 --bogus
run 2 "--use without a value" -- "$S" --db "$DB" partition checkpoints p1 --use
run 2 "--use not a number" -- "$S" --db "$DB" partition checkpoints p1 --use x
run 2 "--use and --take" -- "$S" --db "$DB" partition checkpoints p1 --use 3 --take
run 1 "missing store" -- "$S" --db "$DB" partition checkpoints p1

# ---- checkpoints -------------------------------------------------------------
for i in $(seq 1 30); do
	echo "{\"entity\":\"e$((i % 7))\",\"partition\":\"p$((i % 2))\",\"type\":\"set\",\"attrs\":{\"n\":$i}}"
done >"$T/ev.jsonl"
run 0 "ingest" -- "$S" --db "$DB" ingest "$T/ev.jsonl"
run 0 "list without checkpoints" -- "$S" --db "$DB" partition checkpoints p1
expect_eq "$(wc -l <"$T/out")" 1 "only the catalog line"
expect_in "$T/out" '{"partition":"p1","events":15,"last_position":29,"tail":15,"checkpoint_position":0}' "catalog before"
run 0 "take" -- "$S" --db "$DB" partition checkpoints p1 --take
expect_in "$T/out" '{"position":30,"entities":7,' "first checkpoint listed"
expect_in "$T/out" '"verifies":true}' "it verifies"
expect_in "$T/out" '"tail":0,"checkpoint_position":30}' "catalog after"
run 0 "ingest again" -- "$S" --db "$DB" ingest "$T/ev.jsonl"
run 0 "take again" -- "$S" --db "$DB" partition checkpoints p1 --take
expect_eq "$(grep -c '"position"' "$T/out")" 2 "two checkpoints"
run 1 "use a position that is no checkpoint" -- "$S" --db "$DB" partition checkpoints p1 --use 31
expect_in "$T/err" "no checkpoint at position 31 of partition 'p1'" "refusal names it"
run 0 "use the older one" -- "$S" --db "$DB" partition checkpoints p1 --use 30
expect_in "$T/out" "(1 newer deleted)" "one deleted"
run 0 "list after use" -- "$S" --db "$DB" partition checkpoints p1
expect_eq "$(grep -c '"position"' "$T/out")" 1 "one checkpoint left"
expect_in "$T/out" '"events":30,"last_position":59,"tail":15,"checkpoint_position":30}' "tail back"
run 0 "get after reopen" -- "$S" --db "$DB" get e1 --partition p1
expect_in "$T/out" '"n":29' "state from the checkpoint and its tail"
run 0 "default partition" -- "$S" --db "$DB" partition checkpoints ""
expect_in "$T/out" '{"partition":"","events":0,' "default partition has no events"

# ---- a store of format 5 ---------------------------------------------------
# Its first writing open builds the catalog; the state is what the format 5
# build scanned, before and after a checkpoint of every partition.
DATA=${SC_TEST_DATA:-$HERE/data}
OLD="$T/old"
mkdir -m 700 "$OLD" && cp "$DATA/format5/data.mdb" "$OLD/" && chmod 600 "$OLD/data.mdb"
run 0 "format 5: catalog" -- "$S" --db "$OLD" partition checkpoints eu --take
expect_in "$T/out" '"verifies":true}' "format 5: checkpoint of eu"
expect_in "$T/out" '"tail":0,"checkpoint_position":300}' "format 5: catalog of eu"
run 0 "format 5: default" -- "$S" --db "$OLD" partition checkpoints "" --take
run 0 "format 5: us" -- "$S" --db "$OLD" partition checkpoints us --take
run 0 "format 5: scan" -- "$S" --db "$OLD" scan
if cmp -s "$T/out" "$DATA/format5/scan.jsonl"; then ok; else bad "format 5: scan differs from the format 5 build's"; fi
run 0 "format 5: stats" -- "$S" --db "$OLD" stats
expect_in "$T/out" '"open_events_replayed":0,' "format 5: open by checkpoints"

# ---- statecache partitions ---------------------------------------------------
# Every partition of the catalog; with --budget every named one is cold and
# get still answers from the store opened by it.
run 0 "partitions --help" -- "$S" partitions --help
expect_in "$T/out" "usage: statecache [--db DIR] partitions" "partitions help"
run 0 "global help lists partitions" -- "$S" --help
expect_in "$T/out" "  partitions " "global help lists partitions"
run 2 "partitions: unknown option" -- "$S" --db "$DB" partitions --bogus
run 2 "partitions: bad budget" -- "$S" --db "$DB" partitions --budget x
run 1 "partitions: missing store" -- "$S" --db "$T/none" partitions
run 0 "partitions --json" -- "$S" --db "$DB" partitions --json
expect_eq "$(grep -c '"partition":' "$T/out")" 2 "two partitions listed"
expect_in "$T/out" '{"partition":"p1","resident":true,"pinned":false,"entities":7,' "p1 resident, its entities"
expect_in "$T/out" '"last_position":59,"events":30,"tail":15,' "p1 catalog figures"
expect_in "$T/out" '{"total":true,"memory_budget":0,' "totals line"
run 0 "partitions --budget" -- "$S" --db "$DB" partitions --json --budget 1000
expect_in "$T/out" '{"partition":"p1","resident":false,"pinned":false,"entities":0,"bytes":0,' "p1 cold under a budget"
expect_in "$T/out" '"cold":2,' "both named partitions cold"
run 0 "partitions table" -- "$S" --db "$DB" partitions
expect_in "$T/out" "p0" "table lists p0"
expect_in "$T/out" "total: budget 0" "table totals"

cli_finish partition
