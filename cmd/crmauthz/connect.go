package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/connect/postgres"
	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/server"
)

// newConnectCmd is the parent of the connectors (docs/connectors.md); each registers here.
func newConnectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Feed crmauthz from a system of record (a connector writes replication events to one sink)",
	}
	cmd.AddCommand(newConnectHighLevelCmd(), newConnectPostgresCmd())
	return cmd
}

// sinkOptions are the flags every connector shares (docs/connectors.md "Sink").
type sinkOptions struct {
	natsAuthOptions
	url, tokenFile, stream, subject, bucket string
	configFile                              string // --config (internal/cliflags), registered here for every connector

	tracing tracingOptions // --otlp-*, --trace-sampling-ratio (tracingflags.go)
}

func addSinkFlags(f *pflag.FlagSet, o *sinkOptions) {
	d := sink.DefaultConfig()
	f.StringVar(&o.url, "sink", d.URL, "where the events go: http://HOST:PORT (one crmauthz's --admin-addr) or nats://HOST:PORT (a JetStream stream the fleet reads; tls:// too)")
	f.StringVar(&o.tokenFile, "sink-token-file", d.TokenFile, "HTTP sink: file holding the replica's replication token (sent as Authorization: Bearer)")
	f.StringVar(&o.stream, "sink-stream", d.Stream, "NATS sink: the JetStream stream (created when absent)")
	f.StringVar(&o.subject, "sink-subject", d.Subject, "NATS sink: the subject of the events (sidecars' --nats-subject)")
	f.StringVar(&o.bucket, "sink-snapshot-bucket", d.SnapshotBucket, "NATS sink: the object store bucket of snapshots (sidecars' --nats-snapshot-bucket; created when absent)")
	addNATSAuthFlags(f, &o.natsAuthOptions)
	cliflags.AddConfigFlag(f, &o.configFile)
	addTracingFlags(f, &o.tracing)
}

// config is the sink's configuration from the flags.
func (o sinkOptions) config() sink.Config {
	cfg := sink.DefaultConfig()
	cfg.URL, cfg.TokenFile, cfg.Stream, cfg.Subject, cfg.SnapshotBucket = o.url, o.tokenFile, o.stream, o.subject, o.bucket
	cfg.Auth = o.auth()
	return cfg
}

func (o sinkOptions) newSink(log *slog.Logger) (sink.Sink, error) {
	if o.url == "" {
		return nil, errors.New("--sink is required: http://HOST:PORT or nats://HOST:PORT")
	}
	cfg := o.config()
	cfg.Logger, cfg.Name = log, "crmauthz "+version+" connector"
	tr, err := o.tracing.newTracer(context.Background(), log)
	if err != nil {
		return nil, err
	}
	cfg.Tracer = tr
	s, err := sink.New(cfg)
	if err != nil {
		if tr != nil {
			_ = tr.Shutdown(context.Background())
		}
		return nil, fmt.Errorf("--sink: %w", err)
	}
	if tr != nil {
		return tracedSink{Sink: s, tr: tr, log: log}, nil
	}
	return s, nil
}

// serveConnectorAdmin serves h on addr (health and metrics) until ctx ends.
func serveConnectorAdmin(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--admin-addr: %w", err)
	}
	hs := server.HTTPServer(addr, h) // the timeouts of crmauthz's own listeners
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the admin listener failed", "err", err)
		}
	}()
	log.Info("admin listener", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}, nil
}

type connectPostgresOptions struct {
	sink                                sinkOptions
	dsn, mappingFile, slot, publication string
	stateDir, adminAddr, logLevel       string
}

func newConnectPostgresCmd() *cobra.Command {
	var o connectPostgresOptions
	cmd := &cobra.Command{
		Use:   "postgres --dsn postgres://… --sink URL --state-dir DIR",
		Short: "Follow a CRM's own PostgreSQL database by logical replication (docs/postgres.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cliflags.Validate(cmd.Flags(), postgresRules(&o)); err != nil {
				return err
			}
			return runConnectPostgres(cmd.Context(), o)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func (o *connectPostgresOptions) addFlags(f *pflag.FlagSet) {
	d := postgres.DefaultConfig()
	f.StringVar(&o.dsn, "dsn", d.DSN, "the database: postgres://USER@HOST:PORT/DB (a role with REPLICATION and SELECT on the mapped tables; the password from PGPASSWORD or ~/.pgpass)")
	f.StringVar(&o.mappingFile, "mapping", "", "YAML file mapping the tables and columns (default: the default schema)")
	f.StringVar(&o.slot, "slot", d.Slot, "the logical replication slot (per cluster)")
	f.StringVar(&o.publication, "publication", d.Publication, "the publication (created for the mapped tables when absent)")
	f.StringVar(&o.stateDir, "state-dir", d.StateDir, "directory of the connector's state file (its copy of the facts and positions)")
	f.StringVar(&o.adminAddr, "admin-addr", d.AdminAddr, "listen address of /health/live, /health/ready and /metrics")
	f.StringVar(&o.logLevel, "log-level", defaultLogLevel, "log level: debug, info, warn, error")
	addSinkFlags(f, &o.sink)
}

// config is the connector's configuration from the flags (without its mapping, sink and logger).
func (o *connectPostgresOptions) config() postgres.Config {
	cfg := postgres.DefaultConfig()
	cfg.DSN, cfg.Slot, cfg.Publication, cfg.StateDir, cfg.AdminAddr = o.dsn, o.slot, o.publication, o.stateDir, o.adminAddr
	return cfg
}

func runConnectPostgres(ctx context.Context, o connectPostgresOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	m, err := mapping.Load(o.mappingFile)
	if err != nil {
		return fmt.Errorf("--mapping: %w", err)
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	sk, err := o.sink.newSink(log)
	if err != nil {
		return err
	}
	defer sk.Close()
	cfg := o.config()
	cfg.Mapping, cfg.Sink, cfg.Logger = m, sk, log
	c, err := postgres.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	stop, err := serveConnectorAdmin(ctx, o.adminAddr, c.Handler(), log)
	if err != nil {
		return err
	}
	defer stop()
	return c.Run(ctx)
}
