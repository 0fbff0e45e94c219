// Package s3store is a store.Store over s3://bucket/prefix through
// aws-sdk-go-v2: AWS S3, S3 Express One Zone directory buckets (as the SDK
// resolves them) and S3-compatible stores through an endpoint URL (MinIO).
// Credentials come from Config or the standard AWS chain. Every call makes
// exactly one attempt: retries are the caller's (the worker's Reader).
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/shardstream/shardstream/store"
)

// uploadPartSize is the part size of multipart uploads by Write: objects
// up to this size go in one PutObject.
const uploadPartSize = 16 << 20

// Config configures the S3 client. Zero values mean defaults.
type Config struct {
	// Endpoint overrides the S3 endpoint, e.g. http://127.0.0.1:9000 for
	// MinIO; empty means AWS (the SDK's endpoint resolution, which also
	// handles S3 Express One Zone directory buckets).
	Endpoint string
	// PathStyle uses path-style addressing (MinIO and most S3-compatible
	// stores); AWS wants virtual-hosted style, the default.
	PathStyle bool
	// Region is the bucket's region. Default: the SDK's (AWS_REGION,
	// shared config), else us-east-1.
	Region string
	// AccessKey and SecretKey are static credentials. Empty: the standard
	// AWS credential chain (environment, shared files, IRSA, IMDS …).
	AccessKey, SecretKey string
	// MaxConns is how many connections per host stay open between
	// requests: size it to the reader's GET concurrency, or every burst
	// pays new TCP (and TLS) handshakes. The SDK's default keeps 10.
	// Default 64.
	MaxConns int
}

func (c *Config) validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("s3store: Config.MaxConns %d, want >= 0", c.MaxConns)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("s3store: Config.AccessKey and Config.SecretKey go together")
	}
	if c.MaxConns == 0 {
		c.MaxConns = 64
	}
	return nil
}

// Store is a store over s3://bucket/prefix.
type Store struct {
	client *s3.Client
	bucket string
	prefix string // without slashes at either end; may be empty
}

var _ store.Store = (*Store)(nil)

// Open returns the store over s3://bucket/prefix. A bucket that does not
// exist is an error wrapping store.ErrNotFound.
func Open(ctx context.Context, bucket, prefix string, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	uri := "s3://" + bucket + "/" + prefix
	// One HTTP client per store: connections stay open for the reader's
	// concurrency; large read buffers cut syscalls on multi-MiB bodies.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = 2 * cfg.MaxConns
		tr.MaxIdleConnsPerHost = cfg.MaxConns
		tr.IdleConnTimeout = 90 * time.Second
		tr.ReadBufferSize = 256 << 10
		tr.WriteBufferSize = 256 << 10
		tr.DisableCompression = true // ranged bytes must arrive as stored
	})
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(httpClient)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3store: %s: load AWS config: %w", uri, err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Ranged GETs cannot be checked against whole-object checksums,
		// and many S3-compatible stores reject the newer checksum
		// headers: integrity of shards is the manifest's ETag and the
		// format's own checks.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	s := &Store{client: client, bucket: bucket, prefix: prefix}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		if isStatus(err, http.StatusNotFound) {
			return nil, fmt.Errorf("s3store: %s: bucket %s: %w", uri, bucket, store.ErrNotFound)
		}
		// Credentials scoped to a prefix may not allow HeadBucket: let
		// the first object read tell.
		if !isStatus(err, http.StatusForbidden) {
			return nil, fmt.Errorf("s3store: %s: %w", uri, err)
		}
	}
	return s, nil
}

func (s *Store) key(path string) string {
	if s.prefix == "" {
		return path
	}
	return s.prefix + "/" + path
}

func (s *Store) uri(path string) string { return "s3://" + s.bucket + "/" + s.key(path) }

// noRetry leaves retries to the caller (the worker's Reader): one policy,
// one place for its metrics and logs, and no hidden multiplication of
// attempts.
func noRetry(o *s3.Options) { o.Retryer = aws.NopRetryer{} }

// errIgnoredRange: the response to a ranged GET had no Content-Range.
var errIgnoredRange = fmt.Errorf("%w: the store ignored the Range header", store.ErrPermanent)

// ReadRange implements store.Store. It makes exactly one attempt.
func (s *Store) ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error) {
	return s.readRange(ctx, path, off, n, "")
}

