// Package faultproxy is a loopback HTTP reverse proxy that injects the
// failures object stores produce under load: 503 SlowDown answers (with
// S3's XML error body) and connections reset in the middle of a response
// body. Tests put it between a reader and MinIO to show that retries hide
// transient faults and that faults past the retry budget surface as errors,
// not hangs.
//
//	p := faultproxy.Start(t, faultproxy.Config{Target: srv.Endpoint, SlowDownRate: 0.2, ResetRate: 0.1})
//	// point the S3 client at p.URL
//
// Only requests the Config's Match selects are faulted (by default: GETs
// with a Range header, i.e. ranged object reads); everything else passes
// through untouched. Request signatures stay valid: the Host header the
// client signed is forwarded as is.
package faultproxy

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// Config says what to inject.
type Config struct {
	// Target is the upstream base URL, e.g. http://127.0.0.1:9000.
	Target string
	// SlowDownFirst and ResetFirst fault the first matching requests
	// deterministically (SlowDown first, then resets); the rates then
	// apply to the rest.
	SlowDownFirst, ResetFirst int
	// SlowDownRate and ResetRate are the fractions of matching requests
	// answered 503 SlowDown or reset mid-body, in [0, 1], summing to at
	// most 1.
	SlowDownRate, ResetRate float64
	// Seed seeds the random choice, so a failing run can be replayed.
	Seed uint64
	// Match selects the requests that may be faulted; nil means ranged
	// GETs.
	Match func(*http.Request) bool
}

// Stats counts what the proxy did.
type Stats struct {
	Requests  int64 // all requests proxied
	Matched   int64 // requests Match selected
	SlowDowns int64 // answered 503 SlowDown
	Resets    int64 // reset mid-body
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	URL string // http://127.0.0.1:PORT

	cfg      Config
	target   *url.URL
	rp       *httputil.ReverseProxy
	upstream *http.Client
	srv      *http.Server
	ln       net.Listener
	done     chan struct{}

	mu  sync.Mutex // guards rng, cfg rates and the deterministic counters
	rng *rand.Rand

	requests, matched, slowDowns, resets atomic.Int64
}

// New starts a proxy on a free loopback port; Close stops it.
func New(cfg Config) (*Proxy, error) {
	target, err := url.Parse(cfg.Target)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target %q: %v", cfg.Target, err)
	}
	if cfg.SlowDownRate < 0 || cfg.ResetRate < 0 || cfg.SlowDownRate+cfg.ResetRate > 1 {
		return nil, fmt.Errorf("faultproxy: rates %v + %v outside [0, 1]", cfg.SlowDownRate, cfg.ResetRate)
	}
	if cfg.Match == nil {
		cfg.Match = func(r *http.Request) bool { return r.Method == http.MethodGet && r.Header.Get("Range") != "" }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{
		URL:      "http://" + ln.Addr().String(),
		cfg:      cfg,
		target:   target,
		upstream: &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}},
		ln:       ln,
		done:     make(chan struct{}),
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the host the client signed
		},
		Transport: p.upstream.Transport,
	}
	p.srv = &http.Server{Handler: p}
	go func() { // owned by Close
		defer close(p.done)
		p.srv.Serve(ln)
	}()
	return p, nil
}

// Start starts a proxy for the test and closes it at cleanup.
func Start(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	<-p.done
	p.upstream.CloseIdleConnections()
	return err
}

// SetRates changes the random fault rates of later requests.
func (p *Proxy) SetRates(slowDown, reset float64) {
	p.mu.Lock()
	p.cfg.SlowDownRate, p.cfg.ResetRate = slowDown, reset
	p.mu.Unlock()
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	return Stats{Requests: p.requests.Load(), Matched: p.matched.Load(), SlowDowns: p.slowDowns.Load(), Resets: p.resets.Load()}
}

type fault int

const (
	none fault = iota
	slowDown
	reset
)

func (p *Proxy) decide() fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.cfg.SlowDownFirst > 0:
		p.cfg.SlowDownFirst--
		return slowDown
	case p.cfg.ResetFirst > 0:
		p.cfg.ResetFirst--
		return reset
	}
	x := p.rng.Float64()
	switch {
	case x < p.cfg.SlowDownRate:
		return slowDown
	case x < p.cfg.SlowDownRate+p.cfg.ResetRate:
		return reset
	}
	return none
}

// ServeHTTP proxies one request, faulting it if chosen.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	f := none
	if p.cfg.Match(r) {
		p.matched.Add(1)
		f = p.decide()
	}
	switch f {
	case slowDown:
		p.slowDowns.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+
			`<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>`+
			`<Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`, r.URL.Path)
	case reset:
		p.resets.Add(1)
		p.resetMidBody(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// resetMidBody forwards the request, sends the upstream's headers and half
// of its body, then resets the TCP connection (RST, not FIN), as a load
// balancer or a dying server does.
func (p *Proxy) resetMidBody(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host
	resp, err := p.upstream.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	n, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	w.WriteHeader(resp.StatusCode)
	io.CopyN(w, resp.Body, n/2)
	rc := http.NewResponseController(w)
	rc.Flush()
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection without finishing the body
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // Close sends RST
	}
	conn.Close()
}
