package cli

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/detour-dev/detour/tunnel"
)

// configSeeds start FuzzLoadConfig from every kind of file loadConfig
// accepts and from each error it knows; TestFuzzSeeds pins which is which,
// so a seed cannot silently stop covering its case.
var configSeeds = []struct {
	name, body string
	want       string // "" when accepted, else a part of the error
}{
	{"empty", "", ""},
	{"comment only", "# only a comment\n", ""},
	{"null document", "~\n", ""},
	{"every setting", "images:\n  agentImage: registry.example/detour-agent:1.2\nintercept:\n  defaultMechanism: http\n  previewURL: true\nagent:\n  appProtocolStrategy: http2\ntimeouts:\n  rollout: 90s\n  agentArrival: 2m30s\n", ""},
	{"extension mechanism", "intercept:\n  defaultMechanism: mirror-v2\nagent:\n  appProtocolStrategy: http\n", ""},
	{"tiny timeout", "agent:\n  appProtocolStrategy: http2Probe\ntimeouts:\n  agentArrival: 1ns\n", ""},
	{"null value keeps the default", "timeouts:\n  rollout: ~\n", ""},
	{"merge key", "timeouts: {<<: {rollout: 5m}}\n", ""},
	{"second document ignored", "intercept: {defaultMechanism: http}\n---\nnot: checked\n", ""},
	{"unknown key", "images:\n  agentImge: x\n", "field agentImge not found"},
	{"unknown anchor holder", "base: &b {rollout: 5m}\n", "field base not found"},
	{"not a duration", "timeouts:\n  rollout: soon\n", "cannot unmarshal"},
	{"number as duration", "timeouts:\n  rollout: 90\n", "cannot unmarshal"},
	{"duration overflow", "timeouts:\n  rollout: 9999999999999999999h\n", "cannot unmarshal"},
	{"zero timeout", "timeouts:\n  rollout: 0s\n", "timeouts must be positive"},
	{"negative timeout", "timeouts:\n  agentArrival: -1m\n", "timeouts must be positive"},
	{"key twice", "timeouts:\n  rollout: 1m\n  rollout: 2m\n", "already defined"},
	{"bad mechanism", "intercept:\n  defaultMechanism: Magic!\n", "intercept.defaultMechanism"},
	{"empty mechanism", "intercept:\n  defaultMechanism: \"\"\n", "intercept.defaultMechanism"},
	{"not a bool", "intercept:\n  previewURL: maybe\n", "cannot unmarshal"},
	{"unknown strategy", "agent:\n  appProtocolStrategy: guess\n", "agent.appProtocolStrategy"},
	{"empty strategy", "agent:\n  appProtocolStrategy: \"\"\n", "agent.appProtocolStrategy"},
	{"syntax", "images: [\n", "did not find expected node content"},
	{"wrong shape", "images: [a, b]\n", "cannot unmarshal"},
	{"not a mapping", "just a string\n", "cannot unmarshal"},
	{"tab indentation", "\tintercept: {}\n", "found character that cannot start any token"},
	{"recursive alias", "a: &a [*a, *a]\n", "field a not found"},
}

