package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/detour-dev/detour/client/internal/daemon"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/status.golden.json from the current StatusReport")

const (
	statusGolden = "testdata/status.golden.json"
	statusDoc    = "../../docs/status-json.md"
)

// fullStatusReport sets every field of the daemon's status, down to the
// pods, and turns it into the report `detour status -o json` prints, so
// that the golden file holds every field name it can print.
// TestStatusJSONGolden fails when a field of the report is left unset:
// by this status, or by newStatusReport forgetting to copy it.
func fullStatusReport() StatusReport {
	zone := time.FixedZone("CEST", 2*60*60)
	started := time.Date(2025, 5, 1, 9, 30, 0, 0, zone)
	created := time.Date(2025, 5, 1, 9, 31, 12, 250_000_000, zone)
	droppedAt := time.Date(2025, 5, 1, 11, 2, 3, 0, zone)
	st := daemon.Status{
		Version: "v0.4.0", PID: 41235, Started: started,
		Intercepts: []daemon.InterceptStatus{{
			InterceptRequest: daemon.InterceptRequest{
				Name:       "hello-shop",
				Kubeconfig: "/home/alice/.kube/config",
				Context:    "kind-dev",
				Namespace:  "shop",
				Workload:   "deployment/hello",
				Selector:   "app=hello",
				Service:    "hello",
				Ports: []daemon.PortRequest{{
					PortName: "http",
					Port:     80,
					AppPort:  8080,
					MechanismArgs: map[string][]string{
						"match":                 {"x-dev=alice"},
						"preview-token":         {"9f2c4e1ab37d05c6e8f1a2b3c4d5e6f7"},
						"app-protocol-strategy": {"http2Probe"},
					},
					LocalAddr: "127.0.0.1:8080",
				}, {
					PortName: "grpc",
					Port:     9090,
					AppPort:  9090,
					MechanismArgs: map[string][]string{
						"match":         {"x-dev=alice"},
						"preview-token": {"9f2c4e1ab37d05c6e8f1a2b3c4d5e6f7"},
						"app-protocol":  {"grpc"},
					},
					LocalAddr: "127.0.0.1:9091",
				}},
				Mechanism:  "http",
				HTTPMatch:  []string{"x-dev=alice"},
				PreviewURL: "https://shop.example.com/?detour-preview=9f2c4e1ab37d05c6e8f1a2b3c4d5e6f7",
				ToPod:      []uint16{5432},
				User:       "alice@laptop",
				WantEnv:    true,
				Replace:    `{"by":"alice@laptop","grace":"1m0s"}`, // a tcp intercept's only; set here to pin the name
				TimeoutSec: 60,
			},
			Created:   created,
			State:     "dropped",
			Dropped:   "this workstation was silent for 1h30m0s (asleep or stopped) and the agents gave the traffic back to the app",
			DroppedAt: &droppedAt,
			Pods: []daemon.PodState{{
				Pod:          "hello-7d9c6b5f4-x2x8q",
				State:        "dropped",
				Since:        droppedAt,
				LastError:    "this workstation was silent for 1h30m0s (asleep or stopped) and the agents gave the traffic back to the app",
				Reconnects:   2,
				AgentVersion: "v0.4.0",
				Mirror:       &daemon.MirrorCounts{Copied: 1520, Dropped: 3}, // a mirror's only; set here to pin the names
			}},
			Mirror: &daemon.MirrorCounts{Copied: 1520, Dropped: 3},
			Env:    map[string]string{"DB_HOST": "db.shop.svc"},
		}},
	}
	return newStatusReport("v0.4.0", &st)
}

// TestReportKeepsEnvironmentOut: the daemon's answer to create carries the
// app's environment (Secret values among it); the report printed by
// intercept -o and status -o never does.
func TestReportKeepsEnvironmentOut(t *testing.T) {
	st := daemon.InterceptStatus{InterceptRequest: daemon.InterceptRequest{Name: "x"}, Env: map[string]string{"DB_PASSWORD": "s3cret"}}
	for _, format := range []string{"json", "yaml"} {
		var out bytes.Buffer
		if err := printStructured(&out, format, newInterceptReport(st)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "s3cret") || strings.Contains(out.String(), "DB_PASSWORD") {
			t.Errorf("-o %s prints the environment:\n%s", format, out.String())
		}
	}
}

// TestNoDaemonReport: with no daemon, intercepts is [] and daemon null
// (docs/status-json.md shows this report).
func TestNoDaemonReport(t *testing.T) {
	var out bytes.Buffer
	if err := printStructured(&out, "json", newStatusReport("v0.4.0", nil)); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"schemaVersion": 1.0, "clientVersion": "v0.4.0", "daemon": nil, "intercepts": []any{}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %v", out.Bytes(), want)
	}
}

