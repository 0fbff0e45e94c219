package wds

import (
	"archive/tar"
	"bytes"
	"os/exec"
	"testing"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/worker/store"
)

// TestZstdCLI: the reference zstd tool decodes a written shard (frames
// and seek table), and a shard it compressed indexes and decodes.
func TestZstdCLI(t *testing.T) {
	bin, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("zstd not on PATH")
	}
	samples := testSamples(150, 31)
	data, sh := writeShard(t, samples, manifest.CompressionZstd, 20_000)
	cmd := exec.Command(bin, "-d", "-c", "-q")
	cmd.Stdin = bytes.NewReader(data)
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd -d of a shard of %d frames: %v", len(sh.Chunks), err)
	}
	got, err := ParseTar(raw, 0, int64(len(samples)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffSamples(samples, got); diff != "" {
		t.Fatalf("zstd -d: %s", diff)
	}

	ctx := testContext(t)
	plain, want := foreignTar(t, tar.FormatGNU, 100)
	cmd = exec.Command(bin, "-c", "-q", "-3")
	cmd.Stdin = bytes.NewReader(plain)
	z, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewMem()
	if err := st.Write(ctx, "cli.tar.zst", bytes.NewReader(z)); err != nil {
		t.Fatal(err)
	}
	_, got = indexAndDecode(t, ctx, st, "cli.tar.zst", 0)
	if diff := diffSamples(want, got); diff != "" {
		t.Fatalf("zstd -c shard: %s", diff)
	}
}
