package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLSFiles names the PEM files of a server's TLS: its certificate chain and
// key, and for mutual TLS the CAs that sign client certificates.
type TLSFiles struct {
	Cert, Key string
	// ClientCA, when set, makes every client present a certificate signed
	// by one of these CAs (mutual TLS).
	ClientCA string
}

// NewTLSConfig loads files into a server TLS config that reloads them when
// they change: every handshake looks at the files' modification times and
// sizes (one stat each) and loads them again when one moved, so a rotated
// certificate (cert-manager rewrites the Secret's files) is served from
// the next connection on while open connections and their streams go on
// undisturbed. A rewrite that does not load (a key not matching its
// certificate, a half-written file) is logged and the last good files stay
// in use. It fails when the files do not load at first.
func NewTLSConfig(files TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS: want both a certificate and a key file")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	certs := &reloading[*tls.Certificate]{
		what:  "TLS certificate",
		files: []string{files.Cert, files.Key},
		log:   log,
		load: func() (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(files.Cert, files.Key)
			if err != nil {
				return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", files.Cert, files.Key, err)
			}
			return &c, nil
		},
	}
	if _, err := certs.get(); err != nil {
		return nil, err
	}
	var cas *reloading[*x509.CertPool]
	if files.ClientCA != "" {
		cas = &reloading[*x509.CertPool]{
			what:  "client CA",
			files: []string{files.ClientCA},
			log:   log,
			load:  func() (*x509.CertPool, error) { return loadCAs(files.ClientCA) },
		}
		if _, err := cas.get(); err != nil {
			return nil, err
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := certs.get()
			if err != nil {
				return nil, err
			}
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{"h2"}, // gRPC's ALPN: clients refuse a server without it
			}
			if cas != nil {
				pool, err := cas.get()
				if err != nil {
					return nil, err
				}
				c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}, nil
}

// loadCAs reads a PEM bundle of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("load CA certificates %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// reloading is a value loaded from files, loaded again when one of them
// changes (modification time or size). When a reload fails it keeps the
// last good value and logs why, once per change of the files.
type reloading[T any] struct {
	what  string
	files []string
	load  func() (T, error)
	log   *slog.Logger

	mu    sync.Mutex
	stamp []fileStamp // of the files when val was loaded, or when loading last failed
	val   T
	ok    bool // val was loaded once
}

// fileStamp is what tells a rewritten file: its modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

// get returns the value, loading it again first when the files changed.
func (r *reloading[T]) get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := make([]fileStamp, len(r.files))
	for i, f := range r.files {
		if fi, err := os.Stat(f); err == nil {
			stamp[i] = fileStamp{fi.ModTime(), fi.Size()}
		}
	}
	if r.ok && equalStamps(stamp, r.stamp) {
		return r.val, nil
	}
	changed := !equalStamps(stamp, r.stamp)
	r.stamp = stamp
	v, err := r.load()
	switch {
	case err == nil:
		if r.ok {
			r.log.Info("reloaded "+r.what, "files", r.files)
		}
		r.val, r.ok = v, true
	case r.ok:
		if changed {
			r.log.Error("reload "+r.what+": keeping the last good one", "err", err)
		}
	default:
		return r.val, err
	}
	return r.val, nil
}

func equalStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}
