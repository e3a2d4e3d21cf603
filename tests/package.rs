//! The Debian package as `scripts/build-deb.sh` builds it around the built binary,
//! unpacked (`dpkg-deb -x`) into a scratch root rather than installed, so that the test
//! leaves the machine as it was (CI installs it for real: `scripts/check-deb.sh`): every
//! file in its standard place, the binary the one under test, the man page rendering, and
//! the bash completion completing a subcommand.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): apt-get install dpkg man-db"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_holds_the_binary_man_pages_and_completions_in_their_places() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let manifest = env!("CARGO_MANIFEST_DIR");
    let deb = run(Command::new(format!("{manifest}/scripts/build-deb.sh"))
        .env("S3LEAD_BIN", env!("CARGO_BIN_EXE_s3lead"))
        .env("CARGO_TARGET_DIR", scratch.path().join("target")));
    let deb = deb.trim();
    assert!(deb.ends_with(".deb"), "{deb}");
    let control = run(Command::new("dpkg-deb").args(["-f", deb]));
    assert!(control.contains("Package: s3lead\n"), "{control}");
    assert!(control.contains("Depends: libc6"), "{control}");

    let root = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let file = |rel: &str| {
        let path = root.join(rel);
        assert!(path.is_file(), "the package has no /{rel}");
        path
    };
    let bin = file("usr/bin/s3lead");
    assert_eq!(
        std::fs::read(&bin).expect("packaged binary"),
        std::fs::read(env!("CARGO_BIN_EXE_s3lead")).expect("built binary"),
        "the packaged binary is the one built"
    );
    for page in ["s3lead", "s3lead-run", "s3lead-status", "s3lead-check"] {
        file(&format!("usr/share/man/man1/{page}.1.gz"));
    }
    file("usr/share/zsh/vendor-completions/_s3lead");
    file("usr/share/fish/vendor_completions.d/s3lead.fish");
    file("usr/share/doc/s3lead/copyright");
    file("usr/share/doc/s3lead/examples/iam-policy.json");

    // man reads the gzipped page as installed.
    let page = run(Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(file("usr/share/man/man1/s3lead-run.1.gz"))
        .env("MANWIDTH", "120"));
    let synopsis: Vec<&str> = page
        .lines()
        .skip_while(|l| *l != "SYNOPSIS")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(2)
        .collect();
    assert_eq!(synopsis, ["s3lead", "run"], "{page}");
    assert!(
        page.contains("\nENVIRONMENT\n") && page.contains("\nEXAMPLES\n"),
        "{page}"
    );

    // What bash does on `s3lead ru<TAB>`.
    let completion = file("usr/share/bash-completion/completions/s3lead");
    let got = run(Command::new("bash").args([
        "-c",
        r#"source "$1"
           COMP_WORDS=(s3lead ru); COMP_CWORD=1; COMP_LINE="s3lead ru"; COMP_POINT=${#COMP_LINE}
           _s3lead s3lead ru s3lead; printf '%s\n' "${COMPREPLY[@]}""#,
        "_",
        &completion.to_string_lossy(),
    ]));
    assert_eq!(got.lines().collect::<Vec<_>>(), ["run"], "{got}");
    assert!(Path::new(deb).exists());
}
