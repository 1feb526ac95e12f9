package validate

import (
	"encoding/json"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// ContainerName is the name of holdfast's container in every manifest.
const ContainerName = "holdfast"

// Image is what the Dockerfile's final stage fixes about the container.
type Image struct {
	// User and Group are the numeric USER.
	User, Group int64
	// Exposed are the EXPOSEd TCP ports.
	Exposed []int32
	// Cmd is the exec-form CMD (the ENTRYPOINT is holdfast itself).
	Cmd []string
}

// ParseDockerfile reads the final stage of a Dockerfile.
func ParseDockerfile(data []byte) (Image, error) {
	var img Image
	var haveUser, haveCmd bool
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM": // a new stage: only the last one counts
			img, haveUser, haveCmd = Image{}, false, false
		case "USER":
			if len(f) != 2 {
				return img, fmt.Errorf("dockerfile: USER %q: want USER uid:gid", strings.Join(f[1:], " "))
			}
			u, g, ok := strings.Cut(f[1], ":")
			uid, err1 := strconv.ParseInt(u, 10, 64)
			gid, err2 := strconv.ParseInt(g, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				return img, fmt.Errorf("dockerfile: USER %q: want numeric uid:gid", f[1])
			}
			img.User, img.Group, haveUser = uid, gid, true
		case "EXPOSE":
			for _, p := range f[1:] {
				p = strings.TrimSuffix(p, "/tcp")
				n, err := strconv.ParseInt(p, 10, 32)
				if err != nil {
					return img, fmt.Errorf("dockerfile: EXPOSE %q: %v", p, err)
				}
				img.Exposed = append(img.Exposed, int32(n))
			}
		case "CMD":
			rest := strings.TrimSpace(strings.TrimSpace(line)[len(f[0]):])
			if err := json.Unmarshal([]byte(rest), &img.Cmd); err != nil {
				return img, fmt.Errorf("dockerfile: CMD must be in exec form: %v", err)
			}
			haveCmd = true
		}
	}
	if !haveUser || !haveCmd || len(img.Exposed) == 0 {
		return img, fmt.Errorf("dockerfile: final stage lacks USER, EXPOSE or CMD")
	}
	return img, nil
}

// Holdfast runs the real holdfast binary on a rendered proxy.yaml.
type Holdfast interface {
	// CheckConfig runs holdfast -check-config on the file's contents.
	CheckConfig(proxyYAML []byte) error
	// Serves starts holdfast with the file (its listeners moved to
	// 127.0.0.1) and checks that each path answers 200 on the metrics
	// listener.
	Serves(proxyYAML []byte, paths []string) error
}

// proxyFile is the part of proxy.yaml the manifests depend on.
type proxyFile struct {
	Listen string `json:"listen"`
	TLS    struct {
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
	} `json:"tls"`
	Metrics struct {
		Listen string `json:"listen"`
	} `json:"metrics"`
	Shutdown map[string]any `json:"shutdown"`
}

// Defaults of holdfast's config (proxy.yaml) for the keys read here.
const (
	defaultListen        = "127.0.0.1:18790"
	defaultMetricsListen = "127.0.0.1:9464"
)

// Check checks the invariants of one rendered overlay against the image and
// the real binary; it returns every violation found.
func Check(objs []Object, img Image, hf Holdfast) []error {
	c := &checker{img: img, hf: hf}
	c.index(objs)
	found := 0
	for _, d := range c.deployments {
		spec := &d.Spec.Template.Spec
		for i := range spec.InitContainers {
			if spec.InitContainers[i].Name == ContainerName {
				found++
				c.holdfast(d, &spec.InitContainers[i], true)
			}
		}
		for i := range spec.Containers {
			if spec.Containers[i].Name == ContainerName {
				found++
				c.holdfast(d, &spec.Containers[i], false)
			}
		}
	}
	if found == 0 {
		c.errorf("no Deployment has a container named %q", ContainerName)
	}
	c.services()
	c.prometheusRules()
	c.dashboards()
	return c.errs
}

