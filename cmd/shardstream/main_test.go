package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunHelp: help and usage errors, with the exit code main would use
// (0 for a nil error).
func TestRunHelp(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		wantErr    string // in the error; "" for none
		wantStderr string
	}{
		{[]string{"help"}, 0, "", "commands:"},
		{[]string{"-h"}, 0, "", "commands:"},
		{[]string{"help", "serve"}, 0, "", "-shutdown-timeout"},
		{[]string{"help", "pack"}, 0, "", "-shard-size"},
		{[]string{"help", "NOSUCHCOMMAND"}, 2, `unknown command "NOSUCHCOMMAND"`, "commands:"},
		{[]string{"help", "serve", "pack"}, 2, "want one command", "commands:"},
		{[]string{"help", "bench-read"}, 2, "shardstream-bench read", ""},
		{[]string{"bench-read"}, 2, "make bench-read", ""},
		{[]string{"NOSUCHCOMMAND"}, 2, `unknown command "NOSUCHCOMMAND"`, "commands:"},
		{nil, 2, "no command given", "commands:"},
		{[]string{"serve", "-h"}, 2, "help requested", "-shutdown-timeout"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stdout, stderr bytes.Buffer
		err := run(ctx, tt.args, &stdout, &stderr)
		cancel()
		code := 0
		if err != nil {
			code = exitCode(err)
		}
		if code != tt.code {
			t.Errorf("shardstream %q: exit %d (err %v), want %d", tt.args, code, err, tt.code)
		}
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("shardstream %q: err %v, want one naming %q", tt.args, err, tt.wantErr)
		}
		if !strings.Contains(stderr.String(), tt.wantStderr) {
			t.Errorf("shardstream %q: stderr %q, want it to hold %q", tt.args, stderr.String(), tt.wantStderr)
		}
		if strings.Contains(stderr.String(), "bench-read ") {
			t.Errorf("shardstream %q: usage lists bench-read, which is not in this binary:\n%s", tt.args, stderr.String())
		}
	}
}
