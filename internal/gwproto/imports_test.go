package gwproto_test

import (
	"context"
	"errors"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// gwprotoPath is this package's import path.
var gwprotoPath = reflect.TypeFor[gwproto.Answer]().PkgPath()

// goList runs `go list` with args in this package's directory and returns
// its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append([]string{"list"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.Fields(string(out))
}

// The fake gateway is the oracle the protocol code is tested against: it
// reads and writes frames on its own, from PROTOCOL.md. Were it to share
// gwproto's parsing, a bug there would be on both sides of every test and
// pass. Neither internal/fakegw nor anything its tests build on may import
// gwproto, directly or through another package.
func TestFakeGatewayDoesNotImportGwproto(t *testing.T) {
	t.Parallel()
	fakegw := strings.TrimSuffix(gwprotoPath, "gwproto") + "fakegw"
	deps := goList(t, "-deps", "-test", "-f", "{{.ImportPath}}", fakegw)
	if !slices.Contains(deps, fakegw) {
		t.Fatalf("go list -deps -test %s does not list %s itself: %q", fakegw, fakegw, deps)
	}
	for _, d := range deps {
		if d == gwprotoPath {
			t.Errorf("%s (or one of its tests' imports) imports %s: the fake gateway must stay independent of the protocol code it tests", fakegw, gwprotoPath)
		}
	}
}

// gwproto is pure: bytes in, values out. It builds on the standard library
// alone (no gorilla, no prometheus) and imports no package that reaches
// sockets, files or processes.
func TestGwprotoIsPure(t *testing.T) {
	t.Parallel()
	nonStd := goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", gwprotoPath)
	if !slices.Equal(nonStd, []string{gwprotoPath}) {
		t.Errorf("gwproto builds on packages outside the standard library: %q", nonStd)
	}
	for _, imp := range goList(t, "-f", `{{join .Imports " "}}`, gwprotoPath) {
		for _, bad := range []string{"net", "os", "syscall", "crypto/tls", "unsafe"} {
			if imp == bad || strings.HasPrefix(imp, bad+"/") {
				t.Errorf("gwproto imports %s", imp)
			}
		}
	}
}
