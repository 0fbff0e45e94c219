package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestServeFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no data", []string{}, "--data is required"},
		{"log format", []string{"--data", "x", "--log-format", "xml"}, "--log-format"},
		{"cache size", []string{"--data", "x", "--cache-dir", "d", "--cache-size", "lots"}, "--cache-size"},
		{"cache size without dir", []string{"--data", "x", "--cache-size", "1GiB"}, "needs --cache-dir"},
		{"empty loader addr", []string{"--data", "x", "--loader-addrs", "a:1,,b:2"}, "empty address"},
		{"zero window", []string{"--data", "x", "--window", "0"}, "must be positive"},
		{"unknown flag", []string{"--data", "x", "--bogus"}, "bogus"},
		{"extra args", []string{"--data", "x", "more"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := runServe(ctx, tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Fatalf("serve %q = %v (stderr %q), want an error naming %q", tt.args, err, stderr.String(), tt.want)
			}
			if code := exitCode(err); code != 2 {
				t.Errorf("exit code %d, want 2 (usage)", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing before serving", stdout.String())
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"512MiB", 512 << 20, true},
		{"20GiB", 20 << 30, true},
		{"3 KiB", 3 << 10, true},
		{"2GB", 2e9, true},
		{"7B", 7, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"lots", 0, false},
		{"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
