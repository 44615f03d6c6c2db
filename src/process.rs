//! The syscall layer: spawning, pidfds, waiting, reading /proc, signalling,
//! and the process utilities of the public API (kill_tree, start times).
//!
//! All `unsafe` of the core outside `ffi` lives here; each block says why it
//! is sound.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What to start: `/bin/sh -c command` with an environment overlay.
pub(crate) struct SpawnSpec<'a> {
    pub command: &'a str,
    pub working_dir: Option<&'a Path>,
    pub env: &'a [(OsString, OsString)],
    /// `NAME=1` put into the child's environment; inherited by everything
    /// it starts, so that escaped descendants can be found again.
    pub tag: &'a str,
}

/// A started child: its pid, a pidfd for it, and our ends of its pipes
/// (non-blocking, close-on-exec).
pub(crate) struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub mark: SpawnMark,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_nz(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// For our fresh pipe ends only: their status flags are known to be empty
/// (F_SETFL leaves the access mode alone), so no F_GETFL is needed.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    Ok(())
}

fn cstring(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Locks one of this module's process-wide mutexes (a poisoned one is still
/// used: each holds plain data that a panic cannot leave half-changed in a
/// way that matters), making sure first that a fork() of the host cannot
/// catch it held (see `before_fork`).
fn locked<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    static HANDLERS: std::sync::Once = std::sync::Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: registers three extern "C" functions without arguments
        // that live as long as the process (this library is never unloaded
        // while it has threads).
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every process-wide mutex of this module, held by the forking thread
/// from just before a fork() until just after it, in parent and child.
type ForkGuards = (
    MutexGuard<'static, Vec<u8>>,
    MutexGuard<'static, Option<Facts>>,
    MutexGuard<'static, (i32, Vec<i32>)>,
    MutexGuard<'static, Children>,
    MutexGuard<'static, (u32, u64)>,
    [MutexGuard<'static, Option<(OwnedFd, u64, u64)>>; 3],
);

thread_local! {
    static FORK_GUARDS: std::cell::RefCell<Option<ForkGuards>> =
        const { std::cell::RefCell::new(None) };
}

/// pthread_atfork's prepare handler. A fork() that lands while a library
/// thread holds one of these mutexes leaves the child a copy that is locked
/// for good, and "new handles work in a forked child" (README) would not
/// hold: the child's sweeps and spawns would wait forever. So the forking
/// thread takes them all first, in the one order in which any code path
/// nests them (the /proc/stat buffer before the kept files; the shared
/// readings before the host's line and the children registry), and
/// releases them on both sides of the fork.
extern "C" fn before_fork() {
    let _ = std::panic::catch_unwind(|| {
        let g = (
            FORK_COUNT_BUF.lock().unwrap_or_else(|e| e.into_inner()),
            FACTS.lock().unwrap_or_else(|e| e.into_inner()),
            HOST_LINE.lock().unwrap_or_else(|e| e.into_inner()),
            CHILDREN.lock().unwrap_or_else(|e| e.into_inner()),
            TAG_HOST.lock().unwrap_or_else(|e| e.into_inner()),
            [&KEPT_PROC_STAT, &KEPT_LOADAVG, &KEPT_DEV_NULL]
                .map(|m| m.lock().unwrap_or_else(|e| e.into_inner())),
        );
        FORK_GUARDS.with(|f| *f.borrow_mut() = Some(g));
    });
}

/// pthread_atfork's parent and child handler: releases what `before_fork`
/// took (the forking thread is the child's only thread, so the guards it
/// holds are the child's to drop).
extern "C" fn after_fork() {
    let _ = std::panic::catch_unwind(|| {
        FORK_GUARDS.with(|f| drop(f.borrow_mut().take()));
    });
}

/// Owns a posix_spawn attribute object and destroys it.
struct SpawnAttr(libc::posix_spawnattr_t);

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this value exists.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// The child's descriptors as posix_spawn file actions: stdin, stdout and
/// stderr from `fds`, the working directory, every other descriptor closed.
struct FileActions {
    fds: [RawFd; 3],
    actions: libc::posix_spawn_file_actions_t,
}

impl FileActions {
    fn new(fds: [RawFd; 3], dir: Option<&CString>) -> io::Result<Box<FileActions>> {
        let mut fa = Box::new(FileActions {
            fds,
            // SAFETY: a zeroed value is only a placeholder for init to fill.
            actions: unsafe { std::mem::zeroed() },
        });
        // SAFETY: init before any other use; Drop destroys it (it runs only
        // once init succeeded: on failure the zeroed object is forgotten).
        unsafe {
            if let Err(e) = cvt_nz(libc::posix_spawn_file_actions_init(&mut fa.actions)) {
                std::mem::forget(fa);
                return Err(e);
            }
            let a = &mut fa.actions;
            for (target, fd) in fds.into_iter().enumerate() {
                cvt_nz(libc::posix_spawn_file_actions_adddup2(a, fd, target as i32))?;
            }
            if let Some(dir) = dir {
                cvt_nz(libc::posix_spawn_file_actions_addchdir_np(a, dir.as_ptr()))?;
            }
            #[cfg(target_env = "gnu")]
            cvt_nz(libc::posix_spawn_file_actions_addclosefrom_np(a, 3))?;
        }
        Ok(fa)
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` before this value escaped it.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.actions) };
    }
}

thread_local! {
    /// The file actions of this thread's last spawn without a working
    /// directory. A restarting service gets the same descriptor numbers
    /// each time, and glibc checks every number with getrlimit() as it is
    /// added: seven syscalls per spawn that reuse saves.
    static KEPT_ACTIONS: std::cell::RefCell<Option<Box<FileActions>>> =
        const { std::cell::RefCell::new(None) };
}

/// Calls `f` with file actions for `fds` and `dir`: this thread's kept ones
/// when they match, else new ones (kept in turn when there is no `dir`).
fn with_file_actions<R>(
    fds: [RawFd; 3],
    dir: Option<&CString>,
    f: impl FnOnce(&libc::posix_spawn_file_actions_t) -> R,
) -> io::Result<R> {
    if dir.is_some() {
        return Ok(f(&FileActions::new(fds, dir)?.actions));
    }
    KEPT_ACTIONS.with(|k| {
        let Ok(mut kept) = k.try_borrow_mut() else {
            return Ok(f(&FileActions::new(fds, None)?.actions));
        };
        if kept.as_ref().map(|fa| fa.fds) != Some(fds) {
            *kept = None;
            *kept = Some(FileActions::new(fds, None)?);
        }
        match kept.as_ref() {
            Some(fa) => Ok(f(&fa.actions)),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    })
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// The child's environment as execve takes it: the host's current entries
/// except those the overlay replaces, then the overlay, then the tag, all
/// copied into one block. Copying them one by one (std::env::vars_os, an
/// OsString pair and then a CString each: about a hundred allocations) was
/// the largest user-space cost of a restart. Pointing into `environ`
/// instead would be cheaper still, but a host that replaces a variable
/// meanwhile (Python's os.environ frees the string it replaced) would leave
/// the pointer dangling until execve has read it; a copy is exposed only
/// while it is taken, as getenv(3) is.
struct ChildEnv {
    /// The entries, each followed by a NUL byte; `ptrs` points into it.
    _block: Vec<u8>,
    ptrs: Vec<*mut libc::c_char>,
}

fn child_env(spec: &SpawnSpec<'_>) -> io::Result<ChildEnv> {
    let mut block = Vec::with_capacity(4096);
    let mut ends = Vec::with_capacity(64);
    // SAFETY: `environ` is the C library's NULL-terminated array of
    // NUL-terminated strings, read here as getenv(3) reads it: on the rule
    // that no thread changes the environment meanwhile (the rule of
    // setenv(3) and of std::env::set_var). Each entry is copied at once.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = std::ffi::CStr::from_ptr(*p).to_bytes_with_nul();
            let key = entry
                .split(|&b| b == b'=' || b == 0)
                .next()
                .unwrap_or(entry);
            if !spec.env.iter().any(|(k, _)| k.as_bytes() == key) {
                block.extend_from_slice(entry);
                ends.push(block.len());
            }
            p = p.add(1);
        }
    }
    for (k, v) in spec.env {
        let kv = [k.as_bytes(), b"=", v.as_bytes()].concat();
        block.extend_from_slice(cstring("environment variable", &kv)?.as_bytes_with_nul());
        ends.push(block.len());
    }
    block.extend_from_slice(cstring("tag", spec.tag.as_bytes())?.as_bytes_with_nul());
    ends.push(block.len());
    // The block is complete: it does not move any more.
    let base = block.as_mut_ptr() as *mut libc::c_char;
    let mut ptrs = Vec::with_capacity(ends.len() + 1);
    let mut start = 0;
    for end in ends {
        // SAFETY: `start` is within the block (an entry begins there).
        ptrs.push(unsafe { base.add(start) });
        start = end;
    }
    ptrs.push(std::ptr::null_mut());
    Ok(ChildEnv {
        _block: block,
        ptrs,
    })
}

/// Starts `/bin/sh -c command` in a new process group with posix_spawn:
/// stdin from /dev/null, stdout and stderr to fresh pipes, every signal at
/// its default disposition, an empty signal mask, and (glibc) every other
/// descriptor closed. posix_spawn keeps the vfork fast path, so spawning
/// costs the same in a small or a huge host.
pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> io::Result<Child> {
    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let argv_owned = [
        cstring("argv", b"sh")?,
        cstring("argv", b"-c")?,
        cstring("command", spec.command.as_bytes())?,
    ];
    let mut argv: Vec<*mut libc::c_char> = argv_owned
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .collect();
    argv.push(std::ptr::null_mut());
    let env = child_env(spec)?;
    let dir = match spec.working_dir {
        Some(d) => Some(cstring("working directory", d.as_os_str().as_bytes())?),
        None => None,
    };

    let forks_before = forks_lower_bound();
    let born_since = ticks_now_lower_bound();
    let seq_before = SPAWN_SEQ.fetch_add(1, Ordering::SeqCst);
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute object is initialised before use and destroyed
    // by `SpawnAttr`; every pointer handed to posix_spawn (argv, envp, path,
    // directory) points into values that outlive the call; the descriptors
    // are open until after posix_spawn returns.
    unsafe {
        let mut attr = SpawnAttr(std::mem::zeroed());
        if let Err(e) = cvt_nz(libc::posix_spawnattr_init(&mut attr.0)) {
            std::mem::forget(attr);
            return Err(e);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        // Every bit set, not sigfillset(): glibc's sigfillset leaves out its
        // internal signals (32, 33), and its posix_spawn then sets those to
        // SIG_IGN in the child, so every service would start with them
        // ignored (SigIgn 0x180000000), not with default dispositions.
        let mut all: libc::sigset_t = std::mem::zeroed();
        std::ptr::write_bytes(
            &mut all as *mut libc::sigset_t as *mut u8,
            0xff,
            std::mem::size_of::<libc::sigset_t>(),
        );
        cvt_nz(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
        cvt_nz(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all))?;
        cvt_nz(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        cvt_nz(libc::posix_spawnattr_setflags(
            &mut attr.0,
            flags as libc::c_short,
        ))?;
        with_dev_null(|devnull| {
            let fds = [devnull, out_w.as_raw_fd(), err_w.as_raw_fd()];
            with_file_actions(fds, dir.as_ref(), |actions| {
                cvt_nz(libc::posix_spawn(
                    &mut pid,
                    c"/bin/sh".as_ptr(),
                    actions,
                    &attr.0,
                    argv.as_ptr(),
                    env.ptrs.as_ptr(),
                ))
            })?
        })?;
    }
    let seq_after = SPAWN_SEQ.fetch_add(1, Ordering::SeqCst);
    drop((out_w, err_w));
    children().live.insert(pid, seq_before);
    // The child is ours and, unless a host reaps behind our back,
    // unreaped, so its pid cannot be reused before the pidfd is opened.
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // Spawned, ended and reaped already: a host that ignores SIGCHLD
        // has the kernel reap at once, and a host's waitpid(-1) may be
        // quicker than us. That is a run whose exit status was taken, not
        // a failed spawn: a descriptor that is always readable stands in
        // for the pidfd, so the exit is noticed at once (and its status
        // reported unknown, as when the child is reaped later).
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => match always_readable() {
            Ok(fd) => fd,
            Err(e) => {
                abandon_spawn(pid);
                return Err(e);
            }
        },
        Err(e) => {
            abandon_spawn(pid);
            return Err(e);
        }
    };
    if let Err(e) = set_nonblocking(&out_r).and_then(|_| set_nonblocking(&err_r)) {
        abandon_spawn(pid);
        return Err(e);
    }
    Ok(Child {
        pid,
        pidfd,
        stdout: out_r,
        stderr: err_r,
        mark: SpawnMark::new(pid, forks_before, seq_after).born_since(born_since),
    })
}

/// One read(2) into `buf`.
pub(crate) fn read_fd(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf`, a live slice.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// True when a pipe has unread bytes (FIONREAD).
pub(crate) fn bytes_pending(fd: &impl AsRawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    r == 0 && n > 0
}

/// A child that cannot be watched (no pidfd: descriptor limits) is not left
/// running: it is killed with its group and reaped before the error is
/// reported.
fn abandon_spawn(pid: i32) {
    kill_group(pid, libc::SIGKILL);
    children().live.remove(&pid);
    // SAFETY: `pid` is our unreaped child, so the pid names it alone;
    // SIGKILL cannot be ignored, so this wait is short.
    unsafe {
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// An eventfd whose counter is 1: readable until closed. pidfd calls on it
/// fail with EBADF, which the driver takes as "reaped by someone else".
fn always_readable() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags, returns a new fd.
    let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor (opened close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    pidfd_send_signal_flags(fd, sig, 0)
}

/// pidfd_send_signal(2) flag (Linux 6.9): signal the process group of the
/// pidfd's process, as kill(-pgrp) would, without the pid-reuse race.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

fn pidfd_send_signal_flags(fd: &OwnedFd, sig: i32, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: plain integers; a null siginfo asks for kill()-like semantics.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How our child ended, as waitid reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Asks whether our child has exited, without reaping it (`WNOWAIT`): the
/// unreaped child keeps its pid and process-group id reserved while its
/// leftovers are cleaned up.
pub(crate) fn peek_exit(pidfd: &OwnedFd, pid: i32) -> io::Result<Option<WaitStatus>> {
    waitid(pidfd, pid, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
}

/// Reaps our exited child.
pub(crate) fn reap(pidfd: &OwnedFd, pid: i32) -> io::Result<Option<WaitStatus>> {
    // Before the pid can be freed: see `Children`.
    let spawned = children().live.remove(&pid);
    let res = waitid(pidfd, pid, libc::WEXITED | libc::WNOHANG);
    if let (Ok(Some(_)), Some(seq)) = (&res, spawned) {
        let mut c = children();
        if c.freed.len() >= 4096 {
            c.freed.clear();
        }
        c.freed.insert(pid, seq);
    }
    res
}

fn waitid(pidfd: &OwnedFd, pid: i32, options: libc::c_int) -> io::Result<Option<WaitStatus>> {
    loop {
        // SAFETY: `info` is a zeroed siginfo_t for waitid to fill; the pidfd
        // (or pid, on kernels before 5.4) names only our own child, never -1.
        let (ret, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let mut ret = libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                options,
            );
            if ret == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                ret = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options);
            }
            (ret, info)
        };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid succeeded, so the siginfo fields are initialised.
        let (si_pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if si_pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => WaitStatus::Exited(status),
            _ => WaitStatus::Signaled(status),
        }));
    }
}

/// What the leftover sweep of one service can skip without a syscall among
/// the pids created since its spawn (500 services would otherwise cost
/// hundreds of reads of /proc per stop). Both map a pid to the spawn
/// sequence number (`SPAWN_SEQ`) taken just before its spawn began.
/// - `live`: the children that `spawn` started in this process and that are
///   not reaped yet. Such a pid cannot be reused, and the process is a child
///   of the host, never a descendant of another service. A pid is removed
///   before its reap.
/// - `freed`: such children, reaped. A sweep looks only at pids allocated
///   since its spawn, on the condition that the allocator has not gone round
///   since (see `pids_created_since`). A pid whose spawn began after the
///   sweep's own spawn had returned was allocated after the sweep's child,
///   and once freed it cannot have been allocated again without the
///   allocator going round. (Ordering by the sequence, not by fork counts:
///   two spawns on two threads can read the counter in one order and fork
///   in the other.)
struct Children {
    live: std::collections::BTreeMap<i32, u64>,
    freed: std::collections::BTreeMap<i32, u64>,
    /// A reading of `processes` (/proc/stat): see `forks_if_held`.
    forks_at: Option<ForksNoted>,
}

/// A `processes` count, with the last pid handed out (the same read just
/// before and just after it), what held that pid then, and when.
#[derive(Clone, Copy, Debug)]
struct ForksNoted {
    last: i32,
    holder: Option<Holder>,
    forks: u64,
    at: Instant,
}

/// How long an unchanged last pid proves by itself that no pid was handed
/// out since, when at least `MIN_FREE_PIDS` pids are free: going all the
/// way round means handing out every free pid, 16384 in 5 ms being 3.3
/// million per second. That is over a hundred times what a 2-CPU VM manages
/// (26 thousand threads per second, two processes at it), and more CPUs do
/// not multiply it: every creation takes the namespace's pid lock and the
/// task list's write lock in turn. With fewer free pids (a small pid_max:
/// since Linux 6.14 each pid namespace has its own, down to 301; or a
/// nearly full pid space) only the pid's holder can vouch for the count.
const PID_WRAP_WINDOW: Duration = Duration::from_millis(5);
const MIN_FREE_PIDS: i64 = 16384;

/// What held a pid when it was noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// A live child of ours, by its spawn sequence.
    Child(u64),
    /// Another process or thread, by its start time in clock ticks.
    Started(u64),
}

impl Children {
    /// True when a sweep for the spawn `mark` can skip `pid`.
    fn skips(&self, pid: i32, mark: &SpawnMark) -> bool {
        (pid != mark.pid && self.live.contains_key(&pid))
            || self.freed.get(&pid).is_some_and(|&s| freed_after(s, mark))
    }

    /// The pids in the cyclic range after `mark.pid` up to `last` (pids
    /// wrap from `max` - 1 to 1) that it does not skip, in order; None once
    /// there are more than `limit`. The cost is that of our children in the
    /// range, not of the range: stopping 500 services at once, each sweep's
    /// range holds the others' children, live or reaped.
    fn unskipped_in(
        &self,
        mark: &SpawnMark,
        last: i32,
        max: i32,
        limit: usize,
    ) -> Option<Vec<i32>> {
        let after = mark.pid;
        let segments = if last == after {
            [None, None]
        } else if last > after {
            [Some((after + 1, last)), None]
        } else {
            [Some((after + 1, max - 1)), Some((1, last))]
        };
        let mut out = Vec::new();
        for (lo, hi) in segments.into_iter().flatten() {
            if lo > hi {
                continue;
            }
            // Our children in [lo, hi], ascending: every live one (the
            // mark's own is outside the range), a freed one if its spawn
            // began after the mark's returned. A pid can be in both maps.
            let mut live = self.live.range(lo..=hi).map(|(&p, _)| p).peekable();
            let mut freed = self
                .freed
                .range(lo..=hi)
                .filter(|(_, &seq)| freed_after(seq, mark))
                .map(|(&p, _)| p)
                .peekable();
            let mut next = lo;
            loop {
                let ours = match (live.peek(), freed.peek()) {
                    (Some(&l), Some(&f)) => l.min(f),
                    (Some(&l), None) => l,
                    (None, Some(&f)) => f,
                    (None, None) => break,
                };
                if live.peek() == Some(&ours) {
                    live.next();
                }
                if freed.peek() == Some(&ours) {
                    freed.next();
                }
                if ours - next > (limit - out.len()) as i32 {
                    return None;
                }
                out.extend(next..ours);
                next = ours + 1;
            }
            if next <= hi {
                if hi - next >= (limit - out.len()) as i32 {
                    return None;
                }
                out.extend(next..=hi);
            }
        }
        Some(out)
    }
}

/// True when a freed child of ours, spawned with sequence `seq`, was spawned
/// after `mark`'s spawn returned (see `Children`).
fn freed_after(seq: u64, mark: &SpawnMark) -> bool {
    seq > mark.seq_after
}

/// The `processes` count now, without reading /proc/stat, if `at` (the last
/// pid handed out, just read, and the number of tasks) shows the pid noted
/// with the last reading, and either what held the pid then still holds it
/// or the reading is younger than `PID_WRAP_WINDOW` with enough pids free.
/// Every new process or thread takes the next free pid in cyclic order from
/// the one allocator, which cannot come round to a pid that is held, nor go
/// all the way round within the window: so none was created since the noted
/// pid was read, and the count stands, short only of forks that had their
/// pid but were not counted yet when it was read. That is good for the wrap
/// guard (far below half of pid_max) but not for concluding that nothing
/// new appeared: a sweep with such a count takes no shortcut (see
/// `pids_created_between`).
///
/// Stopping 500 services at once, the last pid handed out stays our last
/// service's (or a host thread's) for the whole stop, so /proc/stat, the
/// costliest file a sweep reads (its size grows with CPUs and interrupts),
/// is read once instead of 500 times. The window covers the stops that
/// follow the reap of that last service (a host stopping its services
/// newest first reaps it first) with a reading every 5 ms.
fn forks_if_held(at: PidCursor) -> Option<u64> {
    forks_if_held_in(&CHILDREN, at, pid_max())
}

fn forks_if_held_in(
    children: &'static Mutex<Children>,
    at: PidCursor,
    pid_max: i64,
) -> Option<u64> {
    let last = at.last;
    // 300: the pids below it are handed out only once, at boot.
    let plenty_free = pid_max - 300 - at.tasks as i64 >= MIN_FREE_PIDS;
    let noted = {
        let c = locked(children);
        let noted = c.forks_at?;
        if noted.last != last {
            return None;
        }
        if plenty_free && noted.at.elapsed() < PID_WRAP_WINDOW {
            return Some(noted.forks);
        }
        if let Some(Holder::Child(seq)) = noted.holder {
            return (c.live.get(&last) == Some(&seq)).then_some(noted.forks);
        }
        noted
    };
    // A process with the same start time: the same one (a different one
    // would need the allocator to go all the way round within one tick).
    let held = noted.holder.is_some() && noted.holder == started_holder(last);
    held.then_some(noted.forks)
}

/// Notes `forks`, read while `last` was the last pid handed out, for
/// `forks_if_held`.
fn note_forks(last: i32, forks: u64) {
    note_forks_in(&CHILDREN, last, forks);
}

fn note_forks_in(children: &'static Mutex<Children>, last: i32, forks: u64) {
    let at = Instant::now();
    let child = locked(children)
        .live
        .get(&last)
        .map(|&seq| Holder::Child(seq));
    let holder = child.or_else(|| started_holder(last));
    locked(children).forks_at = Some(ForksNoted {
        last,
        holder,
        forks,
        at,
    });
}

fn started_holder(pid: i32) -> Option<Holder> {
    read_stat(pid).map(|s| Holder::Started(s.start_ticks))
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    live: std::collections::BTreeMap::new(),
    freed: std::collections::BTreeMap::new(),
    forks_at: None,
});

fn children() -> MutexGuard<'static, Children> {
    locked(&CHILDREN)
}

