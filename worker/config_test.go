package worker

import (
	"reflect"
	"testing"
	"time"
)

// TestConfigValidate: a negative value of any field that must not be
// negative fails validate with an error naming the field and the value;
// the fields that may be negative are listed, so a new numeric field
// needs a row here.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*Config)
		want  string
	}{
		{"PartSize", func(c *Config) { c.PartSize = -1 }, "worker: Config.PartSize -1, want >= 0"},
		{"Concurrency", func(c *Config) { c.Concurrency = -2 }, "worker: Config.Concurrency -2, want >= 0"},
		{"MaxAttempts", func(c *Config) { c.MaxAttempts = -3 }, "worker: Config.MaxAttempts -3, want >= 0"},
		{"RetryBase", func(c *Config) { c.RetryBase = -time.Second }, "worker: Config.RetryBase -1s, want >= 0"},
		{"RetryMax", func(c *Config) { c.RetryMax = -time.Millisecond }, "worker: Config.RetryMax -1ms, want >= 0"},
		{"PartTimeout", func(c *Config) { c.PartTimeout = -1 }, "worker: Config.PartTimeout -1ns, want >= 0"},
		{"FetchBufferBytes", func(c *Config) { c.FetchBufferBytes = -4 }, "worker: Config.FetchBufferBytes -4, want >= 0"},
		{"CacheBytes", func(c *Config) { c.CacheBytes = -5 }, "worker: Config.CacheBytes -5, want >= 0"},
		{"MaxManifestBytes", func(c *Config) { c.MaxManifestBytes = -6 }, "worker: Config.MaxManifestBytes -6, want >= 0"},
		{"BufferPoolBytes", func(c *Config) { c.BufferPoolBytes = -1 }, ""},   // keep no idle buffers
		{"MemoryCacheBytes", func(c *Config) { c.MemoryCacheBytes = -1 }, ""}, // cache off
		{"RetryMax", func(c *Config) { c.RetryBase, c.RetryMax = time.Second, time.Millisecond }, "worker: RetryMax 1ms < RetryBase 1s"},
	} {
		var c Config
		tc.set(&c)
		err := c.validate()
		if got := errString(err); got != tc.want {
			t.Errorf("%s: validate() = %q, want %q", tc.field, got, tc.want)
		}
	}

	// Every numeric field has a row above.
	covered := map[string]bool{"PartSize": true, "Concurrency": true, "MaxAttempts": true, "RetryBase": true, "RetryMax": true,
		"PartTimeout": true, "FetchBufferBytes": true, "CacheBytes": true, "MaxManifestBytes": true, "BufferPoolBytes": true, "MemoryCacheBytes": true}
	for f := range reflect.TypeFor[Config]().Fields() {
		switch f.Type.Kind() {
		case reflect.Int, reflect.Int64:
			if !covered[f.Name] {
				t.Errorf("Config.%s (%s) has no row in TestConfigValidate", f.Name, f.Type)
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
