package faultproxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/faultproxy"
)

func TestFaults(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100_000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" {
			t.Error("no Host forwarded")
		}
		http.ServeContent(w, r, "obj", time.Time{}, bytes.NewReader(body))
	}))
	defer up.Close()
	p := faultproxy.Start(t, faultproxy.Config{Target: up.URL, SlowDownFirst: 1, ResetFirst: 1})

	get := func(rangeHdr string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/bucket/obj", nil)
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}

	// Unranged requests are never faulted.
	if resp, b, err := get(""); err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Fatalf("plain GET: %v, %d bytes", err, len(b))
	}
	resp, b, err := get("bytes=0-999")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "<Code>SlowDown</Code>") {
		t.Fatalf("first ranged GET: err %v, status %v, body %q; want 503 SlowDown", err, resp.StatusCode, b)
	}
	_, b, err = get("bytes=0-199999")
	if err == nil {
		t.Fatalf("second ranged GET read %d bytes without error, want a reset mid-body", len(b))
	}
	if len(b) >= 200000 {
		t.Errorf("reset GET delivered the whole body")
	}
	_, b, err = get("bytes=1000-1999")
	if err != nil || !bytes.Equal(b, body[1000:2000]) {
		t.Fatalf("third ranged GET: %v, %d bytes", err, len(b))
	}
	want := faultproxy.Stats{Requests: 4, Matched: 3, SlowDowns: 1, Resets: 1}
	if got := p.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestRates(t *testing.T) {
	if _, err := faultproxy.New(faultproxy.Config{Target: "http://127.0.0.1:1", SlowDownRate: 0.7, ResetRate: 0.5}); err == nil {
		t.Error("rates summing past 1 accepted")
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer up.Close()
	p := faultproxy.Start(t, faultproxy.Config{Target: up.URL, SlowDownRate: 0.5, Seed: 1})
	var slow int
	for range 400 {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/x", nil)
		req.Header.Set("Range", "bytes=0-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 {
			slow++
		}
	}
	if slow < 140 || slow > 260 {
		t.Errorf("%d of 400 requests slowed at rate 0.5", slow)
	}
}
