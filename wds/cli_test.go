package wds

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/memstore"
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
	st := memstore.New()
	if err := st.Write(ctx, "cli.tar.zst", bytes.NewReader(z)); err != nil {
		t.Fatal(err)
	}
	_, got = indexAndDecode(t, ctx, st, "cli.tar.zst", 0)
	if diff := diffSamples(want, got); diff != "" {
		t.Fatalf("zstd -c shard: %s", diff)
	}
}

// TestTarCLI: shards made by the tar tool (GNU and PAX formats, a long
// path, directories, a blocking factor's padding) index and decode.
func TestTarCLI(t *testing.T) {
	bin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("tar not on PATH")
	}
	dir := t.TempDir()
	long := strings.Repeat("long-directory/", 10)
	want := map[string]string{}
	for i := range 30 {
		key := fmt.Sprintf("set/%ss%03d", long[:15*(i%10)], i)
		for _, f := range []string{"jpg", "seg.png"} {
			p := filepath.Join(dir, "src", filepath.FromSlash(key+"."+f))
			os.MkdirAll(filepath.Dir(p), 0o755)
			body := strings.Repeat(key+f, 1+i)
			os.WriteFile(p, []byte(body), 0o644)
			want[key+"|"+f] = body
		}
	}
	ctx := testContext(t)
	st := memstore.New()
	for _, format := range []string{"gnu", "pax"} {
		out, err := exec.Command(bin, "-C", filepath.Join(dir, "src"), "--sort=name", "--format="+format, "-cf", "-", "set").Output()
		if err != nil {
			t.Skipf("%s cannot write --format=%s --sort=name: %v", bin, format, err)
		}
		path := format + ".tar"
		st.Write(ctx, path, bytes.NewReader(out))
		_, samples := indexAndDecode(t, ctx, st, path, 4096)
		got := map[string]string{}
		for _, s := range samples {
			for _, f := range s.Fields {
				got[s.Key+"|"+f.Name] = string(f.Data)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tar --format=%s: fields differ (-want +got):\n%s", format, diff)
		}
	}
}