// FuzzLoadConfig feeds arbitrary bytes to loadConfig as config.yml. Beyond
// never panicking: an accepted config has positive timeouts, a default
// mechanism the tunnel protocol accepts in a create-intercept request, and
// one of the app-protocol strategies, and keeps the default of every
// setting the file leaves out; a rejected one's error names the file, so
// the user knows which file to fix.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range configSeeds {
		f.Add([]byte(seed.body))
	}
	path := filepath.Join(f.TempDir(), "config.yml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the file %s: %v", path, err)
			}
			return
		}
		if c.Timeouts.Rollout <= 0 || c.Timeouts.AgentArrival <= 0 {
			t.Fatalf("accepted non-positive timeouts: rollout %v, agentArrival %v", c.Timeouts.Rollout, c.Timeouts.AgentArrival)
		}
		if err := validMechanism(c.Intercept.DefaultMechanism); err != nil {
			t.Fatalf("accepted intercept.defaultMechanism %q, which no agent can be asked for: %v", c.Intercept.DefaultMechanism, err)
		}
		switch c.Agent.AppProtocolStrategy {
		case tunnel.StrategyHTTP2Probe, tunnel.StrategyHTTP, tunnel.StrategyHTTP2:
		default:
			t.Fatalf("accepted agent.appProtocolStrategy %q", c.Agent.AppProtocolStrategy)
		}
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil {
			t.Fatalf("loadConfig accepted a file yaml.Unmarshal rejects: %q", data)
		}
		def := defaultConfig()
		for _, s := range []struct {
			path      []string
			got, want any
		}{
			{[]string{"images", "agentImage"}, c.Images.AgentImage, def.Images.AgentImage},
			{[]string{"intercept", "defaultMechanism"}, c.Intercept.DefaultMechanism, def.Intercept.DefaultMechanism},
			{[]string{"intercept", "previewURL"}, c.Intercept.PreviewURL, def.Intercept.PreviewURL},
			{[]string{"agent", "appProtocolStrategy"}, c.Agent.AppProtocolStrategy, def.Agent.AppProtocolStrategy},
			{[]string{"timeouts", "rollout"}, c.Timeouts.Rollout, def.Timeouts.Rollout},
			{[]string{"timeouts", "agentArrival"}, c.Timeouts.AgentArrival, def.Timeouts.AgentArrival},
		} {
			if !mayBeSet(&doc, s.path...) && s.got != s.want {
				t.Fatalf("%s is not in the file, yet it is %v instead of the default %v", strings.Join(s.path, "."), s.got, s.want)
			}
		}
	})
}

