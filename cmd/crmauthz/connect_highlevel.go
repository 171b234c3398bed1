package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel"
	"github.com/crmauthz/crmauthz/internal/server"
)

// highLevelOptions are the flags of `crmauthz connect highlevel` and its `sync` (docs/highlevel.md).
type highLevelOptions struct {
	sink                                   sinkOptions
	apiURL, tokenFile, tokenDir, companyID string
	locationIDs                            []string
	publicKeyFile, legacyKeyFile           string
	legacyRSA                              bool
	reconcileInterval                      time.Duration
	maxPending, dailyBudget                int
	stateDir                               string
	webhookAddr, adminAddr                 string
	logLevel                               string
}

func (o *highLevelOptions) flags(f *pflag.FlagSet, daemon bool) {
	d := highlevel.DefaultConfig()
	f.StringVar(&o.apiURL, "api-url", d.APIURL, "HighLevel API base URL")
	f.StringVar(&o.tokenFile, "token-file", d.TokenFile, "file holding one bearer token for every location (Private Integration or OAuth access token); re-read when it changes")
	f.StringVar(&o.tokenDir, "token-dir", d.TokenDir, "directory of token files named by location id (sub-account tokens); re-read when they change")
	f.StringVar(&o.companyID, "company-id", d.CompanyID, "HighLevel company (agency) id, checked against each location's; empty: learned from GET /locations/{locationId} (kept in the state dir). Sent with user searches; the company of agency-level webhooks")
	f.StringSliceVar(&o.locationIDs, "location-ids", d.LocationIDs, "location (sub-account) ids to follow, comma separated (required)")
	f.StringVar(&o.publicKeyFile, "webhook-public-key-file", "", "PEM Ed25519 key for X-GHL-Signature (default: HighLevel's published key, built in)")
	f.StringVar(&o.legacyKeyFile, "webhook-legacy-key-file", "", "PEM RSA key for the deprecated X-WH-Signature (default: HighLevel's published key, built in)")
	f.BoolVar(&o.legacyRSA, "webhook-legacy-rsa", d.LegacyRSA, "accept webhooks signed only with the deprecated X-WH-Signature (RSA)")
	f.DurationVar(&o.reconcileInterval, "reconcile-interval", d.ReconcileInterval, "full reconcile period: bounds how stale followers can be")
	f.IntVar(&o.maxPending, "max-pending", d.MaxPending, "refreshes waiting before webhooks get 429")
	f.IntVar(&o.dailyBudget, "daily-request-budget", d.DailyRequestBudget, "API requests per UTC day per resource (location or company); 0: no limit")
	f.StringVar(&o.stateDir, "state-dir", d.StateDir, "directory of the connector's state (bbolt)")
	addSinkFlags(f, &o.sink)
	f.StringVar(&o.adminAddr, "admin-addr", d.AdminAddr, "listener of /health/live, /health/ready and /metrics")
	f.StringVar(&o.logLevel, "log-level", defaultLogLevel, "log level: debug, info, warn, error")
	if daemon {
		f.StringVar(&o.webhookAddr, "webhook-addr", d.WebhookAddr, "listener of POST "+highlevel.WebhookPath+" (the one listener meant to face the internet, behind TLS)")
	}
}

// config turns the flags into the connector's configuration, checking each.
func (o *highLevelOptions) config() (highlevel.Config, error) {
	cfg := highlevel.DefaultConfig()
	cfg.APIURL, cfg.TokenFile, cfg.TokenDir, cfg.CompanyID = o.apiURL, o.tokenFile, o.tokenDir, o.companyID
	for _, l := range o.locationIDs {
		if l = strings.TrimSpace(l); l != "" {
			cfg.LocationIDs = append(cfg.LocationIDs, l)
		}
	}
	if len(cfg.LocationIDs) == 0 {
		return cfg, errors.New("--location-ids is required")
	}
	if (o.tokenFile == "") == (o.tokenDir == "") {
		return cfg, errors.New("give exactly one of --token-file and --token-dir")
	}
	if o.publicKeyFile != "" {
		raw, err := os.ReadFile(o.publicKeyFile)
		if err != nil {
			return cfg, fmt.Errorf("--webhook-public-key-file: %w", err)
		}
		if cfg.WebhookPublicKey, err = highlevel.ParseEd25519PublicKey(raw); err != nil {
			return cfg, fmt.Errorf("--webhook-public-key-file: %w", err)
		}
	}
	if o.legacyKeyFile != "" {
		raw, err := os.ReadFile(o.legacyKeyFile)
		if err != nil {
			return cfg, fmt.Errorf("--webhook-legacy-key-file: %w", err)
		}
		if cfg.WebhookLegacyKey, err = highlevel.ParseRSAPublicKey(raw); err != nil {
			return cfg, fmt.Errorf("--webhook-legacy-key-file: %w", err)
		}
	}
	cfg.LegacyRSA = o.legacyRSA
	if o.reconcileInterval < time.Minute {
		return cfg, fmt.Errorf("--reconcile-interval %s: at least 1m", o.reconcileInterval)
	}
	cfg.ReconcileInterval = o.reconcileInterval
	if o.maxPending < 1 {
		return cfg, errors.New("--max-pending: at least 1")
	}
	cfg.MaxPending = o.maxPending
	if o.dailyBudget < 0 {
		return cfg, errors.New("--daily-request-budget: 0 or more")
	}
	cfg.DailyRequestBudget = o.dailyBudget
	cfg.StateDir, cfg.WebhookAddr, cfg.AdminAddr = o.stateDir, o.webhookAddr, o.adminAddr
	log, err := newLogger(o.logLevel)
	if err != nil {
		return cfg, err
	}
	cfg.Logger = log
	for name, addr := range map[string]string{"--admin-addr": o.adminAddr, "--webhook-addr": o.webhookAddr} {
		if addr == "" && name == "--webhook-addr" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return cfg, fmt.Errorf("%s %q: %w", name, addr, err)
		}
	}
	snk, err := o.sink.newSink(log)
	if err != nil {
		return cfg, err
	}
	cfg.Sink = snk
	return cfg, nil
}

