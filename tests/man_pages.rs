//! The committed man pages, as `man -l` renders them for a reader: each subcommand's
//! synopsis reads as it is typed (`s3lead run`, not `s3lead-run`), and each page has the
//! ENVIRONMENT and EXAMPLES sections an operator looks for. (That the pages match the
//! clap definitions is the binary's `generated_docs` test.)

use std::process::Command;

/// `man -l PAGE`, rendered as plain text at a fixed width.
fn rendered(page: &str) -> String {
    let path = format!("{}/man/{page}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("man")
        .args(["-l", "-P", "cat", &path])
        .env("MANWIDTH", "200")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run man ({e}): install man-db and groff-base (apt-get install man-db)")
        });
    assert!(
        out.status.success(),
        "man -l {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of section `name`, up to the next section heading.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| *l != name);
    assert!(lines.next().is_some(), "no {name} section:\n{text}");
    lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

#[test]
fn each_subcommand_page_shows_its_synopsis_as_typed_and_its_environment_and_examples() {
    for sub in ["run", "status", "check"] {
        let text = rendered(&format!("s3lead-{sub}.1"));
        let synopsis = section(&text, "SYNOPSIS");
        let first = synopsis
            .iter()
            .find(|l| !l.trim().is_empty())
            .expect("a synopsis");
        // man justifies the lines: the words are what a reader reads.
        let words: Vec<&str> = first.split_whitespace().collect();
        assert!(
            words.starts_with(&["s3lead", sub]),
            "the synopsis of s3lead-{sub}(1) is not typed as `s3lead {sub}`: {first}"
        );
        let environment = section(&text, "ENVIRONMENT").join("\n");
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_EC2_METADATA_DISABLED",
            "S3LEAD_LOG",
            "S3LEAD_LOG_FORMAT",
        ] {
            assert!(
                environment.contains(var),
                "s3lead-{sub}(1) lacks {var}:\n{environment}"
            );
        }
        let examples = section(&text, "EXAMPLES").join("\n");
        assert!(
            examples.contains(&format!("s3lead {sub} s3://")),
            "s3lead-{sub}(1) has no example of `s3lead {sub}`:\n{examples}"
        );
        section(&text, "EXIT STATUS");
    }

    let run = rendered("s3lead-run.1");
    let environment = section(&run, "ENVIRONMENT").join("\n");
    // Every flag's variable, and what the command gets.
    for var in [
        "S3LEAD_LEASE_DURATION",
        "S3LEAD_KILL_AFTER",
        "S3LEAD_ONCE_PER",
        "S3LEAD_TERM",
        "S3LEAD_LOCK",
        "S3LEAD_HOLDER",
        "S3LEAD_LEASE_ID",
    ] {
        assert!(
            environment.contains(var),
            "s3lead-run(1) lacks {var}:\n{environment}"
        );
    }
    let examples = section(&run, "EXAMPLES").join("\n");
    for needle in [
        "0 2 * * *  s3lead run -q -n --once-per 1d",
        "KillMode=mixed",
        "s3lead run s3://ops-locks/migrate -- ",
    ] {
        assert!(
            examples.contains(needle),
            "no {needle:?} in EXAMPLES:\n{examples}"
        );
    }
}
