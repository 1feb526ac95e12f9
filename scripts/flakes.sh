#!/usr/bin/env bash
# flakes.sh hunts for tests that fail by chance. Run it before a release (it
# is not part of the test command: it takes tens of minutes on 2 cores).
#
#   scripts/flakes.sh            every package, -race, 50 runs each
#   COUNT=200 scripts/flakes.sh ./proxy/   more runs of one package
#   E2E_RUNS=3 scripts/flakes.sh           also run the e2e suite 3 times
#
# It runs each package on its own so one slow package does not hide the
# others' results, prints how long each took, and exits non-zero if any run
# failed. Failing output is kept in $OUT (default: a fresh temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
COUNT="${COUNT:-50}"
E2E_RUNS="${E2E_RUNS:-0}"
OUT="${OUT:-$(mktemp -d -t holdfast-flakes.XXXXXX)}"
mkdir -p "$OUT" || exit 2
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || mapfile -t pkgs < <(go list ./...)

failed=0
total_start=$(date +%s)
for p in "${pkgs[@]}"; do
	start=$(date +%s)
	log="$OUT/$(echo "$p" | tr '/.' '__').log"
	if go test -race -count="$COUNT" -timeout 120m "$p" >"$log" 2>&1; then
		printf 'ok    %-55s %4d runs  %5d s\n' "$p" "$COUNT" $(($(date +%s) - start))
	else
		failed=1
		printf 'FAIL  %-55s %4d runs  %5d s  (%s)\n' "$p" "$COUNT" $(($(date +%s) - start)) "$log"
		grep -E '^(--- FAIL|FAIL|panic:|    .*_test\.go:[0-9]+:)' "$log" | sort | uniq -c | sort -rn | head -20
	fi
done
for i in $(seq 1 "$E2E_RUNS"); do
	start=$(date +%s)
	log="$OUT/e2e-$i.log"
	if bash e2e/run.sh >"$log" 2>&1; then
		printf 'ok    %-55s run %d      %5d s\n' "e2e" "$i" $(($(date +%s) - start))
	else
		failed=1
		printf 'FAIL  %-55s run %d      %5d s  (%s)\n' "e2e" "$i" $(($(date +%s) - start)) "$log"
		grep -E '^\s*--- FAIL' "$log" | head -20
	fi
done
echo "flakes: $(($(date +%s) - total_start)) s in all; logs in $OUT"
exit "$failed"
