//! The example programs under `examples/`, run as a user runs them, on the file store and
//! on the test S3 server: `examples/embed.rs` embeds the election. Two copies started at
//! once must lead one after the other, the second with the larger term, and each must
//! release what it held.

#[macro_use]
mod e2e;
mod support;

use e2e::Lock;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The built example: cargo puts examples in `examples/` beside the `deps/` directory
/// that holds this test binary. `cargo test --all-targets` builds them only as test
/// harnesses, so `test.sh` runs `cargo build --release --examples` before the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --release --examples` before the tests \
         (./test.sh does)",
        path.display()
    );
    path
}

/// `embed LOCK STEPS` with the lock's store environment, started now.
fn start_embed(lock: &Lock, steps: u32) -> std::process::Child {
    Command::new(example("embed"))
        .arg(&lock.url)
        .arg(steps.to_string())
        .envs(lock.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start examples/embed")
}

/// The term each `term T: step N` line names, after checking the run ended well.
fn terms_of(out: std::process::Output) -> Vec<u64> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "embed failed ({:?}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("released\n"),
        "embed did not release: {stdout}"
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("term "))
        .map(|l| {
            let (term, _) = l.split_once(':').expect("term T: step N");
            term.parse().expect("a term")
        })
        .collect()
}

fn two_embedded_candidates_lead_in_turn(lock: Lock) {
    let first = start_embed(&lock, 3);
    // The second campaigns while the first leads (or before it has even campaigned: then
    // they swap roles, and the check below holds all the same).
    let second = start_embed(&lock, 3);
    let a = terms_of(first.wait_with_output().expect("wait for the first"));
    let b = terms_of(second.wait_with_output().expect("wait for the second"));
    assert_eq!(a.len(), 3, "the first did all its steps: {a:?}");
    assert_eq!(b.len(), 3, "the second did all its steps: {b:?}");
    // Each leads under one term, and the two terms are 1 and 2, in some order.
    assert!(a.iter().all(|t| *t == a[0]) && b.iter().all(|t| *t == b[0]));
    let mut terms = vec![a[0], b[0]];
    terms.sort_unstable();
    assert_eq!(terms, vec![1, 2]);
    let record = lock.record();
    assert_eq!(record["term"], 2, "{record}");
    assert_eq!(record["released"], true, "{record}");
}

#[test]
fn two_embedded_candidates_lead_in_turn_on_the_file_store() {
    two_embedded_candidates_lead_in_turn(Lock::file());
}

#[test]
fn two_embedded_candidates_lead_in_turn_on_s3() {
    two_embedded_candidates_lead_in_turn(Lock::s3("embed"));
}

// ---------------------------------------------------------------------------------------
// The deployment examples: examples/systemd, examples/kubernetes, examples/container.
// Each file is checked by the tool its platform has where one runs here (systemd-analyze,
// a YAML parser), and the s3lead command line it holds is run as it stands, but for
// three substitutions: the built binary for /usr/local/bin/s3lead, a file lock for the
// S3 lock, and a test command for the worker. So a flag the example misspells, or timings
// s3lead refuses, fail here.
// ---------------------------------------------------------------------------------------

use e2e::{S3LEAD, finish, wait_exit, wait_for};
use std::time::Duration;

fn example_file(rel: &str) -> String {
    let path = format!("{}/examples/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `argv` with the built s3lead as its program, `lock` for its one `s3://` argument, and
/// `command` for everything after `--`.
fn substituted(argv: &[String], lock: &str, command: &[&str]) -> Vec<String> {
    assert_eq!(argv[0], "/usr/local/bin/s3lead", "{argv:?}");
    let dashes = argv
        .iter()
        .position(|a| a == "--")
        .unwrap_or_else(|| panic!("no `--` before the command: {argv:?}"));
    let locks: Vec<usize> = (0..dashes)
        .filter(|&i| argv[i].starts_with("s3://"))
        .collect();
    assert_eq!(locks.len(), 1, "one s3:// lock: {argv:?}");
    let mut out: Vec<String> = argv[..=dashes].to_vec();
    out[0] = S3LEAD.to_owned();
    out[locks[0]] = lock.to_owned();
    out.extend(command.iter().map(|s| s.to_string()));
    out
}

/// The value of `--kill-after`/`-k` in `argv`, in seconds; s3lead's default (5 s) if
/// absent.
fn kill_after_secs(argv: &[String]) -> u64 {
    let i = argv.iter().position(|a| a == "--kill-after" || a == "-k");
    match i {
        None => 5,
        Some(i) => {
            let v = &argv[i + 1];
            v.strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("--kill-after {v}: whole seconds in the examples"))
        }
    }
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null());
    c
}

