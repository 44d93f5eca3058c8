package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(handler("pod-a", nil))
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/x", "text/plain", strings.NewReader("ping-body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ping-body" || resp.Header.Get("X-Echo-Pod") != "pod-a" {
		t.Errorf("POST: body %q pod %q", b, resp.Header.Get("X-Echo-Pod"))
	}

	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello from pod-a\n" {
		t.Errorf("GET: %q", b)
	}
}

func TestTCPEcho(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveTCP(l)
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("raw bytes")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "raw bytes" {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

func TestNameserver(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	for conf, want := range map[string]string{
		"search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.215.0.10\noptions ndots:5\n": "10.215.0.10:53 udp",
		"nameserver 10.215.0.10\nnameserver 10.0.0.2\noptions ndots:5 use-vc\n":                                  "10.215.0.10:53 tcp",
	} {
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if server, network, err := nameserver(p); err != nil || server+" "+network != want {
			t.Errorf("nameserver(%q) = %s %s, %v; want %s", conf, server, network, err, want)
		}
	}
	if err := os.WriteFile(p, []byte("search x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nameserver(p); err == nil {
		t.Fatal("no error for a resolv.conf without nameserver")
	}
}
