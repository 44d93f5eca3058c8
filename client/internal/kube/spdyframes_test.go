package kube

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/moby/spdystream/spdy"
	"k8s.io/apimachinery/pkg/util/httpstream"
	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
)

// recordingConn records each Write to it.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

// splitFrames cuts a SPDY byte stream into its frames.
func splitFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var frames [][]byte
	for len(b) > 0 {
		if len(b) < spdyHeaderLen {
			t.Fatalf("%d bytes left: not a frame", len(b))
		}
		n := spdyHeaderLen + int(binary.BigEndian.Uint32(b[4:8])&0xffffff)
		frames = append(frames, b[:n])
		b = b[n:]
	}
	return frames
}

// TestSPDYFrameConnWritesEachFrameOnce: spdystream's framer writes a data
// frame in three writes and a control frame in more; through spdyFrameConn
// each frame up to maxFrameCopy reaches the connection as one write, bytes
// unchanged, and a longer one as its header and then its body.
func TestSPDYFrameConnWritesEachFrameOnce(t *testing.T) {
	frames := []spdy.Frame{
		&spdy.SynStreamFrame{StreamId: 1, Headers: http.Header{"Streamtype": {"data"}}}, // one key: the framer writes a header map in random order
		&spdy.DataFrame{StreamId: 1, Data: bytes.Repeat([]byte{1}, 12)},
		&spdy.DataFrame{StreamId: 1, Data: bytes.Repeat([]byte{2}, 1000)},
		&spdy.PingFrame{Id: 7},
		&spdy.DataFrame{StreamId: 1, Flags: spdy.DataFlagFin},
		&spdy.DataFrame{StreamId: 3, Data: bytes.Repeat([]byte{3}, maxFrameCopy+100)},
		&spdy.WindowUpdateFrame{StreamId: 1, DeltaWindowSize: 4096},
	}
	var want bytes.Buffer
	ref, err := spdy.NewFramer(&want, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{}
	c := newSPDYFrameConn(rec)
	got, err := spdy.NewFramer(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := ref.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		if err := got.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	wantFrames := splitFrames(t, want.Bytes())
	if len(wantFrames) != len(frames) {
		t.Fatalf("reference has %d frames, want %d", len(wantFrames), len(frames))
	}
	var expect [][]byte
	for _, f := range wantFrames {
		if len(f) > maxFrameCopy {
			expect = append(expect, f[:spdyHeaderLen], f[spdyHeaderLen:])
			continue
		}
		expect = append(expect, f)
	}
	if len(rec.writes) != len(expect) {
		t.Fatalf("%d writes reached the connection, want %d (one per frame)", len(rec.writes), len(expect))
	}
	for i := range expect {
		if !bytes.Equal(rec.writes[i], expect[i]) {
			t.Fatalf("write %d: %d bytes differ from the frame's %d", i, len(rec.writes[i]), len(expect[i]))
		}
	}
}

// TestPodDialerSPDYRoundTrip: a port-forward over the framed SPDY
// connection works against apimachinery's SPDY server: a stream echoes.
func TestPodDialerSPDYRoundTrip(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpstream.HeaderProtocolVersion, portforward.PortForwardProtocolV1Name)
		conn := httpstreamspdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
			go func() {
				io.Copy(s, s)
				s.Close()
			}()
			return nil
		})
		if conn != nil {
			<-conn.CloseChan()
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/p/portforward")
	d, err := podDialer(&rest.Config{Host: srv.URL}, u)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := d.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	s, err := conn.CreateStream(http.Header{"Streamtype": {"data"}})
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("detour"), 30000) // past maxFrameCopy
	go s.Write(msg)
	got := make([]byte, len(msg))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s, got); done <- err }()
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %v, equal=%v", err, bytes.Equal(got, msg))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no echo in 10 s")
	}
}
