// Package install puts detour's cluster side in place and takes it away:
// the library behind `detour install` and `detour uninstall --all`.
//
// Install applies the manifests embedded from deploy/base with server-side
// apply (field manager "detour"), optionally with another image, and waits
// until the webhook is ready and trusted (replicas available, caBundle set),
// reporting progress. Uninstall stops injection first (the webhook
// configuration goes), then removes detour.dev/inject from the pod templates
// of Deployments, StatefulSets and standalone ReplicaSets so they roll
// without the agent, then deletes what Install created. Check says why pods
// may be starting without the agent.
package install
