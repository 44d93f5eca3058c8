package deploy

import (
	"embed"
	"fmt"
	"path"

	"sigs.k8s.io/yaml"
)

// Base is the kustomize base: kustomization.yaml and the files it lists.
//
//go:embed base/*.yaml
var Base embed.FS

// IdleRBAC is the opt-in RBAC of the webhook's idle reaper (idle/, a
// kustomize component): applied by detour install --agent-max-idle only.
//
//go:embed idle/rbac.yaml
var IdleRBAC []byte

// Manifest is one file of the base.
type Manifest struct {
	Name string // e.g. "deployment.yaml"
	Data []byte
}

// Manifests returns the base's files in the order kustomization.yaml lists
// them (namespace first, webhook configuration last).
func Manifests() ([]Manifest, error) {
	k, err := Base.ReadFile("base/kustomization.yaml")
	if err != nil {
		return nil, fmt.Errorf("read kustomization: %w", err)
	}
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(k, &kustomization); err != nil {
		return nil, fmt.Errorf("parse kustomization: %w", err)
	}
	out := make([]Manifest, 0, len(kustomization.Resources))
	for _, r := range kustomization.Resources {
		data, err := Base.ReadFile(path.Join("base", r))
		if err != nil {
			return nil, fmt.Errorf("kustomization lists %s: %w", r, err)
		}
		out = append(out, Manifest{Name: r, Data: data})
	}
	return out, nil
}
