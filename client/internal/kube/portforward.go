package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// ErrLostConnectionToPod is returned by reads and writes once the
// port-forward to the pod is gone.
var ErrLostConnectionToPod = errors.New("lost connection to pod")

// ErrPortForwardForbidden is returned by DialPod when the API server refuses
// the port-forward: the user lacks create on pods/portforward.
var ErrPortForwardForbidden = errors.New("not allowed to port-forward")

var requestIDs atomic.Int64

// TransportEnv names the variable that, set to "websocket", makes
// port-forwards try WebSocket first (kubectl's order) instead of SPDY.
const TransportEnv = "DETOUR_PORT_FORWARD"

// DialPod opens one port-forward stream to port inside the pod: the path
// `kubectl port-forward` uses, but without a local listener, so nothing
// else on the workstation can use it. The result is the pod-side
// connection to 127.0.0.1:port.
func DialPod(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, namespace, pod string, port uint16) (io.ReadWriteCloser, error) {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward")
	dialer, err := podDialer(cfg, req.URL())
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	}
	conn, err := connect(ctx, dialer, namespace)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	}
	errorStream, dataStream, err := openStreams(conn, port)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	}
	return newPodStream(conn, errorStream, dataStream, fmt.Sprintf("%s/%s:%d", namespace, pod, port)), nil
}

// connect dials the port-forward connection, giving up when ctx ends (a
// connection that arrives after that is closed). A refusal by RBAC says
// what the user lacks and how to check.
func connect(ctx context.Context, dialer httpstream.Dialer, namespace string) (httpstream.Connection, error) {
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && forbidden(r.err) {
			return nil, fmt.Errorf("%w: you lack create on pods/portforward in namespace %s: ask your cluster admin for it (check with `kubectl auth can-i create pods/portforward -n %s`): %w",
				ErrPortForwardForbidden, namespace, namespace, r.err)
		}
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// openStreams opens the pair of streams one port-forward request is made
// of: the error stream (read only: the kubelet writes a message on it if
// its dial to the port fails) and the data stream. Both are asked for at
// once: each CreateStream waits for the kubelet's reply, a round trip
// through the API server, the kubelet and the container runtime, and the
// kubelet pairs the two by request ID in whichever order they come.
func openStreams(conn httpstream.Connection, port uint16) (errorStream, dataStream httpstream.Stream, err error) {
	id := strconv.FormatInt(requestIDs.Add(1), 10)
	headers := func(streamType string) http.Header {
		h := http.Header{}
		h.Set(corev1.StreamType, streamType)
		h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
		h.Set(corev1.PortForwardRequestIDHeader, id)
		return h
	}
	var errorErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if errorStream, errorErr = conn.CreateStream(headers(corev1.StreamTypeError)); errorErr == nil {
			errorStream.Close() // we never write to the error stream
		}
	})
	dataStream, err = conn.CreateStream(headers(corev1.StreamTypeData))
	wg.Wait()
	switch {
	case errorErr != nil:
		if err == nil {
			dataStream.Reset()
		}
		return nil, nil, fmt.Errorf("create error stream: %w", errorErr)
	case err != nil:
		errorStream.Reset()
		return nil, nil, fmt.Errorf("create data stream: %w", err)
	}
	return errorStream, dataStream, nil
}

// newPodStream wraps the data stream; it fails with ErrLostConnectionToPod
// once the kubelet reports an error or the connection closes.
func newPodStream(conn httpstream.Connection, errorStream, dataStream httpstream.Stream, where string) *podStream {
	s := &podStream{conn: conn, data: dataStream, where: where, errRead: make(chan struct{})}
	go func() {
		defer close(s.errRead)
		msg, _ := io.ReadAll(errorStream)
		if len(msg) > 0 {
			s.fail(fmt.Errorf("%w %s: %s", ErrLostConnectionToPod, s.where, msg))
		}
	}()
	go func() {
		<-conn.CloseChan()
		s.fail(fmt.Errorf("%w %s: port-forward connection closed", ErrLostConnectionToPod, s.where))
	}()
	return s
}

