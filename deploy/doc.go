// Package deploy holds detour's cluster manifests (base/, a kustomize base)
// and the image's Dockerfile. The base is embedded so that `detour install`
// applies exactly the files that `kubectl apply -k deploy/base` would.
package deploy
