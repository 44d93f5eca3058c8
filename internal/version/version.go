// Package version holds the release of this build, set at link time:
// -ldflags "-X github.com/detour-dev/detour/internal/version.Version=v1.2.3".
package version

// Version is "dev" in builds that did not set it.
var Version = "dev"
