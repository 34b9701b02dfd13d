#!/usr/bin/env bash
# Command-line tests of the statecache command: every command, its error
# paths and exit codes (0 ok, 1 not found/failed, 2 bad input/usage).
# Run with STATECACHE=/path/to/statecache; prints "N passed, M failed" last.
. "$(dirname "$0")/support/cli_testkit.sh" cli

DB="$T/db"

# ---- help and usage --------------------------------------------------------
run 0 "global --help" -- "$S" --help
expect_in "$T/out" "Exit codes" "global help lists exit codes"
for c in ingest get scan events snapshot stats verify demo gen; do
	run 0 "$c --help" -- "$S" "$c" --help
	expect_in "$T/out" "usage: statecache" "$c help"
	expect_in "$T/out" "Exit codes" "$c help lists exit codes"
done
run 2 "no command" -- "$S"
run 2 "unknown command" -- "$S" frobnicate
expect_in "$T/err" 'unknown command "frobnicate"' "unknown command message"
run 2 "unknown global option" -- "$S" --bogus stats
run 2 "--db without value" -- "$S" --db
run 2 "unknown get option" -- "$S" --db "$DB" get x --bogus
run 2 "get without id" -- "$S" --db "$DB" get
run 2 "bad --limit" -- "$S" --db "$DB" scan --limit -3
expect_in "$T/err" "--limit must be a whole number" "bad --limit message"
run 2 "bad --batch" -- "$S" --db "$DB" ingest --batch 0

# ---- commands on a missing store -------------------------------------------
for c in "get x" "scan" "events" "snapshot" "stats" "verify"; do
	# shellcheck disable=SC2086
	run 1 "$c on a missing store" -- "$S" --db "$T/nothing" $c
	expect_in "$T/err" "no store at $T/nothing" "$c missing store message"
	expect_in "$T/err" "ingest" "$c missing store hint"
done
[ ! -e "$T/nothing" ] && ok || bad "a read command created the store"

# ---- ingest: every field and value kind -------------------------------------
cat >"$T/a.jsonl" <<'JSON'
{"entity":"user-1","type":"set","attrs":{"name":"Ann","age":31,"vip":true},"actor":"svc-a","time":"2026-11-23T10:00:00Z","tags":["signup"]}
{"entity":"user-2","type":"set","attrs":{"name":"Bo","score":2.5,"key":{"$bytes":"AAEC/w=="}},"actor":"svc-b","time":"2026-11-23T10:00:01.000000123Z"}

{"entity":"user-1","type":"set","attrs":{"age":32,"vip":null},"actor":"svc-a","time":"2026-11-23T11:00:00+01:00"}
{"entity":"user-2","type":"unset","attrs":["score"],"time":"2026-11-23T10:00:02Z"}
{"entity":"user-3","type":"replace","attrs":{"x":1.0,"y":-7},"time":"2026-11-23T10:00:03Z"}
{"entity":"user-3","type":"delete","time":"2026-11-23T10:00:04Z"}
{"entity":"dev-9","type":"set","attrs":{"on":false}}
JSON
run 0 "ingest a file" -- "$S" --db "$DB" ingest "$T/a.jsonl" --batch 2
expect_in "$T/err" "ingested 7 events" "ingest summary counts events (blank line skipped)"
expect_in "$T/err" "3 entities" "ingest summary counts entities"
expect_in "$T/err" "events/s" "ingest summary rate"

run 0 "get user-1" -- "$S" --db "$DB" get user-1
expect_eq "$(cat "$T/out")" '{"id":"user-1","attrs":{"age":32,"name":"Ann"},"updated_at":"2026-11-23T10:00:00Z","updated_by":"svc-a","position":3}' "get user-1 output"
run 0 "get user-2" -- "$S" --db "$DB" get user-2
expect_eq "$(cat "$T/out")" '{"id":"user-2","attrs":{"key":{"$bytes":"AAEC/w=="},"name":"Bo"},"updated_at":"2026-11-23T10:00:02Z","updated_by":"","position":4}' "get user-2 output"
run 1 "get a deleted entity" -- "$S" --db "$DB" get user-3
expect_in "$T/err" 'no entity "user-3"' "deleted entity message"
run 1 "get a missing entity" -- "$S" --db "$DB" get nobody
expect_in "$T/err" 'no entity "nobody"' "missing entity message"

