//! s3lead as PID 1 (a container's entrypoint, `unshare --pid --fork`): a minimal init in
//! front of the real s3lead, as `docker run --init` puts tini in front of a command.
//!
//! Why a process of its own, and not s3lead doing init's work itself:
//! - **Signals.** The kernel drops every signal sent to a PID namespace's init for which
//!   it has no handler (SIGKILL from outside excepted), so a `docker stop` that comes
//!   before s3lead listens, or to a subcommand that never listens (`status`), would be
//!   lost and end in docker's SIGKILL. This init blocks the signals before anything else
//!   and forwards each to s3lead, whose own handling (`signals.rs`) then applies as on any
//!   host. Blocked signals are queued, not dropped, even for init.
//! - **Orphans.** Every process of the namespace whose parent exits is reparented to PID 1
//!   (`docker exec`'s, whose parent is outside the namespace, are the usual ones), and
//!   stays a zombie until PID 1 reaps it. Reaping them means `waitpid(-1)`, which inside
//!   s3lead would also reap children that are not orphans: the guard, whose status s3lead
//!   reads by pid, and the SDK's `credential_process` helpers, which tokio waits for. Here
//!   the only child this init waits for by name is s3lead, so reaping anything else is
//!   always right.
//!
//! It does what tini does (block, forward, reap with `waitpid(-1)`, exit with the child's
//! status), narrowed to the signals s3lead catches ([`CAUGHT`]): any other signal reaches
//! init with no handler and is dropped by the kernel, as it would be for tini's default
//! set of the synchronous ones; forwarded, most of them would end s3lead without a word.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use s3lead::signals::CAUGHT;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Whether this process is the init of its PID namespace.
pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// Runs this same command line as a child (which, being PID 2 or more, is a plain
/// s3lead), forwards it every signal s3lead catches, reaps every process that is
/// reparented here, and returns the child's exit status (128+N if signal N killed it).
pub fn main() -> i32 {
    let mut set = SigSet::empty();
    for sig in CAUGHT {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    // Before the child exists, so that neither its exit nor a stop request can come
    // unseen. A blocked signal stays blocked across exec, so the child unblocks them.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        return fail(&format!("cannot block signals: {e}"));
    }
    let mut args = std::env::args_os();
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let _argv0 = args.next();
    let mut cmd = Command::new(exe);
    cmd.args(args);
    // SAFETY: between fork and exec this calls only sigprocmask, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).map_err(std::io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(e) => return fail(&format!("cannot start s3lead under PID 1: {e}")),
    };
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(child) {
                    return code;
                }
            }
            Ok(sig) => match kill(child, sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return fail(&format!("cannot forward {sig} to s3lead: {e}")),
            },
            Err(Errno::EINTR) => {}
            Err(e) => return fail(&format!("cannot wait for signals: {e}")),
        }
    }
}

/// Reaps every child that has exited; the child's exit status once it is one of them.
/// What s3lead leaves running when it exits dies with this init: the kernel kills the
/// whole namespace when its PID 1 exits.
fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// One line on stderr; no logging is set up in this process.
fn fail(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "s3lead (PID 1): {message}");
    s3lead::exit::OS_ERROR
}