// mayBeSet says whether the first document of a parsed YAML file may set
// the setting at path to a non-null value. It answers true when it cannot
// tell (a merge key "<<" may bring the setting in), so the caller only
// checks what is certain.
func mayBeSet(doc *yaml.Node, path ...string) bool {
	n := doc
	if n.Kind == 0 { // an empty file
		return false
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return false
		}
		n = n.Content[0]
	}
	for _, key := range path {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return n.Kind != yaml.ScalarNode || n.Tag != "!!null"
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch n.Content[i].Value {
			case "<<":
				return true
			case key:
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Kind != yaml.ScalarNode || n.Tag != "!!null"
}

const fuzzMirror = "image: registry.example/detour-mirror:1\nmechanisms:\n  mirror:\n    flags:\n      match: {type: stringArray, usage: \"NAME=VALUE header to match\"}\n      plaintext: {type: bool, usage: \"plaintext to the local process\"}\n      tag: {type: string}\n"

// extensionSeeds start FuzzLoadExtensions from accepted sets and from each
// error loadExtensions knows; TestFuzzSeeds pins which is which.
var extensionSeeds = []struct {
	name1, body1, name2, body2 string
	want                       string // "" when accepted, else a part of the error
}{
	{"mirror", fuzzMirror, "", "", ""},
	{"mirror", fuzzMirror, "grpc", "image: reg/grpc:2\nmechanisms:\n  grpc-web: {}\n  grpc: {flags: {method: {type: string, usage: gRPC method}}}\n", ""},
	{"a", "image: x\nmechanisms:\n  m1: {flags: ~}\n", "b", "image: y\nmechanisms:\n  m2:\n    flags: {}\n", ""},
	{".", "image: x\nmechanisms:\n  dot: {}\n", "", "", ""},
	{"empty", "", "", "", "no image"},
	{"typo", "image: x\nmechanisms:\n  mirror:\n    flgs: {}\n", "", "", "field flgs not found"},
	{"noimage", "mechanisms:\n  mirror: {}\n", "", "", "no image"},
	{"nomech", "image: x\n", "", "", "no mechanisms"},
	{"nomech2", "image: x\nmechanisms: {}\n", "", "", "no mechanisms"},
	{"tcp", "image: x\nmechanisms:\n  tcp: {}\n", "", "", "already provided by the built-in agent"},
	{"http", "image: x\nmechanisms:\n  http: {}\n", "", "", "already provided by the built-in agent"},
	{"badmech", "image: x\nmechanisms:\n  Bad_Name: {}\n", "", "", "use lower-case letters"},
	{"badflag", "image: x\nmechanisms:\n  m:\n    flags:\n      Flag: {type: bool}\n", "", "", "flag \"Flag\" of m"},
	{"badtype", "image: x\nmechanisms:\n  m:\n    flags:\n      f: {type: int}\n", "", "", "type \"int\""},
	{"notype", "image: x\nmechanisms:\n  m:\n    flags:\n      f: {usage: u}\n", "", "", "type \"\""},
	{"dup1", "image: x\nmechanisms:\n  m: {}\n", "dup2", "image: y\nmechanisms:\n  m: {}\n", "already provided by"},
	{"syntax", "image: [\n", "", "", "did not find expected node content"},
	{"shape", "image: [a]\nmechanisms: {}\n", "", "", "cannot unmarshal"},
}

// FuzzLoadExtensions writes up to two extension files with arbitrary names
// and contents and loads the directory. Beyond never panicking: an accepted
// set has one Extension per file, in file order, each with an image and at
// least one mechanism; mechanism names are unique across files and never
// tcp or http; flag names are identifiers and their types string,
// stringArray or bool; and every declared flag really is --MECH-FLAG on
// detour intercept, reported as a flag of MECH. A rejected set's error
// names the file at fault.
func FuzzLoadExtensions(f *testing.F) {
	for _, seed := range extensionSeeds {
		f.Add(seed.name1, []byte(seed.body1), seed.name2, []byte(seed.body2))
	}
	// One directory for every input, emptied after each (a fresh t.TempDir
	// per input costs more than the rest of an execution).
	dir := f.TempDir()
	base := detourFlags()
	f.Fuzz(func(t *testing.T, name1 string, body1 []byte, name2 string, body2 []byte) {
		files := map[string]string{} // path → extension name
		t.Cleanup(func() {
			for p := range files {
				if err := os.Remove(p); err != nil {
					t.Error(err)
				}
			}
		})
		n1 := fileName(name1, "a")
		writeFuzzFile(t, dir, n1, body1, files)
		if len(body2) > 0 {
			n2 := fileName(name2, "b")
			if n2 == n1 {
				n2 += "-2"
			}
			writeFuzzFile(t, dir, n2, body2, files)
		}
		exts, err := loadExtensions(dir)
		if err != nil {
			named := false
			for p := range files {
				named = named || strings.Contains(err.Error(), p)
			}
			if !named {
				t.Fatalf("the error names none of the files %v: %v", files, err)
			}
			return
		}
		if len(exts) != len(files) {
			t.Fatalf("%d files gave %d extensions", len(files), len(exts))
		}
		if !sort.SliceIsSorted(exts, func(i, j int) bool { return exts[i].File < exts[j].File }) {
			t.Fatal("extensions are not in file-name order")
		}
		owner := map[string]string{tunnel.MechanismTCP: "the built-in agent", tunnel.MechanismHTTP: "the built-in agent"}
		for _, e := range exts {
			if want, ok := files[e.File]; !ok || e.Name != want {
				t.Fatalf("extension %q from %q: not a file that was written (%v)", e.Name, e.File, files)
			}
			if e.Image == "" {
				t.Fatalf("%s: accepted without an image", e.File)
			}
			if len(e.Mechanisms) == 0 {
				t.Fatalf("%s: accepted without mechanisms", e.File)
			}
			for m, spec := range e.Mechanisms {
				if prev, ok := owner[m]; ok {
					t.Fatalf("mechanism %q of %s is also provided by %s", m, e.File, prev)
				}
				owner[m] = e.File
				if err := validMechanism(m); err != nil {
					t.Fatalf("%s: accepted mechanism %q, which no agent can be asked for: %v", e.File, m, err)
				}
				for name, fs := range spec.Flags {
					if !identifier.MatchString(name) {
						t.Fatalf("%s: accepted flag name %q of %s", e.File, name, m)
					}
					switch fs.Type {
					case "string", "stringArray", "bool":
					default:
						t.Fatalf("%s: accepted flag --%s-%s of type %q", e.File, m, name, fs.Type)
					}
				}
			}
		}
		checkFlagsUsable(t, base, exts)
	})
}

// detourFlags are the flags `detour intercept` has without extensions: its
// own (with the built-in http ones) and the kubectl flags of the root
// command.
func detourFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("intercept", pflag.ContinueOnError)
	fs.AddFlagSet((&app{}).interceptCommand().Flags())
	genericclioptions.NewConfigFlags(true).AddFlags(fs)
	return fs
}

