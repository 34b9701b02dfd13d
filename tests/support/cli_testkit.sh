# Shared preamble of the command-line tests (tests/test_*.sh). A test
# sources it first, from its own directory, before anything changes the
# working directory:
#
#   . "$(dirname "$0")/support/cli_testkit.sh" NAME
#
# Sourcing it:
#   - sets `set -u`;
#   - sets S to $STATECACHE (the statecache binary), or ends the test with
#     an error if STATECACHE is not set;
#   - makes the temporary directory T (statecache-NAME.XXXXXX under
#     $TMPDIR or /tmp), removes it on exit (trap on EXIT; a test that needs
#     more cleanup sets its own trap and removes "$T" there), and cd's into
#     it;
#   - sets the counters pass=0 and fail=0.
#
# Functions:
#   ok                        count one passed check.
#   bad MESSAGE...            count one failed check; print "FAIL: MESSAGE".
#   run EXPECTED NAME -- CMD...
#                             run CMD with stdout in $T/out and stderr in
#                             $T/err; a check that its exit code is EXPECTED
#                             (on failure the message shows stderr).
#   expect_in FILE TEXT NAME  a check that FILE contains TEXT (fixed string).
#   expect_eq GOT WANTED NAME a check that the two strings are equal.
#   cli_finish [LABEL]        print "[LABEL: ]N passed, M failed" and end the
#                             test: exit 0 if no check failed, 1 otherwise.
set -u

S=${STATECACHE:?set STATECACHE to the statecache binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/statecache-${1:?cli_testkit.sh: pass the test name}.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
	fail=$((fail + 1))
	echo "FAIL: $*"
}
run() {
	local want=$1 name=$2
	shift 3
	"$@" >"$T/out" 2>"$T/err"
	local got=$?
	if [ "$got" = "$want" ]; then ok; else
		bad "$name: exit $got, wanted $want; stderr: $(head -c 600 "$T/err")"
	fi
}
expect_in() {
	if grep -qF -- "$2" "$1"; then ok; else
		bad "$3: '$2' not in $(basename "$1"): $(head -c 600 "$1")"
	fi
}
expect_eq() {
	if [ "$1" = "$2" ]; then ok; else bad "$3: got '$1', wanted '$2'"; fi
}
cli_finish() {
	echo "${1:+$1: }$pass passed, $fail failed"
	[ "$fail" = 0 ] && exit 0
	exit 1
}
