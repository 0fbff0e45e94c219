package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// tmpPrefix marks files being written; List skips them.
const tmpPrefix = ".shardstream-tmp-"

// Local is a store over a local or mounted directory (Mountpoint for S3,
// FSx for Lustre, NFS). It has no ETags.
type Local struct {
	root string
}

// OpenLocal opens the directory root, which must exist.
func OpenLocal(root string) (*Local, error) {
	fi, err := os.Stat(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: %s: %w", root, ErrNotFound)
		}
		return nil, fmt.Errorf("store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store: %s is not a directory", root)
	}
	return &Local{root: root}, nil
}

func (l *Local) file(path string) (string, error) {
	if err := validPath(path); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(path)), nil
}

func notFound(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	return err
}

// ReadRange implements Store.
func (l *Local) ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error) {
	name, err := l.file(path)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return emptyBody, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, notFound(name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is a directory: %w", name, ErrNotFound)
	}
	n, err = checkRange(name, fi.Size(), off, n)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, n), f}, nil
}

// Stat implements Store.
func (l *Local) Stat(ctx context.Context, path string) (Info, error) {
	name, err := l.file(path)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(name)
	if err != nil {
		return Info{}, notFound(name, err)
	}
	if fi.IsDir() {
		return Info{}, fmt.Errorf("%s is a directory: %w", name, ErrNotFound)
	}
	return Info{Path: path, Size: fi.Size()}, nil
}

// Write implements Store: it writes a temporary file next to the target
// and renames it, so readers never see a partial object.
func (l *Local) Write(ctx context.Context, path string, r io.Reader) error {
	name, err := l.file(path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// List implements Store.
func (l *Local) List(ctx context.Context, prefix string) ([]Info, error) {
	var out []Info
	err := filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// Skip directories that cannot hold a match.
			if rel != "." && !strings.HasPrefix(rel+"/", prefix) && !strings.HasPrefix(prefix, rel+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(rel, prefix) || strings.HasPrefix(d.Name(), tmpPrefix) || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, Info{Path: rel, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/%s: %w", l.root, prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
