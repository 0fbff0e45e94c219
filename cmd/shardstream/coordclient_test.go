package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCoordClientFlags(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    coordClientFlags
		want string // "" for no error
	}{
		{coordClientFlags{}, ""},
		{coordClientFlags{tokenFile: token}, "never sent in plaintext"},
		{coordClientFlags{ca: filepath.Join(dir, "missing")}, "--coordinator-ca"},
		{coordClientFlags{ca: notPEM}, "no PEM certificate"},
	} {
		opts, err := tc.f.dialOptions("", "")
		switch {
		case tc.want == "" && (err != nil || len(opts) == 0):
			t.Errorf("%+v: %v, want dial options", tc.f, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error naming %q", tc.f, err, tc.want)
		}
	}
}