// podDialer opens port-forwards over plain SPDY first and over SPDY in
// WebSocket frames when the SPDY upgrade is refused on the way (a proxy
// or gateway that passes only WebSocket upgrades). kubectl tries WebSocket
// first; detour measured both on the same pod, interleaved
// (tests/e2e BenchmarkPortForwardTransport, docs/benchmarks.md): WebSocket
// served 0.75× the keep-alive requests per second of SPDY, bulk the same —
// each small write costs a WebSocket frame on top of SPDY's.
//
// $DETOUR_PORT_FORWARD=websocket turns the order round.
func podDialer(cfg *rest.Config, u *url.URL) (httpstream.Dialer, error) {
	transport, upgrader, err := spdyRoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	if err != nil {
		return spdyDialer, nil
	}
	if os.Getenv(TransportEnv) == "websocket" {
		// WebSocket first, as kubectl does (for comparison and for a
		// way that fails SPDY slowly rather than refusing it).
		return &fallbackDialer{first: ws, second: spdyDialer, names: [2]string{"WebSocket", "SPDY"}, retry: func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || httpstream.IsUpgradeFailure(err) ||
				streamhttp.IsHTTPSProxyError(err) || httpstream.IsHTTPSProxyError(err)
		}}, nil
	}
	// client-go's SPDY dialer reports a refused upgrade as a plain error
	// ("unable to upgrade connection: …"), so any failure but a refusal by
	// RBAC (which WebSocket would meet too: both need create on
	// pods/portforward) tries WebSocket.
	return &fallbackDialer{first: spdyDialer, second: ws, names: [2]string{"SPDY", "WebSocket"}, retry: func(err error) bool { return !forbidden(err) }}, nil
}

// fallbackDialer dials second when first fails in a way retry accepts.
// client-go's portforward.FallbackDialer does the same but returns only
// the second error, hiding why the first way failed (a proxy's reason);
// this one keeps both.
type fallbackDialer struct {
	first, second httpstream.Dialer
	names         [2]string
	retry         func(error) bool
}

func (d *fallbackDialer) Dial(protocols ...string) (httpstream.Connection, string, error) {
	conn, proto, err := d.first.Dial(protocols...)
	if err == nil || !d.retry(err) {
		return conn, proto, err
	}
	conn, proto, err2 := d.second.Dial(protocols...)
	if err2 != nil {
		return nil, "", fmt.Errorf("over %s: %w; over %s: %w", d.names[0], err, d.names[1], err2)
	}
	return conn, proto, nil
}

// forbidden says whether a port-forward dial failed because the API server
// refused it (403). The WebSocket dialer keeps the API's status; the SPDY
// dialer keeps only its message ("… is forbidden: User …").
func forbidden(err error) bool {
	if apierrors.IsForbidden(err) {
		return true
	}
	var su *streamhttp.UpgradeFailureError
	if errors.As(err, &su) && apierrors.IsForbidden(su.Cause) {
		return true
	}
	var au *httpstream.UpgradeFailureError
	if errors.As(err, &au) && apierrors.IsForbidden(au.Cause) {
		return true
	}
	return strings.Contains(err.Error(), " is forbidden: ")
}

// podStream is the data stream of one port-forward; closing it closes the
// whole port-forward connection.
type podStream struct {
	conn  httpstream.Connection
	data  httpstream.Stream
	where string

	mu      sync.Mutex
	err     error
	once    sync.Once
	errRead chan struct{} // closed once the error stream has been read
}

func (s *podStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	_ = s.Close()
}

// wrap prefers the kubelet's own message (e.g. nothing listens on the port)
// to the bare EOF the data stream shows when the kubelet gives up; the
// error stream may trail the data stream by a moment, so EOF waits for it.
func (s *podStream) wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		select {
		case <-s.errRead:
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	return err
}

func (s *podStream) Read(p []byte) (int, error) {
	n, err := s.data.Read(p)
	return n, s.wrap(err)
}

func (s *podStream) Write(p []byte) (int, error) {
	n, err := s.data.Write(p)
	return n, s.wrap(err)
}

func (s *podStream) Close() error {
	s.once.Do(func() {
		_ = s.data.Reset()
		_ = s.conn.Close()
	})
	return nil
}
