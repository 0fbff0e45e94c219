// Package memstore is an in-memory store.Store for tests and embedding. Its
// ETags are MD5s of the content, like S3's for single-part uploads.
package memstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/shardstream/shardstream/store"
)

// Store is an in-memory store. Safe for concurrent use.
type Store struct {
	mu   sync.RWMutex
	objs map[string]memObject
}

type memObject struct {
	data []byte
	etag string
}

var _ store.Store = (*Store)(nil)

// New returns an empty in-memory store.
func New() *Store { return &Store{objs: make(map[string]memObject)} }

func (m *Store) get(path string) (memObject, error) {
	if err := store.ValidPath(path); err != nil {
		return memObject{}, err
	}
	m.mu.RLock()
	o, ok := m.objs[path]
	m.mu.RUnlock()
	if !ok {
		return memObject{}, fmt.Errorf("mem://%s: %w", path, store.ErrNotFound)
	}
	return o, nil
}

// ReadRange implements store.Store.
func (m *Store) ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		if err := store.ValidPath(path); err != nil {
			return nil, err
		}
		return store.EmptyBody, nil
	}
	o, err := m.get(path)
	if err != nil {
		return nil, err
	}
	n, err = store.CheckRange("mem://"+path, int64(len(o.data)), off, n)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(o.data[off : off+n])), nil
}

// ReadRangeIfMatch implements store.IfMatcher.
func (m *Store) ReadRangeIfMatch(ctx context.Context, path string, off, n int64, etag string) (io.ReadCloser, error) {
	if etag != "" {
		if o, err := m.get(path); err == nil && o.etag != etag {
			return nil, fmt.Errorf("read mem://%s: ETag %s, want %s: %w", path, o.etag, etag, store.ErrChanged)
		}
	}
	return m.ReadRange(ctx, path, off, n)
}

// Stat implements store.Store.
func (m *Store) Stat(ctx context.Context, path string) (store.Info, error) {
	o, err := m.get(path)
	if err != nil {
		return store.Info{}, err
	}
	return store.Info{Path: path, Size: int64(len(o.data)), ETag: o.etag}, nil
}

// Write implements store.Store.
func (m *Store) Write(ctx context.Context, path string, r io.Reader) error {
	if err := store.ValidPath(path); err != nil {
		return err
	}
	data, err := io.ReadAll(store.ContextReader(ctx, r))
	if err != nil {
		return fmt.Errorf("write mem://%s: %w", path, err)
	}
	sum := md5.Sum(data)
	m.mu.Lock()
	m.objs[path] = memObject{data: data, etag: hex.EncodeToString(sum[:])}
	m.mu.Unlock()
	return nil
}

// List implements store.Store.
func (m *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	m.mu.RLock()
	var out []store.Info
	for p, o := range m.objs {
		if strings.HasPrefix(p, prefix) {
			out = append(out, store.Info{Path: p, Size: int64(len(o.data)), ETag: o.etag})
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
