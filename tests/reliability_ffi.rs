//! The unsafe helpers of the C ABI that need no child process: argument
//! checks, string and buffer handling, last_error, handle life cycle before a
//! run. Written so that it also runs under Miri (see RELIABILITY.md):
//! `cargo +nightly miri test --test reliability_ffi`.

use std::ffi::{c_char, CStr};
use std::ptr;

use devrig::ffi::devrig_outcome_kind::*;
use devrig::ffi::devrig_restart_mode::*;
use devrig::ffi::devrig_status::*;
use devrig::ffi::*;

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { CStr::from_ptr(devrig_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn pid_file_path_is_snprintf_like_at_every_capacity() {
    let dir = c"/var/lib/some state";
    let want = b"/var/lib/some state/devrig.pid";
    // SAFETY: NULL buffer with capacity 0 is allowed.
    let n = unsafe { devrig_pid_file_path(dir.as_ptr(), ptr::null_mut(), 0) };
    assert_eq!(n, want.len());
    for cap in 1..=want.len() + 2 {
        // Exactly `cap` bytes: Miri reports any write past them.
        let mut buf = vec![0x55 as c_char; cap];
        // SAFETY: buf has cap bytes.
        let n = unsafe { devrig_pid_file_path(dir.as_ptr(), buf.as_mut_ptr(), cap) };
        assert_eq!(n, want.len());
        let written = cap.min(want.len() + 1);
        assert_eq!(buf[written - 1], 0, "cap {cap}: not terminated");
        let got: Vec<u8> = buf[..written - 1].iter().map(|&c| c as u8).collect();
        assert_eq!(got, want[..written - 1]);
    }
    // Bad input: NULL dir, NULL buffer with capacity, invalid UTF-8.
    // SAFETY: each argument is NULL or valid.
    unsafe {
        assert_eq!(devrig_pid_file_path(ptr::null(), ptr::null_mut(), 0), 0);
        assert!(last_error().contains("state directory"));
        assert_eq!(devrig_pid_file_path(dir.as_ptr(), ptr::null_mut(), 5), 0);
        assert!(last_error().contains("buf is NULL"));
        let bad = [0xffu8 as c_char, 0];
        assert_eq!(devrig_pid_file_path(bad.as_ptr(), ptr::null_mut(), 0), 0);
        assert!(!last_error().is_empty());
    }
}

#[test]
fn restart_mode_parse_writes_only_on_success() {
    let mut m = DEVRIG_RESTART_NEVER;
    // SAFETY: valid pointers or NULL.
    unsafe {
        assert_eq!(
            devrig_restart_mode_parse(c"always".as_ptr(), &mut m),
            DEVRIG_OK
        );
        assert_eq!(m, DEVRIG_RESTART_ALWAYS);
        assert_eq!(
            devrig_restart_mode_parse(c"sometimes".as_ptr(), &mut m),
            DEVRIG_E_INVALID_ARGUMENT
        );
        assert_eq!(m, DEVRIG_RESTART_ALWAYS);
        assert!(last_error().contains("sometimes"));
        assert_eq!(
            devrig_restart_mode_parse(ptr::null(), &mut m),
            DEVRIG_E_INVALID_ARGUMENT
        );
        assert_eq!(
            devrig_restart_mode_parse(c"never".as_ptr(), ptr::null_mut()),
            DEVRIG_E_INVALID_ARGUMENT
        );
    }
}

extern "C" fn on_log(_: *mut std::ffi::c_void, _: *const devrig_log_line) {}
extern "C" fn on_event(_: *mut std::ffi::c_void, _: *const devrig_event) {}

#[test]
fn handle_life_cycle_without_a_run() {
    // SAFETY: every pointer is NULL or valid; the handle is freed once.
    unsafe {
        assert!(devrig_new(ptr::null(), c"true".as_ptr()).is_null());
        assert!(devrig_new(c"../etc".as_ptr(), c"true".as_ptr()).is_null());
        assert!(last_error().contains("safe file name"));
        let long = "x".repeat(129) + "\0";
        assert!(devrig_new(long.as_ptr() as *const c_char, c"true".as_ptr()).is_null());
        assert!(devrig_new(c"svc".as_ptr(), c"   ".as_ptr()).is_null());

        let h = devrig_new(c"svc".as_ptr(), c"echo hi".as_ptr());
        assert!(!h.is_null());
        assert_eq!(devrig_set_env(h, c"K".as_ptr(), c"v".as_ptr()), DEVRIG_OK);
        assert_eq!(
            devrig_set_env(h, c"K=".as_ptr(), c"v".as_ptr()),
            DEVRIG_E_INVALID_ARGUMENT
        );
        let mut p = devrig_default_policy();
        p.max_delay_ms = p.initial_delay_ms - 1;
        assert_eq!(devrig_set_policy(h, &p), DEVRIG_E_INVALID_ARGUMENT);
        assert_eq!(devrig_set_policy(h, ptr::null()), DEVRIG_E_INVALID_ARGUMENT);
        assert_eq!(devrig_set_max_line_bytes(h, 0), DEVRIG_E_INVALID_ARGUMENT);
        assert_eq!(devrig_set_max_line_bytes(h, 1), DEVRIG_OK);
        assert_eq!(devrig_on_log(h, Some(on_log), ptr::null_mut()), DEVRIG_OK);
        assert_eq!(
            devrig_on_event(h, Some(on_event), ptr::null_mut()),
            DEVRIG_OK
        );
        assert_eq!(devrig_on_log(h, None, ptr::null_mut()), DEVRIG_OK);

        let mut o = std::mem::MaybeUninit::<devrig_outcome>::uninit();
        assert_eq!(devrig_outcome_get(h, o.as_mut_ptr()), DEVRIG_OK);
        let o = o.assume_init();
        assert_eq!(o.kind, DEVRIG_OUTCOME_NONE);
        assert_eq!(CStr::from_ptr(o.message).to_bytes(), b"");
        assert_eq!(
            devrig_outcome_get(h, ptr::null_mut()),
            DEVRIG_E_INVALID_ARGUMENT
        );

        // Cancel before the run: allowed, idempotent.
        assert_eq!(devrig_cancel(h), DEVRIG_OK);
        assert_eq!(devrig_cancel(h), DEVRIG_OK);
        assert_eq!(devrig_cancel(ptr::null_mut()), DEVRIG_E_INVALID_ARGUMENT);
        assert_eq!(devrig_wait(h, 0), DEVRIG_E_STATE);
        devrig_free(h);
        devrig_free(ptr::null_mut());
    }
}

#[test]
fn version_and_default_policy() {
    // SAFETY: a static C string.
    let v = unsafe { CStr::from_ptr(devrig_version()) };
    assert_eq!(v.to_str().unwrap(), devrig::VERSION);
    let p = devrig_default_policy();
    assert_eq!((p.max_restarts, p.initial_delay_ms), (10, 500));
}
