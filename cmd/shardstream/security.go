package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/service"
)

// securityFlags are serve's flags for TLS, authentication, signed resume
// tokens, reflection and the limits on what one request may cost
// (docs/security.md).
type securityFlags struct {
	tlsCert, tlsKey, clientCA string
	authFile                  string
	tokenKeyFile              string
	reflection                bool

	maxWindow          int
	maxWindowSamples   int64
	maxWorldSize       int
	maxBatchSize       int
	maxMessageSize     string
	maxConcurrentPlans int
	planCacheSize      string
	maxConnStreams     int
	maxClientStreams   int
	sendTimeout        time.Duration
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve gRPC over TLS with this PEM certificate chain (with --tls-key); reloaded when the file changes")
	fs.StringVar(&f.tlsKey, "tls-key", "", "the PEM private key of --tls-cert; reloaded when the file changes")
	fs.StringVar(&f.clientCA, "client-ca", "", "require client certificates signed by these PEM CAs (mutual TLS; needs --tls-cert); reloaded when the file changes")
	fs.StringVar(&f.authFile, "auth-file", "", "client tokens: lines NAME SHA256_HEX_OF_TOKEN DATASET[,DATASET...] (* for all, # comments); calls but health checks need \"authorization: Bearer TOKEN\"; reloaded when the file changes")
	fs.StringVar(&f.tokenKeyFile, "token-key-file", "", "sign resume tokens with HMAC-SHA256 and refuse unsigned or altered ones; one key per line (at least 32 bytes, e.g. openssl rand -hex 32), the first signs, all verify; coordinator and loaders share it")
	fs.BoolVar(&f.reflection, "reflection", false, "serve gRPC reflection (grpcurl); default: on only when --listen is a loopback address without TLS")
	fs.IntVar(&f.maxWindow, "max-window", service.DefaultMaxWindow, "largest job.window, in chunks")
	fs.Int64Var(&f.maxWindowSamples, "max-window-samples", service.DefaultMaxWindowSamples, "most samples one shuffle window may hold (window chunks × the largest chunk's samples); 4 bytes each per rank streamed")
	fs.IntVar(&f.maxWorldSize, "max-world-size", service.DefaultMaxWorldSize, "largest job.world_size, also inside resume tokens")
	fs.IntVar(&f.maxBatchSize, "max-batch-size", service.DefaultMaxBatchSize, "largest job.batch_size, also inside resume tokens")
	fs.StringVar(&f.maxMessageSize, "max-message-size", "", "largest message sent; batch_size × the dataset's mean sample size must fit (empty: 256MiB); clients raise their receive limit to match")
	fs.IntVar(&f.maxConcurrentPlans, "max-concurrent-plans", 0, "plans computed at once; more are refused with RESOURCE_EXHAUSTED (0: GOMAXPROCS, at least 2)")
	fs.StringVar(&f.planCacheSize, "plan-cache-size", "", "estimated bytes of the cached epoch plans, e.g. 1GiB; a plan larger than this is refused (empty: 1GiB)")
	fs.IntVar(&f.maxConnStreams, "max-conn-streams", 0, "HTTP/2 streams one connection may have open (0: --max-streams + 64)")
	fs.IntVar(&f.maxClientStreams, "max-client-streams", 0, "streams one client (auth-file name, else IP address) may have open; more are refused with RESOURCE_EXHAUSTED (0: --max-streams)")
	fs.DurationVar(&f.sendTimeout, "send-timeout", service.DefaultSendTimeout, "a stream whose client reads no batch for this long ends with DEADLINE_EXCEEDED and frees its slot (0 or less: never)")
}

// security is securityFlags checked: what service.Config takes.
type security struct {
	files          service.TLSFiles // Cert empty: plaintext
	authFile       string
	tokenKeys      [][]byte
	reflection     bool
	limits         service.Limits
	maxWorldSize   int
	maxBatchSize   int
	maxMessageSize int
}

// parse checks the flags; fs tells which were given, listen is --listen.
func (f *securityFlags) parse(fs *flag.FlagSet, listen string) (security, error) {
	var s security
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return s, cli.Usage("serve: --tls-cert and --tls-key go together")
	}
	if f.clientCA != "" && f.tlsCert == "" {
		return s, cli.Usage("serve: --client-ca needs --tls-cert and --tls-key")
	}
	s.files = service.TLSFiles{Cert: f.tlsCert, Key: f.tlsKey, ClientCA: f.clientCA}
	s.authFile = f.authFile
	if f.tokenKeyFile != "" {
		keys, err := service.ReadTokenKeys(f.tokenKeyFile)
		if err != nil {
			return s, cli.Usage("serve: --token-key-file: " + err.Error())
		}
		s.tokenKeys = keys
	}
	s.reflection = f.tlsCert == "" && isLoopback(listen)
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "reflection" {
			s.reflection = f.reflection
		}
	})
	if f.maxWindow < 1 || f.maxWindowSamples < 1 || f.maxWorldSize < 1 || f.maxBatchSize < 1 ||
		f.maxConcurrentPlans < 0 || f.maxConnStreams < 0 || f.maxClientStreams < 0 {
		return s, cli.Usage("serve: --max-window, --max-window-samples, --max-world-size and --max-batch-size must be positive; --max-concurrent-plans, --max-conn-streams and --max-client-streams >= 0")
	}
	s.maxWorldSize, s.maxBatchSize = f.maxWorldSize, f.maxBatchSize
	if f.maxMessageSize != "" {
		n, err := parseSize(f.maxMessageSize)
		if err != nil || n < 1<<20 || n > 2<<30-1 {
			return s, cli.Usage(fmt.Sprintf("serve: --max-message-size %q: want a size from 1MiB to under 2GiB", f.maxMessageSize))
		}
		s.maxMessageSize = int(n)
	}
	s.limits = service.Limits{
		MaxWindow:          f.maxWindow,
		MaxWindowSamples:   f.maxWindowSamples,
		MaxConcurrentPlans: f.maxConcurrentPlans,
		MaxConnStreams:     f.maxConnStreams,
		MaxClientStreams:   f.maxClientStreams,
		SendTimeout:        f.sendTimeout,
	}
	if f.sendTimeout <= 0 {
		s.limits.SendTimeout = -1
	}
	if f.planCacheSize != "" {
		n, err := parseSize(f.planCacheSize)
		if err != nil || n == 0 {
			return s, cli.Usage(fmt.Sprintf("serve: --plan-cache-size %q: want a positive size like 1GiB", f.planCacheSize))
		}
		s.limits.PlanCacheBytes = n
	}
	return s, nil
}

// tlsConfig loads the TLS files; nil without TLS.
func (s *security) tlsConfig(log *slog.Logger) (*tls.Config, error) {
	if s.files.Cert == "" {
		return nil, nil
	}
	return service.NewTLSConfig(s.files, log)
}

// isLoopback says whether a listen address is on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
