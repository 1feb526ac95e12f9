#!/usr/bin/env bash
# The project's test command (README.md, "Test it"; docs/testing.md). It
# installs what it needs and runs, in order: formatting and static checks,
# the unit and integration tests under the race detector (with promtool's
# checks of the Prometheus rules, the dashboard's queries and a /metrics
# scrape), the rule unit tests, the Kubernetes manifests' validation, the
# container image, a quick benchmark smoke run and a soak side by side, and
# the end-to-end suite against real OpenClaw gateways (skip it with
# HOLDFAST_E2E=0).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export PATH="$PATH:$(go env GOPATH)/bin"

# step starts a stage; its wall time is taken until the next step (or the
# end), and a table of every stage's time is printed at the end, also
# when a stage fails.
stages=()
step() {
	stage_done
	stage_name="$*"
	stage_start=$SECONDS
	printf '\n== %s\n' "$*"
}
stage_done() {
	if [ -n "${stage_name:-}" ]; then
		stages+=("$(printf '%6d s  %s' $((SECONDS - stage_start)) "$stage_name")")
		stage_name=""
	fi
}
stage_times() {
	local rc=$?
	stage_done
	printf '\n== stage times (wall)\n'
	printf '%s\n' "${stages[@]}"
	printf '%6d s  total%s\n' "$SECONDS" "$([ "$rc" = 0 ] || echo ", failed")"
}
trap stage_times EXIT

# promtool (rule checks and tests, /metrics lint) and the prometheus binary
# (the end-to-end suite's real Prometheus) come with Debian's prometheus
# package.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
	step "installing Debian's prometheus package (promtool)"
	sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
	$sudo_ apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends prometheus
	# The package enables a Prometheus service on :9090; the tests run
	# their own on 127.0.0.1, so stop it where systemd started it.
	if [ -d /run/systemd/system ]; then
		$sudo_ systemctl disable --now prometheus >/dev/null 2>&1 || true
	fi
fi
promtool --version 2>&1 | head -1
export HOLDFAST_REQUIRE_PROMTOOL=1

# systemd-analyze (verify and security of deploy/systemd's units) comes with
# Debian's systemd package.
if ! command -v systemd-analyze >/dev/null; then
	step "installing Debian's systemd package (systemd-analyze)"
	sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
	$sudo_ apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends systemd
fi
export HOLDFAST_REQUIRE_SYSTEMD_ANALYZE=1

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...
go vet -tags e2e ./e2e/

step "staticcheck"
if ! staticcheck -version 2>/dev/null | grep -q '(0.8.2)'; then
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
staticcheck ./...
staticcheck -tags e2e ./e2e/

step "go test -race"
go test -race -count=1 -timeout 15m ./...

step "promtool: rules, rule tests"
# Also run by go test ./deploy/... above; here their output is shown.
(cd deploy/prometheus && promtool check rules holdfast.rules.yml && promtool test rules holdfast.rules.test.yml)

step "Kubernetes manifests (deploy/kubernetes/validate, a module of its own)"
# Renders every kustomize overlay, decodes every object strictly against the
# Kubernetes API types and checks the manifests against the Dockerfile and
# the holdfast binary. kustomize and the API types stay out of holdfast's
# go.mod; their modules are cached like any other.
(cd deploy/kubernetes/validate && go vet ./... && staticcheck ./... && go test -count=1 ./...)

step "container image (scripts/image.sh: podman build from the Dockerfile, then run it)"
# Skips with one line where podman cannot run a container.
bash scripts/image.sh

step "benchmark and soak smoke runs, side by side (go run ./bench -quick; go run ./bench -soak 60s)"
# Both are smoke tests: the quick benchmark checks that the harness runs
# every scenario and reports every figure (its figures are no measurement
# here: the soak runs beside it), and the soak exits non-zero, naming the
# cause, when a message is lost, duplicated, reordered or corrupted or a
# connection ends without a documented close (docs/soak.md). Neither
# depends on having the machine to itself, and side by side they take a
# minute instead of two.
smoke=$(mktemp -d)
go build -o "$smoke/bench" ./bench
"$smoke/bench" -quick -json "$smoke/bench.json" >"$smoke/bench.log" 2>&1 &
bench_pid=$!
"$smoke/bench" -soak 60s -json "$smoke/soak.json" >"$smoke/soak.log" 2>&1 &
soak_pid=$!
bench_rc=0; wait "$bench_pid" || bench_rc=$?
soak_rc=0; wait "$soak_pid" || soak_rc=$?
printf -- '-- go run ./bench -quick (exit %d)\n' "$bench_rc"; cat "$smoke/bench.log"
printf -- '-- go run ./bench -soak 60s (exit %d)\n' "$soak_rc"; cat "$smoke/soak.log"
[ "$bench_rc" = 0 ] || { echo "bench -quick failed"; exit 1; }
[ "$soak_rc" = 0 ] || { echo "soak failed"; exit 1; }
for key in throughput_msgs_per_s rtt_p50_us rtt_p99_us idle_bytes_per_session handshakes_per_s cpu_us_per_msg window window_attributed floor_ms max_preauth_per_address; do
	grep -q "\"$key\"" "$smoke/bench.json" || { echo "bench JSON lacks $key"; exit 1; }
done
for key in duration_s messages_sent messages_received lost duplicated reordered corrupted handshakes handshakes_ok close_codes gateway_restarts reloads rotations rss_bytes goroutines fds; do
	grep -q "\"$key\"" "$smoke/soak.json" || { echo "soak JSON lacks $key"; exit 1; }
done
rm -rf "$smoke"

if [ "${HOLDFAST_E2E:-1}" != "0" ]; then
	step "end-to-end suite against real gateways (e2e/run.sh)"
	bash e2e/run.sh
fi
echo
echo "all checks passed"
