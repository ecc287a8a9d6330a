package dbsync

import (
	"context"
	"errors"
	"strings"
)

// endCall is withCtxErr for call, a public method of s that is returning err; it
// calls the callEnding hook first (tests).
func (s *Syncer) endCall(ctx context.Context, call string, err error) error {
	if s.callEnding != nil {
		s.callEnding(call)
	}
	return withCtxErr(ctx, call, err)
}

// withCtxErr is call's error err once ctx ended, so that errors.Is(err, ctx.Err())
// holds and the message says what ended the call:
//
//   - err has a cause of its own (ownCause: one of dbsync's named errors, or a
//     server error other than 57014, the cancellation lib/pq has the server make
//     when ctx ends): that cause came first and leads the message, ctx's error
//     follows: "dbsync: replication slot is active ...: ... (Teardown's context
//     ended too: context canceled)";
//   - otherwise the caller's context ended the call (its statement cancelled, its
//     rows closed, its socket closed), and the message begins with the call and
//     ctx's error, once: "GetMessages: context canceled: <what failed>".
//
// err is returned unchanged when nil, or when ctx is live.
func withCtxErr(ctx context.Context, call string, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	var ended *ctxEndedError
	if errors.As(err, &ended) {
		return err
	}
	return &ctxEndedError{call: call, ctxErr: ctx.Err(), err: err, own: ownCause(err)}
}

// ctxEndedError is withCtxErr's error: call's error err, returned once its
// context had ended with ctxErr. Both are in its chain.
type ctxEndedError struct {
	call        string
	ctxErr, err error
	own         bool // err has a cause of its own, which leads the message
}

func (e *ctxEndedError) Error() string {
	ctxMsg, msg := e.ctxErr.Error(), e.err.Error()
	if e.own {
		if errors.Is(e.err, e.ctxErr) {
			return msg
		}
		return msg + " (" + e.call + "'s context ended too: " + ctxMsg + ")"
	}
	// "read pg_current_wal_flush_lsn(): context canceled" says where ctx ended it.
	msg = strings.TrimSuffix(msg, ctxMsg)
	msg = strings.TrimSuffix(msg, ": ")
	if msg == "" {
		return e.call + ": " + ctxMsg
	}
	return e.call + ": " + ctxMsg + ": " + msg
}

func (e *ctxEndedError) Unwrap() []error { return []error{e.err, e.ctxErr} }

// namedErrors are the errors of errors.go a call may fail with.
var namedErrors = []error{
	ErrWALLevel, ErrReplicationPrivilege, ErrInsufficientPrivilege, ErrPublicationMissing,
	ErrSlotMismatch, ErrSlotMissing, ErrSlotInUse, ErrSlotInvalidated, ErrInRecovery,
	ErrHandler, ErrMalformedMessage, ErrUnknownRelation, ErrDecodeValue, ErrUnchangedTOAST,
	ErrNoKey, ErrReplicaIdentity, ErrAlreadyRunning, ErrClosed, ErrConfig,
	ErrRefreshAbandoned, ErrSnapshotProgress, ErrNoPrimaryKey, ErrCtrlSchemaNotEmpty,
	ErrEncoding, ErrStatementCancelled,
}

// ownCause tells whether err has a cause other than its caller's context ending: one
// of dbsync's named errors, or a server error other than 57014 query_canceled (which
// lib/pq has the server raise when the context ends).
func ownCause(err error) bool {
	if code, _, ok := serverError(err); ok && code != "57014" {
		return true
	}
	for _, named := range namedErrors {
		if errors.Is(err, named) {
			return true
		}
	}
	return false
}
