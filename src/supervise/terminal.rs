//! The terminal, for interactive use: when s3lead runs in the foreground of a terminal
//! (its stdin is one, and s3lead's process group is the terminal's foreground group), the
//! command's process group becomes the foreground group, as a shell makes a job's, so that
//! `s3lead run lock -- vim` can read the keyboard and Ctrl-C, Ctrl-Z and window changes
//! reach the command straight from the terminal. On the command's exit the terminal is
//! handed back to s3lead's group, so the shell finds it where it left it.
//!
//! Ctrl-Z stops the command (the terminal sends SIGTSTP to its group). The guard, its
//! parent, sees it stop, hands the terminal back and stops s3lead with SIGTSTP, so that
//! the shell sees its job stopped and prints its prompt. While stopped, s3lead does not
//! renew: the lease runs out, and the guard's watchdog kills the command at its deadline,
//! as for any stopped s3lead (docs/design.md). `fg` continues s3lead; the guard sees it
//! run again, gives the terminal back to the command (if s3lead is in the foreground
//! again; after `bg`, not) and continues it with SIGCONT.
//!
//! Both sides call `tcsetpgrp`, as shells do: the command before it execs (so it never
//! runs a first instruction in the background) and the guard after the fork (so that the
//! hand-over does not depend on which runs first). A background process that calls
//! `tcsetpgrp` gets SIGTTOU, which would stop it: the guard ignores SIGTTOU for its whole
//! life (it never reads or writes the terminal), and the command ignores it only around
//! its own call, then takes the default back before exec.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The terminal on the guard's stdin, and s3lead's process group that had it.
pub struct Terminal {
    s3lead: Pid,
    s3lead_group: libc::pid_t,
}

/// How many milliseconds the guard waits, at most, to see s3lead stop after a Ctrl-Z.
const STOP_SEEN_TRIES: u32 = 100;

/// The descriptor the terminal is on: stdin, as a shell's job has it.
const TTY: libc::c_int = 0;

impl Terminal {
    /// The terminal, if s3lead (the guard's parent) is in its foreground; SIGTTOU ignored
    /// from here on.
    pub fn detect() -> Option<Terminal> {
        let s3lead = nix::unistd::getppid();
        // SAFETY: isatty, tcgetpgrp and getpgid only read the state of this process.
        let (is_tty, foreground, group) = unsafe {
            (
                libc::isatty(TTY) == 1,
                libc::tcgetpgrp(TTY),
                libc::getpgid(s3lead.as_raw()),
            )
        };
        if !is_tty || foreground < 0 || group < 0 || foreground != group {
            return None;
        }
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(Signal::SIGTTOU, nix::sys::signal::SigHandler::SigIgn)
        };
        Some(Terminal {
            s3lead,
            s3lead_group: group,
        })
    }

    /// In the command, between fork and exec, once it is in its own process group: make
    /// that group the terminal's foreground group, then put SIGTTOU back to its default
    /// (an ignored signal stays ignored across exec). Only async-signal-safe calls.
    pub fn take_in_child() {
        // SAFETY: signal, getpgrp and tcsetpgrp are async-signal-safe system calls.
        unsafe {
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(TTY, libc::getpgrp());
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
        }
    }

    /// In the guard, after the fork: the same hand-over, whichever side runs first.
    pub fn give_to(&self, group: Pid) {
        // SAFETY: tcsetpgrp changes only the terminal's foreground group.
        unsafe {
            libc::tcsetpgrp(TTY, group.as_raw());
        }
    }

    /// Back to s3lead's group, if the command's group has it.
    pub fn hand_back(&self, group: Pid) {
        // SAFETY: tcgetpgrp and tcsetpgrp only read and set the foreground group.
        unsafe {
            if libc::tcgetpgrp(TTY) == group.as_raw() {
                libc::tcsetpgrp(TTY, self.s3lead_group);
            }
        }
    }

    /// The command stopped (Ctrl-Z): the terminal back to s3lead's group, and s3lead
    /// stopped too, so that the shell sees its job stop. Returns whether s3lead was seen
    /// stopped: the guard waits a little for it (the signal takes effect at once on a
    /// running process), because a `fg` typed before the guard saw s3lead stop would
    /// leave it unable to tell that s3lead ran again. The wait is bounded well below the
    /// lease margin's allowance for a late SIGKILL, so the watchdog stays on time.
    pub fn command_stopped(&self, group: Pid) -> bool {
        self.hand_back(group);
        let _ = nix::sys::signal::kill(self.s3lead, Signal::SIGTSTP);
        for _ in 0..STOP_SEEN_TRIES {
            if self.s3lead_stopped() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// Whether s3lead is stopped, from `/proc/PID/stat`'s state field.
    pub fn s3lead_stopped(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.s3lead)) else {
            return false;
        };
        // The state follows the command name, which is in parentheses and may hold any
        // character: look after the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t")
    }

    /// s3lead runs again (`fg` or `bg`): the terminal to the command's group if s3lead is
    /// in the foreground, then SIGCONT to the command's group.
    pub fn s3lead_continued(&self, group: Pid) {
        // SAFETY: tcgetpgrp only reads the foreground group.
        if unsafe { libc::tcgetpgrp(TTY) } == self.s3lead_group {
            self.give_to(group);
        }
        let _ = killpg(group, Signal::SIGCONT);
    }
}