# --at: the state as of a position
run 0 "get --at 1" -- "$S" --db "$DB" get user-1 --at 1
expect_eq "$(cat "$T/out")" '{"id":"user-1","attrs":{"age":31,"name":"Ann","vip":true},"updated_at":"2026-11-23T10:00:00Z","updated_by":"svc-a","position":1}' "get --at 1 output"
run 0 "get --at 5 (replaced)" -- "$S" --db "$DB" get user-3 --at 5
expect_in "$T/out" '"attrs":{"x":1.0,"y":-7}' "get --at replace state"
run 1 "get --at before it existed" -- "$S" --db "$DB" get user-2 --at 1
expect_in "$T/err" "at position 1" "--at not found message"
run 1 "get --at after delete" -- "$S" --db "$DB" get user-3 --at 6

# events: the log with positions; stdin ingest of it copies the log
run 0 "events" -- "$S" --db "$DB" events
expect_eq "$(wc -l <"$T/out")" "7" "events count"
expect_in "$T/out" '{"position":1,"entity":"user-1","type":"set","attrs":{"age":31,"name":"Ann","vip":true},"actor":"svc-a","time":"2026-11-23T10:00:00Z","tags":["signup"]}' "events line 1"
expect_in "$T/out" '"position":4,"entity":"user-2","type":"unset","attrs":["score"]' "events unset"
expect_in "$T/out" '"position":6,"entity":"user-3","type":"delete"' "events delete"
expect_in "$T/out" '"time":"2026-11-23T10:00:01.000000123Z"' "events nanoseconds"
cp "$T/out" "$T/log1"
run 0 "events --from --limit" -- "$S" --db "$DB" events --from 3 --limit 2
expect_eq "$(cut -c1-14 "$T/out" | tr '\n' ' ')" '{"position":3, {"position":4, ' "events window"
run 0 "events --entity" -- "$S" --db "$DB" events --entity user-2
expect_eq "$(wc -l <"$T/out")" "2" "events of one entity"
run 0 "copy the log through stdin" -- "$S" --db "$T/copy" ingest - <"$T/log1"
run 0 "events of the copy" -- "$S" --db "$T/copy" events
if cmp -s "$T/out" "$T/log1"; then ok; else bad "copied log differs"; fi

# scan
run 0 "scan" -- "$S" --db "$DB" scan
expect_eq "$(cut -d, -f1 "$T/out" | tr '\n' ' ')" '{"id":"dev-9" {"id":"user-1" {"id":"user-2" ' "scan sorted"
run 0 "scan --prefix --limit" -- "$S" --db "$DB" scan --prefix user- --limit 1
expect_eq "$(cut -d, -f1 "$T/out")" '{"id":"user-1"' "scan prefix limit"
run 0 "scan no match" -- "$S" --db "$DB" scan --prefix zzz
expect_eq "$(wc -c <"$T/out")" "0" "scan no match prints nothing"

# snapshot then stats
run 0 "stats before snapshot" -- "$S" --db "$DB" stats
expect_in "$T/out" '"entities":3,"last_position":7,"snapshots":[]' "stats before snapshot"
run 0 "snapshot" -- "$S" --db "$DB" snapshot
expect_in "$T/out" "snapshot at position 7" "snapshot output"
run 0 "stats after snapshot" -- "$S" --db "$DB" stats
expect_in "$T/out" '"snapshots":[{"position":7,' "stats lists the snapshot"
for k in map_bytes_used memory_bytes versions_awaiting_reclamation compressed_bytes; do
	expect_in "$T/out" "\"$k\":" "stats key $k"
done
run 0 "verify small" -- "$S" --db "$DB" verify
expect_in "$T/out" "verify: OK" "verify small output"

