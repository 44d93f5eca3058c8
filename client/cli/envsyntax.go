package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// Env syntaxes of --env-syntax: how --env-file writes the app's environment.
const (
	envDocker  = "docker"
	envCompose = "compose"
	envSh      = "sh"
	envCsh     = "csh"
	envCmd     = "cmd"
	envPS      = "ps"
	envJSON    = "json"
)

// envSyntaxes is every --env-syntax, in the order --help lists them.
var envSyntaxes = []string{envDocker, envCompose, envSh, envCsh, envCmd, envPS, envJSON}

const envSyntaxUsage = `how --env-file is written: docker (KEY=value lines, literal, as docker run --env-file and IDE run configs read them), compose (a docker compose env_file/.env, quoted), sh (export KEY='value', for sh/bash/zsh: . FILE), csh (setenv, for csh/tcsh: source FILE), cmd (set "KEY=value", a batch file: call FILE.cmd), ps (PowerShell: . FILE.ps1), json (an object)`

// envRendering is an env file's content, and the keys left out of it
// because the syntax cannot name them (a name with '.' or '-' in sh).
type envRendering struct {
	content []byte
	skipped []string
}

// renderEnv writes env in syntax, keys sorted. Values are quoted so that
// the reader of that syntax gets them back byte for byte: no expansion of
// $, %, ! or `, newlines kept where the syntax can hold them (docker and cmd
// cannot: an error names the key and a syntax that can).
func renderEnv(syntax string, env map[string]string) (envRendering, error) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var r envRendering
	var b strings.Builder
	switch syntax {
	case envJSON:
		j, err := json.MarshalIndent(env, "", "  ")
		if err != nil {
			return r, fmt.Errorf("--env-syntax json: %w", err)
		}
		r.content = append(j, '\n')
		return r, nil
	case envDocker, envCompose, envSh, envCsh, envCmd, envPS:
	default:
		return r, usagef("--env-syntax %q: use one of %s", syntax, strings.Join(envSyntaxes, ", "))
	}
	for _, k := range keys {
		v := env[k]
		if !envKeyOK(syntax, k) {
			r.skipped = append(r.skipped, k)
			continue
		}
		switch syntax {
		case envDocker:
			// docker reads each line literally (quotes would stay in the
			// value) and splits lines at \n, dropping a trailing \r.
			if strings.ContainsAny(v, "\n\r") {
				return r, fmt.Errorf("--env-file: %s has a multi-line value, which the docker syntax cannot hold: use --env-syntax compose or sh, or --env-json", k)
			}
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		case envCompose:
			fmt.Fprintf(&b, "%s=%s\n", k, composeQuote(v))
		case envSh:
			fmt.Fprintf(&b, "export %s=%s\n", k, shQuote(v))
		case envCsh:
			fmt.Fprintf(&b, "setenv %s %s\n", k, cshQuote(v))
		case envCmd:
			if strings.ContainsAny(v, "\n\r") {
				return r, fmt.Errorf("--env-file: %s has a multi-line value, which cmd's set cannot hold: use --env-syntax ps or json", k)
			}
			fmt.Fprintf(&b, "set %s\n", cmdQuote(k+"="+v))
		case envPS:
			fmt.Fprintf(&b, "%s = %s\n", psVariable(k), psQuote(v))
		}
	}
	r.content = []byte(b.String())
	return r, nil
}

