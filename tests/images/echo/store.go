package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"
)

// store reads one key from an etcd through its HTTP/JSON gateway (the
// grpc-gateway etcd serves on its client port: POST /v3/kv/range and
// /v3/kv/put, keys and values base64): no etcd client library needed.
type store struct {
	url, key string
	c        *http.Client
}

// newStore returns nil when url is empty: the server answers without a
// store, as before.
func newStore(url, key string) *store {
	if url == "" {
		return nil
	}
	return &store{url: strings.TrimSuffix(url, "/"), key: key, c: &http.Client{Timeout: 3 * time.Second}}
}

// says is what the answer shows: the value, or why there is none.
func (s *store) says(ctx context.Context) string {
	v, found, err := s.get(ctx)
	switch {
	case err != nil:
		return "error: " + err.Error()
	case !found:
		return fmt.Sprintf("(nothing under %q yet)", s.key)
	}
	return v
}

type kv struct {
	Key   []byte `json:"key"` // []byte: encoding/json speaks base64, as the gateway does
	Value []byte `json:"value,omitempty"`
}

// get reads the key: its value, and whether the store has it.
func (s *store) get(ctx context.Context) (string, bool, error) {
	var res struct {
		KVs []kv `json:"kvs"`
	}
	if err := s.call(ctx, "/v3/kv/range", kv{Key: []byte(s.key)}, &res); err != nil {
		return "", false, err
	}
	if len(res.KVs) == 0 {
		return "", false, nil
	}
	return string(res.KVs[0].Value), true, nil
}

// put writes key=value.
func (s *store) put(ctx context.Context, key, value string) error {
	return s.call(ctx, "/v3/kv/put", kv{Key: []byte(key), Value: []byte(value)}, nil)
}

// call POSTs req as JSON to the gateway and decodes its answer into res.
func (s *store) call(ctx context.Context, path string, req, res any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := s.c.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	if res == nil {
		return nil
	}
	if err := json.Unmarshal(b, res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// putRetrying is the put client mode: the store may still be starting.
func putRetrying(url, key, value string, within time.Duration) error {
	s := newStore(url, key)
	deadline := time.Now().Add(within)
	for {
		err := s.put(context.Background(), key, value)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("put %s into %s: %w", key, url, err)
		}
		log.Printf("put %s into %s: %v (retrying)", key, url, err)
		time.Sleep(time.Second)
	}
}