type checker struct {
	img  Image
	hf   Holdfast
	errs []error

	deployments     []*appsv1.Deployment
	svcs            []*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
	rules           []*monitoringv1.PrometheusRule
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) index(objs []Object) {
	c.configMaps = map[string]*corev1.ConfigMap{}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			c.deployments = append(c.deployments, v)
		case *corev1.Service:
			c.svcs = append(c.svcs, v)
		case *corev1.ConfigMap:
			c.configMaps[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			c.pdbs = append(c.pdbs, v)
		case *monitoringv1.ServiceMonitor:
			c.serviceMonitors = append(c.serviceMonitors, v)
		case *monitoringv1.PrometheusRule:
			c.rules = append(c.rules, v)
		default:
			c.errorf("%s/%s: a kind the checks do not know", o.Kind, o.Name)
		}
	}
}

// holdfast checks one holdfast container of Deployment d.
func (c *checker) holdfast(d *appsv1.Deployment, ctr *corev1.Container, initContainer bool) {
	where := fmt.Sprintf("Deployment/%s container %s", d.Name, ctr.Name)
	pod := &d.Spec.Template.Spec
	if initContainer && (ctr.RestartPolicy == nil || *ctr.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
		c.errorf("%s: an init container must be a sidecar (restartPolicy: Always)", where)
	}

	// The image's entrypoint is holdfast; the args are the image's CMD.
	if len(ctr.Command) > 0 {
		c.errorf("%s: command %q replaces the image's entrypoint", where, ctr.Command)
	}
	if !slices.Equal(ctr.Args, c.img.Cmd) {
		c.errorf("%s: args %q differ from the Dockerfile's CMD %q", where, ctr.Args, c.img.Cmd)
	}

	// The config file comes from a ConfigMap mounted at its directory.
	cfgPath := ""
	for i, a := range ctr.Args {
		if (a == "-config" || a == "--config") && i+1 < len(ctr.Args) {
			cfgPath = ctr.Args[i+1]
		}
	}
	if cfgPath == "" {
		c.errorf("%s: no -config argument", where)
		return
	}
	data, ok := c.mountedConfig(where, pod, ctr, cfgPath)
	if !ok {
		return
	}
	if err := c.hf.CheckConfig(data); err != nil {
		c.errorf("%s: %s: holdfast -check-config: %v", where, cfgPath, err)
		return
	}
	var pf proxyFile
	if err := yaml.Unmarshal(data, &pf); err != nil {
		c.errorf("%s: %s: %v", where, cfgPath, err)
		return
	}
	if pf.Listen == "" {
		pf.Listen = defaultListen
	}
	if pf.Metrics.Listen == "" {
		pf.Metrics.Listen = defaultMetricsListen
	}
	listenPort := c.podPort(where, "listen", pf.Listen)
	metricsPort := c.podPort(where, "metrics.listen", pf.Metrics.Listen)

	// Container ports: exactly the listeners, exactly the image's EXPOSE.
	var declared []int32
	for _, p := range ctr.Ports {
		declared = append(declared, p.ContainerPort)
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			c.errorf("%s: port %d is %s, holdfast listens on TCP", where, p.ContainerPort, p.Protocol)
		}
	}
	slices.Sort(declared)
	exposed := slices.Sorted(slices.Values(c.img.Exposed))
	if !slices.Equal(declared, exposed) {
		c.errorf("%s: container ports %v differ from the Dockerfile's EXPOSE %v", where, declared, exposed)
	}
	for _, p := range []int32{listenPort, metricsPort} {
		if p != 0 && !slices.Contains(declared, p) {
			c.errorf("%s: proxy.yaml listens on %d, which the container does not declare", where, p)
		}
	}

	// Probes: real holdfast paths on the metrics listener.
	var paths []string
	probe := func(kind string, p *corev1.Probe, want ...string) {
		if p == nil {
			if kind != "startupProbe" {
				c.errorf("%s: no %s", where, kind)
			}
			return
		}
		if p.HTTPGet == nil {
			c.errorf("%s: %s is not an httpGet", where, kind)
			return
		}
		if !slices.Contains(want, p.HTTPGet.Path) {
			c.errorf("%s: %s path %q, want one of %q", where, kind, p.HTTPGet.Path, want)
		}
		if got := containerPort(ctr, p.HTTPGet.Port); got != metricsPort {
			c.errorf("%s: %s port %s is %d, want the metrics listener's %d", where, kind, p.HTTPGet.Port.String(), got, metricsPort)
		}
		paths = append(paths, p.HTTPGet.Path)
	}
	probe("livenessProbe", ctr.LivenessProbe, "/healthz")
	probe("readinessProbe", ctr.ReadinessProbe, "/readyz")
	probe("startupProbe", ctr.StartupProbe, "/healthz", "/readyz")
	if len(paths) > 0 {
		if err := c.hf.Serves(data, paths); err != nil {
			c.errorf("%s: probe paths on holdfast itself: %v", where, err)
		}
	}

	for key, file := range map[string]string{"tls.cert_file": pf.TLS.CertFile, "tls.key_file": pf.TLS.KeyFile} {
		if file != "" {
			c.mountedSecret(where, key, pod, ctr, file)
		}
	}

	c.security(where, pod, ctr)

	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := ctr.Resources.Requests[r]; !ok || q.IsZero() {
			c.errorf("%s: no %s request", where, r)
		}
	}

	c.shutdown(where, pod, ctr, pf)

	c.scraped(where, d, metricsPort)
	if d.Name == "holdfast" {
		c.standalone(where, d)
	}
}

