#!/usr/bin/env bash
# Builds holdfast's container image from the Dockerfile with podman and runs
# it as the Kubernetes manifests do (internal/imagecheck says what it checks);
# docs/operations.md, "Container image". scripts/test.sh runs it as a stage.
#
# The Dockerfile's base images are build arguments. When both defaults can be
# pulled they are used; otherwise this makes local stand-ins: the build stage
# a minimal Debian 12 (mmdebstrap) with this machine's Go toolchain, the
# runtime shaped like distroless static-debian12:nonroot (no shell, CA
# certificates, tzdata, /etc/passwd with nonroot 65532), from the same
# Debian packages. Stand-ins are kept in podman's storage and reused.
#
# The build runs with no network: `go mod download` reads the modules this
# machine's Go fetched and verified (GOPROXY=file://, the module cache
# mounted read-only), and the compiler shares this machine's build cache.
#
# Where podman cannot run a container (it is tried on a directory holding a
# static holdfast binary), it prints one SKIPPED line and exits 0. Past that
# point every failure is a failure.
#
# Environment: HOLDFAST_IMAGE (default holdfast:test), HOLDFAST_IMAGE_VERSION
# (the VERSION build argument; default "imagetest-<commit>").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
t_start=$(date +%s)

image=${HOLDFAST_IMAGE:-holdfast:test}
version=${HOLDFAST_IMAGE_VERSION:-imagetest-$(git rev-parse --short HEAD 2>/dev/null || echo local)}
build_default=docker.io/library/golang:1.26
runtime_default=gcr.io/distroless/static-debian12:nonroot
goversion=$(go env GOVERSION)
standin_build=localhost/holdfast-standin/golang:$goversion
standin_runtime=localhost/holdfast-standin/static:debian12
suite=bookworm # distroless static-debian12's release
mirror=http://deb.debian.org/debian

say() { printf 'image.sh: %s\n' "$*"; }

# Debian packages: podman with runc (crun fails where cgroups are in hybrid
# mode), uidmap for rootless podman, mmdebstrap and Debian's keyring for the
# stand-ins.
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v newuidmap >/dev/null || need+=(uidmap)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
	$sudo_ apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# podman's default rlimits exceed what a process without CAP_SYS_RESOURCE
# may set. Lowering a limit is always allowed: this shell's limits, capped at
# 65536 open files and 4096 processes (holdfast runs a few dozen threads;
# higher process limits were refused here even below this shell's own).
lim() { local v; v=$(ulimit "$1"); if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then v=$2; fi; echo "$v"; }
nofile=$(lim -n 65536)
nproc=$(lim -u 4096)
run_flags="--runtime runc --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Can podman run a container here at all?
# The probe is built as the Dockerfile builds holdfast, so that the image
# build below finds every package in the build cache it shares.
mkdir "$work/probe"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w -X main.version=$version" -o "$work/probe/holdfast" .
# shellcheck disable=SC2086
if ! probe=$(podman run --rm $run_flags --network none --rootfs "$work/probe" /holdfast -version 2>&1); then
	say "SKIPPED: podman cannot run containers here: $(printf '%s\n' "$probe" | grep -v '^$' | tail -1)"
	exit 0
fi

# The bases: the defaults when a registry answers, else the stand-ins.
bases=""
if timeout 30 podman manifest inspect "$build_default" >/dev/null 2>&1 \
	&& timeout 30 podman manifest inspect "$runtime_default" >/dev/null 2>&1; then
	if timeout 600 podman pull -q "$build_default" >/dev/null && timeout 600 podman pull -q "$runtime_default" >/dev/null; then
		build_image=$build_default runtime_image=$runtime_default
		bases="the Dockerfile's defaults, pulled"
	else
		say "the registries answered but a pull failed; using the stand-ins"
	fi
fi
if [ -z "$bases" ]; then
	build_image=$standin_build runtime_image=$standin_runtime
	bases="local stand-ins ($build_default and $runtime_default cannot be pulled here)"
	if podman image exists "$standin_build" && podman image exists "$standin_runtime"; then
		say "reusing the stand-ins $standin_build and $standin_runtime"
	else
		say "making the stand-ins: mmdebstrap $suite (minbase, ca-certificates, tzdata) + $goversion from $(go env GOROOT)"
		goroot=$(go env GOROOT)
		mmdebstrap --quiet --variant=minbase --include=ca-certificates,tzdata \
			--customize-hook='mkdir -p "$1/usr/local/go"' \
			--customize-hook="sync-in $goroot /usr/local/go" \
			"$suite" "$work/debian.tar" "$mirror"
		# The build stage: the paths and settings of the golang image.
		podman import -q \
			--change 'ENV=PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV=GOPATH=/go' --change 'ENV=GOTOOLCHAIN=local' --change 'WORKDIR=/go' \
			"$work/debian.tar" "$standin_build" >/dev/null
		# The runtime: what distroless static holds, nothing that runs.
		rt=$work/static
		mkdir -p "$rt/etc" "$rt/tmp" "$rt/root" "$rt/home/nonroot"
		tar -C "$rt" -xf "$work/debian.tar" ./etc/ssl/certs/ca-certificates.crt ./usr/share/zoneinfo
		printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
			'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
			'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rt/etc/passwd"
		printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$rt/etc/group"
		printf 'hosts: files dns\n' >"$rt/etc/nsswitch.conf"
		chmod 1777 "$rt/tmp"
		chmod 700 "$rt/root" "$rt/home/nonroot"
		tar -C "$rt" -cf "$work/static.tar" --owner=0 --group=0 --numeric-owner --exclude=./home/nonroot .
		tar -C "$rt" -rf "$work/static.tar" --owner=65532 --group=65532 --numeric-owner ./home/nonroot
		podman import -q \
			--change 'USER=65532' --change 'WORKDIR=/home/nonroot' \
			--change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
			"$work/static.tar" "$standin_runtime" >/dev/null
	fi
fi
say "bases: $bases"
say "build stage $build_image, runtime $runtime_image"

# The build, offline: modules come from this machine's verified cache, and
# compiled packages from its build cache (Go's cache is keyed by content, and
# -trimpath keeps paths out of the keys); a cold build of the standard
# library and the dependencies takes minutes on two cores.
go mod download
modcache=$(go env GOMODCACHE)/cache/download
gocache=$(go env GOCACHE)
t_build=$(date +%s)
# shellcheck disable=SC2086
if ! podman build $run_flags --network none \
	--volume "$modcache:/run/goproxy:ro" --volume "$gocache:/root/.cache/go-build" \
	--build-arg GOPROXY=file:///run/goproxy --build-arg GOFLAGS="$(go env GOFLAGS)" \
	--build-arg BUILD_IMAGE="$build_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
	--build-arg VERSION="$version" \
	--tag "$image" . >"$work/build.log" 2>&1; then
	cat "$work/build.log"
	say "podman build failed"
	exit 1
fi
say "built $image from the Dockerfile (VERSION=$version) in $(($(date +%s) - t_build))s"

go run ./internal/imagecheck -image "$image" -version "$version" -run-flags "$run_flags"
say "passed in $(($(date +%s) - t_start))s"
