package dbsync

import (
	"fmt"
	"math"
)

// checkFields returns ErrConfig for an exported setting of the poller that the options
// would have refused (they check their values; a field set directly is checked here,
// when Run starts): an idle backoff that would poll without a pause or shrink its
// waits, a negative interval or bound, an unknown handler error policy. The snapshot
// settings are checked when Snapshot reads them (checkSnapshotFields): they may be
// set between Snapshots while Run runs.
func (s *Syncer) checkFields() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("%w: Syncer.%s = %v: %s", ErrConfig, field, v, want)
	}
	switch f := s.TimerDelayBackoffFactor; {
	case s.DelayBetweenPeekRetries <= 0:
		return bad("DelayBetweenPeekRetries", s.DelayBetweenPeekRetries, "must be > 0 (the first wait after an empty poll; without one an idle Syncer polls without a pause); see WithPollBackoff")
	case math.IsNaN(f) || math.IsInf(f, 0) || f < 1:
		return bad("TimerDelayBackoffFactor", f, "must be a finite number >= 1 (the idle backoff's waits must not shrink); see WithPollBackoff")
	case s.MaxDelayBetweenEmptyPeeks < s.DelayBetweenPeekRetries:
		return bad("MaxDelayBetweenEmptyPeeks", s.MaxDelayBetweenEmptyPeeks, fmt.Sprintf("must be >= DelayBetweenPeekRetries (%v); see WithPollBackoff", s.DelayBetweenPeekRetries))
	case s.MinPollInterval < 0:
		return bad("MinPollInterval", s.MinPollInterval, "must be >= 0 (0: poll again at once)")
	case s.MaxMessagesToRead < 0 || s.MaxMessagesToRead > math.MaxInt32:
		return bad("MaxMessagesToRead", s.MaxMessagesToRead, "must be from 0 (no row bound) to 2147483647 rows (the peek's upto_nchanges is an int4)")
	case s.HandlerErrorPolicy != StopOnHandlerError && s.HandlerErrorPolicy != RetryOnHandlerError:
		return bad("HandlerErrorPolicy", s.HandlerErrorPolicy, "use StopOnHandlerError or RetryOnHandlerError")
	}
	return nil
}

// checkSnapshotFields returns ErrConfig for a negative snapshot setting set on the
// struct directly (0 means the default); Snapshot checks them when called.
func (s *Syncer) checkSnapshotFields() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("%w: Syncer.%s = %v: %s", ErrConfig, field, v, want)
	}
	switch {
	case s.SnapshotChunkSize < 0:
		return bad("SnapshotChunkSize", s.SnapshotChunkSize, "must be >= 1 rows, or 0 for DefaultSnapshotChunkSize")
	case s.SnapshotChunksInFlight < 0:
		return bad("SnapshotChunksInFlight", s.SnapshotChunksInFlight, "must be >= 1 chunks, or 0 for DefaultSnapshotChunksInFlight")
	case s.SnapshotParallel < 0:
		return bad("SnapshotParallel", s.SnapshotParallel, "must be >= 1 chunks at once, or 0 for DefaultSnapshotParallel")
	}
	return nil
}
