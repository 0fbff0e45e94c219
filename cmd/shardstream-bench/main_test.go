package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunHelp: help exits 0 and shows a command's flags; an unknown
// command is a usage error (exit 2).
func TestRunHelp(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		wantStderr string
	}{
		{[]string{"help"}, 0, "commands:"},
		{[]string{"help", "read"}, 0, "-pass"},
		{[]string{"help", "epoch"}, 0, "-caches"},
		{[]string{"help", "fanin"}, 0, "-rate"},
		{[]string{"help", "NOSUCHCOMMAND"}, 2, "commands:"},
		{[]string{"NOSUCHCOMMAND"}, 2, "commands:"},
		{nil, 2, "commands:"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		err := run(context.Background(), tt.args, &bytes.Buffer{}, &stderr)
		code := 0
		if err != nil {
			code = exitCode(err)
		}
		if code != tt.code || !strings.Contains(stderr.String(), tt.wantStderr) {
			t.Errorf("shardstream-bench %q: exit %d (err %v), stderr %q; want exit %d and %q", tt.args, code, err, stderr.String(), tt.code, tt.wantStderr)
		}
	}
}
