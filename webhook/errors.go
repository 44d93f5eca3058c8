package webhook

import "errors"

// Sentinel errors. Injection errors never block a pod: the webhook admits it
// without the agent and says why in a warning.
var (
	// ErrNoPorts: neither the annotations nor the pod's Services name a port
	// the agent could intercept.
	ErrNoPorts = errors.New("no port to intercept")
	// ErrNoContainer: detour.dev/container names no container of the pod.
	ErrNoContainer = errors.New("no such container")
	// ErrBadPortsAnnotation: detour.dev/ports holds something that is not a
	// container port name or number of the chosen container.
	ErrBadPortsAnnotation = errors.New("bad detour.dev/ports annotation")
	// ErrPortConflict: the app uses a port the agent needs.
	ErrPortConflict = errors.New("port used by both the app and the agent")

	// ErrNotPod: the request is not for a pod.
	ErrNotPod = errors.New("not a pod")
	// ErrBadRequest: the HTTP request is not a usable admission/v1 review.
	ErrBadRequest = errors.New("bad admission request")
	// ErrNoCertificate: no serving certificate is loaded yet.
	ErrNoCertificate = errors.New("no serving certificate loaded yet")
	// ErrBadSecret: the certificate Secret lacks a key or holds bad PEM.
	ErrBadSecret = errors.New("bad certificate secret")
)
