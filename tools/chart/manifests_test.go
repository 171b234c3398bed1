package chart_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/tools/chart"
)

const (
	chartDir    = "../../charts/crmauthz"
	exampleDir  = "../../charts/examples/app-with-sidecar"
	releaseName = "authz"
	namespace   = "crm"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor the chart renders,
// decoded strictly so that a misspelt field fails (the CRD's Go types are not a dependency).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port              string           `json:"port"`
			Path              string           `json:"path"`
			Scheme            string           `json:"scheme"`
			Interval          string           `json:"interval"`
			ScrapeTimeout     string           `json:"scrapeTimeout"`
			Relabelings       []map[string]any `json:"relabelings"`
			MetricRelabelings []map[string]any `json:"metricRelabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// newObject returns an empty Go value of the Kubernetes API type of apiVersion/kind.
// A kind the chart renders must be listed here, so every manifest is checked against its type.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &prometheusRule{}, true
	}
	return nil, false
}

// manifests are the decoded objects of one render, by "Kind/name".
type manifests struct {
	objs  map[string]any
	raw   map[string]*unstructured.Unstructured
	notes string
}

func (m manifests) keys() []string {
	var ks []string
	for k := range m.objs {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// get returns the object Kind/name as T, failing the test if it is missing.
func get[T any](t testing.TB, m manifests, kind, name string) T {
	t.Helper()
	o, ok := m.objs[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s/%s among %v", kind, name, m.keys())
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s/%s is a %T", kind, name, o)
	}
	return v
}

// decodeStrict decodes one manifest like the API server would reject it: duplicate keys, a
// field the type does not have, or a value of the wrong type are errors.
func decodeStrict(doc []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the object")
	}
	return nil
}

// render renders the chart in dir with a values file and extra values (merged over it), and
// decodes every manifest strictly into its Kubernetes API type.
func render(t testing.TB, dir, valuesFile string, extra map[string]any) manifests {
	t.Helper()
	m, err := tryRender(t, dir, valuesFile, extra)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tryRender(t testing.TB, dir, valuesFile string, extra map[string]any) (manifests, error) {
	t.Helper()
	ch, err := chart.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chart.ReadValues(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	merge(vals, extra)
	rel, err := chart.Render(ch, vals, releaseName, namespace)
	if err != nil {
		return manifests{}, err
	}
	m := manifests{objs: map[string]any{}, raw: map[string]*unstructured.Unstructured{}, notes: rel.Info.Notes}
	for src, doc := range releaseutil.SplitManifests(rel.Manifest) {
		var u unstructured.Unstructured
		if err := decodeStrict([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v\n%s", src, err, doc)
		}
		if len(u.Object) == 0 {
			continue
		}
		obj, ok := newObject(u.GetAPIVersion(), u.GetKind())
		if !ok {
			t.Fatalf("%s: %s %s is not a kind this test knows; add its API type to newObject", src, u.GetAPIVersion(), u.GetKind())
		}
		if err := decodeStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: strict decoding into %T: %v\n%s", src, obj, err, doc)
		}
		key := u.GetKind() + "/" + u.GetName()
		if _, dup := m.objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		if ns := u.GetNamespace(); ns != namespace {
			t.Errorf("%s: namespace %q, want %q", key, ns, namespace)
		}
		m.objs[key] = obj
		m.raw[key] = &u
	}
	return m, nil
}

// merge sets src's keys into dst, recursively for maps.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// vals builds a nested values map from "a.b.c" paths.
func vals(kv ...any) map[string]any {
	out := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		parts := strings.Split(kv[i].(string), ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = kv[i+1]
	}
	return out
}

func scenario(name string) string {
	return filepath.Join(chartDir, "ci", name+"-values.yaml")
}

// podOf returns the pod template of the chart's workload, a Deployment or a StatefulSet.
func podOf(t testing.TB, m manifests) (kind string, pod corev1.PodTemplateSpec) {
	t.Helper()
	for k, o := range m.objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			return "Deployment", w.Spec.Template
		case *appsv1.StatefulSet:
			return "StatefulSet", w.Spec.Template
		default:
			_ = k
		}
	}
	t.Fatalf("no Deployment or StatefulSet among %v", m.keys())
	return "", corev1.PodTemplateSpec{}
}

func containerNamed(t testing.TB, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	var names []string
	for _, c := range cs {
		if c.Name == name {
			return c
		}
		names = append(names, c.Name)
	}
	t.Fatalf("no container %q among %v", name, names)
	return corev1.Container{}
}

// flagValue returns the value of --name=value in args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "", true
		}
	}
	return "", false
}

// serveArgs is the crmauthz container's command line with its --config file (the key of the
// rendered ConfigMap it names) spelt out as flags after the explicit ones, which override it.
func serveArgs(t testing.TB, m manifests, c corev1.Container) []string {
	t.Helper()
	var explicit []string
	file := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			file = v
			continue
		}
		explicit = append(explicit, a)
	}
	if file == "" {
		return explicit
	}
	return append(explicit, configArgs(t, configText(t, m, filepath.Base(file)))...)
}

// configText is the one rendered ConfigMap entry named key.
func configText(t testing.TB, m manifests, key string) string {
	t.Helper()
	var found []string
	for _, k := range m.keys() {
		if cm, ok := m.objs[k].(*corev1.ConfigMap); ok {
			if text, ok := cm.Data[key]; ok {
				found = append(found, text)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ConfigMaps hold %s, want 1", len(found), key)
	}
	return found[0]
}

// configArgs turns a --config file into flags: --name=value (a list comma-separated), --name for
// true.
func configArgs(t testing.TB, text string) []string {
	t.Helper()
	var kv map[string]any
	if err := yaml.UnmarshalStrict([]byte(text), &kv); err != nil {
		t.Fatalf("the config file %q: %v", text, err)
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		switch v := kv[k].(type) {
		case bool:
			if v {
				args = append(args, "--"+k)
			} else {
				args = append(args, "--"+k+"=false")
			}
		case []any:
			items := make([]string, len(v))
			for i, it := range v {
				items[i] = fmt.Sprint(it)
			}
			args = append(args, "--"+k+"="+strings.Join(items, ","))
		case float64:
			args = append(args, "--"+k+"="+strconv.FormatFloat(v, 'f', -1, 64))
		default:
			args = append(args, fmt.Sprintf("--%s=%v", k, v))
		}
	}
	return args
}
