package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// testCA is a throwaway certificate authority for TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate for 127.0.0.1 and localhost, usable by
// servers and clients, as PEM certificate and key.
func (ca *testCA) issue(t testing.TB, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// clientTLS is a client's TLS config trusting ca, presenting a
// certificate of signer when not nil.
func clientTLS(t testing.TB, ca, signer *testCA) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if signer != nil {
		cp, kp := signer.issue(t, "trainer")
		pair, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(c)
}

// writeFile writes b to path with a modification time later than any
// before, so a reload sees a change even within the file system's time
// granularity.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	mod := time.Now().Add(time.Second)
	if fi, err := os.Stat(path); err == nil && !fi.ModTime().Before(mod) {
		mod = fi.ModTime().Add(time.Second)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// tlsFiles writes a server certificate of ca and, when clientCA is not
// nil, the client CA into dir.
func tlsFiles(t testing.TB, dir string, ca, clientCA *testCA) TLSFiles {
	t.Helper()
	f := TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	cp, kp := ca.issue(t, "server")
	writeFile(t, f.Cert, cp)
	writeFile(t, f.Key, kp)
	if clientCA != nil {
		f.ClientCA = filepath.Join(dir, "ca.crt")
		writeFile(t, f.ClientCA, clientCA.pem)
	}
	return f
}

// dialGetDataset dials addr with creds and calls GetDataset once.
func dialGetDataset(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pb.NewCoordinatorServiceClient(conn).GetDataset(ctx, &pb.GetDatasetRequest{})
	return err
}

// TestTLSRefuses: with mutual TLS, a client that trusts another CA, one
// without a certificate, one whose certificate another CA signed, and one
// speaking plaintext are all refused; the right one is served.
func TestTLSRefuses(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	tc, err := NewTLSConfig(tlsFiles(t, t.TempDir(), serverCA, clientCA), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeReader{m: testManifest(4, 10, 5)}
	cfg := testConfig(r)
	cfg.TLS = tc
	ts := startServer(t, cfg, fakePlanner)

	for _, tt := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"wrong CA", clientTLS(t, otherCA, clientCA)},
		{"no client certificate", clientTLS(t, serverCA, nil)},
		{"client certificate of another CA", clientTLS(t, serverCA, otherCA)},
		{"plaintext", insecure.NewCredentials()},
	} {
		if err := dialGetDataset(t, ts.addr, tt.creds); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: GetDataset = %v, want Unavailable (handshake refused)", tt.name, err)
		}
	}
	if err := dialGetDataset(t, ts.addr, clientTLS(t, serverCA, clientCA)); err != nil {
		t.Errorf("right CA and client certificate: GetDataset = %v, want nil", err)
	}
}

// TestTLSRotation: a certificate rewritten on disk (by cert-manager, say)
// is served to new connections, while a stream opened before the rotation
// runs to its end on the old one.
func TestTLSRotation(t *testing.T) {
	oldCA, newCA, clientCA := newTestCA(t, "old CA"), newTestCA(t, "new CA"), newTestCA(t, "client CA")
	dir := t.TempDir()
	files := tlsFiles(t, dir, oldCA, clientCA)
	tc, err := NewTLSConfig(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeReader{m: testManifest(4, 10, 5)}
	cfg := testConfig(r)
	cfg.TLS = tc
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)

	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(clientTLS(t, oldCA, clientCA)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := pb.NewLoaderServiceClient(conn).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := collect(st, 1)
	if err != nil || len(first) != 1 {
		t.Fatalf("before rotation: %d batches, %v", len(first), err)
	}

	cp, kp := newCA.issue(t, "server")
	writeFile(t, files.Cert, cp)
	writeFile(t, files.Key, kp)

	if err := dialGetDataset(t, ts.addr, clientTLS(t, newCA, clientCA)); err != nil {
		t.Errorf("after rotation, a client trusting the new CA: %v, want nil", err)
	}
	if err := dialGetDataset(t, ts.addr, clientTLS(t, oldCA, clientCA)); status.Code(err) != codes.Unavailable {
		t.Errorf("after rotation, a new client trusting only the old CA: %v, want Unavailable", err)
	}
	rest, err := collect(st, -1)
	if err != nil || len(rest) != 19 {
		t.Errorf("the stream opened before rotation: %d more batches, %v; want 19, nil", len(rest), err)
	}

	// A broken rewrite keeps the last good certificate.
	writeFile(t, files.Key, []byte("not a key"))
	if err := dialGetDataset(t, ts.addr, clientTLS(t, newCA, clientCA)); err != nil {
		t.Errorf("after a broken rewrite: %v, want the last good certificate served", err)
	}
}

func TestNewTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	files := tlsFiles(t, dir, newTestCA(t, "ca"), nil)
	for _, f := range []TLSFiles{
		{Cert: files.Cert},
		{Cert: files.Cert, Key: filepath.Join(dir, "missing")},
		{Cert: files.Cert, Key: files.Key, ClientCA: files.Key}, // no certificate in it
	} {
		if _, err := NewTLSConfig(f, nil); err == nil {
			t.Errorf("NewTLSConfig(%+v) = nil error", f)
		}
	}
}