/// Signals our child through its pidfd (it may have left its process group)
/// and then its original process group.
pub(crate) fn signal_service(pidfd: &OwnedFd, pgid: i32, sig: i32) {
    let _ = pidfd_send_signal(pidfd, sig);
    kill_group(pgid, sig);
}

/// Sends a signal to a whole process group.
pub(crate) fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain integers; a negative pid names the group, and pgid
        // is > 1 so this is never kill(0) or kill(-1).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The fields of /proc/PID/stat that the supervisor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_ticks: u64,
}

impl ProcStat {
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses /proc/PID/stat. The command name in parentheses may contain
/// spaces and parentheses, so the fields are counted from the last `)`.
pub(crate) fn parse_stat(buf: &[u8]) -> Option<ProcStat> {
    let close = buf.iter().rposition(|&b| b == b')')?;
    let mut fields = buf[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = parse_num(fields.next()?)? as i32;
    let pgrp = parse_num(fields.next()?)? as i32;
    // Fields 6..=21 are not needed; starttime is field 22.
    let start = fields.nth(16)?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        start_ticks: parse_num(start)? as u64,
    })
}

fn parse_num(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// Whether a process, a zombie or a thread has this pid, for the price of a
/// pid lookup. A sweep's candidates are every pid handed out since its
/// spawn, and on a busy machine most of them are long gone: each stop of
/// many services then tried each of them, and a failed open of
/// /proc/PID/stat costs ten times this (4.3 µs against 0.4 µs here). With
/// 50 short-lived processes started by others since the services' spawns,
/// stopping 500 services took three times as long.
fn pid_in_use(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing, it only checks that the pid exists;
    // pid > 0, so it names one process, never a group or every process.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads /proc/PID/stat; None when the process does not exist.
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    let mut buf = [0u8; 1024];
    let n = read_small(&format!("/proc/{pid}/stat"), &mut buf).ok()?;
    parse_stat(&buf[..n])
}

/// Reads a small /proc file. Such a file gives its whole record to a read
/// with room for it, so a short read is the end: no second read to see 0
/// (sweeps read these on every stop).
fn read_small(path: &str, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = File::open(path)?;
    read_record(buf, |b, _| f.read(b))
}

/// Fills `buf` with `read(slice, offset)` until a read comes back short.
fn read_record(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8], usize) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read(&mut buf[n..], n) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Every pid in /proc.
pub(crate) fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let b = name.as_bytes();
        if b.first()?.is_ascii_digit() {
            parse_num(b).map(|n| n as i32)
        } else {
            None
        }
    })
    .collect()
}

