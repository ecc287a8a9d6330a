package dbsync

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// nameSettings are the four names dbsync creates objects under, with their option and
// environment variable.
var nameSettings = []struct {
	option string
	env    string
	opt    func(string) SyncerOpt
	get    func(*Syncer) string
}{
	{"WithReplicationSlot", EnvReplSlot, WithReplicationSlot, (*Syncer).ReplicationSlot},
	{"WithPublication", EnvPublication, WithPublication, (*Syncer).Publication},
	{"WithCtrlNamespace", EnvCtrlNamespace, WithCtrlNamespace, (*Syncer).CtrlNamespace},
	{"WithWMTable", EnvWMTable, WithWMTable, (*Syncer).WMTable},
}

// TestConfigNameTooLong: a name over 63 bytes (PostgreSQL would cut it to 63 and
// could take it for another name), from the option or the environment, is ErrConfig
// naming the option and the variable and saying to shorten it; 63 bytes of multi-byte
// characters (31 runes and one byte) are kept whole.
func TestConfigNameTooLong(t *testing.T) {
	for _, n := range nameSettings {
		long := strings.Repeat("é", 32) // 64 bytes, 32 characters
		if n.option == "WithReplicationSlot" {
			long = strings.Repeat("s", 64)
		}
		for _, via := range []SyncerOpt{n.opt(long), env(map[string]string{n.env: long})} {
			_, err := NewSyncer(via, WithSetup(false), WithPGConnStr("host=h"))
			require.ErrorIs(t, err, ErrConfig, n.option)
			for _, want := range []string{n.option, n.env, "at most 63 bytes", "64 bytes"} {
				require.Contains(t, err.Error(), want, n.option)
			}
		}
		fits := strings.Repeat("É", 31) + "x"
		if n.option == "WithReplicationSlot" {
			fits = strings.Repeat("s", 63)
		}
		s := resolved(t, n.opt(fits), env(nil), WithPGConnStr("host=h"))
		require.Equal(t, fits, n.get(s))
	}
}

// TestConfigNameEmptyOrInvalid: an option given an empty name is ErrConfig naming it,
// rather than quietly falling back to the environment or the default (a blank setting
// of the caller's would then share another program's slot); a name holding a NUL byte
// or invalid UTF-8 is ErrConfig too. PostgreSQL cannot store either: as a parameter
// the server refuses it as an encoding error (ErrEncoding, advising about SQL_ASCII
// databases), and pq.QuoteIdentifier cuts a name at its NUL, so the DDL of
// setup and teardown acted on another object ("a\x00b" created schema "a").
func TestConfigNameEmptyOrInvalid(t *testing.T) {
	for _, n := range nameSettings {
		_, err := NewSyncer(n.opt(""), env(map[string]string{n.env: "fromenv"}), WithSetup(false), WithPGConnStr("host=h"))
		require.ErrorIs(t, err, ErrConfig, n.option)
		require.Contains(t, err.Error(), n.option+`("")`)
		require.Contains(t, err.Error(), "leave the option out")
		for _, bad := range []string{"a\x00b", "a\xffb"} {
			_, err := NewSyncer(n.opt(bad), env(nil), WithSetup(false), WithPGConnStr("host=h"))
			require.ErrorIs(t, err, ErrConfig, "%s(%q)", n.option, bad)
			require.NotErrorIs(t, err, ErrEncoding)
			require.Contains(t, err.Error(), n.option, "%s(%q)", n.option, bad)
		}
	}
}
