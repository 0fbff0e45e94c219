package main

import (
	"context"
	"flag"
	"io"
	"net"
	"time"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/service"
)

// Loader drain defaults. A spot instance gets a two-minute notice: a 5s
// pre-stop pause (load balancers and clients checking health notice
// NOT_SERVING) plus 100s for open streams leaves 15s for the process to
// exit before the node goes. The pod's terminationGracePeriodSeconds must
// exceed their sum.
const (
	defaultPreStop      = 5 * time.Second
	defaultDrainTimeout = 100 * time.Second
)

// runLoader serves the loader role: it streams batches, registers with
// the coordinator and heartbeats its load every second. On SIGTERM it
// drains: health NOT_SERVING, a leaving heartbeat, --pre-stop, then open
// streams run to their end for up to --drain-timeout, and it exits 0.
// Clients that watch their assignment (WatchAssignment) leave at their
// next step, as the leaving beat moves their stripes, so the drain lasts
// about --pre-stop.
func runLoader(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var coord, advertise string
	var preStop, drain time.Duration
	var cc coordClientFlags
	c, err := parseServeAs("loader", args, stderr, func(fs *flag.FlagSet) {
		cc.register(fs, true)
		fs.StringVar(&cc.tokenFile, "coordinator-token-file", "", "file holding the bearer token for a coordinator with --auth-file (its line must allow every dataset, *)")
		fs.StringVar(&coord, "coordinator", "", "the coordinator's gRPC address, host:port (required)")
		fs.StringVar(&advertise, "advertise", "", "the address trainers reach this loader at (empty: the --listen address, which must then not be a wildcard)")
		fs.DurationVar(&preStop, "pre-stop", defaultPreStop, "on SIGTERM, how long to keep serving new streams after leaving the pool, before the drain")
		fs.DurationVar(&drain, "drain-timeout", defaultDrainTimeout, "on SIGTERM, how long open streams may run after the pre-stop pause before they are cut")
	})
	if err != nil {
		return err
	}
	switch {
	case coord == "":
		return cli.Usage("loader: --coordinator is required")
	case len(c.loaderAddrs) > 0:
		return cli.Usage("loader: --loader-addrs is serve's: a loader serves batches itself")
	case preStop < 0 || drain <= 0:
		return cli.Usage("loader: --pre-stop must be >= 0 and --drain-timeout positive")
	}
	dial, err := cc.dialOptions(c.sec.files.Cert, c.sec.files.Key)
	if err != nil {
		return cli.Usage("loader: " + err.Error())
	}
	c.role = service.RoleLoader
	c.shutdownTimeout = drain
	c.run = func(ctx context.Context, srv *service.Server, lis, mlis net.Listener) error {
		adv := advertise
		if adv == "" {
			adv = lis.Addr().String()
			if host, _, err := net.SplitHostPort(adv); err == nil && net.ParseIP(host).IsUnspecified() {
				lis.Close()
				if mlis != nil {
					mlis.Close()
				}
				return cli.Usage("loader: --listen " + c.listen + " is a wildcard address: set --advertise to the address trainers reach this loader at")
			}
		}
		reg, err := srv.Register(service.RegisterConfig{Coordinator: coord, Advertise: adv, DialOptions: dial})
		if err != nil {
			return err
		}
		c.log.Info("joining the pool", "coordinator", coord, "advertise", adv)
		return srv.ServeInPool(ctx, lis, mlis, reg, preStop)
	}
	return serve(ctx, c, stdout)
}
