//! The man pages in `man/` and the shell completions in `completions/` are generated from
//! the clap definitions (`src/cli/mod.rs`), the one source of truth for flags. This test
//! regenerates them and fails when the committed files are stale; run
//! `S3LEAD_BLESS=1 cargo test --release --bin s3lead generated_docs` to rewrite them.
//! It is a unit test of the binary because the clap definitions belong to the binary,
//! not to the library.

use super::Cli;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Variables s3lead reads that are no flag's (flags' own variables come from their clap
/// definitions): the AWS SDK's standard chain, and the log filter.
const READ_ENV: &[(&str, &str)] = &[
    (
        "S3LEAD_LOG",
        "A tracing filter (e.g. s3lead=debug) that replaces the level -q and -v set.",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "Static credentials, the first source of the standard AWS credential chain.",
    ),
    (
        "AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
        "The profile of the shared config files, and where they are (~/.aws/config, ~/.aws/credentials); --profile wins.",
    ),
    (
        "AWS_REGION, AWS_DEFAULT_REGION",
        "The region; --region wins. With a custom endpoint and no region, us-east-1.",
    ),
    (
        "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL",
        "A custom endpoint (MinIO, Ceph RGW, R2, ...); --endpoint-url wins. Implies path-style addressing.",
    ),
    (
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "true: ignore the endpoints of the environment and the profile.",
    ),
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME",
        "Web identity credentials (Kubernetes IRSA, EKS pod identity).",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "Container credentials (ECS task roles).",
    ),
    (
        "AWS_EC2_METADATA_DISABLED",
        "true: never ask the instance metadata service (IMDS) for credentials or a region.",
    ),
];

/// What `s3lead run` puts in the command's environment, after removing every inherited
/// `S3LEAD_*` variable.
const CHILD_ENV: &[(&str, &str)] = &[
    (
        "S3LEAD_TERM",
        "The fencing term of this lease: larger for every new leader. Pass it to what the command writes, and have that refuse a smaller one than it has seen.",
    ),
    ("S3LEAD_LOCK", "The lock, as given on the command line."),
    (
        "S3LEAD_HOLDER",
        "The holder this lease is recorded under (--id, or host (pid N)).",
    ),
    (
        "S3LEAD_LEASE_ID",
        "The random id of this lease, unique to this acquisition.",
    ),
    (
        "SHELL",
        "The shell -c runs the command line with (/bin/sh when unset; read by s3lead, passed on as it is).",
    ),
];

/// The EXAMPLES section of each page: (subcommand or "" for s3lead(1), description,
/// command lines).
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "run",
        "One-shot: run a migration from whichever host gets the lock first; the others wait until it is done and then run it too (so it must be idempotent); with -n they exit 75 at once instead.",
        "s3lead run s3://ops-locks/migrate -- ./migrate --to latest",
    ),
    (
        "run",
        "Cron: run the nightly report once across the fleet, whichever host fires first; the others exit 75, which the crontab line turns into a success.",
        "0 2 * * *  s3lead run -q -n --once-per 1d --once-per-offset 14h s3://ops-locks/nightly-report -- /usr/local/bin/nightly-report || [ $? -eq 75 ]",
    ),
    (
        "run",
        "systemd: a singleton worker on one host at a time (examples/systemd/singleton-worker.service); KillMode=mixed sends SIGTERM to s3lead alone, which forwards it and releases once the worker is gone.",
        "[Service]\nExecStart=/usr/local/bin/s3lead run --kill-after 20s s3://ops-locks/billing-worker -- /usr/local/bin/billing-worker\nKillMode=mixed\nTimeoutStopSec=30\nRestart=on-failure\nRestartSec=5",
    ),
    (
        "status",
        "Who holds the lock, and is the lease live (exit 0) or not (1)?",
        "s3lead status s3://ops-locks/billing-worker",
    ),
    (
        "status",
        "Follow the lock: one line per change of holder, term or release state, until Ctrl-C.",
        "s3lead status --watch s3://ops-locks/billing-worker",
    ),
    (
        "check",
        "Prove that a store keeps the conditional-write contract before trusting a lock to it (exit 78 if not).",
        "s3lead check s3://ops-locks/billing-worker",
    ),
];

fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// A tagged paragraph per (name, text).
fn tagged(out: &mut String, items: impl IntoIterator<Item = (String, String)>) {
    for (name, text) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_escape(&name),
            roff_escape(&text)
        ));
    }
}