/// `[Service]` settings of a unit file: key to value (the last one wins, as in systemd).
fn service_settings(unit: &str) -> std::collections::HashMap<String, String> {
    let mut section = "";
    let mut out = std::collections::HashMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("KEY=VALUE");
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

fn seconds(setting: &str) -> u64 {
    setting
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{setting}: whole seconds in the examples"))
}

/// Every KEY=VALUE of an environment file (`EnvironmentFile=`, `docker --env-file`).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn systemd_unit_verifies_and_stops_as_systemctl_stop_would() {
    let unit = example_file("systemd/singleton-worker.service");
    // systemd-analyze checks that ExecStart's program exists: point it at the built one.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("billing-worker.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/s3lead", S3LEAD)).expect("write");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze (install systemd: apt-get install systemd)");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    let service = service_settings(&unit);
    let argv: Vec<String> = service["ExecStart"]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(service["KillMode"], "mixed");
    assert_eq!(service["Restart"], "on-failure");
    assert!(seconds(&service["RestartSec"]) > 0);
    assert!(
        seconds(&service["TimeoutStopSec"]) > kill_after_secs(&argv),
        "TimeoutStopSec must exceed --kill-after"
    );

    // The environment file the unit reads: only settings s3lead reads.
    let env = env_file(&example_file("systemd/s3lead.env"));
    assert!(
        env.iter().any(|(k, _)| k == "AWS_SECRET_ACCESS_KEY"),
        "{env:?}"
    );
    for (k, _) in &env {
        assert!(k.starts_with("AWS_") || k.starts_with("S3LEAD_"), "{k}");
    }

    // ExecStart with that environment; then what `systemctl stop` does with
    // KillMode=mixed: SIGTERM to s3lead alone.
    let lock = Lock::file();
    let ready = lock.path("ready");
    let got_term = lock.path("got-term");
    let script = format!(
        "trap 'touch {}; exit 0' TERM; touch {}; while :; do sleep 0.1; done",
        got_term.display(),
        ready.display()
    );
    let mut worker = command(&substituted(&argv, &lock.url, &["sh", "-c", &script]));
    worker.envs(env).stderr(Stdio::null());
    let mut child = worker.spawn().expect("start ExecStart");
    wait_for("the worker to start", Duration::from_secs(60), || {
        ready.exists()
    });
    e2e::send_signal(child.id(), "TERM");
    let limit = Duration::from_secs(seconds(&service["TimeoutStopSec"]));
    let status = wait_exit(&mut child, limit);
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop is no failure to restart"
    );
    assert!(got_term.exists(), "the worker got the SIGTERM");
    assert_eq!(
        lock.record()["released"],
        true,
        "released for the next host"
    );
}

/// The documents of a YAML file, as JSON, by python3's PyYAML: no YAML parser is a
/// dependency of this crate.
fn yaml_documents(rel: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/examples/{rel}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
            &path,
        ])
        .output()
        .expect("run python3 (install python3 and PyYAML: apt-get install python3-yaml)");
    assert!(
        out.status.success(),
        "parsing {rel} failed (is PyYAML installed? apt-get install python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// A container's `command` + `args`, as the kubelet runs them (no shell).
fn container_argv(container: &serde_json::Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().expect("a string argument").to_owned())
        .collect()
}

