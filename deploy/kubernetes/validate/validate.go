// Package validate renders holdfast's Kubernetes manifests (every kustomize
// overlay under deploy/kubernetes) with kustomize as a library, decodes every
// object strictly against the Kubernetes API types (an unknown or misspelled
// field is an error), and checks that the manifests agree with holdfast
// itself: the Dockerfile's user, ports and config path, the probes' paths and
// ports, the ConfigMap's proxy.yaml, and the shutdown timing.
//
// It is a module of its own so that kustomize and the API types stay out of
// holdfast's dependencies. Run it with
//
//	cd deploy/kubernetes/validate && go test ./...
package validate

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered object, decoded into its Go API type.
type Object struct {
	// Kind and Name identify it in messages.
	Kind, Name string
	// Obj is the typed object (*appsv1.Deployment, *corev1.Service, …).
	Obj runtime.Object
}

// scheme knows every kind the manifests may contain. A kind outside it is an
// error, so a new kind must be added here (and so decoded strictly) first.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		policyv1.AddToScheme,
		monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Decoder decodes Kubernetes YAML strictly: unknown fields, duplicate fields
// and unregistered kinds are errors.
type Decoder struct {
	s *json.Serializer
}

// NewDecoder returns a strict decoder for the kinds holdfast's manifests use:
// core/v1, apps/v1, policy/v1 and the Prometheus Operator's
// monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule).
func NewDecoder() *Decoder {
	sch := newScheme()
	return &Decoder{s: json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch,
		json.SerializerOptions{Yaml: true, Strict: true})}
}

// Decode decodes one YAML document into its typed object.
func (d *Decoder) Decode(doc []byte) (runtime.Object, error) {
	obj, _, err := d.s.Decode(doc, nil, nil)
	return obj, err
}

// Overlays lists the directories under root that hold a kustomization
// (kustomization.yaml of kind Kustomization; components are rendered through
// the overlays that use them), relative to root, sorted.
func Overlays(fsys filesys.FileSystem, root string) ([]string, error) {
	var dirs []string
	err := fsys.Walk(root, func(path string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() || info.Name() != "kustomization.yaml" {
			return nil
		}
		data, err := fsys.ReadFile(path)
		if err != nil {
			return err
		}
		var k struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if k.Kind == "Component" {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		dirs = append(dirs, rel)
		return nil
	})
	sort.Strings(dirs)
	return dirs, err
}

// Render runs kustomize on dir (as `kubectl apply -k dir` would, with
// kustomize's default options) and decodes every object strictly.
func Render(fsys filesys.FileSystem, dir string, dec *Decoder) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []Object
	var errs []string
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		id := r.GetKind() + "/" + r.GetName()
		obj, err := dec.Decode(doc)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		objs = append(objs, Object{Kind: r.GetKind(), Name: r.GetName(), Obj: obj})
	}
	if len(errs) > 0 {
		return objs, fmt.Errorf("%s:\n  %s", dir, strings.Join(errs, "\n  "))
	}
	return objs, nil
}
