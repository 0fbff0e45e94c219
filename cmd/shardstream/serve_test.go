package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/worker"
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
		{"memory cache size", []string{"--data", "x", "--memory-cache-size", "1 lot"}, "--memory-cache-size"},
		{"zero fetch buffers", []string{"--data", "x", "--fetch-buffer-size", "0"}, "--fetch-buffer-size must be positive"},
		{"buffer pool size", []string{"--data", "x", "--buffer-pool-size", "-1"}, "--buffer-pool-size"},
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
		{"512k", 512 << 10, true}, {"2G", 2 << 30, true}, {"3m", 3 << 20, true}, {"8M", 8 << 20, true},
		{"k", 0, false}, {"-1k", 0, false}, {"1.5G", 0, false}, {"99999999999999999999k", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestServeInProcess runs the serve command in this process: it prints
// its address once serving, answers, and returns nil when its context ends.
func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	m := makeDataset(t, dir, 2, 10, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		err := runServe(sctx, []string{"--data", dir, "--listen", "127.0.0.1:0", "--log-format", "json"}, pw, &stderr)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the serve line: %v (stderr %s)", err, stderr.String())
	}
	go io.Copy(io.Discard, pr) // nothing more is expected; never block the server
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok {
		t.Fatalf("serve printed %q", line)
	}
	ds, err := pb.NewCoordinatorServiceClient(dial(t, addr)).GetDataset(ctx, &pb.GetDatasetRequest{Dataset: "default"})
	if err != nil || ds.Fingerprint != m.Fingerprint() {
		t.Fatalf("GetDataset = %v, %v; want fingerprint %s", ds, err, m.Fingerprint())
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after its context ended: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("serve did not return after its context ended")
	}
	if !strings.Contains(stderr.String(), `"msg":"serving"`) {
		t.Errorf("json log lacks the serving record: %s", stderr.String())
	}
}

// TestSetMemory: sizes reach the read path's Config, 0 turning a cache off
// (negative there), empty leaving the default.
func TestSetMemory(t *testing.T) {
	var cfg worker.Config
	if err := setMemory(&cfg, "0", "1GiB", ""); err != nil {
		t.Fatal(err)
	}
	if cfg.MemoryCacheBytes != -1 || cfg.FetchBufferBytes != 1<<30 || cfg.BufferPoolBytes != 0 {
		t.Errorf("memory cache %d, fetch buffers %d, buffer pool %d; want -1, 1GiB, 0", cfg.MemoryCacheBytes, cfg.FetchBufferBytes, cfg.BufferPoolBytes)
	}
	if err := setMemory(&cfg, "", "", "0"); err != nil || cfg.BufferPoolBytes != -1 || cfg.MemoryCacheBytes != -1 {
		t.Errorf("buffer pool 0: %d, %v; want -1 and the memory cache left at -1", cfg.BufferPoolBytes, err)
	}
}