# ---- partitions: an entity is (partition, id) -------------------------------
P="$T/parts"
cat >"$T/p.jsonl" <<'JSON'
{"entity":"u","type":"set","attrs":{"n":1},"time":"2026-11-23T10:00:00Z"}
{"entity":"u","type":"set","attrs":{"n":2},"partition":"eu","time":"2026-11-23T10:00:01Z"}
{"entity":"u","type":"set","attrs":{"m":3},"partition":"us","time":"2026-11-23T10:00:02Z"}
{"entity":"v","type":"set","attrs":{"n":4},"partition":"eu","time":"2026-11-23T10:00:03Z"}
{"entity":"u","type":"delete","partition":"us","time":"2026-11-23T10:00:04Z"}
JSON
run 0 "ingest partitions" -- "$S" --db "$P" ingest "$T/p.jsonl"
run 0 "get default partition" -- "$S" --db "$P" get u
expect_eq "$(cat "$T/out")" '{"id":"u","attrs":{"n":1},"updated_at":"2026-11-23T10:00:00Z","updated_by":"","position":1}' "get u of the default partition"
run 0 "get --partition" -- "$S" --db "$P" get u --partition eu
expect_eq "$(cat "$T/out")" '{"id":"u","partition":"eu","attrs":{"n":2},"updated_at":"2026-11-23T10:00:01Z","updated_by":"","position":2}' "get u of eu"
run 1 "get --partition deleted" -- "$S" --db "$P" get u --partition us
expect_in "$T/err" 'no entity "u" in partition "us"' "get of a deleted entity names its partition"
run 0 "get --partition --at" -- "$S" --db "$P" get u --partition us --at 3
expect_in "$T/out" '"partition":"us","attrs":{"m":3}' "get --partition --at"
run 1 "get --partition unknown" -- "$S" --db "$P" get u --partition zz
run 0 "scan every partition" -- "$S" --db "$P" scan
expect_eq "$(cut -d, -f1-2 "$T/out" | tr '\n' ' ')" '{"id":"u","attrs":{"n":1} {"id":"u","partition":"eu" {"id":"v","partition":"eu" ' "scan sorted by partition then id"
run 0 "scan --partition" -- "$S" --db "$P" scan --partition eu
expect_eq "$(wc -l <"$T/out")" "2" "scan of one partition"
run 0 "scan --partition default" -- "$S" --db "$P" scan --partition ""
expect_eq "$(wc -l <"$T/out")" "1" "scan of the default partition"
run 0 "events --partition" -- "$S" --db "$P" events --partition eu
expect_eq "$(cut -c1-14 "$T/out" | tr '\n' ' ')" '{"position":2, {"position":4, ' "events of one partition"
run 0 "events --partition --limit" -- "$S" --db "$P" events --partition us --limit 1
expect_eq "$(cut -c1-14 "$T/out")" '{"position":3,' "events of one partition, limited"
run 0 "events --partition --entity" -- "$S" --db "$P" events --partition eu --entity u
expect_eq "$(wc -l <"$T/out")" "1" "events of one entity of a partition"
run 0 "snapshot partitions" -- "$S" --db "$P" snapshot
run 0 "verify partitions" -- "$S" --db "$P" verify
expect_in "$T/out" "verify: OK" "verify partitions output"
run 0 "get --partition after snapshot" -- "$S" --db "$P" get v --partition eu
expect_in "$T/out" '"partition":"eu","attrs":{"n":4}' "a partition survives a snapshot and reopen"

