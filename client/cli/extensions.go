package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/detour-dev/detour/tunnel"
)

// Extension is one ~/.config/detour/extensions/NAME.yml: an agent image,
// the mechanisms it supports, and the CLI flags of each mechanism.
//
//	image: registry.example/detour-http-agent:1.2
//	mechanisms:
//	  http:
//	    flags:
//	      match: {type: stringArray, usage: "NAME=VALUE header to match"}
//	      plaintext: {type: bool, usage: "send plaintext to the local process"}
//
// Setting --http-match then implies --mechanism=http and the extension's image.
type Extension struct {
	Name       string               `yaml:"-"`
	File       string               `yaml:"-"`
	Image      string               `yaml:"image"`
	Mechanisms map[string]Mechanism `yaml:"mechanisms"`
}

// Mechanism is one mechanism an extension's agent supports.
type Mechanism struct {
	Flags map[string]FlagSpec `yaml:"flags"`
}

// FlagSpec declares --MECHANISM-NAME.
type FlagSpec struct {
	Type  string `yaml:"type"` // string, stringArray or bool
	Usage string `yaml:"usage"`
}

// builtin is the mechanisms the built-in agent supports besides tcp, with
// their flags; extensions cannot redefine them.
var builtin = Extension{
	Name: "built-in",
	Mechanisms: map[string]Mechanism{
		tunnel.MechanismHTTP: {Flags: withHTTPMatchFlags(map[string]FlagSpec{
			"match":     {Type: "stringArray", Usage: "NAME=VALUE: take only the requests carrying this header, or baggage:KEY=VALUE: this member of the W3C baggage header (repeatable, all must match); auto (the default) generates a unique header for you"},
			"plaintext": {Type: "bool", Usage: "speak plain HTTP to your local process even when the app speaks TLS"},
		})},
	},
}

// identifier is a mechanism or flag name; 63 characters at most, as the
// tunnel protocol allows for mechanisms.
var identifier = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// loadExtensions reads every *.yml in dir. A missing dir means none.
func loadExtensions(dir string) ([]Extension, error) {
	// ReadDir, not Glob: a directory name with '[' must not be a pattern.
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("extensions directory %s: %w", dir, err)
	}
	var paths []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".yml") {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(paths)
	var exts []Extension
	owner := map[string]string{}
	for _, m := range tunnel.Mechanisms { // the mirrors too: --mirror asks for them
		owner[m] = "the built-in agent"
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("extension %s: %w", p, err)
		}
		var e Extension
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&e); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("extension %s: %w", p, err)
		}
		e.File = p
		e.Name = strings.TrimSuffix(filepath.Base(p), ".yml")
		if e.Image == "" {
			return nil, fmt.Errorf("extension %s: no image: say which agent image supports its mechanisms", p)
		}
		if len(e.Mechanisms) == 0 {
			return nil, fmt.Errorf("extension %s: no mechanisms", p)
		}
		for m, spec := range e.Mechanisms {
			if !identifier.MatchString(m) {
				return nil, fmt.Errorf("extension %s: mechanism %q: use lower-case letters, digits and '-'", p, m)
			}
			if prev, ok := owner[m]; ok {
				return nil, fmt.Errorf("extension %s: mechanism %q is already provided by %s", p, m, prev)
			}
			owner[m] = p
			for f, fs := range spec.Flags {
				if !identifier.MatchString(f) {
					return nil, fmt.Errorf("extension %s: flag %q of %s: use lower-case letters, digits and '-'", p, f, m)
				}
				switch fs.Type {
				case "string", "stringArray", "bool":
				default:
					return nil, fmt.Errorf("extension %s: flag --%s-%s: type %q: use string, stringArray or bool", p, m, f, fs.Type)
				}
			}
		}
		exts = append(exts, e)
	}
	return exts, nil
}