// open checks the flags and builds the connector and its sink (both the caller's to close);
// maxAttempts > 0 bounds the attempts of one API request or sink write (the one-shot sync); 0 keeps
// the default, retrying forever.
func (o *highLevelOptions) open(fs *pflag.FlagSet, maxAttempts int) (highlevel.Config, *highlevel.Connector, error) {
	if err := validateHighLevel(fs, o); err != nil {
		return highlevel.Config{}, nil, err
	}
	cfg, err := o.config()
	if err != nil {
		return highlevel.Config{}, nil, err
	}
	if maxAttempts > 0 {
		cfg.MaxAttempts = maxAttempts
	}
	c, err := highlevel.New(cfg)
	if err != nil {
		cfg.Sink.Close()
		return highlevel.Config{}, nil, err
	}
	return cfg, c, nil
}

// newConnectHighLevelCmd is `crmauthz connect highlevel` (docs/highlevel.md).
func newConnectHighLevelCmd() *cobra.Command {
	var o highLevelOptions
	cmd := &cobra.Command{
		Use:   "highlevel --location-ids L1,L2 (--token-file F | --token-dir D) --sink URL [flags]",
		Short: "Keep the index in step with a HighLevel account: webhooks, API reads and a periodic reconcile",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, c, err := o.open(cmd.Flags(), 0)
			if err != nil {
				return err
			}
			defer cfg.Sink.Close()
			defer c.Close()
			return serveConnector(cmd.Context(), cfg, c, o.webhookAddr, o.adminAddr)
		},
	}
	o.flags(cmd.Flags(), true)
	cmd.AddCommand(newConnectHighLevelSyncCmd())
	return cmd
}

func newConnectHighLevelSyncCmd() *cobra.Command {
	var o highLevelOptions
	cmd := &cobra.Command{
		Use:   "sync [flags]",
		Short: "One full reconcile of every location to the sink, then exit (0: done, 1: failed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, c, err := o.open(cmd.Flags(), 8)
			if err != nil {
				return err
			}
			defer cfg.Sink.Close()
			defer c.Close()
			if err := c.Sync(cmd.Context()); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			cfg.Logger.Info("sync done")
			return nil
		},
	}
	o.flags(cmd.Flags(), false)
	return cmd
}

// serveConnector runs the connector with its webhook and admin listeners until ctx is done.
func serveConnector(ctx context.Context, cfg highlevel.Config, c *highlevel.Connector, webhookAddr, adminAddr string) error {
	servers := []*http.Server{server.HTTPServer(webhookAddr, c.WebhookHandler()), server.HTTPServer(adminAddr, c.AdminHandler())}
	var lns []net.Listener
	for _, hs := range servers {
		ln, err := net.Listen("tcp", hs.Addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
	}
	errc := make(chan error, len(servers)+1)
	for i, hs := range servers {
		go func() {
			if err := hs.Serve(lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	cfg.Logger.Info("connect highlevel", "webhook_addr", lns[0].Addr().String(), "admin_addr", lns[1].Addr().String(),
		"locations", cfg.LocationIDs)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(rctx) }()
	var err error
	select {
	case err = <-runDone:
	case err = <-errc: // a listener failed
		cancel()
		<-runDone
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	for _, hs := range servers {
		hs.Shutdown(sctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