// ReadRangeIfMatch implements store.IfMatcher with S3's If-Match: a read of
// an object whose ETag is no longer etag fails with 412, an error wrapping
// store.ErrChanged. It makes exactly one attempt.
func (s *Store) ReadRangeIfMatch(ctx context.Context, path string, off, n int64, etag string) (io.ReadCloser, error) {
	return s.readRange(ctx, path, off, n, etag)
}

func (s *Store) readRange(ctx context.Context, path string, off, n int64, etag string) (io.ReadCloser, error) {
	if err := store.ValidPath(path); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("read %s [%d,+%d): negative offset", s.uri(path), off, n)
	}
	if n == 0 {
		return store.EmptyBody, nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(path))}
	if etag != "" {
		in.IfMatch = aws.String(`"` + etag + `"`)
	}
	switch {
	case off == 0 && n < 0: // whole object, no Range: works for empty ones too
	case n < 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	default:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	out, err := s.client.GetObject(ctx, in, noRetry)
	if err != nil {
		return nil, fmt.Errorf("read %s [%d,+%d): %w", s.uri(path), off, n, classify(err))
	}
	if in.Range != nil && out.ContentRange == nil {
		// A store (or proxy) that ignores Range answers 200 with the whole
		// object: its first bytes are not the ones asked for.
		out.Body.Close()
		return nil, fmt.Errorf("read %s [%d,+%d): %w", s.uri(path), off, n, errIgnoredRange)
	}
	return out.Body, nil
}

// Stat implements store.Store. It makes exactly one attempt.
func (s *Store) Stat(ctx context.Context, path string) (store.Info, error) {
	if err := store.ValidPath(path); err != nil {
		return store.Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(path))}, noRetry)
	if err != nil {
		return store.Info{}, fmt.Errorf("stat %s: %w", s.uri(path), classify(err))
	}
	return store.Info{Path: path, Size: aws.ToInt64(out.ContentLength), ETag: strings.Trim(aws.ToString(out.ETag), `"`)}, nil
}

// Write implements store.Store: one PutObject for small objects, a multipart
// upload of 16 MiB parts otherwise (memory: one part).
func (s *Store) Write(ctx context.Context, path string, r io.Reader) error {
	if err := store.ValidPath(path); err != nil {
		return err
	}
	key := s.key(path)
	buf := make([]byte, uploadPartSize)
	n, err := io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key),
			Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return fmt.Errorf("write %s: %w", s.uri(path), classify(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", s.uri(path), err)
	}
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("write %s: %w", s.uri(path), classify(err))
	}
	abort := func(err error) error {
		// A fresh context: the abort must happen even when ctx ended.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId})
		return fmt.Errorf("write %s: %w", s.uri(path), err)
	}
	var parts []types.CompletedPart
	for num := int32(1); ; num++ {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
			PartNumber: aws.Int32(num), Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return abort(classify(err))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		n, err = io.ReadFull(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return abort(err)
		}
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return abort(classify(err))
	}
	return nil
}

// List implements store.Store. Results are sorted here: S3 Express directory
// buckets list in no particular order.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	root := ""
	if s.prefix != "" {
		root = s.prefix + "/"
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(root + prefix)})
	var out []store.Info
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", s.uri(prefix), classify(err))
		}
		for _, o := range page.Contents {
			out = append(out, store.Info{
				Path: strings.TrimPrefix(aws.ToString(o.Key), root),
				Size: aws.ToInt64(o.Size),
				ETag: strings.Trim(aws.ToString(o.ETag), `"`),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func isStatus(err error, code int) bool {
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == code
}

// classify adds store.ErrNotFound or store.ErrRange to SDK errors that mean
// them, and store.ErrPermanent to answers a retry cannot change. Throttling
// (503 SlowDown, 429), server errors (5xx) and request timeouts stay
// transient, and so does anything that is not an answer from S3 (resets,
// EOFs mid-body, dial errors, per-attempt deadlines).
func classify(err error) error {
	switch {
	case isStatus(err, http.StatusNotFound):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	case isStatus(err, http.StatusRequestedRangeNotSatisfiable):
		return fmt.Errorf("%w: %w", store.ErrRange, err)
	case isStatus(err, http.StatusPreconditionFailed):
		return fmt.Errorf("%w: %w", store.ErrChanged, err)
	}
	var nsk *types.NoSuchKey
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nsb) {
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		if c := re.HTTPStatusCode(); c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout {
			return err
		}
		return fmt.Errorf("%w: %w", store.ErrPermanent, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable":
			return err
		}
		return fmt.Errorf("%w: %w", store.ErrPermanent, err)
	}
	return err
}
