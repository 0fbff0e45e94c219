package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// coordClientFlags say how a loader (or status) reaches a coordinator that
// runs with TLS, mutual TLS or an auth file: the same settings trainers
// use, so loader ↔ coordinator traffic is as safe as the rest.
type coordClientFlags struct {
	ca, cert, key, tokenFile string
}

func (f *coordClientFlags) register(fs *flag.FlagSet, certFlags bool) {
	fs.StringVar(&f.ca, "coordinator-ca", "", "PEM CA that signs the coordinator's certificate: talk to it over TLS (empty: plaintext)")
	if certFlags { // the loader presents its own --tls-cert/--tls-key
		return
	}
	fs.StringVar(&f.cert, "client-cert", "", "PEM client certificate for a coordinator with --client-ca (with --client-key)")
	fs.StringVar(&f.key, "client-key", "", "the PEM private key of --client-cert")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token for a coordinator with --auth-file")
}

// dialOptions builds the coordinator connection's options: TLS when a CA
// is given (presenting cert/key, when set, for mutual TLS), and the token
// as per-call credentials (which gRPC sends only over TLS).
func (f *coordClientFlags) dialOptions(cert, key string) ([]grpc.DialOption, error) {
	if f.cert != "" || f.key != "" {
		cert, key = f.cert, f.key
	}
	if f.ca == "" {
		if f.tokenFile != "" {
			return nil, fmt.Errorf("--token-file needs --coordinator-ca: a token is never sent in plaintext")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return nil, fmt.Errorf("--coordinator-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--coordinator-ca %s: no PEM certificate in it", f.ca)
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("a client certificate and its key go together")
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("--token-file %s is empty", f.tokenFile)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return opts, nil
}

// bearer sends "authorization: Bearer TOKEN" with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