var (
	shName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	composeName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// envKeyOK says whether syntax can set a variable named k. Kubernetes allows
// names shells cannot assign (my.setting, my-setting).
func envKeyOK(syntax, k string) bool {
	switch syntax {
	case envSh, envCsh:
		return shName.MatchString(k)
	case envCompose:
		return composeName.MatchString(k)
	case envDocker:
		return !strings.ContainsAny(k, " \t\n\r") && !strings.HasPrefix(k, "#")
	case envCmd:
		return !strings.ContainsAny(k, "\"%\n\r")
	}
	return true
}

// shQuote quotes v for a POSIX shell: bare when nothing in it is special,
// else in single quotes, where only ' itself needs care ('\”).
func shQuote(v string) string {
	if v != "" && shellSafe.MatchString(v) {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// cshQuote quotes v for csh and tcsh: single quotes stop $ and `, but not
// history (!, escaped as \!), and a newline inside quotes must follow a
// backslash.
func cshQuote(v string) string {
	if v != "" && shellSafe.MatchString(v) {
		return v
	}
	r := strings.NewReplacer("'", `'\''`, "!", `\!`, "\n", "\\\n")
	return "'" + r.Replace(v) + "'"
}

// composeQuote quotes v for docker compose's env files: single quotes are
// literal (but \' is a quote), so they are used unless v holds a ', ends
// with a backslash, or spans lines (compose reads \r\n as \n); then double
// quotes, with \\, \", \$, \n and \r escaped.
func composeQuote(v string) string {
	if !strings.ContainsAny(v, "'\n\r") && !strings.HasSuffix(v, `\`) {
		return "'" + v + "'"
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(v) + `"`
}

// cmdQuote quotes KEY=value for cmd.exe's set "KEY=value" in a batch file:
// % is doubled (expanded even inside quotes); inside the quotes & | < > ^
// are literal; a " in the value ends the quoting until the next one, and
// the special characters found meanwhile are escaped with ^. set takes all
// up to the last ".
func cmdQuote(kv string) string {
	var b strings.Builder
	b.WriteByte('"')
	quoted := true
	for _, c := range kv {
		switch {
		case c == '%':
			b.WriteString("%%")
		case c == '"':
			b.WriteRune(c)
			quoted = !quoted
		case !quoted && strings.ContainsRune("&|<>^()", c):
			b.WriteByte('^')
			b.WriteRune(c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// psVariable is $Env:KEY, or ${Env:KEY} (with ` escapes) for a name that
// is not a plain identifier.
func psVariable(k string) string {
	if shName.MatchString(k) {
		return "$Env:" + k
	}
	return "${Env:" + strings.NewReplacer("`", "``", "{", "`{", "}", "`}").Replace(k) + "}"
}

// psQuote quotes v as a PowerShell verbatim string: single quotes, where
// nothing expands and a quote is doubled — PowerShell also takes the
// typographic quotes ‘ ’ ‚ ‛ for ', so those are doubled too. Newlines are
// kept as they are.
func psQuote(v string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, c := range v {
		switch c {
		case '\'', '\u2018', '\u2019', '\u201a', '\u201b':
			b.WriteRune(c)
		}
		b.WriteRune(c)
	}
	b.WriteByte('\'')
	return b.String()
}

// addEnvSyntaxFlag adds --env-syntax, completed from envSyntaxes.
func addEnvSyntaxFlag(cmd *cobra.Command, syntax *string) {
	cmd.Flags().StringVar(syntax, "env-syntax", envDocker, envSyntaxUsage)
	_ = cmd.RegisterFlagCompletionFunc("env-syntax", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return envSyntaxes, cobra.ShellCompDirectiveNoFileComp
	})
}

// checkEnvSyntax checks --env-syntax before the cluster is asked anything.
func checkEnvSyntax(syntax, envFile string, changed func(string) bool) error {
	if _, err := renderEnv(syntax, nil); err != nil {
		return err
	}
	if changed("env-syntax") && envFile == "" {
		return usagef("--env-syntax %s says how --env-file is written: give --env-file FILE too", syntax)
	}
	return nil
}

// writeEnvFile writes env to path in syntax (0600: values may be secrets),
// with a note on errOut for what a reader should know.
func writeEnvFile(path, syntax string, env map[string]string, errOut io.Writer) error {
	r, err := renderEnv(syntax, env)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, r.content, 0o600); err != nil {
		return fmt.Errorf("--env-file: %w", err)
	}
	if len(r.skipped) > 0 {
		fmt.Fprintf(errOut, "note: %s leaves out %s: the %s syntax cannot name them (--env-syntax json or docker can)\n", path, strings.Join(r.skipped, ", "), syntax)
	}
	if syntax == envDocker {
		var unsafe []string
		for k, v := range env {
			if !shellSafe.MatchString(v) {
				unsafe = append(unsafe, k)
			}
		}
		sort.Strings(unsafe)
		if len(unsafe) > 0 {
			fmt.Fprintf(errOut, "note: %s has values with shell metacharacters (%s): fine for docker --env-file and IDEs, but do not source it in a shell; use --env-syntax sh there\n", path, strings.Join(unsafe, ", "))
		}
	}
	return nil
}
