//go:build devrig_static

package supervisor

// Static linking (go build -tags devrig_static): libdevrig.a is linked into
// the Go binary, which then needs no libdevrig.so at run time. By default the
// archive and header are taken from this source tree (after `make build` at
// its root); for an installed libdevrig add its directories with
// CGO_CFLAGS=-I<prefix>/include CGO_LDFLAGS=-L<prefix>/lib.
// The system libraries are those of devrig.pc's Libs.private.

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -L${SRCDIR}/../../../target/release -l:libdevrig.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
*/
import "C"