// shutdownHeadroom is what the pod's grace period must leave beyond
// holdfast's own bound on its stop (shutdown.grace): the process's exit and
// the kubelet's own latency.
const shutdownHeadroom = 5 * time.Second

// shutdown checks the timing of a stop against the pod's: the kubelet's
// SIGKILL must not cut holdfast's stop short, and the readiness probe must
// see /readyz fail before holdfast refuses new upgrades.
func (c *checker) shutdown(where string, pod *corev1.PodSpec, ctr *corev1.Container, pf proxyFile) {
	dur := func(key string) (time.Duration, bool) {
		v, ok := pf.Shutdown[key]
		if !ok {
			return 0, false
		}
		s, _ := v.(string)
		d, err := time.ParseDuration(s)
		if err != nil {
			c.errorf("%s: proxy.yaml shutdown.%s %v: %v", where, key, v, err)
			return 0, false
		}
		return d, true
	}
	// shutdown.grace bounds holdfast's whole stop, from the signal. It is
	// stated, not left to its default, so this check means something.
	grace, ok := dur("grace")
	if !ok {
		c.errorf("%s: proxy.yaml states no shutdown.grace; state it so the pod's grace period can be checked against it", where)
		return
	}
	if pod.TerminationGracePeriodSeconds == nil {
		c.errorf("%s: no terminationGracePeriodSeconds", where)
	} else if tgps := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; tgps < grace+shutdownHeadroom {
		c.errorf("%s: terminationGracePeriodSeconds %v leaves less than %v beyond shutdown.grace (%v)", where, tgps, shutdownHeadroom, grace)
	}
	// Upgrades are still served for shutdown.drain_delay after /readyz
	// turns 503: the probe must have failed by then.
	if delay, ok := dur("drain_delay"); ok && ctr.ReadinessProbe != nil {
		p := ctr.ReadinessProbe
		period, threshold := p.PeriodSeconds, p.FailureThreshold
		if period == 0 {
			period = 10 // the API's defaults
		}
		if threshold == 0 {
			threshold = 3
		}
		if notice := time.Duration(period*threshold+p.TimeoutSeconds) * time.Second; notice > delay {
			c.errorf("%s: the readiness probe notices a drain after up to %v, later than shutdown.drain_delay (%v)", where, notice, delay)
		}
	}
}

// mountedConfig returns the contents of path inside ctr, which must come
// from a ConfigMap volume mounted at path's directory.
func (c *checker) mountedConfig(where string, pod *corev1.PodSpec, ctr *corev1.Container, file string) ([]byte, bool) {
	dir, base := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range ctr.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") != dir {
			continue
		}
		if m.SubPath != "" {
			c.errorf("%s: the config is mounted with subPath, so ConfigMap updates never reach it", where)
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.ConfigMap == nil {
				c.errorf("%s: volume %s at %s is not a ConfigMap", where, v.Name, dir)
				return nil, false
			}
			cm, ok := c.configMaps[v.ConfigMap.Name]
			if !ok {
				c.errorf("%s: ConfigMap %q (volume %s) is not in the overlay", where, v.ConfigMap.Name, v.Name)
				return nil, false
			}
			data, ok := cm.Data[base]
			if !ok {
				c.errorf("%s: ConfigMap %s has no key %q", where, cm.Name, base)
				return nil, false
			}
			return []byte(data), true
		}
		c.errorf("%s: volume %q is not in the pod", where, m.Name)
		return nil, false
	}
	c.errorf("%s: nothing is mounted at %s, where -config points", where, dir)
	return nil, false
}