# ---- ingest errors: exit 2, events before the bad line are kept ---------
E="$T/err-db"
good='{"entity":"e","type":"set","attrs":{"n":1}}'
check_error() { # NAME BADLINE MESSAGE
	rm -rf "$E"
	printf '%s\n%s\n%s\n%s\n' "$good" "$good" "$2" "$good" >"$T/bad.jsonl"
	run 2 "$1" -- "$S" --db "$E" ingest "$T/bad.jsonl" --batch 10
	expect_in "$T/err" "line 3: " "$1 names the line"
	expect_in "$T/err" "$3" "$1 message"
	run 0 "$1: events after" -- "$S" --db "$E" events
	expect_eq "$(wc -l <"$T/out")" "2" "$1 kept exactly the 2 events before"
	run 0 "$1: stats after" -- "$S" --db "$E" stats
	expect_in "$T/out" '"last_position":2,' "$1 stats last_position"
}
check_error "malformed JSON" '{"entity":"e","type":' "column"
check_error "unknown type" '{"entity":"e","type":"upsert"}' 'unknown event type "upsert"'
check_error "bad value" '{"entity":"e","type":"set","attrs":{"v":[1]}}' "arrays are not attribute values"
check_error "unknown field" '{"entity":"e","type":"delete","colour":1}' 'unknown field "colour"'
check_error "duplicate key" '{"entity":"e","type":"delete","type":"delete"}' "duplicate"
check_error "bad time" '{"entity":"e","type":"delete","time":"noon"}' "bad time"
check_error "bad base64" '{"entity":"e","type":"set","attrs":{"b":{"$bytes":"!!"}}}' "bad base64"
check_error "big integer" '{"entity":"e","type":"set","attrs":{"n":99999999999999999999}}' "too big integer"
check_error "not UTF-8" $'{"entity":"\xff","type":"delete"}' "column"
# a line the JSON decoder accepts but the store would refuse (actor over
# 4096 bytes): validated before it joins a batch, like a malformed line
long_actor="{\"entity\":\"e\",\"type\":\"delete\",\"actor\":\"$(head -c 5000 /dev/zero | tr '\0' a)\"}"
check_error "refused by the store's rules" "$long_actor" "actor is 5000 bytes"
# ... in the middle of a batch of 1000: the 499 lines before it go in one
# transaction, nothing after it
rm -rf "$E"
"$S" gen --count 999 --entities 50 --seed 5 >"$T/g999.jsonl"
{
	head -n 499 "$T/g999.jsonl"
	echo "$long_actor"
	tail -n +500 "$T/g999.jsonl"
} >"$T/bad.jsonl"
run 2 "invalid line 500 of a batch of 1000" -- "$S" --db "$E" ingest "$T/bad.jsonl" --batch 1000
expect_in "$T/err" "line 500: actor is 5000 bytes" "invalid line 500: names the line"
expect_in "$T/err" "ingested 499 events from $T/bad.jsonl in 1 transactions" "invalid line 500: one transaction"
run 0 "events after invalid line 500" -- "$S" --db "$E" events --limit 1000
head -n 499 "$T/g999.jsonl" >"$T/want.jsonl"
sed -e 's/^{"position":[0-9]*,/{/' "$T/out" >"$T/got.jsonl"
if cmp -s "$T/got.jsonl" "$T/want.jsonl"; then ok; else
	bad "invalid line 500: the store does not hold exactly lines 1..499"
fi
# a bad line at various places and batch sizes: exactly the lines before it
# are committed (seeded, so every run is the same)
RANDOM=4242
"$S" gen --count 60 --entities 7 --seed 3 >"$T/g60.jsonl"
for batch in 1 4 7 25 100; do
	at=$((RANDOM % 60 + 1))
	rm -rf "$E"
	{
		head -n $((at - 1)) "$T/g60.jsonl"
		echo '{"entity":"x","type":"set","attrs":{"v":[]}}'
		tail -n +"$at" "$T/g60.jsonl"
	} >"$T/bad.jsonl"
	run 2 "bad line $at, batch $batch" -- "$S" --db "$E" ingest "$T/bad.jsonl" --batch "$batch"
	expect_in "$T/err" "line $at: " "bad line $at, batch $batch: names the line"
	run 0 "events after bad line $at" -- "$S" --db "$E" events
	expect_eq "$(wc -l <"$T/out")" "$((at - 1))" "bad line $at, batch $batch: lines before it kept"
