// Package e2e holds holdfast's end-to-end suite. The tests carry the build
// tag e2e: they install real OpenClaw gateways and clients into a cache
// directory outside the repository (setup.sh, from the lockfiles in
// e2e/lock), start them on 127.0.0.1, put holdfast in front, and drive real
// clients through it: CLIs, the TUI under tmux (terminal_test.go), the
// Control UI in headless Chromium over the DevTools protocol
// (browser_test.go) and the npm client openclaw-node.
//
// Run everything with e2e/run.sh, or, once setup.sh has run:
//
//	go test -tags e2e -count=1 -v -timeout 25m ./e2e/
//
// Environment:
//   - HOLDFAST_E2E_CACHE: the install cache (default $HOME/.cache/holdfast-e2e).
//   - HOLDFAST_E2E_BYPASS=1: clients go straight to the gateway and holdfast
//     is not started; every scenario is expected to fail then, which shows
//     that the assertions depend on holdfast being in the path.
//   - HOLDFAST_E2E_LOGS=1: print holdfast's logs even when a test passes.
//   - HOLDFAST_E2E_BIN: a prebuilt holdfast binary to use instead of building one.
//   - HOLDFAST_E2E_ARTIFACTS: where screenshots of the Control UI are kept
//     (default e2e/artifacts, ignored by git).
package e2e