// checkFlagsUsable registers the extensions' flags beside base as
// `detour intercept` does, sets every one of them, and checks that each is
// reported as a flag of its own mechanism with the value given.
func checkFlagsUsable(t *testing.T, base *pflag.FlagSet, exts []Extension) {
	t.Helper()
	fs := pflag.NewFlagSet("intercept", pflag.ContinueOnError)
	fs.AddFlagSet(base)
	set, clash := mechanismFlags(fs, exts)
	if clash != nil {
		// A clash is a refusal: it must name the file that declared it.
		if !strings.Contains(clash.Error(), "extension ") {
			t.Fatalf("flag clash error names no extension: %v", clash)
		}
		return
	}
	var args []string
	for _, e := range exts {
		for m, spec := range e.Mechanisms {
			for name, s := range spec.Flags {
				if s.Type == "bool" {
					args = append(args, "--"+m+"-"+name)
				} else {
					args = append(args, "--"+m+"-"+name+"=v")
				}
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		t.Fatalf("setting every declared extension flag: %v", err)
	}
	got := set()
	for _, e := range exts {
		for m, spec := range e.Mechanisms {
			for name, s := range spec.Flags {
				want := "v"
				if s.Type == "bool" {
					want = "true"
				}
				if v := got[m][name]; len(v) != 1 || v[0] != want {
					t.Fatalf("%s declares --%s-%s, but setting it gives %v for %s (all set: %v): the name collides with another flag of detour intercept",
						e.File, m, name, v, m, got)
				}
			}
		}
	}
}

// validMechanism checks a mechanism name as the tunnel protocol does when
// an intercept is created with it (the CLI's own check must not be looser).
func validMechanism(m string) error {
	return tunnel.CreateIntercept{Name: "fuzz", Port: 1, Mechanism: m}.Validate()
}

// fileName turns fuzzed text into a file name in the extensions directory
// (NAME.yml), or def when it cannot be one.
func fileName(s, def string) string {
	if s == "" || len(s) > 64 || !utf8.ValidString(s) || strings.ContainsAny(s, "/\x00") {
		return def
	}
	return s
}

func writeFuzzFile(t *testing.T, dir, name string, body []byte, files map[string]string) {
	t.Helper()
	p := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	files[p] = name
}

// TestFuzzSeeds checks that every fuzz seed is accepted, or rejected for
// the reason it stands for.
func TestFuzzSeeds(t *testing.T) {
	check := func(t *testing.T, err error, want string) {
		t.Helper()
		switch {
		case want == "" && err != nil:
			t.Fatalf("rejected: %v", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("err = %v, want one with %q", err, want)
		}
	}
	for _, s := range configSeeds {
		t.Run("config/"+s.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yml")
			if err := os.WriteFile(p, []byte(s.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadConfig(p)
			check(t, err, s.want)
		})
	}
	for _, s := range extensionSeeds {
		t.Run("extensions/"+s.name1, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{}
			writeFuzzFile(t, dir, s.name1, []byte(s.body1), files)
			if s.body2 != "" {
				writeFuzzFile(t, dir, s.name2, []byte(s.body2), files)
			}
			exts, err := loadExtensions(dir)
			check(t, err, s.want)
			if err == nil && len(exts) != len(files) {
				t.Fatalf("%d extensions from %d files", len(exts), len(files))
			}
		})
	}
}