done
# a bad line right at a batch boundary: batch 2 commits lines 1-2 first
rm -rf "$E"
printf '%s\n%s\n%s\n' "$good" "$good" '{"entity":"e"}' >"$T/bad.jsonl"
run 2 "bad line after a full batch" -- "$S" --db "$E" ingest "$T/bad.jsonl" --batch 2
run 0 "events after boundary error" -- "$S" --db "$E" events
expect_eq "$(wc -l <"$T/out")" "2" "boundary error kept 2 events"
# an over-long line is an error, not truncated
rm -rf "$E"
{
	echo "$good"
	printf '{"entity":"e","type":"set","attrs":{"s":"'
	head -c 1100000 /dev/zero | tr '\0' a
	printf '"}}\n'
} >"$T/long.jsonl"
run 2 "over-long line" -- "$S" --db "$E" ingest "$T/long.jsonl"
expect_in "$T/err" "line 2: longer than the limit" "over-long line message"
run 0 "events after long line" -- "$S" --db "$E" events
expect_eq "$(wc -l <"$T/out")" "1" "over-long line kept 1 event"
# missing input file: exit 1, and no store is created
run 1 "missing input file" -- "$S" --db "$T/never" ingest "$T/no-such-file"
expect_in "$T/err" "cannot open $T/no-such-file" "missing file message"
[ ! -e "$T/never" ] && ok || bad "missing input created a store"

# ---- gen is deterministic; verify after a long random ingest ---------------
run 0 "gen" -- "$S" gen --count 50 --seed 7
cp "$T/out" "$T/gen1"
run 0 "gen again" -- "$S" gen --count 50 --seed 7
if cmp -s "$T/out" "$T/gen1"; then ok; else bad "gen not deterministic"; fi
R="$T/random"
"$S" gen --count 20000 --entities 500 --seed 11 >"$T/r.jsonl"
run 0 "ingest 20000 random events" -- "$S" --db "$R" ingest "$T/r.jsonl" --batch 700
expect_in "$T/err" "ingested 20000 events" "random ingest count"
run 0 "snapshot of random" -- "$S" --db "$R" snapshot
"$S" gen --count 3000 --entities 500 --seed 12 >"$T/r2.jsonl"
run 0 "ingest a tail" -- "$S" --db "$R" ingest "$T/r2.jsonl" --nosync
run 0 "verify random store" -- "$S" --db "$R" verify
expect_in "$T/out" "verify: OK" "verify random output"
expect_in "$T/out" "full replay (23000 events" "verify replayed everything"
run 0 "stats random" -- "$S" --db "$R" stats
expect_in "$T/out" '"last_position":23000,' "random stats position"
# Every durability mode appends to the same store; the background flush
# thread of --sync-interval starts and stops with the store.
"$S" gen --count 500 --entities 50 --seed 13 >"$T/r3.jsonl"
run 0 "ingest consistent" -- "$S" --db "$R" ingest "$T/r3.jsonl" --durability consistent --batch 50
run 0 "ingest nosync, flushed every 1 ms" -- "$S" --db "$R" ingest "$T/r3.jsonl" --durability=nosync --sync-interval 1 --batch 10
run 0 "ingest full" -- "$S" --db "$R" ingest "$T/r3.jsonl" --durability full
run 0 "verify after every mode" -- "$S" --db "$R" verify
expect_in "$T/out" "full replay (24500 events" "every mode appended"
run 2 "unknown durability" -- "$S" --db "$R" ingest "$T/r3.jsonl" --durability fast
expect_in "$T/err" "full, consistent or nosync" "durability error names the modes"
run 2 "sync interval without nosync" -- "$S" --db "$R" ingest "$T/r3.jsonl" --sync-interval 5
# A nosync session cut by a restart of the machine leaves its marker with
# another boot id: open refuses the store and names the marker; one of
# this boot whose process is gone (a process crash) is flushed and removed.
if [ -r /proc/sys/kernel/random/boot_id ]; then
	echo 00000000-0000-0000-0000-000000000000 >"$R/nosync-session.4194303"
	run 1 "open after a restart cut a nosync session" -- "$S" --db "$R" stats
	expect_in "$T/err" "nosync-session.4194303" "the refusal names the marker"
	expect_in "$T/err" "Restore it from a backup" "the refusal says what to do"
	cp /proc/sys/kernel/random/boot_id "$R/nosync-session.4194303"
	run 0 "open after a nosync process crashed" -- "$S" --db "$R" stats
	# stats opens read-only: it flushes nothing, so the marker stays
	# until a writing open flushes the store and removes it.
	if [ -e "$R/nosync-session.4194303" ]; then ok; else bad "a read-only open removed a marker"; fi
	run 0 "writing open after a nosync process crashed" -- "$S" --db "$R" snapshot
	if [ -e "$R/nosync-session.4194303" ]; then bad "stale marker kept"; else ok; fi
