//! The hooks of `s3lead run` (`--on-elected`, `--on-lost`, `--on-released`): a shell
//! command run at one of the lease's moments ([`LeaseEvent`]), with the `S3LEAD_*`
//! environment of the command and `S3LEAD_EVENT` naming the moment.
//!
//! A hook is news for the operator's tooling, never part of the promise: it runs outside
//! the guard and the lease (a `--on-lost` hook may run while the next leader's command
//! does), its failure is one WARN line and changes nothing, and it never delays the stop
//! path or the release. The supervisor starts the hooks of pending events only once the
//! stop policy has nothing left to do at that instant (the stop signal, SIGKILL and the
//! release have been sent), and a hook still running after `--hook-timeout` has its
//! process group SIGKILLed. At exit s3lead waits for hooks still running, each at most
//! until its timeout.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use s3lead::lease::{LeaseEvent, LeaseState};
use s3lead::record::Term;
use s3lead::timing::Dur;
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The hooks the user gave, and their bound.
#[derive(Clone, Debug, Default)]
pub struct HookCommands {
    /// `--on-elected`: run once a lease is won.
    pub on_elected: Option<String>,
    /// `--on-lost`: run once a lease is at risk or lost.
    pub on_lost: Option<String>,
    /// `--on-released`: run once a release landed.
    pub on_released: Option<String>,
    /// `--hook-timeout`: a hook still running this long after its start is killed.
    pub timeout: Duration,
}

/// The hooks of one run: the lease's events come in on a channel (the election's
/// callback only sends), and [`Hooks::start_pending`] starts their commands when the
/// supervisor says it may.
pub struct Hooks {
    commands: HookCommands,
    lock: String,
    holder: String,
    events: mpsc::UnboundedReceiver<LeaseEvent>,
    sender: mpsc::UnboundedSender<LeaseEvent>,
    running: JoinSet<()>,
    /// The term whose `--on-lost` hook has started: one per lease, whichever of the
    /// renewal task and the supervisor's stop policy told first.
    lost_started: Option<Term>,
}

impl Hooks {
    /// Hooks for `lock`, whose command runs as `holder`.
    pub fn new(commands: HookCommands, lock: &str, holder: &str) -> Hooks {
        let (sender, events) = mpsc::unbounded_channel();
        Hooks {
            commands,
            lock: lock.to_owned(),
            holder: holder.to_owned(),
            events,
            sender,
            running: JoinSet::new(),
            lost_started: None,
        }
    }

    /// The callback for [`s3lead::lease::Candidate::on_event`]: it only queues.
    pub fn sink(&self) -> impl Fn(LeaseEvent) + Send + Sync + 'static + use<> {
        let sender = self.sender.clone();
        move |e| {
            let _ = sender.send(e);
        }
    }

    /// Starts the hook of every event queued so far. Call only when nothing on the stop
    /// path is due: spawning a process takes time the stop signal must not wait for.
    pub fn start_pending(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.start(e);
        }
        // Reap finished hook tasks, so that a long run does not collect them.
        while self.running.try_join_next().is_some() {}
    }

    /// Starts what is queued, then waits for every hook still running (each killed at its
    /// timeout): at exit, after the release.
    pub async fn finish(mut self) {
        self.start_pending();
        while self.running.join_next().await.is_some() {}
    }

    fn start(&mut self, e: LeaseEvent) {
        let (flag, name, cmd, term, lease_id) = match &e {
            LeaseEvent::Elected { term, lease_id, .. } => (
                "--on-elected",
                "elected",
                &self.commands.on_elected,
                *term,
                Some(lease_id.to_string()),
            ),
            LeaseEvent::Lost { term, .. } => {
                if self.lost_started.replace(*term) == Some(*term) {
                    return;
                }
                ("--on-lost", "lost", &self.commands.on_lost, *term, None)
            }
            LeaseEvent::Released { term } => (
                "--on-released",
                "released",
                &self.commands.on_released,
                *term,
                None,
            ),
            LeaseEvent::Observed { .. } | LeaseEvent::Renewed { .. } => return,
        };
        let Some(cmd) = cmd else { return };
        let lock = self.lock.clone();
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("S3LEAD_") {
                command.env_remove(k);
            }
        }
        command
            .env("S3LEAD_EVENT", name)
            .env("S3LEAD_TERM", term.to_string())
            .env("S3LEAD_LOCK", &lock)
            .env("S3LEAD_HOLDER", &self.holder);
        if let Some(id) = lease_id {
            command.env("S3LEAD_LEASE_ID", id);
        }
        if let LeaseEvent::Lost {
            state: LeaseState::Lost(reason),
            ..
        } = &e
        {
            command.env("S3LEAD_LOST_REASON", reason.to_string());
        } else if let LeaseEvent::Lost { .. } = &e {
            command.env(
                "S3LEAD_LOST_REASON",
                "at risk: renewals failed up to the stop point",
            );
        }
        let child = match command.spawn() {
            Ok(c) => c,
            Err(err) => {
                warn!(lock = %lock, %term, "the {flag} hook could not be started: {err}");
                return;
            }
        };
        debug!(lock = %lock, %term, pid = child.id(), "started the {flag} hook");
        let timeout = self.commands.timeout;
        self.running
            .spawn(watch_hook(child, lock, flag, term, timeout));
    }
}

/// Waits for a hook, at most `timeout`: says how it failed, kills it (and its process
/// group) once the timeout is over.
async fn watch_hook(
    mut child: tokio::process::Child,
    lock: String,
    flag: &'static str,
    term: Term,
    timeout: Duration,
) {
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            debug!(lock = %lock, %term, "the {flag} hook succeeded")
        }
        Ok(Ok(status)) => warn!(
            lock = %lock,
            %term,
            "the {flag} hook failed ({status}); nothing else changes"
        ),
        Ok(Err(err)) => {
            warn!(lock = %lock, %term, "cannot wait for the {flag} hook: {err}")
        }
        Err(_) => {
            // Its own process group: whatever the hook started dies with it.
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            warn!(
                lock = %lock,
                %term,
                "the {flag} hook still ran after --hook-timeout ({}); killed it",
                Dur(timeout)
            );
        }
    }
}
