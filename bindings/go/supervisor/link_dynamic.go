//go:build !devrig_static

package supervisor

// Dynamic linking (the default): flags come from pkg-config (devrig.pc).
// In the source tree: PKG_CONFIG_PATH=<root>/build/pkgconfig, and at run
// time LD_LIBRARY_PATH=<root>/target/release (or an rpath).

/*
#cgo pkg-config: devrig
*/
import "C"