#[test]
fn kubernetes_deployment_runs_one_replica_at_a_time() {
    let docs = yaml_documents("kubernetes/singleton-deployment.yaml");
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        d["spec"]["template"]["metadata"]["labels"]
    );
    let replicas = d["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "a standby in each cluster");
    let pod = &d["spec"]["template"]["spec"];
    let argv = container_argv(&pod["containers"][0]);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(
        grace > kill_after_secs(&argv),
        "the kubelet's grace exceeds --kill-after"
    );

    // Its replicas, all at once, on one lock: one after the other, terms 1, 2, ….
    let lock = Lock::file();
    let log = lock.path("log");
    let script = format!(
        "echo start $S3LEAD_TERM >> {0}; sleep 0.3; echo end $S3LEAD_TERM >> {0}",
        log.display()
    );
    let pods: Vec<_> = (0..replicas)
        .map(|_| {
            command(&substituted(&argv, &lock.url, &["sh", "-c", &script]))
                .stderr(Stdio::null())
                .spawn()
                .expect("start a replica")
        })
        .collect();
    for mut p in pods {
        assert_eq!(wait_exit(&mut p, Duration::from_secs(120)).code(), Some(0));
    }
    let expected: Vec<String> = (1..=replicas)
        .flat_map(|t| [format!("start {t}"), format!("end {t}")])
        .collect();
    assert_eq!(e2e::read(&log).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn kubernetes_cronjob_runs_once_and_a_busy_lock_is_a_success() {
    let docs = yaml_documents("kubernetes/cronjob.yaml");
    let cron = &docs[0];
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let argv = container_argv(&pod["containers"][0]);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(grace > kill_after_secs(&argv));

    let lock = Lock::file();
    let ran = lock.path("ran");
    let job = format!("echo $S3LEAD_TERM >> {}", ran.display());
    // Another cluster's pod holds the lock: this one does not run, and succeeds.
    let mut holder = lock.hold(&[]);
    let busy = finish(
        command(&substituted(&argv, &lock.url, &["sh", "-c", &job])),
        Duration::from_secs(60),
    );
    assert_eq!(
        busy.code,
        Some(0),
        "a busy lock is a success: {}",
        busy.stderr
    );
    assert!(
        !ran.exists(),
        "the job did not run while another held the lock"
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // The lock free (a fresh one): the job runs, once.
    let free = Lock::file();
    let ran = free.path("ran");
    let job = format!("echo $S3LEAD_TERM >> {}", ran.display());
    let out = finish(
        command(&substituted(&argv, &free.url, &["sh", "-c", &job])),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(e2e::read(&ran), "1\n");
}

/// The exec-form (JSON array) value of a Dockerfile instruction.
fn dockerfile_array(dockerfile: &str, instruction: &str) -> Vec<String> {
    let prefix = format!("{instruction} ");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    serde_json::from_str(&line[prefix.len()..])
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form (a JSON array): {e}"))
}

/// The one child of `pid` (with `unshare --fork`: the namespace's PID 1, seen from here).
fn only_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("read /proc/PID/task/PID/children");
    let children: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "unshare --fork has one child: {children:?}"
    );
    children[0]
}

#[test]
fn container_entrypoint_as_pid_1_reaps_orphans_and_forwards_sigterm() {
    let dockerfile = example_file("container/Dockerfile");
    let entrypoint = dockerfile_array(&dockerfile, "ENTRYPOINT");
    assert_eq!(entrypoint.last().map(String::as_str), Some("--"));
    assert_eq!(dockerfile_array(&dockerfile, "CMD").len(), 1);

    let lock = Lock::file();
    let ready = lock.path("ready");
    let got_term = lock.path("got-term");
    let orphan_of_command = lock.path("orphan-of-command");
    let orphan_of_exec = lock.path("orphan-of-exec");
    // The command leaves an orphan grandchild that exits soon after, then waits for
    // SIGTERM and exits 7 on it.
    let cmd = format!(
        "trap 'touch {term}; exit 7' TERM; (sleep 0.2 & echo $! > {orphan}); touch {ready}; \
         while :; do sleep 0.1; done",
        term = got_term.display(),
        orphan = orphan_of_command.display(),
        ready = ready.display()
    );
    // As `docker run` starts it: the entrypoint as PID 1 of a new PID namespace.
    let mut unshare = Command::new("unshare");
    if !e2e::is_root() {
        unshare.arg("--map-root-user");
    }
    unshare
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .args(substituted(&entrypoint, &lock.url, &["sh", "-c", &cmd]))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let mut container = unshare
        .spawn()
        .expect("run unshare (util-linux: apt-get install util-linux)");
    wait_for("the command to start", Duration::from_secs(60), || {
        ready.exists()
    });
    let init = only_child(container.id());

    // As `docker exec` does: a process entered into the namespace from outside leaves an
    // orphan, which is reparented to PID 1 itself.
    let exec = Command::new("nsenter")
        .args([
            "-t",
            &init.to_string(),
            "--pid",
            "--mount",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "(sleep 0.2 & echo $! > {})",
            orphan_of_exec.display()
        ))
        .status()
        .expect("run nsenter (util-linux)");
    assert!(exec.success());

    // Each orphan exits after its sleep; it must then be reaped, not stay a zombie. The
    // namespace's pids are read through PID 1's own /proc.
    for file in [&orphan_of_command, &orphan_of_exec] {
        wait_for("the orphan's pid", Duration::from_secs(30), || {
            e2e::read(file).ends_with('\n')
        });
        let pid = e2e::read(file).trim().to_owned();
        let stat = format!("/proc/{init}/root/proc/{pid}/stat");
        if !e2e::poll_until(Duration::from_secs(30), || {
            !std::path::Path::new(&stat).exists()
        }) {
            panic!(
                "{} (pid {pid} in the namespace) was never reaped: {}",
                file.display(),
                e2e::read(std::path::Path::new(&stat))
            );
        }
    }

    // `docker stop`: SIGTERM to PID 1 from outside the namespace.
    e2e::send_signal(init, "TERM");
    let status = wait_exit(&mut container, Duration::from_secs(60));
    assert!(got_term.exists(), "the command got the SIGTERM");
    assert_eq!(
        status.code(),
        Some(7),
        "the command's status is the container's"
    );
    assert_eq!(lock.record()["released"], true);
}

// ---------------------------------------------------------------------------------------
// examples/lifecycle-noncurrent-versions.json: the rule the README gives for versioned
// buckets. The store must take it as `aws s3api put-bucket-lifecycle-configuration` sends
// it, and it must never expire the lock object itself (no `Expiration` action).
// ---------------------------------------------------------------------------------------

#[test]
fn lifecycle_rule_for_noncurrent_lock_versions_is_accepted_on_s3() {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleRule,
        LifecycleRuleFilter, NoncurrentVersionExpiration, VersioningConfiguration,
    };
    let example: serde_json::Value =
        serde_json::from_str(&example_file("lifecycle-noncurrent-versions.json"))
            .expect("the lifecycle example is JSON");
    let rules = example["Rules"].as_array().expect("Rules");
    assert_eq!(rules.len(), 1, "{example}");
    let rule = &rules[0];
    assert!(
        rule.get("Expiration").is_none(),
        "a rule that expires current versions would delete the lock itself: {rule}"
    );
    let prefix = rule["Filter"]["Prefix"].as_str().expect("Filter.Prefix");
    let days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        .as_i64()
        .expect("NoncurrentVersionExpiration.NoncurrentDays") as i32;
    assert_eq!(rule["Status"], "Enabled");

    // A bucket of its own: a lifecycle configuration replaces the bucket's whole one.
    let bucket = format!("lifecycle-{}", std::process::id());
    e2e::block_on(async {
        let client = support::s3_client().await;
        client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create a bucket");
        client
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("enable versioning");
        let rule = LifecycleRule::builder()
            .id(rule["ID"].as_str().expect("ID"))
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .status(ExpirationStatus::Enabled)
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(days)
                    .build(),
            )
            .build()
            .expect("a lifecycle rule");
        client
            .put_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()
                    .expect("a lifecycle configuration"),
            )
            .send()
            .await
            .expect("the store takes the lifecycle rule");
        let got = client
            .get_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .send()
            .await
            .expect("read the lifecycle rule back");
        let rules = got.rules();
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(
            rules[0]
                .noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days()),
            Some(days),
            "{rules:?}"
        );
        assert!(rules[0].expiration().is_none(), "{rules:?}");

        // s3lead works on the versioned bucket as on any other, but for Ceph RGW 16.2,
        // which does not keep conditional writes on a versioned bucket (a create of an
        // existing object is accepted): its proof at acquisition refuses the store.
        let lock = format!("s3://{bucket}/{prefix}versioned");
        let mut run = e2e::s3lead();
        run.args(["run", &lock, "--", "true"])
            .envs(support::s3_env());
        let ran = finish(run, Duration::from_secs(60));
        if support::s3_server().kind == "rgw" {
            assert_eq!(ran.code, Some(78), "{}", ran.stderr);
            assert!(
                ran.final_lines()
                    .iter()
                    .any(|l| l.contains("ignores If-None-Match")),
                "{}",
                ran.stderr
            );
        } else {
            assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        }

        client
            .delete_bucket_lifecycle()
            .bucket(&bucket)
            .send()
            .await
            .expect("remove the rule");
    });
}