// mountedSecret checks that file (a TLS certificate or key) comes from a
// Secret volume mounted as a whole directory: the kubelet updates such a
// mount when the Secret changes (a cert-manager renewal), never a subPath.
func (c *checker) mountedSecret(where, key string, pod *corev1.PodSpec, ctr *corev1.Container, file string) {
	dir, base := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range ctr.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") != dir {
			continue
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			c.errorf("%s: %s %s is mounted with subPath, so a renewed certificate never reaches it", where, key, file)
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.Secret == nil {
				c.errorf("%s: %s %s: volume %s is not a Secret", where, key, file, v.Name)
				return
			}
			if len(v.Secret.Items) > 0 && !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == base }) {
				c.errorf("%s: %s %s: Secret %s's items put nothing at %s", where, key, file, v.Secret.SecretName, base)
			}
			return
		}
		c.errorf("%s: volume %q is not in the pod", where, m.Name)
		return
	}
	c.errorf("%s: %s %s: nothing is mounted at %s", where, key, file, dir)
}

// podPort checks that a listen address is reachable from outside the
// container (kubelet probes, Services) and returns its port.
func (c *checker) podPort(where, key, addr string) int32 {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.errorf("%s: proxy.yaml %s %q: %v", where, key, addr, err)
		return 0
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		c.errorf("%s: proxy.yaml %s %q is loopback: probes and Services cannot reach it", where, key, addr)
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil || n == 0 {
		c.errorf("%s: proxy.yaml %s %q: a fixed port is needed", where, key, addr)
		return 0
	}
	return int32(n)
}

// containerPort resolves a probe's or Service's port (a number or a
// container port's name) in ctr; 0 if it names no port of ctr.
func containerPort(ctr *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func (c *checker) security(where string, pod *corev1.PodSpec, ctr *corev1.Container) {
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := ctr.SecurityContext
	if sc == nil {
		c.errorf("%s: no securityContext", where)
		return
	}
	pick64 := func(a, b *int64) *int64 {
		if a != nil {
			return a
		}
		return b
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		c.errorf("%s: runAsNonRoot is not true", where)
	}
	if u := pick64(sc.RunAsUser, psc.RunAsUser); u == nil || *u != c.img.User {
		c.errorf("%s: runAsUser %v differs from the Dockerfile's USER %d", where, deref(u), c.img.User)
	}
	if g := pick64(sc.RunAsGroup, psc.RunAsGroup); g == nil || *g != c.img.Group {
		c.errorf("%s: runAsGroup %v differs from the Dockerfile's group %d", where, deref(g), c.img.Group)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		c.errorf("%s: capabilities must drop ALL and add none", where)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// scraped checks that Prometheus finds the metrics port: pod annotations,
// or a ServiceMonitor over a Service that reaches it.
func (c *checker) scraped(where string, d *appsv1.Deployment, metricsPort int32) {
	podLabels := labels.Set(d.Spec.Template.Labels)
	ok := false
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] == "true" {
		if a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) {
			c.errorf("%s: prometheus.io/port %q is not the metrics port %d", where, a["prometheus.io/port"], metricsPort)
		}
		if p := a["prometheus.io/path"]; p != "" && p != "/metrics" {
			c.errorf("%s: prometheus.io/path %q is not /metrics", where, p)
		}
		ok = true
	}
	for _, sm := range c.serviceMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			c.errorf("ServiceMonitor/%s: selector: %v", sm.Name, err)
			continue
		}
		for _, svc := range c.svcs {
			if !sel.Matches(labels.Set(svc.Labels)) || !selects(svc, podLabels) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				for _, sp := range svc.Spec.Ports {
					if sp.Name != ep.Port {
						continue
					}
					if got := c.podPortOf(d, sp.TargetPort); got != metricsPort {
						c.errorf("ServiceMonitor/%s: Service %s port %s reaches %d, not the metrics port %d", sm.Name, svc.Name, sp.Name, got, metricsPort)
						continue
					}
					if ep.Path != "" && ep.Path != "/metrics" {
						c.errorf("ServiceMonitor/%s: path %q is not /metrics", sm.Name, ep.Path)
						continue
					}
					ok = true
				}
			}
		}
	}
	if !ok {
		c.errorf("%s: nothing scrapes the metrics port (no prometheus.io annotations, no ServiceMonitor reaching it)", where)
	}
}

