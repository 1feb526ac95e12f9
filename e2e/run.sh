#!/usr/bin/env bash
# run.sh installs (or verifies) the cached gateways and CLIs, then runs the
# end-to-end suite. Extra arguments go to `go test` (e.g. -run TestCurrent).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${HOLDFAST_E2E_CACHE:-$HOME/.cache/holdfast-e2e}"
export HOLDFAST_E2E_CACHE="$CACHE"

# stop_leftovers stops gateway process groups recorded by a test binary that
# was killed before its cleanups ran (see gateway_test.go). A record is
# "PGID OWNER"; a group whose owner still runs belongs to a suite running
# beside this one and is left alone.
stop_leftovers() {
	local f pgid owner
	for f in "$CACHE"/run/gateway-*.pgid; do
		[ -e "$f" ] || continue
		read -r pgid owner <"$f" || true
		if [ -n "${owner:-}" ] && [ -d "/proc/$owner" ]; then
			continue
		fi
		if [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null &&
			grep -qa openclaw "/proc/$pgid/cmdline" 2>/dev/null; then
			echo "e2e: stopping leftover gateway process group $pgid" >&2
			kill -TERM -- "-$pgid" 2>/dev/null || true
			sleep 3
			kill -KILL -- "-$pgid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
}
trap stop_leftovers EXIT

start=$(date +%s)
bash e2e/setup.sh
stop_leftovers
status=0
go test -tags e2e -count=1 -v -parallel 16 -timeout 25m ./e2e/ "$@" || status=$?
echo "e2e: finished in $(($(date +%s) - start)) s with status $status"
exit "$status"
