package decision

import (
	"crypto/rand"
	"encoding/hex"
)

// NewDecisionID returns 128 random bits as 32 lower-case hex digits. It is
// the engine's default ID generator.
//
// The bits come from crypto/rand: a decision ID names a line in an audit
// log, so it must be unique and not predictable from earlier ones. On Linux
// crypto/rand reads from the kernel's vDSO getrandom (a system call on
// kernels before 6.11), which costs tens of nanoseconds, so nothing cheaper
// and weaker is worth it.
func NewDecisionID() string {
	var raw [16]byte
	// crypto/rand.Read never fails (since Go 1.24 it aborts the program if
	// the kernel cannot supply randomness).
	_, _ = rand.Read(raw[:])
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}
