// Package podfiles reads, from the Kubernetes API and with the user's own
// credentials, what the app container of a pod sees in its files and its
// environment, so that `detour run` and `detour intercept … -- CMD` can show
// the same to the local command:
//
//   - Read plans the app container's files: every volumeMount whose volume
//     is a configMap, a secret, a downwardAPI or a projected volume
//     (configMap, secret, downwardAPI and serviceAccountToken sources)
//     becomes Files at the paths the container sees, with the kubelet's
//     rules for items, keys, defaultMode and mode, optional sources and
//     subPath. A serviceAccountToken is a fresh TokenRequest for the pod's
//     service account, bound to the pod, made as the user. Every other
//     volume (emptyDir, persistentVolumeClaim, hostPath, …) is a NotMirrored
//     note that says why.
//   - Env resolves the app container's env and envFrom the way the kubelet
//     does (envFrom first, env overriding it, $(VAR) expanded), reading
//     ConfigMaps and Secrets as the user.
//   - MountPlan groups planned files by the directory they are mounted at,
//     one read-only tmpfs per directory, a single bind for a subPath file.
//
// The user's RBAC is the rule: nothing here asks the agent, so a
// port-forward is never a way around it. A Secret, ConfigMap, token or
// node the API refuses (403) is a Denied note naming the verb, the
// resource and the namespace, and everything else still works; a missing
// optional source is skipped silently, a missing required one is a note;
// any other API error is returned, wrapped.
//
// What is not reproduced: the kubelet's ..data symlink layout (files are
// plain files), updates after Read (a caller that runs longer than
// Plan.TokenTTL must Read again, as detour run does at 80 % of it), an
// empty directory for a volume with no files, subPathExpr, the
// service-link variables (FOO_SERVICE_HOST, KUBERNETES_SERVICE_*) and
// fileKeyRef variables.
package podfiles