fi

# ---- a tiny demo ------------------------------------------------------------
run 0 "demo" -- "$S" --db "$T/demo" demo --events 3000 --entities 300 --more 2000 --batch 500
expect_in "$T/out" "summary" "demo prints a summary"
expect_in "$T/out" "0 torn entities" "demo readers saw whole entities"
run 1 "demo on a used store" -- "$S" --db "$T/demo" demo --events 10
# the generated stream goes to a file beside the store first: no room
# for it (a file size limit of 64 KiB) is a clean failure
run 1 "demo, no room for its stream" -- bash -c 'ulimit -f 64; trap "" XFSZ; exec "$0" "$@"' "$S" --db "$T/demo_noroom" demo --events 20000 --entities 300
expect_in "$T/err" "writing the generated stream to a file in $T/demo_noroom failed" "demo says its stream did not fit"
expect_eq "$(ls "$T/demo_noroom")" "$(printf 'data.mdb\nlock.mdb')" "demo leaves no stream file behind"

# ---- a 1024-byte id in a store past its index catch-up ----------------------
L="$T/long-id"
LONG=$(head -c 1016 /dev/zero | tr '\0' k)longid01
"$S" gen --count 4199 --entities 300 --seed 21 >"$T/l.jsonl"
{
	head -n 2000 "$T/l.jsonl"
	echo "{\"entity\":\"$LONG\",\"type\":\"set\",\"attrs\":{\"n\":1}}"
	tail -n +2001 "$T/l.jsonl"
} >"$T/l2.jsonl"
run 0 "ingest 4200 events with a 1024-byte id" -- "$S" --db "$L" ingest "$T/l2.jsonl" --batch 100
expect_in "$T/err" "ingested 4200 events" "long id ingest count"
"$S" gen --count 300 --entities 300 --seed 22 >"$T/l3.jsonl"
echo "{\"entity\":\"$LONG\",\"type\":\"set\",\"attrs\":{\"n\":2}}" >>"$T/l3.jsonl"
run 0 "append after the index caught up" -- "$S" --db "$L" ingest "$T/l3.jsonl" --batch 50
expect_in "$T/err" "ingested 301 events" "append after catch-up count"
run 0 "get the 1024-byte id" -- "$S" --db "$L" get "$LONG"
expect_in "$T/out" '"attrs":{"n":2}' "long id state"
expect_in "$T/out" '"position":4501' "long id position"
run 0 "events of the 1024-byte id" -- "$S" --db "$L" events --entity "$LONG"
expect_eq "$(cut -c1-16 "$T/out" | tr '\n' ' ')" '{"position":2001 {"position":4501 ' "long id events"
run 0 "get the 1024-byte id --at" -- "$S" --db "$L" get "$LONG" --at 4500
expect_in "$T/out" '"attrs":{"n":1}' "long id state as of 4500"
run 0 "verify the long-id store" -- "$S" --db "$L" verify
expect_in "$T/out" "verify: OK" "verify long-id store"
# a store is private to its owner
expect_eq "$(stat -c %a "$L") $(stat -c %a "$L/data.mdb") $(stat -c %a "$L/lock.mdb")" "700 600 600" "store file modes"

cli_finish
