package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDiskCacheEntry: whatever bytes a cache file holds, get neither
// panics nor returns bytes other than those put.
func FuzzDiskCacheEntry(f *testing.F) {
	good := func(data []byte) []byte {
		dir := f.TempDir()
		c, err := openDiskCache(dir, 1<<20)
		if err != nil {
			f.Fatal(err)
		}
		if err := c.put("k", data); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "k"+diskSuffix))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(good([]byte("hello chunk")), 11)
	f.Add(good(nil), 0)
	f.Add([]byte("SSC1"), 0)
	f.Add(append(good([]byte("hello chunk")), 'x'), 11)
	f.Fuzz(func(t *testing.T, file []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "k"+diskSuffix), file, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := openDiskCache(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		hit, corrupt := c.get("k", buf)
		if hit && corrupt {
			t.Fatal("both hit and corrupt")
		}
		if hit && (len(file) != diskHeaderLen+n || !bytes.Equal(buf, file[diskHeaderLen:])) {
			t.Fatalf("hit on a file of %d bytes for %d bytes of payload, or wrong bytes", len(file), n)
		}
		if corrupt {
			if _, err := os.Stat(filepath.Join(dir, "k"+diskSuffix)); !os.IsNotExist(err) {
				t.Error("corrupt entry not removed")
			}
		}
	})
}