/// Whether /proc/PID/environ holds the variable `name` (as `name=`), and
/// whether it holds any variable starting with `prefix`, in one read. None
/// when it reads empty: during an exec, from the moment the new program's
/// memory replaces the old until its environment is laid out there (a
/// process really started without any environment reads so too). A
/// process that cannot be read (gone, another user's) has no tag.
fn environ_tags(pid: i32, name: &[u8], prefix: &[u8]) -> Option<(bool, bool)> {
    let Ok(mut f) = File::open(format!("/proc/{pid}/environ")) else {
        return Some((false, false));
    };
    let mut env = Vec::new();
    // Environments are small; a bound keeps a hostile one from costing much.
    if (&mut f).take(1 << 20).read_to_end(&mut env).is_err() {
        return Some((false, false));
    }
    if env.is_empty() {
        return None;
    }
    let (mut has_name, mut has_prefix) = (false, false);
    for var in env.split(|&b| b == 0) {
        has_prefix |= var.starts_with(prefix);
        has_name |= var.len() > name.len() && var.starts_with(name) && var[name.len()] == b'=';
    }
    Some((has_name, has_prefix))
}

fn clock_ticks_per_sec() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        // SAFETY: sysconf has no memory arguments.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as u64
        } else {
            100
        }
    })
}

/// The boot time from /proc/stat (`btime`, whole seconds), read once per
/// process. The kernel moves it when the wall clock is stepped; reading it
/// once keeps the start times computed in one process mutually consistent.
fn boot_time_ms() -> Option<i64> {
    static BOOT: OnceLock<Option<i64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("btime "))?;
        line[6..].trim().parse::<i64>().ok().map(|s| s * 1000)
    })
}

/// This boot's id (/proc/sys/kernel/random/boot_id), or "" if unknown.
pub(crate) fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// A lower bound of the start time (/proc/PID/stat's `starttime`, in clock
/// ticks) of any process created from now on. The kernel stamps a new
/// process with CLOCK_BOOTTIME and reports it rounded down to whole ticks,
/// in the time namespace of the reader (here, ours): so the same clock read
/// now, rounded down, is never later. One tick less allows for the rounding
/// of clock rates that do not divide a second evenly.
fn ticks_now_lower_bound() -> Option<u64> {
    // SAFETY: clock_gettime writes one timespec to a local.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) != 0 {
            return None;
        }
        ts
    };
    let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
    let ticks = ns * clock_ticks_per_sec() as u128 / 1_000_000_000;
    Some((ticks as u64).saturating_sub(1))
}

pub(crate) fn ticks_to_ms(ticks: u64) -> Option<i64> {
    let boot = boot_time_ms()?;
    Some(boot + (ticks.saturating_mul(1000) / clock_ticks_per_sec()) as i64)
}

/// Refuses pids that are 0 or do not fit a positive `pid_t`: they would
/// name process groups or every process.
pub fn check_pid(pid: u32) -> Result<i32> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(Error::invalid(format!(
            "pid {pid} is not a valid process id (must be 1..={})",
            i32::MAX
        )));
    }
    Ok(pid as i32)
}

/// The creation time of `pid` in ms since the Unix epoch (see
/// `boot_time_ms` for the clock rule), or None if there is no such process.
pub fn proc_start_time_ms(pid: u32) -> Result<Option<i64>> {
    let pid = check_pid(pid)?;
    Ok(read_stat(pid).and_then(|s| ticks_to_ms(s.start_ticks)))
}

/// True if `pid` is alive (not a zombie) and started at `want_start_ms`;
/// `want_start_ms == 0` means unknown: liveness alone decides.
pub fn same_process(pid: u32, want_start_ms: i64) -> bool {
    let Ok(pid) = check_pid(pid) else {
        return false;
    };
    match read_stat(pid) {
        Some(s) if !s.is_dead() => {
            want_start_ms == 0 || ticks_to_ms(s.start_ticks) == Some(want_start_ms)
        }
        _ => false,
    }
}

/// A process found by a scan, identified by pid and start ticks so that a
/// recycled pid is never signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub pid: i32,
    pub start_ticks: u64,
}

