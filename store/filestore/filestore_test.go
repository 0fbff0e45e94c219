package filestore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shardstream/shardstream/store/filestore"
	"github.com/shardstream/shardstream/store/storetest"
)

func TestConformance(t *testing.T) {
	s, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, s)
}

func TestOpenFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.Open(f); err == nil {
		t.Errorf("Open(%s), a file, succeeded", f)
	}
}
