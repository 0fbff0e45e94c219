// Package filestore is a store.Store over a local or mounted directory
// (Mountpoint for S3, FSx for Lustre, NFS). Writes go to a temporary file
// renamed into place, so readers never see half an object. It has no ETags;
// instead each read checks that the file is the one this Store first read
// under that path (same size, modification time and inode): a file
// rewritten in place or replaced by a rename, even with the same size,
// fails every later read with an error wrapping store.ErrChanged, which
// the read path turns into FAILED_PRECONDITION, as S3's If-Match does.
package filestore

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
	"sync"
	"time"

	"github.com/shardstream/shardstream/store"
)

// tmpPrefix marks files being written; List skips them.
const tmpPrefix = ".shardstream-tmp-"

// Store is a store over a local or mounted directory.
type Store struct {
	root string
	// seen is each path's file as this Store first read it (path →
	// fileID): one small entry per shard read, as the manifest holds one
	// per shard anyway.
	seen sync.Map
}

// fileID is what tells one version of a file from another without
// reading it: a rewrite in place moves the modification time (and usually
// the size), a replace by rename changes the inode.
type fileID struct {
	size, mtime int64 // bytes; nanoseconds since the epoch
	dev, ino    uint64
}

func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	id.dev, id.ino = inode(fi)
	return id
}

// check compares the file just opened under name with the first one read
// there.
func (l *Store) check(path, name string, fi fs.FileInfo) error {
	id := idOf(fi)
	first, loaded := l.seen.LoadOrStore(path, id)
	if !loaded {
		return nil
	}
	was := first.(fileID)
	switch {
	case id == was:
		return nil
	case id.size != was.size:
		return fmt.Errorf("read %s: %d bytes, %d when first read: %w", name, id.size, was.size, store.ErrChanged)
	case id.mtime != was.mtime:
		return fmt.Errorf("read %s: modified at %v, %v when first read: %w", name, fi.ModTime().UTC(), time.Unix(0, was.mtime).UTC(), store.ErrChanged)
	}
	return fmt.Errorf("read %s: replaced (inode %d, %d when first read): %w", name, id.ino, was.ino, store.ErrChanged)
}

var _ store.Store = (*Store)(nil)

// Open opens the directory root, which must exist.
func Open(root string) (*Store, error) {
	fi, err := os.Stat(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: %s: %w", root, store.ErrNotFound)
		}
		return nil, fmt.Errorf("store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store: %s is not a directory", root)
	}
	return &Store{root: root}, nil
}

func (l *Store) file(path string) (string, error) {
	if err := store.ValidPath(path); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(path)), nil
}

func notFound(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, store.ErrNotFound)
	}
	return err
}

// ReadRange implements store.Store.
func (l *Store) ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error) {
	name, err := l.file(path)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return store.EmptyBody, nil
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
		return nil, fmt.Errorf("%s is a directory: %w", name, store.ErrNotFound)
	}
	if err := l.check(path, name, fi); err != nil {
		f.Close()
		return nil, err
	}
	n, err = store.CheckRange(name, fi.Size(), off, n)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, n), f}, nil
}

// Stat implements store.Store.
func (l *Store) Stat(ctx context.Context, path string) (store.Info, error) {
	name, err := l.file(path)
	if err != nil {
		return store.Info{}, err
	}
	fi, err := os.Stat(name)
	if err != nil {
		return store.Info{}, notFound(name, err)
	}
	if fi.IsDir() {
		return store.Info{}, fmt.Errorf("%s is a directory: %w", name, store.ErrNotFound)
	}
	return store.Info{Path: path, Size: fi.Size()}, nil
}

// Write implements store.Store: it writes a temporary file next to the target
// and renames it, so readers never see a partial object.
func (l *Store) Write(ctx context.Context, path string, r io.Reader) error {
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
	_, err = io.Copy(f, store.ContextReader(ctx, r))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	// This Store's own write is a new version it may read, not a change
	// under a reader (pack writes, then reads back).
	l.seen.Delete(path)
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// List implements store.Store.
func (l *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	var out []store.Info
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
		out = append(out, store.Info{Path: rel, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/%s: %w", l.root, prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