// TestStatusJSONGolden pins the field names of `detour status -o json`:
// renaming or removing a field fails here. An added field fails too until
// it is set in fullStatusReport, the golden file is rewritten
// (go test ./client/cli -run TestStatusJSONGolden -update) and the field is
// documented in docs/status-json.md.
func TestStatusJSONGolden(t *testing.T) {
	rep := fullStatusReport()
	if unset := unsetFields(reflect.ValueOf(rep), "StatusReport"); len(unset) > 0 {
		t.Fatalf("fields left unset in fullStatusReport, so the golden file would not pin their names: %s (set them, rerun with -update, document them in docs/status-json.md)", strings.Join(unset, ", "))
	}
	var got bytes.Buffer
	if err := printStructured(&got, "json", rep); err != nil {
		t.Fatal(err)
	}
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(statusGolden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(statusGolden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(statusGolden)
	if err != nil {
		t.Fatalf("read the golden file (create it with -update): %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("detour status -o json changed; field names are a stable interface (docs/status-json.md): only add fields, then rerun with -update.\ngot:\n%s\nwant (%s):\n%s", got.Bytes(), statusGolden, want)
	}

	// -o yaml goes through the same JSON field names.
	var y bytes.Buffer
	if err := printStructured(&y, "yaml", rep); err != nil {
		t.Fatal(err)
	}
	fromYAML, err := yaml.YAMLToJSON(y.Bytes())
	if err != nil {
		t.Fatalf("-o yaml output is not YAML: %v", err)
	}
	var a, b any
	if err := json.Unmarshal(fromYAML, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("-o yaml differs from -o json:\n%s", y.Bytes())
	}
}

// TestStatusJSONDocumented checks that docs/status-json.md has a table row
// for every field of the golden file, by its path (`intercepts[].pods[].state`),
// and no row for a field that does not exist.
func TestStatusJSONDocumented(t *testing.T) {
	golden, err := os.ReadFile(statusGolden)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(golden, &v); err != nil {
		t.Fatalf("%s: %v", statusGolden, err)
	}
	fields := map[string]bool{}
	jsonPaths(t, v, reflect.TypeOf(StatusReport{}), "", fields)

	doc, err := os.ReadFile(statusDoc)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range docRow.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	// The example is the golden file, so it cannot drift from the real output.
	example := docExample.FindSubmatch(doc)
	if example == nil {
		t.Fatalf("%s: no ```json block under ## Example", statusDoc)
	}
	var ex any
	if err := json.Unmarshal(example[1], &ex); err != nil {
		t.Fatalf("%s: the example is not JSON: %v", statusDoc, err)
	}
	if !reflect.DeepEqual(ex, v) {
		t.Errorf("%s: the example under ## Example differs from %s: copy the golden file there", statusDoc, statusGolden)
	}

	var missing, stale []string
	for f := range fields {
		if !documented[f] {
			missing = append(missing, f)
		}
	}
	for f := range documented {
		if !fields[f] {
			stale = append(stale, f)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 {
		t.Errorf("%s has no row for: %s (add a table row whose first cell is the path in backticks: field, type, meaning, when present, example)", statusDoc, strings.Join(missing, ", "))
	}
	if len(stale) > 0 {
		t.Errorf("%s documents fields that status does not print: %s (fix the path, or remove the row only with a schema version bump)", statusDoc, strings.Join(stale, ", "))
	}
}

// docExample is the first JSON block after the "## Example" heading.
var docExample = regexp.MustCompile("(?s)\n## Example\n.*?```json\n(.*?)```")

// docRow is a table row whose first cell is a field path in backticks.
var docRow = regexp.MustCompile("(?m)^\\|\\s*`([^`]+)`\\s*\\|")

// jsonPaths records the path of every field in v, a decoded JSON value of
// Go type t. The keys of Go maps are data, not field names: a map is one
// field.
func jsonPaths(t *testing.T, v any, typ reflect.Type, path string, out map[string]bool) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ == reflect.TypeOf(time.Time{}) || v == nil {
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: want a JSON object for %s, got %T", path, typ, v)
		}
		for k, child := range obj {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fieldByJSONName(typ, k)
			if !ok {
				t.Fatalf("%s: %s has no field with JSON name %q: is %s stale?", p, typ, k, statusGolden)
			}
			out[p] = true
			jsonPaths(t, child, ft, p, out)
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			t.Fatalf("%s: want a JSON array for %s, got %T", path, typ, v)
		}
		for _, e := range arr {
			jsonPaths(t, e, typ.Elem(), path+"[]", out)
		}
	}
}

// fieldByJSONName finds the field encoding/json writes as name, looking
// into embedded structs as encoding/json does.
func fieldByJSONName(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			if ft, ok := fieldByJSONName(f.Type, name); ok {
				return ft, true
			}
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

// unsetFields lists the fields of v (recursively: structs, pointers,
// slice elements) that hold their zero value.
func unsetFields(v reflect.Value, path string) []string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return []string{path}
		}
		v = v.Elem()
	}
	if v.IsZero() || (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0 {
		return []string{path}
	}
	var unset []string
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			return nil
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" {
				continue
			}
			name := path + "." + f.Name
			if f.Anonymous {
				name = path
			}
			unset = append(unset, unsetFields(v.Field(i), name)...)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			unset = append(unset, unsetFields(v.Index(i), path+"[]")...)
		}
	}
	return unset
}