/// The ENVIRONMENT section: every flag's variable (from its clap definition; `globals`
/// are the top-level command's global flags, which a subcommand's page also takes), the
/// variables of the AWS chain, and for `run` what the command gets.
fn environment(cmd: &clap::Command, globals: &[clap::Arg], name: &str) -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    let flags: Vec<(String, String)> = cmd
        .get_arguments()
        .chain(globals)
        .filter_map(|arg| {
            let var = arg.get_env()?.to_string_lossy().into_owned();
            let long = arg.get_long()?;
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let first = help.split_inclusive(". ").next().unwrap_or("").trim();
            Some((var, format!("Sets --{long} (the flag wins): {first}")))
        })
        .collect();
    tagged(&mut out, flags);
    tagged(
        &mut out,
        READ_ENV
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    );
    if name == "run" || name.is_empty() {
        out.push_str(&format!(
            ".PP\n{}\n",
            roff_escape(
                "The command run by s3lead run gets, in its environment (inherited S3LEAD_* variables are removed first):"
            )
        ));
        tagged(
            &mut out,
            CHILD_ENV
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
        );
    }
    out
}

fn examples(name: &str) -> String {
    let mut out = String::from(".SH EXAMPLES\n");
    for (sub, what, lines) in EXAMPLES {
        if name.is_empty() || *sub == name {
            out.push_str(&format!(".PP\n{}\n.PP\n.nf\n.RS 4\n", roff_escape(what)));
            for line in lines.lines() {
                out.push_str(&roff_escape(line));
                out.push('\n');
            }
            out.push_str(".RE\n.fi\n");
        }
    }
    out
}

/// A man page: clap_mangen's sections, with the exit statuses as a proper EXIT STATUS
/// section (clap_mangen would title the after-help text "EXTRA"), then ENVIRONMENT and
/// EXAMPLES. `sub` is the subcommand's name ("" for s3lead(1)): its page is titled
/// s3lead-SUB, the name man(1) finds, but its synopsis reads `s3lead SUB`, as it is typed.
fn man_page(root: &clap::Command, sub: &str) -> String {
    let cmd = if sub.is_empty() {
        root.clone()
    } else {
        let name: &'static str = Box::leak(format!("s3lead-{sub}").into_boxed_str());
        root.find_subcommand(sub)
            .unwrap()
            .clone()
            .name(name)
            .bin_name(format!("s3lead {sub}"))
    };
    let globals: Vec<clap::Arg> = if sub.is_empty() {
        Vec::new()
    } else {
        root.get_arguments()
            .filter(|a| a.is_global_set())
            .cloned()
            .collect()
    };
    let man = clap_mangen::Man::new(cmd.clone())
        .date("2026-11-25")
        .source(format!("s3lead {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    if cmd.get_arguments().next().is_some() {
        man.render_options_section(&mut out).unwrap();
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out).unwrap();
    }
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(&environment(&cmd, &globals, sub));
    text.push_str(".SH \"EXIT STATUS\"\n");
    for line in s3lead::exit::EXIT_STATUS_TEXT.lines() {
        text.push_str(&line.replace('-', "\\-"));
        text.push_str("\n.br\n");
    }
    text.push_str(&examples(sub));
    text.push_str(".SH \"SEE ALSO\"\n");
    let pages: Vec<String> = std::iter::once("s3lead".to_owned())
        .chain(
            root.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| format!("s3lead-{}", s.get_name())),
        )
        .filter(|p| *p != cmd.get_name())
        .map(|p| format!("{}(1)", roff_escape(&p)))
        .collect();
    text.push_str(&format!(
        "{}, flock(1), tini(1), systemd.service(5)\n",
        pages.join(", ")
    ));
    text
}

fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "s3lead", &mut out);
    String::from_utf8(out).unwrap()
}

fn check(path: &Path, fresh: &str, stale: &mut Vec<String>) {
    if std::env::var_os("S3LEAD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != fresh {
        stale.push(
            path.strip_prefix(root())
                .unwrap_or(path)
                .display()
                .to_string(),
        );
    }
}

#[test]
fn man_pages_and_completions_match_the_command_line() {
    let mut stale = Vec::new();
    let cli = Cli::command();
    check(
        &root().join("man/s3lead.1"),
        &man_page(&cli, ""),
        &mut stale,
    );
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("s3lead-{}", sub.get_name());
        let page = man_page(&cli, sub.get_name());
        check(&root().join(format!("man/{name}.1")), &page, &mut stale);
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "s3lead.bash"),
        (clap_complete::Shell::Zsh, "_s3lead"),
        (clap_complete::Shell::Fish, "s3lead.fish"),
    ] {
        check(
            &root().join("completions").join(file),
            &completions(shell),
            &mut stale,
        );
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `S3LEAD_BLESS=1 cargo test --release --bin s3lead generated_docs` and commit them"
    );
}

#[test]
fn the_run_man_page_documents_every_exit_status() {
    let page = man_page(&Cli::command(), "run");
    assert!(page.contains(".SH \"EXIT STATUS\""));
    for code in [
        "126", "127", "64", "65", "69", "75", "76", "77", "78", "128+N",
    ] {
        assert!(page.contains(code), "exit status {code} is not documented");
    }
    for flag in [
        "\\-\\-lease\\-duration",
        "\\-\\-kill\\-after",
        "\\-\\-nonblock",
        "\\-\\-lost\\-exit\\-code",
    ] {
        assert!(page.contains(flag), "{flag} missing from the man page");
    }
}
