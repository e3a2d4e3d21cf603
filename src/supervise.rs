//! The child of DESIGN §4: spawned straight from argv in its own process group, killed
//! by the kernel if s3lead dies, reaped with its orphans, signalled as a group. This
//! room touches no store; `cli/run.rs` joins it to the lease.
//!
//! Three mechanisms close the three ways a child could outlive its lease:
//! - `PR_SET_PDEATHSIG = SIGKILL` in the child: if s3lead is killed (even `kill -9`),
//!   the kernel kills the child. The setting does not survive `fork`, so it does not
//!   cover grandchildren (a `sh -c` pipeline, a worker pool).
//! - A *guard* process (`s3lead __guard`, in its own process group, ignoring the usual
//!   signals) holds the read end of a pipe whose only writer is s3lead. When s3lead
//!   dies for any reason the pipe reaches end-of-file and the guard SIGKILLs the child's
//!   whole process group. An orderly s3lead tells it "done" first.
//! - s3lead is a child subreaper, so grandchildren orphaned by the child are reparented
//!   to it: it reaps them, and the group is known to be gone only when `kill(-pgid, 0)`
//!   finds no process. A process that leaves the group (`setsid`) leaves our reach; that
//!   is the one escape, and it is documented.
//!
//! Like tini, signals are delivered to the whole process group (not only the child), so
//! a `sh -c` that does not forward SIGTERM still sees its children stopped.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};

/// What to run.
#[derive(Clone, Debug)]
pub enum Program {
    /// argv, executed directly (no shell).
    Argv(Vec<OsString>),
    /// A command line for `$SHELL -c` (default `/bin/sh`).
    Shell(String),
}

/// How the child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signaled(Signal),
}

impl ChildExit {
    /// The shell convention: the exit code, or 128 + N for death by signal N.
    pub fn code(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signaled(s) => 128 + s as i32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program}: command not found")]
    NotFound { program: String },
    #[error("{program}: cannot run the command: {source}")]
    CannotRun {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot set up supervision: {0}")]
    Setup(String),
}

impl SpawnError {
    /// 127 for a command that does not exist, 126 for one that cannot be run, as shells do.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::CannotRun { .. } => 126,
            SpawnError::Setup(_) => crate::exit::OS_ERROR,
        }
    }
}

/// Makes s3lead the reaper of its descendants' orphans. Call once, before spawning.
pub fn become_subreaper() -> Result<(), SpawnError> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| SpawnError::Setup(format!("PR_SET_CHILD_SUBREAPER: {e}")))
}

/// A running child and its process group.
pub struct Child {
    pid: Pid,
    exit: Option<ChildExit>,
    sigchld: SignalStream,
    guard: Option<Guard>,
}