impl Target {
    /// Signals the process if it is still the one that was found. Going
    /// through a pidfd closes the window between the check and the signal.
    pub fn signal(&self, sig: i32) {
        match pidfd_open(self.pid) {
            Ok(fd) => {
                if read_stat(self.pid).map(|s| s.start_ticks) == Some(self.start_ticks) {
                    let _ = pidfd_send_signal(&fd, sig);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                if read_stat(self.pid).map(|s| s.start_ticks) == Some(self.start_ticks) {
                    // SAFETY: plain integers; pid > 0 was checked by the scan.
                    unsafe {
                        libc::kill(self.pid, sig);
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// True once the process has exited. A zombie counts as gone; if it is
    /// our own child (the host is a subreaper or pid 1, so our service's
    /// orphans were reparented to us) it is reaped here, since our run
    /// started it.
    pub fn is_gone(&self) -> bool {
        self.gone(true)
    }

    /// Like `is_gone`, but never reaps: for processes the library did not
    /// spawn (kill_tree on a pid of the host's), whose exit status belongs
    /// to their parent.
    pub fn has_exited(&self) -> bool {
        self.gone(false)
    }

    fn gone(&self, reap: bool) -> bool {
        match read_stat(self.pid) {
            None => true,
            Some(s) if s.start_ticks != self.start_ticks => true,
            Some(s) if s.is_dead() => {
                // SAFETY: getpid has no arguments.
                if reap && s.ppid == unsafe { libc::getpid() } {
                    reap_pid(self.pid);
                }
                true
            }
            Some(_) => false,
        }
    }
}

fn reap_pid(pid: i32) {
    // SAFETY: `info` is for waitid to fill; P_PID names exactly this pid,
    // which the caller checked is our child and a zombie.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        );
    }
}

/// Where the kernel's pid allocator stood right after a spawn: enough to
/// tell later which pids can belong to processes created since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpawnMark {
    /// The child's pid: every later process has a pid after it in the
    /// allocator's cyclic order, unless the allocator went all the way round.
    pub pid: i32,
    /// A lower bound of `processes` of /proc/stat (forks and clones since
    /// boot, system-wide) at the spawn; 0 if unknown.
    pub forks: u64,
    /// `SPAWN_SEQ` taken once the spawn had returned (see `Children`).
    pub seq_after: u64,
    /// `processes` read at the start of the last sweep that found nothing
    /// (0: none did). Processes become visible in /proc and counted there
    /// at the same moment, so while it has not moved, nothing can have
    /// appeared that such a sweep did not see, and the next sweep is free.
    pub clean_sweep_forks: u64,
    /// The child's start time in clock ticks, read from /proc when first
    /// needed (only for a state directory's record). Readable until the
    /// child is reaped.
    start_ticks: Option<u64>,
    /// A start time in clock ticks no later than the child's, from the
    /// clock read before the spawn (0: unknown). Sweeps use it, not the
    /// child's own, which would cost them an open, read and close of
    /// /proc/PID/stat (and leave dentries for the reap to invalidate).
    pub since_ticks: u64,
    /// Set when someone else reaped the child (a host calling waitpid(-1)):
    /// its pid is no longer held, so the allocator may hand it out again.
    pub pid_lost: bool,
}

impl SpawnMark {
    /// `forks_before` must be read before the spawn, so that the child's
    /// own descendants are counted however fast it forks.
    pub fn new(pid: i32, forks_before: Option<u64>, seq_after: u64) -> SpawnMark {
        SpawnMark {
            pid,
            forks: forks_before.unwrap_or(0),
            seq_after,
            clean_sweep_forks: 0,
            start_ticks: None,
            since_ticks: 0,
            pid_lost: false,
        }
    }

    pub fn born_since(mut self, ticks: Option<u64>) -> SpawnMark {
        self.since_ticks = ticks.unwrap_or(0);
        self
    }

    /// The child's start time in clock ticks (0 if it cannot be read: then
    /// every process counts as started after it, which only widens sweeps).
    pub fn start_ticks(&mut self) -> u64 {
        *self
            .start_ticks
            .get_or_insert_with(|| read_stat(self.pid).map(|s| s.start_ticks).unwrap_or(0))
    }
}

/// Taken before and after every spawn, to order spawns across threads.
static SPAWN_SEQ: AtomicU64 = AtomicU64::new(1);

/// The latest `processes` count read by this process, and when (ms since
/// `FORKS_EPOCH`).
static FORKS_SEEN: AtomicU64 = AtomicU64::new(0);
static FORKS_SEEN_AT_MS: AtomicU64 = AtomicU64::new(0);

fn forks_epoch_ms() -> u64 {
    static FORKS_EPOCH: OnceLock<Instant> = OnceLock::new();
    FORKS_EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A lower bound of the `processes` count now, for a spawn's mark. The count
/// only grows, so any earlier reading is a lower bound; a recent one (the
/// sweep of the run's previous child, another service's spawn) saves reading
/// /proc/stat, which is the costliest file a restart cycle reads. An older
/// bound only makes later sweeps look at more pids; past 100 ms it is read
/// again.
fn forks_lower_bound() -> Option<u64> {
    let seen = FORKS_SEEN.load(Ordering::Acquire);
    let at = FORKS_SEEN_AT_MS.load(Ordering::Acquire);
    if seen != 0 && forks_epoch_ms().saturating_sub(at) < 100 {
        return Some(seen);
    }
    forks_since_boot()
}

/// Read on many sweeps: the buffer is kept instead of zeroing 64 KiB each
/// time. One for the process, not one per thread: host threads read it too
/// (the first spawn of a start), and reads are short.
static FORK_COUNT_BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn forks_since_boot() -> Option<u64> {
    let forks = {
        let mut buf = locked(&FORK_COUNT_BUF);
        if buf.is_empty() {
            buf.resize(64 * 1024, 0);
        }
        let n = read_proc_stat(&mut buf).ok()?;
        let line = buf[..n]
            .rsplit(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"processes "))?;
        parse_num(line).map(|v| v as u64)
    }?;
    // Two threads may store out of order: the pair is only ever used as a
    // lower bound, which any reading is.
    FORKS_SEEN_AT_MS.store(forks_epoch_ms(), Ordering::Release);
    FORKS_SEEN.fetch_max(forks, Ordering::AcqRel);
    Some(forks)
}

/// A file the library keeps open, with the device and inode it had.
type KeptFile = Mutex<Option<(OwnedFd, u64, u64)>>;

static KEPT_PROC_STAT: KeptFile = Mutex::new(None);
static KEPT_LOADAVG: KeptFile = Mutex::new(None);
static KEPT_DEV_NULL: KeptFile = Mutex::new(None);

/// Calls `f` with the library's kept descriptor of `path`, opening it the
/// first time. Opening a file costs more than the read or the spawn it
/// serves, so the library keeps a few open: one each per process, so that
/// the host's descriptor count does not depend on which threads did what.
///
/// Each is checked (device and inode) before use, because a host may close
/// descriptors it does not know about (a daemon closing everything after a
/// fork) and the number then belongs to another file; such a number is
/// forgotten, never closed, so a number handed out stays the host's
/// business: `f` runs without the lock held.
fn with_kept_file<R>(
    slot: &'static KeptFile,
    path: &str,
    f: impl FnOnce(RawFd) -> io::Result<R>,
) -> io::Result<R> {
    fn identity(fd: &OwnedFd) -> Option<(u64, u64)> {
        // SAFETY: a zeroed stat is a valid value for fstat to fill, and the
        // descriptor is open.
        let (r, st) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            (libc::fstat(fd.as_raw_fd(), &mut st), st)
        };
        (r == 0).then_some((st.st_dev, st.st_ino))
    }
    let fd = {
        let mut kept = locked(slot);
        if let Some((fd, dev, ino)) = kept.as_ref() {
            if identity(fd) != Some((*dev, *ino)) {
                if let Some((fd, ..)) = kept.take() {
                    std::mem::forget(fd);
                }
            }
        }
        if kept.is_none() {
            let fd = OwnedFd::from(File::open(path)?);
            let (dev, ino) = identity(&fd).ok_or_else(io::Error::last_os_error)?;
            *kept = Some((fd, dev, ino));
        }
        match kept.as_ref() {
            Some((fd, ..)) => fd.as_raw_fd(),
            None => return Err(io::ErrorKind::NotFound.into()),
        }
    };
    f(fd)
}

/// Calls `f` with a descriptor of /dev/null (the children's stdin).
fn with_dev_null<R>(f: impl FnOnce(RawFd) -> io::Result<R>) -> io::Result<R> {
    with_kept_file(&KEPT_DEV_NULL, "/dev/null", f)
}

/// Reads /proc/stat through a kept descriptor: opening it cost a third of
/// a sweep that has nothing to look at.
fn read_proc_stat(buf: &mut [u8]) -> io::Result<usize> {
    read_kept(&KEPT_PROC_STAT, "/proc/stat", buf)
}

/// Reads the whole of a kept /proc file (which renders afresh whenever it
/// is read from offset 0).
fn read_kept(slot: &'static KeptFile, path: &str, buf: &mut [u8]) -> io::Result<usize> {
    with_kept_file(slot, path, |fd| {
        read_record(buf, |b, offset| {
            // SAFETY: reads into `b`, a live slice, at most its length.
            let r = unsafe {
                libc::pread(
                    fd,
                    b.as_mut_ptr() as *mut libc::c_void,
                    b.len(),
                    offset as libc::off_t,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        })
    })
}

/// Where the pid allocator stands: the pid most recently handed out in our
/// pid namespace, and the number of tasks (processes and threads) on the
/// machine, an upper bound of the pids in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PidCursor {
    last: i32,
    tasks: u64,
}

/// From /proc/loadavg's last two fields, "running/tasks last" (the last pid
/// is the same cursor as /proc/sys/kernel/ns_last_pid, which costs half as
/// much again to read).
fn pid_cursor() -> Option<PidCursor> {
    let mut buf = [0u8; 128];
    // Kept open: every sweep starts here.
    let n = read_kept(&KEPT_LOADAVG, "/proc/loadavg", &mut buf).ok()?;
    parse_loadavg(&buf[..n])
}

fn parse_loadavg(text: &[u8]) -> Option<PidCursor> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut fields = text.rsplit(|&b| b == b' ');
    let last = parse_num(fields.next()?)? as i32;
    let tasks = fields.next()?.rsplit(|&b| b == b'/').next()?;
    Some(PidCursor {
        last,
        tasks: parse_num(tasks)? as u64,
    })
}

fn last_allocated_pid() -> Option<i32> {
    pid_cursor().map(|c| c.last)
}

fn read_proc_number(path: &str) -> Option<i64> {
    let mut buf = [0u8; 32];
    let n = read_small(path, &mut buf).ok()?;
    parse_num(&buf[..n])
}

/// Read again once a second at most: since Linux 6.14 each pid namespace
/// has its own, which can be changed at any time. (Atomics, not a lock: a
/// lock held by another thread at a fork would stay held in the child.)
fn pid_max() -> i64 {
    static MAX: AtomicI64 = AtomicI64::new(0);
    static READ_AT_MS: AtomicU64 = AtomicU64::new(0);
    let now = forks_epoch_ms();
    let max = MAX.load(Ordering::Acquire);
    if max > 0 && now.saturating_sub(READ_AT_MS.load(Ordering::Acquire)) < 1000 {
        return max;
    }
    let max = read_proc_number("/proc/sys/kernel/pid_max").unwrap_or(32768);
    MAX.store(max, Ordering::Release);
    READ_AT_MS.store(now, Ordering::Release);
    max
}

/// The pids that processes created after `mark` can have, when that can be
/// bounded: fewer forks than half of pid_max since the mark mean the
/// allocator cannot have wrapped past the child's pid, so every newer process
/// has a pid in the cyclic range (mark.pid, last allocated pid]. None when
/// no bound is known (then every pid must be looked at).
///
/// Also returns the `processes` count (0 if unknown) and whether it was read
/// now (exact) rather than known from an earlier reading (see
/// `forks_if_held`): only an exact count may say that nothing appeared.
fn pids_created_since(mark: &SpawnMark) -> (Option<Vec<i32>>, u64, bool) {
    // The child's pid is held until we reap it (sweeps come first), so the
    // allocator cannot come back to it: if it is still the last pid handed
    // out, no process was created since. /proc/loadavg, which says so,
    // costs a fraction of /proc/stat, and on a quiet machine this is the
    // answer of most sweeps.
    let cursor = pid_cursor();
    let first = cursor.map(|c| c.last);
    #[cfg(test)]
    tests::BETWEEN_READS.with(|f| f.take().map(|f| f()));
    if nothing_created_since(mark, first) {
        return (Some(Vec::new()), 0, false);
    }
    if mark.forks == 0 {
        return (None, 0, false);
    }
    if let Some(forks) = cursor.and_then(forks_if_held) {
        // No pid handed out since `first` was noted: the range ends there.
        return (
            pids_created_between(mark, forks, first, false),
            forks,
            false,
        );
    }
    let Some(forks) = forks_since_boot() else {
        return (None, 0, false);
    };
    // Read after the count, so that every process it counts has a pid in
    // the range: one forked between the two reads is looked at now, or
    // changes the count the next sweep reads.
    let last = last_allocated_pid();
    if let (Some(a), Some(b)) = (first, last) {
        if a == b {
            // Nothing was handed out while the count was read.
            note_forks(a, forks);
        }
    }
    (pids_created_between(mark, forks, last, true), forks, true)
}

fn nothing_created_since(mark: &SpawnMark, last_pid: Option<i32>) -> bool {
    !mark.pid_lost && last_pid == Some(mark.pid)
}

/// `last`: the last pid handed out, read after `forks`. `exact`: `forks` was
/// read now; a count known from earlier bounds the range but can leave out a
/// fork that had its pid and was not counted yet when it was read, so it
/// takes no shortcut.
fn pids_created_between(
    mark: &SpawnMark,
    forks: u64,
    last: Option<i32>,
    exact: bool,
) -> Option<Vec<i32>> {
    let created = forks.checked_sub(mark.forks)?;
    // The child itself was created after `mark.forks` was read: if it is
    // the only process created since, there is nothing to look at.
    if exact && (created <= 1 || forks == mark.clean_sweep_forks) {
        return Some(Vec::new());
    }
    let max = pid_max();
    if created as i64 >= max / 2 {
        return None;
    }
    let last = last?;
    let in_range = |p: i32| {
        if last >= mark.pid {
            p > mark.pid && p <= last
        } else {
            p > mark.pid || p <= last
        }
    };
    // Our own services' processes among them are skipped without a
    // syscall (see `Children`). With few candidates left, they are probed
    // directly instead of listing /proc.
    // (The children lock is not held across the listing: the shared
    // readings' lock comes first in the order `before_fork` takes them.)
    if let Some(v) = children().unskipped_in(mark, last, max as i32, 256) {
        return Some(v);
    }
    let mut v: Vec<i32> = listed_pids(forks, last)
        .into_iter()
        .filter(|&p| in_range(p))
        .collect();
    let c = children();
    v.retain(|&p| !c.skips(p, mark));
    Some(v)
}

/// Finds what a spawn left behind: live members of process group `pgid`,
/// and live processes that started no earlier than the spawned child (any,
/// without `mark`) and carry the tag variable `tag_name` in their
/// environment (descendants that left the group with setsid or a double
/// fork).
///
/// Everything a spawn leaves behind was created after it, so with `mark`
/// only the pids allocated since are read (usually none or a handful, however
/// many processes the machine runs); only those started after the spawn are
/// opened for their environment. A sweep that finds nothing is remembered in
/// `mark`, so that the next one is free when no process was created since.
pub(crate) fn find_leftovers(
    pgid: i32,
    tag_name: &[u8],
    mark: Option<&mut SpawnMark>,
) -> Vec<Target> {
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    let (candidates, forks, exact) = match mark.as_deref() {
        Some(m) => pids_created_since(m),
        None => (None, 0, false),
    };
    // Bounded candidates come without our own children (see
    // `pids_created_between`); among all pids, only live ones can be
    // skipped: freed pids are known unused only within the bounded range.
    let mut candidates = match candidates {
        Some(v) => v,
        None => {
            let mut v = all_pids();
            if let Some(m) = mark.as_deref() {
                let c = children();
                v.retain(|&pid| pid == m.pid || !c.live.contains_key(&pid));
            }
            v
        }
    };
    candidates.retain(|&pid| pid != me);
    let since_ticks = mark.as_deref().map_or(0, |m| m.since_ticks);
    let mut found = Vec::new();
    let mut unsettled = false;
    let mut lineage = Lineage::new(me, since_ticks);
    let mut shared = if candidates.is_empty() {
        None
    } else {
        shared_facts(forks)
    };
    // Every tag of this host's spawns begins the same way (see
    // `new_tag_name`): a process with none of them descends from none.
    let host_prefix = match tag_name.iter().rposition(|&b| b == b'_') {
        Some(i) => &tag_name[..=i],
        None => tag_name,
    };
    for pid in candidates {
        let known = shared
            .as_ref()
            .and_then(|g| g.as_ref()?.of.get(&pid).copied());
        if known.is_some_and(|k| k.rules_out(pgid, since_ticks, &mut lineage)) {
            continue;
        }
        if !pid_in_use(pid) {
            continue;
        }
        let Some(s) = read_stat(pid) else { continue };
        let host_tagged = known.and_then(|k| k.host_tagged);
        let mut remember = |host_tagged| {
            if let Some(f) = shared.as_mut().and_then(|g| g.as_mut()) {
                f.of.insert(
                    pid,
                    Known {
                        ppid: s.ppid,
                        pgrp: s.pgrp,
                        start_ticks: s.start_ticks,
                        host_tagged,
                    },
                );
            }
        };
        remember(host_tagged);
        let t = Target {
            pid,
            start_ticks: s.start_ticks,
        };
        if s.is_dead() {
            // Reaps zombies that are ours (subreaper hosts).
            if s.pgrp == pgid && pid != pgid {
                t.is_gone();
            }
            continue;
        }
        if s.pgrp == pgid {
            found.push(t);
        } else if s.start_ticks >= since_ticks && lineage.may_descend(s.ppid) {
            match environ_tags(pid, tag_name, host_prefix) {
                Some((tagged, host_tagged)) => {
                    remember(Some(host_tagged));
                    if tagged {
                        found.push(t);
                    }
                }
                // Caught in an exec: nothing to tell yet, so neither this
                // reading nor this sweep may rule it out for later sweeps.
                None => unsettled = true,
            }
        }
    }
    if let Some(m) = mark {
        // The main process itself (the group leader) does not count.
        let clean = !unsettled && found.iter().all(|t| t.pid == pgid);
        m.clean_sweep_forks = if clean && exact { forks } else { 0 };
    }
    found
}

/// Tells from a process's parent whether it can descend from a spawn made
/// at `since` ticks, before its environment is read (the costly part of a
/// sweep on a busy machine). A descendant's parent is another descendant
/// (started at or after the spawn) or, once orphaned, whoever adopted it:
/// init, the host, or a subreaper among the host's ancestors. So the line
/// of parents is followed up to the first adopter (may descend) or the
/// first process that started before the spawn and is none of these (does
/// not): say, a build tool that started new compilers since, or another
/// program that started its own services after ours.
struct Lineage {
    me: i32,
    since: u64,
    /// Processes judged in this sweep, as parents: may their children
    /// descend from the spawn?
    judged: std::collections::HashMap<i32, bool>,
}

impl Lineage {
    fn new(me: i32, since: u64) -> Self {
        Lineage {
            me,
            since,
            judged: std::collections::HashMap::new(),
        }
    }

    fn may_descend(&mut self, ppid: i32) -> bool {
        let mut line = Vec::new();
        let mut p = ppid;
        let verdict = loop {
            if p <= 1 || p == self.me {
                break true;
            }
            if let Some(&v) = self.judged.get(&p) {
                break v;
            }
            if line.len() >= 64 {
                break true;
            }
            match read_stat(p) {
                // Gone: nothing to tell from it.
                None => break true,
                Some(st) if st.start_ticks < self.since => break host_line_has(self.me, p),
                Some(st) => {
                    line.push(p);
                    p = st.ppid;
                }
            }
        };
        for q in line {
            self.judged.insert(q, verdict);
        }
        self.judged.entry(ppid).or_insert(verdict);
        verdict
    }
}

/// What sweeps read lately of each process (`Known`), shared by all
/// sweeps. Stopping many services at once, each sweep looks
/// at the same processes created since its spawn: with another program's
/// 500 services among them, 500 stops read /proc/PID/stat 250,000 times
/// (4 s of CPU). A recent reading rules a process out just as well: one
/// whose parent does not descend from the spawn can never come to, and one
/// that might is read afresh. Readings are kept for `FACTS_TTL` and only
/// while the allocator cannot have come round to a pid again.
struct Facts {
    /// The process that read them.
    host: u32,
    taken_at: Instant,
    forks: u64,
    of: std::collections::HashMap<i32, Known>,
    /// A listing of /proc and the last pid handed out before it was made.
    listing: Option<(i32, Vec<i32>)>,
}

/// What a sweep read of a process: its parent, process group and start
/// time, and, once its environment was read, whether it carries any tag of
/// this host. An environment is fixed at exec, so a process without one
/// never descends from any spawn of ours (as far as tags can tell: see the
/// README).
#[derive(Clone, Copy)]
struct Known {
    ppid: i32,
    pgrp: i32,
    /// Fixed for the life of a process; the readings are not kept long
    /// enough for its pid to be handed out again.
    start_ticks: u64,
    host_tagged: Option<bool>,
}

impl Known {
    /// Whether this reading shows, without reading the process again, that
    /// it is no leftover of a spawn made at `since_ticks` whose group is
    /// `pgid`: out of the group, and older than the spawn, or without any
    /// tag of this host, or with a line of parents that leads to an older
    /// stranger. A process that might be one is read afresh.
    ///
    /// Older than the spawn is the common case after the pid allocator has
    /// gone round: the machine's long-lived processes then have pids among
    /// those handed out since the spawn. Adopted by init, their line of
    /// parents rules nothing out, and before the start time was kept each
    /// of 500 stops read each of them again: 8 ms per stop, the stops one
    /// after another under the lock of these readings, and 3-4 s to stop
    /// 500 services beside 500 such processes.
    fn rules_out(&self, pgid: i32, since_ticks: u64, lineage: &mut Lineage) -> bool {
        self.pgrp != pgid
            && (self.start_ticks < since_ticks
                || self.host_tagged == Some(false)
                || !lineage.may_descend(self.ppid))
    }
}

const FACTS_TTL: Duration = Duration::from_millis(50);

static FACTS: Mutex<Option<Facts>> = Mutex::new(None);

/// Every pid in use, from a listing of /proc that sweeps share like the
/// readings above (listing /proc took most of a sweep once the readings were
/// shared), plus the pids handed out since it was made: (its last, `last`].
/// `last` is the last pid handed out, read before this call.
fn listed_pids(forks: u64, last: i32) -> Vec<i32> {
    let Some(mut g) = shared_facts(forks) else {
        return all_pids();
    };
    let Some(f) = g.as_mut() else {
        return all_pids();
    };
    match &f.listing {
        Some((then, pids)) => {
            let mut v = pids.clone();
            let mut p = *then;
            let max = pid_max();
            while p != last && v.len() < 1 << 20 {
                p = if p as i64 >= max - 1 { 1 } else { p + 1 };
                v.push(p);
            }
            v
        }
        None => {
            let v = all_pids();
            f.listing = Some((last, v.clone()));
            v
        }
    }
}

/// The shared readings, emptied first when they are too old to trust at
/// `forks` (the `processes` count of this sweep; 0 if unknown: no sharing).
fn shared_facts(forks: u64) -> Option<MutexGuard<'static, Option<Facts>>> {
    if forks == 0 {
        return None;
    }
    // Whether a process carries a tag "of this host" depends on the host:
    // a child forked from it starts afresh.
    let host = std::process::id();
    let mut g = locked(&FACTS);
    let fresh = g.as_ref().is_some_and(|f| {
        f.host == host
            && f.taken_at.elapsed() < FACTS_TTL
            && forks >= f.forks
            && ((forks - f.forks) as i64) < pid_max() / 2
            && f.of.len() < 1 << 16
    });
    if !fresh {
        *g = Some(Facts {
            host,
            taken_at: Instant::now(),
            forks,
            of: std::collections::HashMap::new(),
            listing: None,
        });
    }
    Some(g)
}

/// The host's ancestors, read once per process. The list can only grow
/// stale by losing members (an ancestor that dies hands the host to one
/// further up), so a cached one never misses an adopter.
static HOST_LINE: Mutex<(i32, Vec<i32>)> = Mutex::new((0, Vec::new()));

fn host_line_has(me: i32, pid: i32) -> bool {
    let mut g = locked(&HOST_LINE);
    if g.0 != me {
        let mut line = Vec::new();
        let mut p = me;
        while let Some(s) = read_stat(p) {
            if s.ppid <= 1 || line.len() >= 64 {
                break;
            }
            line.push(s.ppid);
            p = s.ppid;
        }
        *g = (me, line);
    }
    g.1.contains(&pid)
}

/// Every process carrying the tag variable (used by reap_orphans).
pub(crate) fn find_tagged(tag_name: &[u8]) -> Vec<Target> {
    find_leftovers(-1, tag_name, None)
}

/// `struct pidfd_info` of PIDFD_GET_INFO (Linux 6.13), its first published
/// size (PIDFD_INFO_SIZE_VER0); the kernel accepts any published size.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}
const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);
/// _IOWR(0xFF, 11, struct pidfd_info): the size is part of the number.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
const PIDFD_INFO_PID: u64 = 1;

/// The parent pid of the process that `fd` pins: Err(ENOTTY or EINVAL) on
/// kernels without PIDFD_GET_INFO, Err(ESRCH) once it is reaped.
fn pidfd_parent(fd: &OwnedFd) -> io::Result<i32> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID,
        ..Default::default()
    };
    // SAFETY: `info` is a valid, writable pidfd_info of the size encoded in
    // the request number, and lives across the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info) })?;
    Ok(info.ppid as i32)
}

