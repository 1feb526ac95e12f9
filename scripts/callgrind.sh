#!/usr/bin/env bash
# Instructions a proxy's process executes per handshake, counted by
# valgrind's callgrind (docs/benchmarks.md, "Handshakes against koding").
# Unlike timings, the counts do not move with the machine's load.
#
#   scripts/callgrind.sh holdfast [BINARY]   # holdfast built from this tree, or BINARY
#   scripts/callgrind.sh koding
#
# The proxy runs under callgrind in front of the bench upstream, with
# GODEBUG=asyncpreemptoff=1 (valgrind delivers the preemption signals
# slowly) and cpu.rdtscp=off (below). The bench's handshake clients (go run ./bench -drive) make 200
# handshakes to warm up, the counters are zeroed, 1 000 more are made by 8
# concurrent clients, each closed as soon as it is spliced, and the counts are
# dumped 2 s after the last. It prints the instructions per handshake; the
# profile stays in the printed directory (callgrind_annotate FILE).
#
# With ALLOCS=1, holdfast runs without valgrind, and the script prints
# the heap allocations and bytes per handshake instead: the growth of
# go_memstats_mallocs_total and go_memstats_alloc_bytes_total on its
# /metrics over the same 1 000 handshakes, less what a scrape allocates.
# With STRACE=1 the proxy runs without valgrind too, and strace -c counts
# its system calls over the 1 000 handshakes. With CPU=1 it prints the
# user and system CPU time the proxy used per handshake (/proc/PID/stat)
# and its threads' context switches; PERF=FILE adds a perf record of the
# proxy over them (cpu-clock, or PERF_EVENT=context-switches).
#
# N, WARM and WORKERS change the 1 000 handshakes, the 200 to warm up and
# the 8 clients; VALGRIND_FLAGS adds callgrind options (say
# "--cache-sim=yes --branch-sim=yes"). The temporary directory, with the
# proxy's log, is left for the profile.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: $0 holdfast|koding [holdfast binary]}
warm=${WARM:-200}
n=${N:-1000}
workers=${WORKERS:-8}
dir=$(mktemp -d /tmp/holdfast-callgrind.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

go build -o "$dir/bench" ./bench
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_for URL: until it answers (at most 60 s: valgrind starts slowly).
wait_for() {
	for _ in $(seq 600); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "callgrind.sh: $1 never answered" >&2
	exit 1
}

up=$(free_port)
"$dir/bench" -serve-upstream -listen "127.0.0.1:$up" >"$dir/upstream.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$up/benchstats"

listen=$(free_port)
vg=(valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" ${VALGRIND_FLAGS:-})
if [ "${ALLOCS:-}" = 1 ] || [ "${STRACE:-}" = 1 ] || [ "${CPU:-}" = 1 ]; then
	vg=()
fi
godebug=asyncpreemptoff=1
if [ ${#vg[@]} -gt 0 ]; then
	# The runtime reads the time-stamp counter with RDTSCP where the CPU
	# has it, and valgrind 3.19 stops at that instruction on some CPUs
	# (SIGILL in runtime.cputicks): under valgrind it uses RDTSC.
	godebug+=,cpu.rdtscp=off
fi
case $kind in
holdfast)
	bin=${2:-}
	if [ -z "$bin" ]; then
		bin=$dir/holdfast
		go build -o "$bin" .
	fi
	metrics=$(free_port)
	cat >"$dir/holdfast.yaml" <<EOF
listen: "127.0.0.1:$listen"
upstream:
  url: "ws://127.0.0.1:$up/"
metrics:
  listen: "127.0.0.1:$metrics"
handshake:
  budget: 12s
log:
  level: warn
EOF
	GODEBUG=$godebug "${vg[@]}" "$bin" -config "$dir/holdfast.yaml" >"$dir/proxy.log" 2>&1 &
	pids+=($!)
	wait_for "http://127.0.0.1:$metrics/healthz"
	;;
koding)
	GODEBUG=$godebug "${vg[@]}" "$dir/bench" -serve-proxy koding -listen "127.0.0.1:$listen" \
		-upstream "http://127.0.0.1:$up" >"$dir/proxy.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 600); do
		grep -q . "$dir/proxy.log" 2>/dev/null && ss -ltn | grep -q "127.0.0.1:$listen " && break
		sleep 0.1
	done
	;;
*)
	echo "callgrind.sh: unknown proxy $kind (want holdfast or koding)" >&2
	exit 2
	;;
esac
vpid=${pids[-1]}

url=ws://127.0.0.1:$listen/
"$dir/bench" -drive "$url" -drive-n "$warm" -drive-workers "$workers"
sleep 2
if [ "${ALLOCS:-}" = 1 ]; then
	# mallocs and bytes allocated so far
	memstats() {
		curl -fsS "http://127.0.0.1:$metrics/metrics" |
			awk '/^go_memstats_mallocs_total / { m = $2 } /^go_memstats_alloc_bytes_total / { b = $2 } END { printf "%d %d\n", m, b }'
	}
	read -r m0 b0 < <(memstats)
	read -r m1 b1 < <(memstats) # a scrape's own allocations: m1-m0
	"$dir/bench" -drive "$url" -drive-n "$n" -drive-workers "$workers"
	sleep 2
	read -r m2 b2 < <(memstats)
	echo "$kind: $(((m2 - m1 - (m1 - m0)) / n)) allocations, $(((b2 - b1 - (b1 - b0)) / n)) bytes per handshake (over $n)"
	exit 0
fi
if [ -n "${PERF:-}" ]; then
	# PERF_EVENT=context-switches records where the threads sleep
	if [ "${PERF_EVENT:-cpu-clock}" = cpu-clock ]; then
		perf record -e cpu-clock -F 4999 -g -o "$PERF" -p "$vpid" 2>/dev/null &
	else
		perf record -e "$PERF_EVENT" -c 1 -g -o "$PERF" -p "$vpid" 2>/dev/null &
	fi
	ppid=$!
	sleep 1
fi
if [ "${CPU:-}" = 1 ]; then
	# utime and stime in clock ticks (fields 14 and 15; the command
	# field holds no space here)
	ticks() { awk '{ print $14, $15 }' "/proc/$vpid/stat"; }
	# context switches of all the proxy's threads
	switches() { cat /proc/"$vpid"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'; }
	read -r u0 s0 < <(ticks)
	c0=$(switches)
	"$dir/bench" -drive "$url" -drive-n "$n" -drive-workers "$workers"
	sleep 1
	read -r u1 s1 < <(ticks)
	c1=$(switches)
	hz=$(getconf CLK_TCK)
	echo "$kind: $(((u1 - u0) * 1000000 / hz / n)) us user, $(((s1 - s0) * 1000000 / hz / n)) us system, $(((c1 - c0) * 10 / n)) tenths of a context switch per handshake (over $n; $(ls /proc/"$vpid"/task | wc -l) threads)"
	if [ -n "${PERF:-}" ]; then
		kill -INT "$ppid"
		wait "$ppid" || true
	fi
	exit 0
fi
if [ "${STRACE:-}" = 1 ]; then
	strace -c -f -o "$dir/strace.txt" -p "$vpid" &
	spid=$!
	sleep 1
	"$dir/bench" -drive "$url" -drive-n "$n" -drive-workers "$workers"
	sleep 2
	kill -INT "$spid"
	wait "$spid" || true
	echo "$kind: system calls over $n handshakes:"
	cat "$dir/strace.txt"
	exit 0
fi
callgrind_control -z "$vpid" >/dev/null
"$dir/bench" -drive "$url" -drive-n "$n" -drive-workers "$workers"
sleep 2
callgrind_control -d "$vpid" >/dev/null
sleep 1
out=$(ls -t "$dir"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$kind: $((total / n)) instructions per handshake ($total over $n; profile $out)"
