package main

import (
	"errors"
	"io"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
		check   func(options) bool
	}{
		{"defaults", nil, false, func(o options) bool {
			return o.addr == ":8443" && o.opsAddr == ":8081" && o.certs.SelfManaged && o.inject.AgentImage == "detour.local/detour:dev" && o.certCheckInterval == 10*time.Second && o.inject.AgentMaxIdle == 0
		}},
		{"cert-manager", []string{"--self-managed-certs=false", "--cert-secret", "issued"}, false, func(o options) bool {
			return !o.certs.SelfManaged && o.certs.SecretName == "issued"
		}},
		{"image and policy", []string{"--agent-image=r/x:1", "--agent-pull-policy=Always"}, false, func(o options) bool {
			return o.inject.AgentImage == "r/x:1" && o.inject.PullPolicy == "Always"
		}},
		{"agent max idle", []string{"--agent-max-idle=20s"}, false, func(o options) bool {
			return o.inject.AgentMaxIdle == 20*time.Second
		}},
		{"negative agent max idle", []string{"--agent-max-idle=-1s"}, true, nil},
		{"bad pull policy", []string{"--agent-pull-policy=Sometimes"}, true, nil},
		{"empty image", []string{"--agent-image="}, true, nil},
		{"cert outlives CA", []string{"--cert-validity=100h", "--ca-validity=10h"}, true, nil},
		{"stray argument", []string{"serve"}, true, nil},
		{"unknown flag", []string{"--nope"}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr {
				if !errors.Is(err, errUsage) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil || !tc.check(o) {
				t.Fatalf("err = %v, options %+v", err, o)
			}
		})
	}
}
