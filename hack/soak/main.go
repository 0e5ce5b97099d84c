package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"
)

func main() {
	c := Config{Log: os.Stderr}
	flag.DurationVar(&c.Probe, "probe", 20*time.Second, "how long capacity is measured (closed loop)")
	flag.DurationVar(&c.Duration, "duration", 5*time.Minute, "how long the soak runs")
	flag.Float64Var(&c.Fraction, "fraction", 0.8, "fraction of the measured capacity the soak runs at")
	flag.IntVar(&c.Workers, "workers", 16, "concurrent connections")
	flag.Float64Var(&c.NewTokensPerSecond, "new-tokens-per-second", 20, "never-seen tokens per second in the mix, at most (each is minted and reviewed)")
	flag.DurationVar(&c.Sample, "sample", 10*time.Second, "how often heap and goroutines are read")
	out := flag.String("out", "", "directory for the decision log and result.json (default: a temporary one)")
	keepLog := flag.Bool("keep-log", false, "keep the decision log (about 800 bytes a decision) after its lines are counted")
	flag.Parse()
	if err := run(c, *out, *keepLog); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(c Config, out string, keepLog bool) error {
	if out == "" {
		dir, err := os.MkdirTemp("", "sallyport-soak-")
		if err != nil {
			return err
		}
		out = dir
	}
	if err := os.MkdirAll(out, 0o750); err != nil {
		return err
	}
	c.Dir = out
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	res, err := Run(ctx, c)
	if err != nil {
		return err
	}
	if !keepLog {
		_ = os.Remove(filepath.Join(out, "decisions.log"))
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "result.json"), append(raw, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Printf("%s\n", raw)
	if len(res.Problems) > 0 {
		return fmt.Errorf("%d criteria failed (see problems above; raw output in %s)", len(res.Problems), out)
	}
	return nil
}
