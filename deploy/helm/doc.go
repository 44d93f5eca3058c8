// Package helm holds detour's Helm chart (detour/) and its tests, which
// render the chart through Helm's Go module and compare it with the
// kustomize base (../base) that `detour install` applies: the base is the one
// source of truth, the chart a parameterised copy of it. Nothing imports
// this package; Helm's module is linked into its tests only.
package helm
