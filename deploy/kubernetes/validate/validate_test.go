package validate

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Paths relative to this package's directory.
const (
	repoRoot     = "../../.."
	manifestRoot = ".."
)

// holdfastBin is the holdfast binary built from the repository for the
// whole test run (or $HOLDFAST_BIN).
var holdfastBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if bin := os.Getenv("HOLDFAST_BIN"); bin != "" {
			holdfastBin = bin
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "holdfast-validate-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		holdfastBin = filepath.Join(dir, "holdfast")
		cmd := exec.Command("go", "build", "-o", holdfastBin, ".")
		cmd.Dir = repoRoot
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building holdfast:", err)
			return 1
		}
		return m.Run()
	}())
}

// binary implements Holdfast with the built binary.
type binary struct{ t *testing.T }

func (b binary) writeConfig(data []byte) string {
	p := filepath.Join(b.t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// withTestPair replaces the files that tls.cert_file and tls.key_file name
// (a Secret's, absent here) with a self-signed pair made for the test.
func (b binary) withTestPair(data []byte) ([]byte, bool, error) {
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, false, err
	}
	tlsCfg, _ := cfg["tls"].(map[string]any)
	if tlsCfg == nil || (tlsCfg["cert_file"] == "" && tlsCfg["key_file"] == "") {
		return data, false, nil
	}
	cert, key := testPair(b.t)
	cfg["tls"] = map[string]any{"cert_file": cert, "key_file": key}
	out, err := yaml.Marshal(cfg)
	return out, true, err
}

func (b binary) CheckConfig(data []byte) error {
	data, _, err := b.withTestPair(data)
	if err != nil {
		return err
	}
	out, err := exec.Command(holdfastBin, "-check-config", "-config", b.writeConfig(data)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// Serves runs holdfast with the file, its two listeners moved to random
// ports on 127.0.0.1 and JSON logs, reads the bound metrics address from its
// "holdfast listening" log line, and GETs each path there. With tls set, it
// also completes a TLS handshake on the client listener.
func (b binary) Serves(data []byte, paths []string) error {
	data, withTLS, err := b.withTestPair(data)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return err
	}
	// holdfast refuses two listeners on one address, so ":0" twice will
	// not do: take two free ports.
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	cfg["listen"] = ports[0]
	cfg["metrics"] = map[string]any{"listen": ports[1]}
	cfg["log"] = map[string]any{"level": "info", "format": "json"}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, holdfastBin, "-config", b.writeConfig(out))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	metrics := ""
	var logged []string
	sc := bufio.NewScanner(stderr)
	for metrics == "" && sc.Scan() {
		logged = append(logged, sc.Text())
		var line struct {
			Msg     string `json:"msg"`
			Metrics string `json:"metrics"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "holdfast listening" {
			metrics = line.Metrics
		}
	}
	if metrics == "" {
		return fmt.Errorf("holdfast exited or logged no \"holdfast listening\" line with its metrics address:\n%s", strings.Join(logged, "\n"))
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	for _, p := range paths {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metrics+p, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	if withTLS {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
		conn, err := d.DialContext(ctx, "tcp", ports[0])
		if err != nil {
			return fmt.Errorf("TLS handshake on the client listener: %w", err)
		}
		conn.Close()
	}
	return nil
}

// testPair writes a self-signed ECDSA certificate for 127.0.0.1 and its key.
func testPair(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "holdfast"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// freePorts returns n distinct free addresses on 127.0.0.1.
func freePorts(n int) ([]string, error) {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func dockerImage(t *testing.T) Image {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ParseDockerfile(data)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// The overlays docs/operations.md tells operators to apply.
var documentedOverlays = []string{"base", "overlays/monitoring", "overlays/sidecar", "overlays/tls"}

// Every overlay renders, decodes strictly and keeps every invariant.
func TestManifests(t *testing.T) {
	fsys := filesys.MakeFsOnDisk()
	dirs, err := Overlays(fsys, manifestRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range documentedOverlays {
		if !contains(dirs, want) {
			t.Errorf("overlay %s missing; found %q", want, dirs)
		}
	}
	img := dockerImage(t)
	dec := NewDecoder()
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs, err := Render(fsys, filepath.Join(manifestRoot, dir), dec)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.Kind+"/"+o.Name)
			}
			t.Logf("%d objects: %s", len(objs), strings.Join(kinds, " "))
			for _, err := range Check(objs, img, binary{t}) {
				t.Error(err)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// inMemory copies deploy/ (the manifests under deploy/kubernetes and what
// they include from deploy/prometheus and deploy/grafana) into an in-memory
// file system at /k, with one edit applied to file (relative to
// deploy/kubernetes; old must occur in it).
func inMemory(t *testing.T, file, old, new string) filesys.FileSystem {
	t.Helper()
	disk := filesys.MakeFsOnDisk()
	mem := filesys.MakeFsInMemory()
	abs, err := filepath.Abs(filepath.Join(manifestRoot, ".."))
	if err != nil {
		t.Fatal(err)
	}
	edited := false
	err = disk.Walk(abs, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(abs, "kubernetes"), path)
		data, err := disk.ReadFile(path)
		if err != nil {
			return err
		}
		if rel == file {
			if !strings.Contains(string(data), old) {
				t.Fatalf("%s does not contain %q", file, old)
			}
			data = []byte(strings.Replace(string(data), old, new, 1))
			edited = true
		}
		return mem.WriteFile(filepath.Join("/k", rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !edited {
		t.Fatalf("no file %s", file)
	}
	return mem
}

// A misspelled or unknown field anywhere (a base resource, a patch in a
// component, a Prometheus Operator object) fails the decoding, naming it.
func TestStrictDecodingCatchesMisspelledFields(t *testing.T) {
	for _, tc := range []struct {
		overlay, file, old, new, want string
	}{
		{"base", "base/deployment.yaml", "readinessProbe:", "readinesProbe:", `unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"base", "base/service.yaml", "targetPort: ws", "targetport: ws", `unknown field "spec.ports[0].targetport"`},
		{"base", "base/poddisruptionbudget.yaml", "maxUnavailable: 1", "maxUnavailable: 1\n  minAvailabe: 1", `unknown field "spec.minAvailabe"`},
		{"overlays/sidecar", "components/sidecar/deployment-patch.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", `unknown field "spec.template.spec.initContainers[0].securityContext.readOnlyRootFileSystem"`},
		{"overlays/monitoring", "components/monitoring/servicemonitor.yaml", "scrapeTimeout: 5s", "scrapeTimout: 5s", `unknown field "spec.endpoints[0].scrapeTimout"`},
		{"overlays/monitoring", "../prometheus/prometheusrule.yaml", "- record:", "- recrd:", `unknown field "spec.groups[0].rules[0].recrd"`},
	} {
		t.Run(tc.file+"/"+tc.new, func(t *testing.T) {
			fsys := inMemory(t, tc.file, tc.old, tc.new)
			_, err := Render(fsys, filepath.Join("/k", tc.overlay), NewDecoder())
			if err == nil {
				t.Fatalf("rendering %s with %q in %s succeeded", tc.overlay, tc.new, tc.file)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not name the field:\n%v\nwant %s", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// An unregistered kind is an error, not silently skipped.
func TestStrictDecodingRejectsUnknownKinds(t *testing.T) {
	_, err := NewDecoder().Decode([]byte("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"))
	if err == nil {
		t.Fatal("decoded an unknown kind")
	}
}

// The invariant checks fail on manifests that decode fine but disagree
// with holdfast or the Dockerfile.
func TestChecksCatchDisagreement(t *testing.T) {
	img := dockerImage(t)
	for _, tc := range []struct {
		overlay, file, old, new, want string
	}{
		{"base", "base/deployment.yaml", "path: /healthz", "path: /health", `livenessProbe path "/health"`},
		{"base", "base/deployment.yaml", "runAsUser: 65532\n            runAsGroup", "runAsUser: 1000\n            runAsGroup", "differs from the Dockerfile's USER"},
		{"base", "base/deployment.yaml", "containerPort: 9464", "containerPort: 9465", "differ from the Dockerfile's EXPOSE"},
		{"base", "base/proxy.yaml", `listen: "0.0.0.0:9464"`, `listen: "127.0.0.1:9464"`, "is loopback"},
		{"base", "base/proxy.yaml", "grace: 25s", "grace: 25s\n  bogus_key: 1s", "holdfast -check-config"},
		{"base", "base/deployment.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 12", "terminationGracePeriodSeconds 12s leaves less than"},
		{"base", "base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"base", "base/service.yaml", "targetPort: ws", "targetPort: websocket", "targetPort websocket is no port"},
		{"overlays/sidecar", "components/sidecar/service-patch.yaml", "targetPort: holdfast", "targetPort: 18791", "targetPort 18791 is no port"},
		{"overlays/monitoring", "components/monitoring/servicemonitor.yaml", "port: metrics", "port: ws", "nothing scrapes the metrics port"},
		{"overlays/monitoring", "../grafana/holdfast.json", "{", "{{", "holdfast.json is not JSON"},
		{"base", "base/proxy.yaml", "drain_delay: 5s", "drain_delay: 2s", "later than shutdown.drain_delay"},
		{"overlays/tls", "components/tls/deployment-patch.yaml", "readOnly: true", "readOnly: true\n              subPath: tls.crt", "mounted with subPath"},
		{"overlays/tls", "components/tls/deployment-patch.yaml", "mountPath: /etc/holdfast-tls", "mountPath: /etc/tls", "nothing is mounted at /etc/holdfast-tls"},
	} {
		t.Run(tc.file+"/"+tc.new, func(t *testing.T) {
			fsys := inMemory(t, tc.file, tc.old, tc.new)
			objs, err := Render(fsys, filepath.Join("/k", tc.overlay), NewDecoder())
			if err != nil {
				t.Fatal(err)
			}
			errs := Check(objs, img, binary{t})
			var all []string
			for _, e := range errs {
				all = append(all, e.Error())
			}
			joined := strings.Join(all, "\n")
			if !strings.Contains(joined, tc.want) {
				t.Fatalf("checks did not catch %q → %q; errors:\n%s", tc.old, tc.new, joined)
			}
		})
	}
}

// components/tls replaces the base's proxy.yaml with a copy that sets tls:
// the two must not drift apart in any other key.
func TestTLSConfigFollowsBase(t *testing.T) {
	read := func(p string) map[string]any {
		data, err := os.ReadFile(filepath.Join(manifestRoot, p))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if m["tls"] == nil {
			t.Fatalf("%s has no tls key", p)
		}
		delete(m, "tls")
		return m
	}
	base, withTLS := read("base/proxy.yaml"), read("components/tls/proxy.yaml")
	if !reflect.DeepEqual(base, withTLS) {
		t.Errorf("components/tls/proxy.yaml differs from base/proxy.yaml beyond tls:\nbase: %v\ntls:  %v", base, withTLS)
	}
}
