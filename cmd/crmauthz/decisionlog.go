package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/metrics"
)

// openedDecisionLog is the decision log of `serve` and the file it writes.
type openedDecisionLog struct {
	*decisionlog.Logger // nil when off
	file                *os.File
	log                 *slog.Logger
}

// openDecisionLog starts the decision log of --decision-log: nil Logger for
// "off" (or a sample rate of 0), stdout, or a file opened for appending.
func openDecisionLog(o serveOptions, m *metrics.Metrics, log *slog.Logger) (*openedDecisionLog, error) {
	d := &openedDecisionLog{log: log}
	if o.decisionLog == "" || o.decisionLog == decisionLogOff || o.decisionLogSample == 0 {
		return d, nil
	}
	var out io.Writer
	switch o.decisionLog {
	case "stdout":
		out = os.Stdout
	default:
		f, err := os.OpenFile(o.decisionLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("--decision-log: %w", err)
		}
		d.file, out = f, f
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	cfg := o.decisionLogConfig()
	cfg.Output, cfg.InstanceID, cfg.Version, cfg.OnDrop, cfg.Logger = out, hex.EncodeToString(id[:]), version, m.DecisionLogDropped, log
	l, err := decisionlog.New(cfg)
	if err != nil {
		if d.file != nil {
			d.file.Close()
		}
		return nil, fmt.Errorf("--decision-log: %w", err)
	}
	d.Logger = l
	log.Info("decision log on", "output", o.decisionLog, "sample", o.decisionLogSample,
		"mask", o.decisionLogMask, "erase", o.decisionLogErase)
	return d, nil
}

// decisionLogConfig is the decision log's configuration from the flags
// (without its output); the fields without a flag keep their defaults.
func (o *serveOptions) decisionLogConfig() decisionlog.Config {
	cfg := decisionlog.DefaultConfig()
	cfg.SampleRate, cfg.Mask, cfg.Erase, cfg.BufferSize = o.decisionLogSample, o.decisionLogMask, o.decisionLogErase, o.decisionLogBuffer
	return cfg
}

// close writes what is queued and closes the file.
func (d *openedDecisionLog) close() {
	if err := d.Logger.Close(); err != nil {
		d.log.Error("closing the decision log", "err", err)
	}
	if d.file != nil {
		if err := d.file.Close(); err != nil {
			d.log.Error("closing the decision log", "err", err)
		}
	}
}