// mechanismFlags registers every extension's --MECH-FLAG on fs and returns
// a function that, after parsing, tells which mechanisms had flags set and
// their values.
//
// A flag that would take the name of another one (the command's own, one in
// reserved such as kubectl's global flags, or another extension's) is not
// registered, and the clash is returned as an error naming the file.
func mechanismFlags(fs *pflag.FlagSet, exts []Extension, reserved ...*pflag.FlagSet) (func() map[string]map[string][]string, error) {
	type reg struct{ mech, name, typ string }
	var regs []reg
	var clash error
	from := map[string]string{} // full flag name → where it was declared
	for _, e := range append([]Extension{builtin}, exts...) {
		where := e.File
		if where == "" {
			where = "the built-in http mechanism"
		}
		for _, m := range sortedKeys(e.Mechanisms) {
			spec := e.Mechanisms[m]
			for _, f := range sortedKeys(spec.Flags) {
				s := spec.Flags[f]
				full := m + "-" + f
				if prev, ok := from[full]; ok {
					if clash == nil {
						clash = fmt.Errorf("extension %s: flag --%s (mechanism %s, flag %s) is also declared by %s: rename one", where, full, m, f, prev)
					}
					continue
				}
				taken := fs.Lookup(full) != nil
				for _, r := range reserved {
					taken = taken || r.Lookup(full) != nil
				}
				if taken {
					if clash == nil {
						clash = fmt.Errorf("extension %s: flag --%s (mechanism %s, flag %s) is one of detour intercept's own flags: rename it", where, full, m, f)
					}
					continue
				}
				from[full] = where
				usage := fmt.Sprintf("%s (implies --mechanism=%s; from %s)", s.Usage, m, filepath.Base(e.File))
				if e.File == "" {
					usage = fmt.Sprintf("%s (implies --mechanism=%s)", s.Usage, m)
				}
				switch s.Type {
				case "bool":
					fs.Bool(full, false, usage)
				case "stringArray":
					fs.StringArray(full, nil, usage)
				default:
					fs.String(full, "", usage)
				}
				regs = append(regs, reg{m, f, s.Type})
			}
		}
	}
	return func() map[string]map[string][]string {
		set := map[string]map[string][]string{}
		for _, r := range regs {
			fl := fs.Lookup(r.mech + "-" + r.name)
			if fl == nil || !fl.Changed {
				continue
			}
			var vals []string
			if r.typ == "stringArray" {
				vals, _ = fs.GetStringArray(fl.Name)
			} else {
				vals = []string{fl.Value.String()}
			}
			if set[r.mech] == nil {
				set[r.mech] = map[string][]string{}
			}
			set[r.mech][r.name] = vals
		}
		return set
	}, clash
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// chooseMechanism applies the rules: --mechanism picks explicitly; else a
// set --MECH-FLAG implies MECH; else the configured default. Flags of two
// mechanisms, or of one other than --mechanism, are an error; so is a
// mechanism no known agent supports. It returns the mechanism and the
// extension image that provides it ("" for the built-in agent).
func chooseMechanism(explicit, def string, flagsSet map[string]map[string][]string, exts []Extension) (string, string, error) {
	implied := make([]string, 0, len(flagsSet))
	for m := range flagsSet {
		implied = append(implied, m)
	}
	sort.Strings(implied)
	if len(implied) > 1 {
		return "", "", fmt.Errorf("flags of mechanisms %s given together: an intercept uses one mechanism", strings.Join(implied, " and "))
	}
	m := def
	switch {
	case explicit != "" && len(implied) == 1 && implied[0] != explicit:
		return "", "", fmt.Errorf("--mechanism=%s conflicts with --%s-* flags, which imply --mechanism=%s", explicit, implied[0], implied[0])
	case explicit != "":
		m = explicit
	case len(implied) == 1:
		m = implied[0]
	}
	if m == tunnel.MechanismTCP || m == tunnel.MechanismHTTP {
		return m, "", nil
	}
	known := []string{tunnel.MechanismTCP, tunnel.MechanismHTTP}
	for _, e := range exts {
		if _, ok := e.Mechanisms[m]; ok {
			return m, e.Image, nil
		}
		for k := range e.Mechanisms {
			known = append(known, k)
		}
	}
	sort.Strings(known)
	if m == "mirror" || m == "wiretap" || tunnel.IsMirror(m) {
		return "", "", fmt.Errorf("--mechanism %s: mirrors are asked for with --mirror, beside the mechanism whose traffic they copy: --mirror alone copies connections (tcp), --mirror --mechanism http (or any --http-* rule) copies requests", m)
	}
	return "", "", fmt.Errorf("mechanism %q is not supported by any known agent (known: %s); an extension in ~/.config/detour/extensions/ can add it", m, strings.Join(known, ", "))
}
