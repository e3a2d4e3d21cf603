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

/// A man page: clap_mangen's sections, with the exit statuses as a proper EXIT STATUS
/// section (clap_mangen would title the after-help text "EXTRA").
fn man_page(cmd: clap::Command) -> String {
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
    text.push_str(".SH \"EXIT STATUS\"\n");
    for line in s3lead::exit::EXIT_STATUS_TEXT.lines() {
        text.push_str(&line.replace('-', "\\-"));
        text.push_str("\n.br\n");
    }
    text.push_str(".SH \"SEE ALSO\"\nflock(1), tini(1), systemd.service(5)\n");
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
        &man_page(cli.clone()),
        &mut stale,
    );
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("s3lead-{}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = man_page(sub.clone().name(static_name));
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
    let page = man_page(
        Cli::command()
            .find_subcommand("run")
            .unwrap()
            .clone()
            .name("s3lead-run"),
    );
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