// standalone checks holdfast's own Deployment: replicas, a disruption
// budget and a Service.
func (c *checker) standalone(where string, d *appsv1.Deployment) {
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		c.errorf("%s: fewer than 2 replicas", where)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		c.errorf("%s: the selector does not match the pod template's labels", where)
	}
	pdb := false
	for _, p := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && sel.Matches(podLabels) {
			pdb = true
		}
	}
	if !pdb {
		c.errorf("%s: no PodDisruptionBudget selects its pods", where)
	}
	svc := false
	for _, s := range c.svcs {
		if selects(s, podLabels) && s.Spec.ClusterIP != corev1.ClusterIPNone {
			svc = true
		}
	}
	if !svc {
		c.errorf("%s: no Service sends clients to its pods", where)
	}
}

// selects reports whether svc's selector picks pods with these labels.
func selects(svc *corev1.Service, pod labels.Set) bool {
	return len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(pod)
}

// podPortOf resolves a Service targetPort in d's pod (any container).
func (c *checker) podPortOf(d *appsv1.Deployment, p intstr.IntOrString) int32 {
	spec := &d.Spec.Template.Spec
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			if n := containerPort(&list[i], p); n != 0 && (p.Type == intstr.String || declares(&list[i], n)) {
				return n
			}
		}
	}
	return 0
}

func declares(ctr *corev1.Container, port int32) bool {
	for _, p := range ctr.Ports {
		if p.ContainerPort == port {
			return true
		}
	}
	return false
}

// services checks that every Service port reaches a declared port of every
// Deployment it selects.
func (c *checker) services() {
	for _, s := range c.svcs {
		matched := false
		for _, d := range c.deployments {
			if !selects(s, labels.Set(d.Spec.Template.Labels)) {
				continue
			}
			matched = true
			for _, sp := range s.Spec.Ports {
				tp := sp.TargetPort
				if tp.Type == intstr.Int && tp.IntVal == 0 {
					tp = intstr.FromInt32(sp.Port)
				}
				if c.podPortOf(d, tp) == 0 {
					c.errorf("Service/%s port %d: targetPort %s is no port of Deployment %s", s.Name, sp.Port, tp.String(), d.Name)
				}
			}
		}
		if !matched {
			c.errorf("Service/%s selects no Deployment's pods", s.Name)
		}
	}
}

// dashboards checks that every ConfigMap for Grafana's dashboard sidecar
// holds JSON.
func (c *checker) dashboards() {
	for _, cm := range c.configMaps {
		if cm.Labels["grafana_dashboard"] == "" {
			continue
		}
		if len(cm.Data) == 0 {
			c.errorf("ConfigMap/%s: a dashboard ConfigMap without data", cm.Name)
		}
		for k, v := range cm.Data {
			if !json.Valid([]byte(v)) {
				c.errorf("ConfigMap/%s: %s is not JSON", cm.Name, k)
			}
		}
	}
}

// prometheusRules checks the rules' structure beyond the schema: every rule
// is an alert or a recording with an expression.
func (c *checker) prometheusRules() {
	for _, r := range c.rules {
		if len(r.Spec.Groups) == 0 {
			c.errorf("PrometheusRule/%s: no groups", r.Name)
		}
		for _, g := range r.Spec.Groups {
			if len(g.Rules) == 0 {
				c.errorf("PrometheusRule/%s group %s: no rules", r.Name, g.Name)
			}
			for i, rule := range g.Rules {
				if (rule.Alert == "") == (rule.Record == "") {
					c.errorf("PrometheusRule/%s group %s rule %d: exactly one of alert and record", r.Name, g.Name, i)
				}
				if rule.Expr.String() == "" {
					c.errorf("PrometheusRule/%s group %s rule %d: no expr", r.Name, g.Name, i)
				}
			}
		}
	}
}
