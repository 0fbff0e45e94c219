package worker

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// diskCache keeps fetched chunk bytes in files under dir, LRU by access,
// bounded by max bytes. Each file starts with a header holding the
// payload's length and CRC-32C, so a torn or bit-rotted entry is detected,
// removed and fetched again rather than decoded.
type diskCache struct {
	dir string
	max int64

	mu      sync.Mutex
	size    int64
	lru     list.List // of *diskEntry, most recent first
	entries map[string]*list.Element
}

type diskEntry struct {
	name string
	size int64 // file size, header included
}

const (
	diskMagic     = "SSC1"
	diskHeaderLen = 16 // magic, crc32c, length
	diskSuffix    = ".chunk"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openDiskCache opens (creating it if needed) the cache at dir and indexes
// what an earlier process left there, oldest modification first out.
func openDiskCache(dir string, max int64) (*diskCache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	type found struct {
		name  string
		size  int64
		mtime time.Time
	}
	var files []found
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") { // a write cut short by a crash
			os.Remove(filepath.Join(dir, name))
			continue
		}
		if !strings.HasSuffix(name, diskSuffix) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		files = append(files, found{name, fi.Size(), fi.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mtime.After(files[j].mtime) })
	c := &diskCache{dir: dir, max: max, entries: make(map[string]*list.Element)}
	for _, f := range files {
		c.entries[f.name] = c.lru.PushBack(&diskEntry{f.name, f.size})
		c.size += f.size
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

// get fills buf with the entry named key if it is there, whole and of
// len(buf) bytes. A bad entry is removed and reported as corrupt.
func (c *diskCache) get(key string, buf []byte) (hit, corrupt bool) {
	name := key + diskSuffix
	c.mu.Lock()
	el, ok := c.entries[name]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return false, false
	}
	path := filepath.Join(c.dir, name)
	f, err := os.Open(path)
	if err != nil {
		c.drop(name, errors.Is(err, fs.ErrNotExist))
		return false, false
	}
	defer f.Close()
	var hdr [diskHeaderLen]byte
	_, err = f.ReadAt(hdr[:], 0)
	good := err == nil && string(hdr[:4]) == diskMagic &&
		binary.LittleEndian.Uint64(hdr[8:]) == uint64(len(buf))
	if fi, serr := f.Stat(); serr != nil || fi.Size() != int64(diskHeaderLen+len(buf)) {
		good = false // torn, or grown by something else
	}
	if good {
		var n int
		n, err = f.ReadAt(buf, diskHeaderLen)
		good = err == nil && n == len(buf) && crc32.Checksum(buf, castagnoli) == binary.LittleEndian.Uint32(hdr[4:8])
	}
	if !good {
		c.drop(name, true)
		return false, true
	}
	now := time.Now()
	os.Chtimes(path, now, now) // keeps the LRU order across restarts; best effort
	return true, false
}

// drop forgets an entry, removing its file.
func (c *diskCache) drop(name string, remove bool) {
	c.mu.Lock()
	if el, ok := c.entries[name]; ok {
		c.size -= el.Value.(*diskEntry).size
		c.lru.Remove(el)
		delete(c.entries, name)
	}
	c.mu.Unlock()
	if remove {
		os.Remove(filepath.Join(c.dir, name))
	}
}

// put stores data under key, atomically (a temporary file renamed), then
// evicts the least recently used entries over the bound. Failures only
// cost a later refetch, so they are returned for logging, not acted on.
func (c *diskCache) put(key string, data []byte) error {
	size := int64(diskHeaderLen + len(data))
	if size > c.max {
		return nil
	}
	name := key + diskSuffix
	f, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return err
	}
	var hdr [diskHeaderLen]byte
	copy(hdr[:], diskMagic)
	binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(data, castagnoli))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(data)))
	_, err = f.Write(hdr[:])
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(c.dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("disk cache: put %s: %w", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[name]; ok { // replaced an entry: same name, new file
		c.size -= el.Value.(*diskEntry).size
		c.lru.Remove(el)
	}
	c.entries[name] = c.lru.PushFront(&diskEntry{name, size})
	c.size += size
	c.evictLocked()
	return nil
}

func (c *diskCache) evictLocked() {
	for c.size > c.max {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*diskEntry)
		c.lru.Remove(el)
		delete(c.entries, e.name)
		c.size -= e.size
		os.Remove(filepath.Join(c.dir, e.name))
	}
}