impl Child {
    /// Spawns `program` in a new process group, with `env` added after removing every
    /// inherited `S3LEAD_*` variable.
    pub fn spawn(program: &Program, env: &[(String, String)]) -> Result<Child, SpawnError> {
        // SIGCHLD is listened to before the child exists, so its exit cannot be missed.
        let sigchld = signal(SignalKind::child())
            .map_err(|e| SpawnError::Setup(format!("SIGCHLD handler: {e}")))?;
        let (mut cmd, name) = match program {
            Program::Argv(argv) => {
                let Some((first, rest)) = argv.split_first() else {
                    return Err(SpawnError::Setup("no command given".into()));
                };
                let mut c = Command::new(first);
                c.args(rest);
                (c, first.to_string_lossy().into_owned())
            }
            Program::Shell(line) => {
                let shell = std::env::var_os("SHELL")
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "/bin/sh".into());
                let mut c = Command::new(&shell);
                c.arg("-c").arg(line);
                (c, shell.to_string_lossy().into_owned())
            }
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("S3LEAD_") {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and calls only prctl and
        // getppid, both async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // s3lead may have died between fork and prctl: then nobody would send
                // the death signal, so do not run at all.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other(
                        "s3lead exited before the command started",
                    ));
                }
                Ok(())
            });
        }
        // The guard exists before the child, so there is no instant at which s3lead's
        // death would leave the child's group unguarded once it has a pid.
        let guard = Guard::spawn()?;
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound {
                program: name.clone(),
            },
            _ => SpawnError::CannotRun {
                program: name.clone(),
                source: e,
            },
        });
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                guard.dismiss();
                return Err(e);
            }
        };
        let pid = Pid::from_raw(child.id() as i32);
        // The std handle is dropped without waiting: reaping is done here, by pid and
        // group, so orphaned grandchildren are reaped too.
        drop(child);
        let mut guard = guard;
        guard.watch(pid);
        Ok(Child {
            pid,
            exit: None,
            sigchld,
            guard: Some(guard),
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `sig` to the child's whole process group.
    pub fn signal_group(&self, sig: Signal) {
        match killpg(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!("cannot send {sig} to process group {}: {e}", self.pid),
        }
    }

    /// Is any process of the child's group still alive (zombies are reaped first)?
    pub fn group_alive(&mut self) -> bool {
        self.reap();
        !matches!(
            kill(Pid::from_raw(-self.pid.as_raw()), None),
            Err(Errno::ESRCH)
        )
    }

    /// Reaps every exited process of the group that is our child (the child itself and
    /// orphans reparented to us), remembering the child's own status.
    fn reap(&mut self) {
        loop {
            match waitpid(
                Pid::from_raw(-self.pid.as_raw()),
                Some(WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.pid => {
                    self.exit = Some(ChildExit::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.pid => {
                    self.exit = Some(ChildExit::Signaled(sig))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Waits for the child itself to exit.
    pub async fn wait(&mut self) -> ChildExit {
        loop {
            self.reap();
            if let Some(e) = self.exit {
                return e;
            }
            // A tick as well as SIGCHLD: signals coalesce, and one SIGCHLD may stand for
            // several exits already reaped or for none of ours.
            tokio::select! {
                _ = self.sigchld.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Waits until no process of the group is left.
    pub async fn wait_group_gone(&mut self) {
        while self.group_alive() {
            tokio::select! {
                _ = self.sigchld.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// The group is gone: the guard can stand down.
    pub fn finish(&mut self) {
        if let Some(g) = self.guard.take() {
            g.dismiss();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Leaving without `finish` (an error path): make sure nothing of the group
        // survives us, then let the guard go.
        if let Some(g) = self.guard.take() {
            if self.group_alive() {
                self.signal_group(Signal::SIGKILL);
            }
            g.dismiss();
        }
    }
}

/// The guard process: kills the child's group if s3lead dies.
struct Guard {
    proc: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Guard {
    fn spawn() -> Result<Guard, SpawnError> {
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| "/proc/self/exe".into());
        let mut proc = Command::new(exe)
            .arg("__guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| SpawnError::Setup(format!("cannot start the guard process: {e}")))?;
        let stdin = proc.stdin.take();
        Ok(Guard { proc, stdin })
    }

    fn watch(&mut self, pgid: Pid) {
        if let Some(w) = self.stdin.as_mut() {
            if let Err(e) = writeln!(w, "{}", pgid.as_raw()).and_then(|_| w.flush()) {
                tracing::warn!(
                    "the guard process is gone ({e}); a kill -9 of s3lead could leave grandchildren"
                );
            }
        }
    }

    fn dismiss(mut self) {
        if let Some(mut w) = self.stdin.take() {
            let _ = writeln!(w, "done").and_then(|_| w.flush());
        }
        let _ = self.proc.wait();
    }
}

/// The guard's whole life (`s3lead __guard`): read the group id, then wait for "done"
/// or end-of-file; on end-of-file without "done", s3lead died: SIGKILL the group.
pub fn guard_main() -> i32 {
    use nix::sys::signal::{SigHandler, signal as set_handler};
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { set_handler(sig, SigHandler::SigIgn) };
    }
    let mut pgid: Option<i32> = None;
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let l = line.trim();
                if l == "done" {
                    return 0;
                }
                if let Ok(p) = l.parse::<i32>() {
                    if p > 1 {
                        pgid = Some(p);
                    }
                }
            }
        }
    }
    if let Some(p) = pgid {
        let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
    }
    0
}

/// Parses a signal as `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?} (examples: TERM, INT, HUP, KILL, 15)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("FOO").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ChildExit::Code(3).code(), 3);
        assert_eq!(ChildExit::Signaled(Signal::SIGKILL).code(), 137);
    }
}
