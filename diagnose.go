package dbsync

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// diagnoseTimeout bounds diagnose's catalog query.
const diagnoseTimeout = 5 * time.Second

// diagnose names a server error of the slot functions (a peek, an advance, a slot
// copy) from the catalog. classify tells the cases that share a SQLSTATE apart by the
// message's English text, which fails in two ways: a server may report in another
// language (lc_messages: servers installed under a German locale write
// "Replikations-Slot »s« existiert nicht"), and the message quotes object names,
// which may themselves contain the words classify looks for (a slot named
// "publication_sync"). So for the SQLSTATEs that can mean a named error, diagnose
// reads the catalog (sql/diagnose.sql), and what it finds wins:
//
//   - 42704 (undefined_object): ErrSlotMissing when the slot is gone, else
//     ErrPublicationMissing when the publication is;
//   - 55000 (object_not_in_prerequisite_state): ErrSlotInvalidated when the slot's
//     wal_status is lost, else ErrInRecovery on a standby (pg_current_wal_flush_lsn:
//     "recovery is in progress"), else ErrWALLevel when wal_level is not logical;
//   - 42501 (insufficient_privilege): ErrReplicationPrivilege when the role is neither
//     superuser nor REPLICATION;
//   - 0A000 (feature_not_supported): ErrInRecovery on a standby;
//   - any of these and 22023 (invalid_parameter_value: another plugin refusing
//     pgoutput's options): ErrSlotMismatch when the slot is not a logical pgoutput
//     slot of this database (a Syncer made with WithSetup(false) on another slot).
//
// The result wraps the named error and the driver's error (*pq.Error or
// *pgconn.PgError). Any other error, a catalog that explains nothing, or a failed
// diagnosis returns err unchanged (as classify named it, or not). The query runs even
// when ctx is cancelled, for at most diagnoseTimeout; it is only made for an error
// that ends Run, GetMessages or Forward.
func (s *Syncer) diagnose(ctx context.Context, err error) error {
	code, _, ok := serverError(err)
	if !ok {
		return err
	}
	switch code {
	case "42704", "55000", "42501", "0A000", "22023":
	default:
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), diagnoseTimeout)
	defer cancel()
	var slotExists, pubExists, inRecovery, canReplicate bool
	var walStatus, slotType, plugin, database, current, walLevel string
	if qerr := s.db.QueryRowContext(ctx, sqlText("diagnose.sql"), s.replicationSlot, s.publication).
		Scan(&slotExists, &walStatus, &slotType, &plugin, &database, &current, &pubExists, &walLevel, &inRecovery, &canReplicate); qerr != nil {
		s.log.Debug("dbsync: could not diagnose a server error", "err", err, "diagnosis_err", qerr)
		return err
	}
	var named error
	var what string
	switch {
	case code == "42704" && !slotExists:
		return s.errSlotDropped(driverError(err))
	case slotExists && s.errForeignSlot(slotType, plugin, database, current, "") != nil:
		return fmt.Errorf("%w: %w", s.errForeignSlot(slotType, plugin, database, current, "dbsync cannot read it"), driverError(err))
	case code == "42704" && !pubExists:
		named, what = ErrPublicationMissing, "publication "+s.publication+" does not exist; create it, or pass ForTables to NewSyncer"
	case code == "55000" && walStatus == "lost":
		return s.errSlotLost(driverError(err))
	case code == "55000" && inRecovery:
		named, what = ErrInRecovery, "the server is a standby"
	case code == "55000" && walLevel != "logical":
		named, what = ErrWALLevel, "wal_level is "+walLevel
	case code == "42501" && !canReplicate:
		named, what = ErrReplicationPrivilege, "the role has neither SUPERUSER nor REPLICATION"
	case code == "0A000" && inRecovery:
		named, what = ErrInRecovery, "the server is a standby"
	default:
		return err
	}
	return wrapNamed(named, what, driverError(err))
}

// errSlotDropped is ErrSlotMissing for the Syncer's slot, found missing from
// pg_replication_slots after setup, with what to do; cause is the server's error that
// led there, or nil.
func (s *Syncer) errSlotDropped(cause error) error {
	err := fmt.Errorf("%w: %q no longer exists (dropped?): run setup again (NewSyncer creates a new slot, which starts at its creation) and rebuild consumers with a snapshot",
		ErrSlotMissing, s.replicationSlot)
	if cause != nil {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// errForeignSlot is ErrSlotMismatch for the Syncer's slot when pg_replication_slots
// says it is not a logical pgoutput slot of the current database (slotType, plugin,
// database, current), saying what dbsync does not do with it (what); nil otherwise.
func (s *Syncer) errForeignSlot(slotType, plugin, database, current, what string) error {
	switch {
	case slotType != "logical" || plugin != "pgoutput":
		kind := slotType + " slot"
		if plugin != "" {
			kind += fmt.Sprintf(" with plugin %q", plugin)
		}
		return fmt.Errorf("%w: slot %q is a %s, not a logical pgoutput slot: %s; check the slot name (WithReplicationSlot / %s / -slot)",
			ErrSlotMismatch, s.replicationSlot, kind, what, EnvReplSlot)
	case database != current:
		return fmt.Errorf("%w: slot %q belongs to database %q, not %q: %s; connect to that database, or check the slot name (WithReplicationSlot / %s / -slot)",
			ErrSlotMismatch, s.replicationSlot, database, current, what, EnvReplSlot)
	}
	return nil
}

// errSlotLost is ErrSlotInvalidated for the Syncer's slot, whose
// pg_replication_slots.wal_status is lost, with what to do; cause is the server's
// error that led there, or nil.
func (s *Syncer) errSlotLost(cause error) error {
	err := fmt.Errorf("%w: slot %q has wal_status lost (the server removed WAL it still needed, see max_slot_wal_keep_size): drop it with SELECT pg_drop_replication_slot(%s), then set up again (a new slot starts at its creation) and rebuild consumers with a snapshot",
		ErrSlotInvalidated, s.replicationSlot, pq.QuoteLiteral(s.replicationSlot))
	if cause != nil {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	return err
}