/// A process group id; None once the process is gone.
fn pgid_of(pid: i32) -> Option<i32> {
    // SAFETY: plain integer argument.
    let g = unsafe { libc::getpgid(pid) };
    (g > 0).then_some(g)
}

/// `pid` and all its descendants, found through pidfds instead of /proc:
/// each process on the machine is pinned with a pidfd and asked for its
/// parent (PIDFD_GET_INFO), which costs about half a read of
/// /proc/PID/stat, and the tree members' pidfds are then kept for the wait,
/// so nothing has to be read twice. None when the kernel lacks
/// PIDFD_GET_INFO (before 6.13) or pidfds cannot be opened: `collect_tree`
/// then does it from /proc.
fn watch_tree(root: i32) -> Option<Watch> {
    // Pass 1: every process's parent. The pidfds are kept, up to a budget
    // (a machine can run more processes than we may hold descriptors), so
    // that the members need not be pinned and checked again.
    let mut budget = 1024usize;
    let mut parents: Vec<(i32, i32, Option<OwnedFd>)> = Vec::new();
    for pid in all_pids() {
        let fd = loop {
            match pidfd_open(pid) {
                Ok(fd) => break Some(fd),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break None,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && budget > 0 =>
                {
                    // Out of descriptors: give the kept ones back, go on
                    // with one at a time.
                    budget = 0;
                    parents.iter_mut().for_each(|p| p.2 = None);
                }
                Err(_) => return None,
            }
        };
        let Some(fd) = fd else { continue };
        match pidfd_parent(&fd) {
            Ok(ppid) => {
                let keep = (budget > 0).then(|| {
                    budget -= 1;
                    fd
                });
                parents.push((pid, ppid, keep));
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(_) => return None,
        }
    }
    let Some(root_at) = parents.iter().position(|p| p.0 == root) else {
        return Some(Watch::default());
    };
    let mut kids: std::collections::HashMap<i32, Vec<usize>> = Default::default();
    for (i, &(pid, ppid, _)) in parents.iter().enumerate() {
        if pid != root {
            kids.entry(ppid).or_default().push(i);
        }
    }
    // Parents first; each with the parent it was found under.
    let mut order = vec![(root_at, 0)];
    let mut i = 0;
    while i < order.len() {
        let parent = parents[order[i].0].0;
        if let Some(k) = kids.get(&parent) {
            order.extend(k.iter().map(|&c| (c, parent)));
        }
        i += 1;
    }
    // Pass 2: the members whose pidfd was not kept are pinned now. Such a
    // member still has the parent it was found under, or that parent has
    // exited since (the member was orphaned, and is still a descendant);
    // anything else now holding the pid is not ours.
    let mut procs: Vec<(Target, Option<OwnedFd>)> = Vec::with_capacity(order.len());
    for &(at, parent) in &order {
        let pid = parents[at].0;
        let target = |ticks| Target {
            pid,
            start_ticks: ticks,
        };
        if let Some(fd) = parents[at].2.take() {
            procs.push((target(0), Some(fd)));
            continue;
        }
        match pidfd_open(pid) {
            Ok(fd) => {
                let ok = pid == root
                    || match pidfd_parent(&fd) {
                        Ok(ppid) if ppid == parent => true,
                        Ok(_) => procs
                            .iter()
                            .find(|(t, _)| t.pid == parent)
                            .map_or(true, |(_, pfd)| pfd.as_ref().map_or(true, poll_readable)),
                        Err(_) => false,
                    };
                if ok {
                    procs.push((target(0), Some(fd)));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            // Out of descriptors: watched through /proc, by start time.
            Err(_) => {
                if let Some(s) = read_stat(pid).filter(|s| !s.is_dead()) {
                    procs.push((target(s.start_ticks), None));
                }
            }
        }
    }
    // The kept pidfds of non-members are closed here.
    let seen: Vec<i32> = parents.into_iter().map(|p| p.0).collect();
    // The groups the tree holds whole: led by a member, and no process
    // outside the tree in them.
    let members: std::collections::HashSet<i32> = procs.iter().map(|(t, _)| t.pid).collect();
    let member_groups: Vec<(i32, i32)> = procs
        .iter()
        .filter_map(|(t, _)| pgid_of(t.pid).map(|g| (t.pid, g)))
        .collect();
    let outside = seen
        .iter()
        .filter(|p| !members.contains(p))
        .filter_map(|&p| pgid_of(p));
    let groups = whole_groups(&member_groups, outside);
    Some(Watch {
        procs,
        groups,
        exact: true,
    })
}

/// The process groups a tree holds whole, with their members: led by a
/// member, with no process outside the tree in them. `members` are (pid,
/// process group) pairs; `outside` yields the groups of the processes
/// outside the tree, and is not consumed when no member leads a group.
fn whole_groups(
    members: &[(i32, i32)],
    outside: impl Iterator<Item = i32>,
) -> Vec<(i32, Vec<i32>)> {
    let mut leaders: Vec<i32> = members
        .iter()
        .filter(|(p, g)| p == g)
        .map(|(p, _)| *p)
        .collect();
    if !leaders.is_empty() {
        for g in outside {
            leaders.retain(|&l| l != g);
        }
    }
    leaders
        .into_iter()
        .map(|l| {
            let pids = members.iter().filter(|(_, g)| *g == l);
            (l, pids.map(|(p, _)| *p).collect())
        })
        .collect()
}

/// `pid` and all its descendants, parents first, collected in one scan,
/// with the process groups that the tree holds whole: led by a tree member,
/// with no live member outside the tree.
fn collect_tree(root: i32) -> (Vec<Target>, Vec<(i32, Vec<i32>)>) {
    let mut procs: Vec<(i32, ProcStat)> = Vec::new();
    for pid in all_pids() {
        if let Some(s) = read_stat(pid) {
            if !s.is_dead() {
                procs.push((pid, s));
            }
        }
    }
    let mut tree = Vec::new();
    if let Some((_, s)) = procs.iter().find(|(p, _)| *p == root) {
        tree.push(Target {
            pid: root,
            start_ticks: s.start_ticks,
        });
    } else {
        return (tree, Vec::new());
    }
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, s) in &procs {
            // A child cannot have started before its parent: this also
            // ignores stale ppid links after pid reuse.
            if s.ppid == parent.pid && s.start_ticks >= parent.start_ticks && *pid != root {
                tree.push(Target {
                    pid: *pid,
                    start_ticks: s.start_ticks,
                });
            }
        }
        i += 1;
    }
    let members: std::collections::HashSet<i32> = tree.iter().map(|t| t.pid).collect();
    let member_groups: Vec<(i32, i32)> = procs
        .iter()
        .filter(|(p, _)| members.contains(p))
        .map(|(p, s)| (*p, s.pgrp))
        .collect();
    let outside = procs
        .iter()
        .filter(|(p, _)| !members.contains(p))
        .map(|(_, s)| s.pgrp);
    let groups = whole_groups(&member_groups, outside);
    (tree, groups)
}

/// Processes being waited for: a pidfd for each where one can be opened
/// (poll() then wakes us on exit), /proc polling for the others.
#[derive(Default)]
pub(crate) struct Watch {
    procs: Vec<(Target, Option<OwnedFd>)>,
    /// Process groups made only of watched processes: leader pid and the
    /// members seen by the scan.
    groups: Vec<(i32, Vec<i32>)>,
    /// A readable pidfd alone proves its process exited (found by
    /// `watch_tree`: kernels with PIDFD_GET_INFO, whose pidfds become
    /// readable only once the whole thread group has exited). Otherwise /proc
    /// confirms it.
    exact: bool,
}

impl Watch {
    pub fn new(targets: &[Target], groups: Vec<(i32, Vec<i32>)>) -> Self {
        let procs = targets
            .iter()
            .filter_map(|t| match pidfd_open(t.pid) {
                Ok(fd) => {
                    // The pidfd pins the process: checking after opening
                    // proves it is the one that was found.
                    if read_stat(t.pid).map(|s| s.start_ticks) == Some(t.start_ticks) {
                        Some((*t, Some(fd)))
                    } else {
                        None
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
                Err(_) => Some((*t, None)),
            })
            .collect();
        Watch {
            procs,
            groups,
            exact: false,
        }
    }

    /// Signals every watched process. A group made only of watched
    /// processes gets one signal through its leader's pidfd: signalling a
    /// big tree one process at a time lets each victim preempt the signaller
    /// as it dies, which costs far more than the signals themselves. The
    /// members of a group that could not be signalled so (an older kernel,
    /// the leader already gone) are signalled one by one. (A member that
    /// left its group since the scan misses the SIGTERM and gets the
    /// SIGKILL after the grace.)
    pub fn signal_all(&self, sig: i32) {
        let mut done = std::collections::HashSet::new();
        for (g, members) in &self.groups {
            let leader = self.procs.iter().find(|(t, _)| t.pid == *g);
            if let Some((_, Some(fd))) = leader {
                if pidfd_send_signal_flags(fd, sig, PIDFD_SIGNAL_PROCESS_GROUP).is_ok() {
                    done.extend(members.iter().copied());
                }
            }
        }
        for (t, fd) in &self.procs {
            if done.contains(&t.pid) {
                continue;
            }
            match fd {
                Some(fd) => {
                    let _ = pidfd_send_signal(fd, sig);
                }
                None => t.signal(sig),
            }
        }
    }

    fn prune(&mut self) {
        let exact = self.exact;
        self.procs.retain(|(t, fd)| match fd {
            // kill_tree's targets were not spawned by us: never reap them.
            Some(fd) => !(poll_readable(fd) && (exact || t.has_exited())),
            None => !t.has_exited(),
        });
    }

    /// Blocks until every watched process is gone or `deadline` passes;
    /// returns true if all are gone.
    ///
    /// A readable pidfd means that process has exited (the pidfd pins it, so
    /// no pid reuse can fool it): after each poll only the descriptors that
    /// fired are dropped, without a syscall per process and round, which
    /// would make a big tree cost O(n^2) syscalls while it dies.
    pub fn wait_blocking(&mut self, deadline: Instant) -> bool {
        self.prune();
        if self.exact && self.procs.iter().all(|(_, fd)| fd.is_some()) {
            // One process at a time, children before parents: most are gone
            // by their turn, so each costs one poll that returns at once,
            // where polling all together re-arms every descriptor each time
            // any one exits.
            while let Some((_, Some(fd))) = self.procs.last() {
                let left = deadline.saturating_duration_since(Instant::now());
                if poll_readable_within(fd, left) {
                    self.procs.pop();
                } else if Instant::now() >= deadline {
                    return false;
                }
            }
            return self.procs.is_empty();
        }
        loop {
            if self.procs.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let left = deadline - now;
            let mut pfds: Vec<libc::pollfd> = self
                .procs
                .iter()
                .filter_map(|(_, fd)| fd.as_ref())
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let all_fds = pfds.len() == self.procs.len();
            // Without a pidfd for every process, fall back to short polls.
            let cap = if all_fds {
                left
            } else {
                Duration::from_millis(5)
            };
            let ms = left.min(cap).as_millis().clamp(1, i32::MAX as u128) as i32;
            if pfds.is_empty() {
                std::thread::sleep(Duration::from_millis(ms as u64));
            } else {
                // SAFETY: `pfds` is a valid array of pollfd of the given length.
                unsafe {
                    libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms);
                }
            }
            let mut fired = pfds.iter().map(|p| p.revents != 0);
            self.procs.retain(|(t, fd)| match fd {
                Some(_) => !fired.next().unwrap_or(false),
                None => !t.has_exited(),
            });
        }
    }
}

fn poll_readable(fd: &OwnedFd) -> bool {
    poll_readable_within(fd, Duration::ZERO)
}

/// Waits up to `wait` (rounded up to whole milliseconds) for `fd` to become
/// readable.
fn poll_readable_within(fd: &OwnedFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents != 0
}

/// Terminates `pid` and every descendant: the tree is collected before any
/// signal is sent (a dying parent would hand its children to init), each
/// gets SIGTERM, and whatever is alive after `grace` gets SIGKILL. Returns
/// as soon as all are gone. A pid that does not exist is not an error:
/// there is nothing left to stop.
pub fn kill_tree(pid: u32, grace: Duration) -> Result<()> {
    let pid = check_pid(pid)?;
    let mut watch = match watch_tree(pid) {
        Some(w) => w,
        None => {
            let (tree, groups) = collect_tree(pid);
            Watch::new(&tree, groups)
        }
    };
    if watch.procs.is_empty() {
        return Ok(());
    }
    watch.signal_all(libc::SIGTERM);
    let deadline = Instant::now().checked_add(grace);
    let all_gone = match deadline {
        Some(d) => watch.wait_blocking(d),
        None => watch.wait_blocking(far_future()),
    };
    if !all_gone {
        watch.signal_all(libc::SIGKILL);
        // SIGKILL cannot be ignored; the bound only guards against a
        // process stuck in uninterruptible sleep.
        if !watch.wait_blocking(Instant::now() + Duration::from_secs(5)) {
            return Err(Error::Timeout(format!(
                "kill_tree({pid}): processes survived SIGKILL for 5 s"
            )));
        }
    }
    Ok(())
}

pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// This process's pid and start time, for tag names.
static TAG_HOST: Mutex<(u32, u64)> = Mutex::new((0, 0));

/// The name of the tag variable: unique per spawn in this boot.
pub(crate) fn new_tag_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let start = {
        let mut host = locked(&TAG_HOST);
        if host.0 != pid {
            *host = (
                pid,
                read_stat(pid as i32).map(|s| s.start_ticks).unwrap_or(0),
            );
        }
        host.1
    };
    format!("DEVRIG_SPAWN_{pid}_{start}_{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Run by this thread's next sweep right after it read the last pid
        /// handed out, before it reads anything else.
        pub(super) static BETWEEN_READS: std::cell::Cell<Option<fn()>> =
            const { std::cell::Cell::new(None) };
    }

    fn kept_fd(slot: &KeptFile) -> Option<RawFd> {
        slot.lock().unwrap().as_ref().map(|(fd, ..)| fd.as_raw_fd())
    }

    fn spawn_plain(command: &str, env: &[(OsString, OsString)]) -> Child {
        spawn(&SpawnSpec {
            command,
            working_dir: None,
            env,
            tag: "DEVRIG_SPAWN_TEST=1",
        })
        .unwrap()
    }

    /// Waits for `child` to exit, then returns all it wrote to stdout and
    /// to stderr.
    fn output_of(child: Child) -> (Vec<u8>, Vec<u8>) {
        let mut pfd = libc::pollfd {
            fd: child.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; -1 waits until the pidfd is readable.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, -1) }, 1);
        reap(&child.pidfd, child.pid).unwrap();
        let drain = |fd: &OwnedFd| {
            let (mut all, mut buf) = (Vec::new(), [0u8; 4096]);
            loop {
                match read_fd(fd, &mut buf) {
                    Ok(0) => return all,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    // A process forked by another test may hold the write
                    // end for a moment (until its exec closes it).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mut pfd = libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
                        assert_eq!(r, 1, "the pipe never reached its end");
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
        };
        (drain(&child.stdout), drain(&child.stderr))
    }

    #[test]
    fn the_child_gets_the_host_environment_with_the_overlay_and_the_tag() {
        let overlay = [
            (
                OsString::from("PATH"),
                OsString::from("/usr/bin:/bin:/devrig-test"),
            ),
            (OsString::from("DEVRIG_TEST_NEW"), OsString::from("a b=c")),
        ];
        let mut want: Vec<Vec<u8>> = std::env::vars_os()
            .filter(|(k, _)| k != "PATH")
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .collect();
        want.push(b"PATH=/usr/bin:/bin:/devrig-test".to_vec());
        want.push(b"DEVRIG_TEST_NEW=a b=c".to_vec());
        want.push(b"DEVRIG_SPAWN_TEST=1".to_vec());
        // What execve was given is in the shell's /proc/PID/environ, once
        // the shell runs (posix_spawn returns before exec has put it in
        // place); the shell stays until its group is killed.
        let child = spawn_plain("echo ready; while :; do sleep 1; done", &overlay);
        let mut pfd = libc::pollfd {
            fd: child.stdout.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        let given = std::fs::read(format!("/proc/{}/environ", child.pid)).unwrap();
        kill_group(child.pid, libc::SIGKILL);
        let got: Vec<Vec<u8>> = given
            .split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(
            got.iter()
                .map(|e| String::from_utf8_lossy(e))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|e| String::from_utf8_lossy(e))
                .collect::<Vec<_>>()
        );
        output_of(child);
    }

    #[test]
    fn kept_file_actions_follow_the_descriptor_numbers() {
        let first = spawn_plain("echo out1; echo err1 >&2", &[]);
        let fds_first = KEPT_ACTIONS.with(|k| k.borrow().as_ref().map(|fa| fa.fds));
        // An extra descriptor held open moves the next pipes' numbers.
        let (hold_r, hold_w) = pipe_cloexec().unwrap();
        let second = spawn_plain("echo out2; echo err2 >&2", &[]);
        let fds_second = KEPT_ACTIONS.with(|k| k.borrow().as_ref().map(|fa| fa.fds));
        assert_ne!(fds_first, fds_second);
        assert_eq!(output_of(first), (b"out1\n".to_vec(), b"err1\n".to_vec()));
        assert_eq!(output_of(second), (b"out2\n".to_vec(), b"err2\n".to_vec()));
        drop((hold_r, hold_w));
        // Same numbers as a moment ago: the kept actions are reused.
        let third = spawn_plain("echo out3; echo err3 >&2", &[]);
        assert_eq!(output_of(third), (b"out3\n".to_vec(), b"err3\n".to_vec()));
    }

    #[test]
    fn a_kept_dev_null_descriptor_reused_by_the_host_is_left_alone() {
        let child = spawn_plain("cat", &[]);
        assert_eq!(output_of(child), (Vec::new(), Vec::new()));
        let kept = kept_fd(&KEPT_DEV_NULL);
        let kept = kept.unwrap();
        // The host closes it and the number goes to a file of its own.
        let path = std::env::temp_dir().join(format!("devrig-kept-{}", std::process::id()));
        std::fs::write(&path, b"the host's data\n").unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: dup2 onto a number the library's cache owns; the test
        // takes that number over from here on.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), kept) }, kept);
        // The child's stdin is /dev/null still, not the host's file.
        let child = spawn_plain("cat", &[]);
        assert_eq!(output_of(child), (Vec::new(), Vec::new()));
        assert_eq!(
            std::fs::read_link(format!("/proc/self/fd/{kept}")).unwrap(),
            path
        );
        // SAFETY: the number is the test's now (the cache forgot it).
        unsafe { libc::close(kept) };
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = b"1234 (we (ird) na me) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.start_ticks, 98765);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S 1").is_none());
    }

    #[test]
    fn own_stat_is_readable_and_alive() {
        let me = std::process::id();
        let s = read_stat(me as i32).unwrap();
        assert!(!s.is_dead());
        let start = proc_start_time_ms(me).unwrap().unwrap();
        assert!(same_process(me, start));
        assert!(same_process(me, 0));
        assert!(!same_process(me, start - 10_000));
    }

    #[test]
    fn a_pid_is_in_use_while_a_process_thread_or_zombie_holds_it() {
        assert!(pid_in_use(std::process::id() as i32));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        assert!(pid_in_use(rx.recv().unwrap()));
        drop(stop_tx);
        t.join().unwrap();

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // SAFETY: siginfo_t is plain data, all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes; WNOWAIT leaves the zombie.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(r, 0);
        // A zombie still holds its pid: a sweep must see it to reap it.
        assert!(pid_in_use(pid));
        assert!(read_stat(pid).unwrap().is_dead());
        child.wait().unwrap();
        assert!(!pid_in_use(pid));
        assert!(read_stat(pid).is_none());

        assert!(!pid_in_use(0));
        assert!(!pid_in_use(-1));
    }

    #[test]
    fn pids_out_of_range_are_refused() {
        assert!(check_pid(0).is_err());
        assert!(check_pid(i32::MAX as u32 + 1).is_err());
        assert!(check_pid(u32::MAX).is_err());
        assert!(kill_tree(0, Duration::ZERO).is_err());
        assert!(!same_process(0, 0));
        assert!(proc_start_time_ms(0).is_err());
    }

    #[test]
    fn a_freed_pid_is_skipped_only_if_its_spawn_began_after_the_mark() {
        let mut c = Children {
            live: Default::default(),
            freed: Default::default(),
            forks_at: None,
        };
        let mark = SpawnMark::new(500, Some(1000), 10);
        // Spawned before the mark's spawn returned (seq 9 or 10): its pid
        // may have been allocated before the mark's child, freed, and
        // allocated again to a stranger since.
        c.freed.insert(501, 9);
        c.freed.insert(502, 10);
        // Spawned after: allocated after the mark's child, not since reused.
        c.freed.insert(503, 11);
        assert!(!c.skips(501, &mark));
        assert!(!c.skips(502, &mark));
        assert!(c.skips(503, &mark));
        // A live child of ours is never another service's leftover, but the
        // mark's own child is always looked at.
        c.live.insert(504, 3);
        c.live.insert(500, 3);
        assert!(c.skips(504, &mark));
        assert!(!c.skips(500, &mark));
        // Of 501..=510, 503 and 504 are skipped.
        let left = [501, 502, 505, 506, 507, 508, 509, 510];
        assert_eq!(c.unskipped_in(&mark, 510, 1000, 256).unwrap(), left);
        assert_eq!(c.unskipped_in(&mark, 510, 1000, 8).unwrap(), left);
        assert_eq!(c.unskipped_in(&mark, 510, 1000, 7), None);
        assert_eq!(c.unskipped_in(&mark, 500, 1000, 256).unwrap(), [0; 0]);
        // Round the end of the pid space: 996..=999, then 1..=3.
        c.live.insert(998, 3);
        c.live.insert(2, 3);
        c.freed.insert(1, 12);
        c.live.insert(3, 4);
        let mark = SpawnMark::new(995, Some(1000), 10);
        assert_eq!(
            c.unskipped_in(&mark, 3, 1000, 256).unwrap(),
            [996, 997, 999]
        );
        assert_eq!(c.unskipped_in(&mark, 3, 1000, 2), None);
        // A pid in both maps (a live child on a reused pid) counts once.
        c.freed.insert(997, 11);
        c.live.insert(997, 5);
        assert_eq!(c.unskipped_in(&mark, 3, 1000, 256).unwrap(), [996, 999]);
    }

    proptest::proptest! {
        /// `unskipped_in` walks only our children; its definition walks
        /// every pid of the range.
        #[test]
        fn unskipped_pids_are_the_range_minus_what_is_skipped(
            live in proptest::collection::btree_map(1..40i32, 0..20u64, 0..20),
            freed in proptest::collection::btree_map(1..40i32, 0..20u64, 0..20),
            after in 1..40i32,
            last in 1..40i32,
            seq_after in 0..20u64,
            limit in 0..45usize,
        ) {
            let c = Children {
                live,
                freed,
                forks_at: None,
            };
            let mark = SpawnMark::new(after, Some(1), seq_after);
            let mut want = Vec::new();
            let mut p = after;
            while p != last {
                p = if p >= 39 { 1 } else { p + 1 };
                if !c.skips(p, &mark) {
                    want.push(p);
                }
            }
            let want = (want.len() <= limit).then_some(want);
            proptest::prop_assert_eq!(c.unskipped_in(&mark, last, 40, limit), want);
        }
    }

    #[test]
    fn a_fork_count_stands_while_the_same_process_holds_the_last_pid() {
        // Not the library's registry, which other tests' sweeps write to.
        static C: Mutex<Children> = Mutex::new(Children {
            live: std::collections::BTreeMap::new(),
            freed: std::collections::BTreeMap::new(),
            forks_at: None,
        });
        let cursor = |last| PidCursor { last, tasks: 100 };
        let held = |last| forks_if_held_in(&C, cursor(last), 4_194_304);
        // A small pid_max (or a full pid space): few pids are free, so the
        // allocator could go round within the window.
        let held_few_free = |last| forks_if_held_in(&C, cursor(last), 400);
        // Past the wrap window: only the holder can vouch for the count.
        let age = || {
            let mut c = locked(&C);
            let n = c.forks_at.as_mut().unwrap();
            n.at = Instant::now() - PID_WRAP_WINDOW * 2;
        };
        let ghost = 1 << 23; // above any pid_max: no process has it
        locked(&C).live.insert(ghost, 5);
        note_forks_in(&C, ghost, 9000);
        assert_eq!(held(ghost), Some(9000));
        assert_eq!(held_few_free(ghost), Some(9000), "held by a live child");
        // Something was created since: the last pid moved.
        assert_eq!(held(ghost + 1), None);
        // Reaped (removed before the reap): the pid is free, but the
        // allocator cannot come round to it within the window...
        locked(&C).live.remove(&ghost);
        assert_eq!(held(ghost), Some(9000));
        assert_eq!(held(ghost - 1), None);
        // ... unless few pids are free.
        assert_eq!(held_few_free(ghost), None);
        // ... and after it, it may have handed it out again.
        age();
        assert_eq!(held(ghost), None);
        // Another child of ours on that pid (the allocator went round).
        locked(&C).live.insert(ghost, 8);
        assert_eq!(held(ghost), None);
        locked(&C).live.remove(&ghost);
        // Not a child: held by whatever has that pid and start time.
        let me = std::process::id() as i32;
        note_forks_in(&C, me, 9100);
        age();
        assert_eq!(held(me), Some(9100));
        let noted = locked(&C).forks_at;
        locked(&C).forks_at.as_mut().unwrap().holder = Some(Holder::Started(0));
        assert_eq!(held(me), None, "another start time");
        locked(&C).forks_at = noted;
        assert_eq!(held(me), Some(9100));
        // Nothing holds it (gone): only the window vouches for the count.
        note_forks_in(&C, ghost, 9200);
        assert_eq!(held(ghost), Some(9200));
        assert_eq!(held_few_free(ghost), None);
        assert_eq!(held(me), None);
        age();
        assert_eq!(held(ghost), None);
    }

    #[test]
    fn loadavg_gives_the_last_pid_and_the_number_of_tasks() {
        let c = parse_loadavg(b"0.52 1.18 1.57 2/81 29292\n");
        assert_eq!(
            c,
            Some(PidCursor {
                last: 29292,
                tasks: 81
            })
        );
        assert_eq!(
            parse_loadavg(b"0.00 0.00 0.00 1/4194303 4194301"),
            Some(PidCursor {
                last: 4194301,
                tasks: 4194303
            })
        );
        assert_eq!(parse_loadavg(b"garbage"), None);
        let now = pid_cursor().unwrap();
        assert!(now.tasks >= 1 && now.last > 0, "{now:?}");
    }

    #[test]
    fn a_process_forked_while_a_sweep_reads_is_found() {
        // A descendant that left the group, started between the sweep's
        // read of the last pid and its read of the fork count: the case a
        // reordering of those reads once lost for good (counted, so the
        // next sweep saw "nothing new", but outside the range looked at).
        static ESCAPED: Mutex<Option<std::process::Child>> = Mutex::new(None);
        fn fork_escapee() {
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30").env("DEVRIG_SPAWN_TEST", "1").process_group(0);
            let child = cmd.spawn().unwrap();
            // Past its exec (until then its environment reads empty: a
            // case of its own, see `an_empty_environment_tells_nothing`).
            let pid = child.id() as i32;
            while environ_tags(pid, b"DEVRIG_SPAWN_TEST", b"DEVRIG_SPAWN_") != Some((true, true)) {
                std::thread::sleep(Duration::from_millis(1));
            }
            *ESCAPED.lock().unwrap() = Some(child);
        }
        let mut child = spawn_plain("exec sleep 30", &[]);
        // Something created since the spawn, so the sweep reads the count.
        std::process::Command::new("true").status().unwrap();
        BETWEEN_READS.with(|f| f.set(Some(fork_escapee)));
        let mut found = Vec::new();
        for _ in 0..2 {
            let pids = find_leftovers(child.pid, b"DEVRIG_SPAWN_TEST", Some(&mut child.mark));
            found.extend(pids.into_iter().map(|t| t.pid));
        }
        let mut escapee = ESCAPED.lock().unwrap().take().expect("the hook ran");
        let escaped = escapee.id() as i32;
        escapee.kill().unwrap();
        escapee.wait().unwrap();
        kill_group(child.pid, libc::SIGKILL);
        let _ = reap(&child.pidfd, child.pid);
        assert!(found.contains(&escaped), "{escaped} not in {found:?}");
    }

    #[test]
    fn a_sweep_after_no_fork_but_the_childs_own_has_no_candidates() {
        let mark = SpawnMark::new(500, Some(1000), 1);
        assert_eq!(
            pids_created_between(&mark, 1000, None, true),
            Some(Vec::new())
        );
        assert_eq!(
            pids_created_between(&mark, 1001, None, true),
            Some(Vec::new())
        );
        // A counter that went backwards (not /proc/stat's) bounds nothing.
        assert_eq!(pids_created_between(&mark, 999, None, true), None);
        let mut clean = mark;
        clean.clean_sweep_forks = 1500;
        assert_eq!(
            pids_created_between(&clean, 1500, None, true),
            Some(Vec::new())
        );
        // A count known from earlier may miss a fork that was under way:
        // no shortcut, the range is looked at (here: unknown, so None).
        assert_eq!(pids_created_between(&mark, 1001, None, false), None);
        assert_eq!(pids_created_between(&clean, 1500, None, false), None);
    }

    #[test]
    fn the_start_time_bound_of_a_spawn_is_never_after_the_childs() {
        for _ in 0..200 {
            let before = ticks_now_lower_bound().unwrap();
            let child = std::process::Command::new("true").spawn().unwrap();
            let started = read_stat(child.id() as i32).unwrap().start_ticks;
            let mut child = child;
            child.wait().unwrap();
            assert!(before <= started, "{before} > {started}");
            // Close, too (a second, for a loaded machine): else sweeps
            // would look at processes started long before the spawn.
            assert!(started - before <= 100, "{before} far below {started}");
        }
    }

    #[test]
    fn a_child_whose_pid_is_still_the_last_one_handed_out_means_no_new_process() {
        let mut mark = SpawnMark::new(500, Some(1000), 1);
        assert!(nothing_created_since(&mark, Some(500)));
        assert!(!nothing_created_since(&mark, Some(501)));
        assert!(!nothing_created_since(&mark, Some(499)));
        assert!(!nothing_created_since(&mark, None));
        // Reaped by someone else, the pid can come round again.
        mark.pid_lost = true;
        assert!(!nothing_created_since(&mark, Some(500)));
    }

    #[test]
    fn the_last_pid_of_loadavg_is_the_allocators_cursor() {
        // Equal to ns_last_pid when nothing forks between the two reads
        // (other tests do: try a few times).
        let same = (0..50).any(|_| {
            let a = last_allocated_pid();
            let b = read_proc_number("/proc/sys/kernel/ns_last_pid").map(|v| v as i32);
            a.is_some() && a == b
        });
        assert!(same);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let after = last_allocated_pid().unwrap();
        child.wait().unwrap();
        assert!(
            after >= child.id() as i32 || after < 300,
            "{after} < {}",
            child.id()
        );
    }

    #[test]
    fn a_kept_proc_stat_descriptor_reused_by_the_host_is_left_alone() {
        let first = forks_since_boot().unwrap();
        let kept = kept_fd(&KEPT_PROC_STAT);
        let kept = kept.unwrap();
        // The host closes it and the number goes to another file.
        let null = File::open("/dev/null").unwrap();
        // SAFETY: dup2 onto a number the library's cache owns; the test
        // takes that number over from here on.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), kept) }, kept);
        assert!(
            forks_since_boot().unwrap() >= first,
            "a stale or wrong count"
        );
        let link = std::fs::read_link(format!("/proc/self/fd/{kept}")).unwrap();
        assert_eq!(
            link,
            std::path::Path::new("/dev/null"),
            "the host's file was closed"
        );
        // SAFETY: the number is the test's now (the cache forgot it).
        unsafe { libc::close(kept) };
        let again = kept_fd(&KEPT_PROC_STAT);
        assert!(again.is_some());
    }

    #[test]
    fn the_cached_fork_count_is_a_lower_bound() {
        let cached = forks_lower_bound().unwrap();
        let fresh = forks_since_boot().unwrap();
        assert!(cached <= fresh, "{cached} > {fresh}");
        // Forking moves the fresh count past any earlier reading.
        std::process::Command::new("true").status().unwrap();
        assert!(forks_since_boot().unwrap() > fresh);
        assert!(forks_lower_bound().unwrap() > cached);
    }

    /// A tree of `sh -c script` in its own group, once it has `size` live
    /// processes.
    fn tree(script: &str, size: usize) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while collect_tree(child.id() as i32).0.len() != size {
            assert!(Instant::now() < until, "the tree never reached {size}");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    fn pids_and_groups(w: &Watch) -> (Vec<i32>, Vec<(i32, Vec<i32>)>) {
        let mut pids: Vec<i32> = w.procs.iter().map(|(t, _)| t.pid).collect();
        pids.sort();
        let mut groups = w.groups.clone();
        groups.iter_mut().for_each(|g| g.1.sort());
        groups.sort();
        (pids, groups)
    }

    #[test]
    fn a_line_of_parents_that_leads_to_an_old_stranger_rules_a_process_out() {
        // root -> subshell -> sleep, in their own group; the subshell starts
        // 50 ms (5 or more clock ticks) after the root.
        let mut root = tree("sleep 0.05; (sleep 30 & wait) & wait", 3);
        let root_pid = root.id() as i32;
        let me = std::process::id() as i32;
        let sub = collect_tree(root_pid)
            .0
            .iter()
            .map(|t| t.pid)
            .find(|&p| p != root_pid && read_stat(p).is_some_and(|s| s.ppid == root_pid))
            .unwrap();
        let root_start = read_stat(root_pid).unwrap().start_ticks;
        assert!(read_stat(sub).unwrap().start_ticks > root_start);
        // A spawn made when the root started: everything descends from it.
        let mut l = Lineage::new(me, root_start);
        assert!(l.may_descend(sub));
        assert!(l.may_descend(root_pid));
        // A spawn made after the root started (the root is the host's
        // child, not an adopter): the subshell and its sleep came from an
        // older process that does not descend from it, new as they are.
        let mut l = Lineage::new(me, root_start + 1);
        assert!(!l.may_descend(sub), "the sleep's line of parents");
        assert!(!l.may_descend(root_pid));
        // The host itself and init adopt orphans: never ruled out.
        assert!(l.may_descend(me));
        assert!(l.may_descend(1));
        kill_group(root_pid, libc::SIGKILL);
        root.wait().unwrap();
    }

    #[test]
    fn one_read_of_the_environment_tells_the_tag_and_any_tag_of_the_host() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("DEVRIG_SPAWN_7_8_9", "1")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The environment is in place once exec is done: wait for it.
        let until = Instant::now() + Duration::from_secs(10);
        while environ_tags(pid, b"DEVRIG_SPAWN_7_8_9", b"DEVRIG_SPAWN_7_8_") != Some((true, true)) {
            assert!(Instant::now() < until, "the environment never showed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            environ_tags(pid, b"DEVRIG_SPAWN_7_8_10", b"DEVRIG_SPAWN_7_8_"),
            Some((false, true))
        );
        // A name that only begins the same way is not the variable.
        assert_eq!(
            environ_tags(pid, b"DEVRIG_SPAWN_7_8_", b"DEVRIG_SPAWN_7_8_"),
            Some((false, true))
        );
        assert_eq!(
            environ_tags(pid, b"DEVRIG_SPAWN_1_2_3", b"DEVRIG_SPAWN_1_2_"),
            Some((false, false))
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            environ_tags(pid, b"DEVRIG_SPAWN_7_8_9", b"DEVRIG_SPAWN_7_8_"),
            Some((false, false))
        );
    }

    #[test]
    fn an_empty_environment_tells_nothing() {
        // What a process shows while it execs; here, for good.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Its command line is laid out with its environment: wait for it.
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::read(format!("/proc/{pid}/cmdline"))
            .map_or(true, |c| !c.starts_with(b"sleep"))
        {
            assert!(Instant::now() < until, "the exec never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            environ_tags(pid, b"DEVRIG_SPAWN_7_8_9", b"DEVRIG_SPAWN_7_8_"),
            None
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_fork_never_leaves_the_child_a_mutex_held_by_another_thread() {
        drop(children()); // the fork handlers are in place from the first lock
        let (held, hold) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let g = locked(&FACTS);
            held.send(()).unwrap();
            // The fork below has to wait for this: its child must not get a
            // copy of the mutex that is locked for good.
            std::thread::sleep(Duration::from_millis(100));
            drop(g);
        });
        hold.recv().unwrap();
        // SAFETY: the child only tries two locks (atomics) and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let free = FACTS.try_lock().is_ok() && CHILDREN.try_lock().is_ok();
            // SAFETY: ends the forked child at once, running nothing else.
            unsafe { libc::_exit(if free { 0 } else { 1 }) };
        }
        assert!(pid > 0, "fork failed");
        holder.join().unwrap();
        let mut status = 0;
        // SAFETY: waits for the child just forked, into a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child found a mutex locked: status {status:#x}"
        );
    }

    #[test]
    fn a_reading_rules_out_an_older_process_outside_the_group_without_another_read() {
        let me = std::process::id() as i32;
        let since = 1000;
        // Adopted by init: its line of parents rules nothing out.
        let orphan = |start_ticks, pgrp| Known {
            ppid: 1,
            pgrp,
            start_ticks,
            host_tagged: None,
        };
        let mut l = Lineage::new(me, since);
        assert!(orphan(since - 1, 77).rules_out(500, since, &mut l));
        // Started with the spawn or after it: read again.
        assert!(!orphan(since, 77).rules_out(500, since, &mut l));
        assert!(!orphan(since + 5, 77).rules_out(500, since, &mut l));
        // In the service's group, whatever its age: read again.
        assert!(!orphan(since - 1, 500).rules_out(500, since, &mut l));
        // No tag of this host at all: ruled out, new as it is.
        let untagged = Known {
            host_tagged: Some(false),
            ..orphan(since + 5, 77)
        };
        assert!(untagged.rules_out(500, since, &mut l));
    }

    #[test]
    fn shared_readings_of_another_process_are_not_used() {
        let forks = forks_since_boot().unwrap();
        // Readings as a parent would leave them to a child it forks.
        *FACTS.lock().unwrap() = Some(Facts {
            host: std::process::id() + 1,
            taken_at: Instant::now(),
            forks,
            of: [(
                1,
                Known {
                    ppid: 0,
                    pgrp: 1,
                    start_ticks: 0,
                    host_tagged: Some(false),
                },
            )]
            .into_iter()
            .collect(),
            listing: None,
        });
        let g = shared_facts(forks).unwrap();
        let f = g.as_ref().unwrap();
        assert_eq!(f.host, std::process::id());
        assert!(f.of.is_empty());
    }

    #[test]
    fn a_shared_listing_of_proc_also_holds_the_pids_handed_out_since() {
        let listed_at = || {
            FACTS
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|f| f.listing.as_ref().map(|l| l.0))
        };
        // Other tests' sweeps may renew the listing in between: retry until
        // the second call used the first one's listing.
        let used_shared = (0..20).any(|_| {
            let (forks, last) = (forks_since_boot().unwrap(), last_allocated_pid().unwrap());
            let first = listed_pids(forks, last);
            assert!(first.contains(&(std::process::id() as i32)));
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let (forks2, last2) = (forks_since_boot().unwrap(), last_allocated_pid().unwrap());
            let second = listed_pids(forks2, last2);
            let shared = listed_at() == Some(last);
            assert!(
                second.contains(&(child.id() as i32)),
                "{} missing from the listing",
                child.id()
            );
            child.kill().unwrap();
            child.wait().unwrap();
            shared
        });
        assert!(used_shared);
    }

    #[test]
    fn the_pidfd_scan_finds_what_the_proc_scan_finds() {
        // sh, 3 subshells with 2 sleeps each, one of them in its own group.
        let mut root = tree(
            "for i in 1 2; do (sleep 30 & sleep 30 & wait) & done; \
             setsid sh -c 'sleep 30 & sleep 30 & wait' & wait",
            10,
        );
        let pid = root.id() as i32;
        let (tree, groups) = collect_tree(pid);
        let from_proc = pids_and_groups(&Watch::new(&tree, groups));
        let Some(w) = watch_tree(pid) else {
            // Kernels before 6.13: kill_tree uses the /proc scan alone.
            let me = pidfd_open(std::process::id() as i32).unwrap();
            let e = pidfd_parent(&me).unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)),
                "{e}"
            );
            kill_tree(pid as u32, Duration::from_secs(5)).unwrap();
            root.wait().unwrap();
            return;
        };
        assert!(w.exact);
        assert!(w.procs.iter().all(|(_, fd)| fd.is_some()));
        assert_eq!(pids_and_groups(&w), from_proc);
        // Both groups are held whole: the sh's and the setsid one's.
        assert_eq!(from_proc.1.len(), 2, "{from_proc:?}");
        assert_eq!(from_proc.1.iter().map(|g| g.1.len()).sum::<usize>(), 10);

        kill_tree(pid as u32, Duration::from_secs(5)).unwrap();
        root.wait().unwrap();
        for p in from_proc.0 {
            assert!(read_stat(p).map_or(true, |s| s.is_dead()), "{p} survived");
        }
    }

    #[test]
    fn a_group_with_a_member_outside_the_tree_is_not_signalled_whole() {
        use std::os::unix::process::CommandExt;
        let mut root = tree("sleep 30 & wait", 2);
        let pid = root.id() as i32;
        // Not a descendant, but in the tree's process group.
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .process_group(pid)
            .spawn()
            .unwrap();
        if let Some(w) = watch_tree(pid) {
            assert_eq!(w.procs.len(), 2);
            assert!(w.groups.is_empty(), "{:?}", w.groups);
        }
        let (_, groups) = collect_tree(pid);
        assert!(groups.is_empty(), "{groups:?}");

        kill_tree(pid as u32, Duration::from_secs(5)).unwrap();
        root.wait().unwrap();
        assert_eq!(
            stranger.try_wait().unwrap(),
            None,
            "the stranger was killed"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    #[test]
    fn the_pidfd_scan_of_a_missing_pid_is_empty() {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id() as i32;
        gone.wait().unwrap();
        assert!(watch_tree(pid).map_or(true, |w| w.procs.is_empty()));
        assert!(kill_tree(pid as u32, Duration::ZERO).is_ok());
    }
}
