# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_s3lead_global_optspecs
    string join \n v/verbose q/quiet log-format= h/help V/version
end

function __fish_s3lead_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_s3lead_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_s3lead_using_subcommand
    set -l cmd (__fish_s3lead_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c s3lead -n "__fish_s3lead_needs_command" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c s3lead -n "__fish_s3lead_needs_command" -s v -l verbose -d 'More logging on stderr (-v: debug; -vv: trace, and the AWS SDK\'s own lines)'
complete -c s3lead -n "__fish_s3lead_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c s3lead -n "__fish_s3lead_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c s3lead -n "__fish_s3lead_needs_command" -s V -l version -d 'Print version'
complete -c s3lead -n "__fish_s3lead_needs_command" -f -a "run" -d 'Campaign for the lock; run the command only while the lease is held'
complete -c s3lead -n "__fish_s3lead_needs_command" -f -a "status" -d 'Show who holds the lock (one read; writes nothing)'
complete -c s3lead -n "__fish_s3lead_needs_command" -f -a "check" -d 'Prove that the lock\'s store keeps the conditional-write contract, racing writers included (on scratch keys next to the lock; the lock itself is not touched)'
complete -c s3lead -n "__fish_s3lead_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l id -d 'Holder identity shown to operators [default: HOSTNAME (pid N)]. Ownership is a random lease id, so two holders with the same id never share a lease' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l lease-duration -d 'How long followers wait after last seeing the record change' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l renew-every -d 'The leader\'s renewal interval' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l retry-period -d 'Retry interval for failed requests, and the followers\' fast polling period (while the holder\'s renewal is overdue, or the lock is free)' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l follow-every -d 'The followers\' slow polling period, while the holder renews on time [default: the shorter of 10s and a third of --lease-duration]. A holder killed with -9 is replaced within --lease-duration + --follow-every (40s at the defaults: 30s + 10s); a follower costs one read per --follow-every (360 an hour at the defaults). Each wait is shortened by up to 5 % at random, so followers do not read in step. On the file store a follower also wakes as soon as the lock file changes' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s k -l kill-after -d 'Grace between the stop signal and SIGKILL' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l request-timeout -d 'Bound on each request to the store [default: the shorter of 5s and half of --renew-every]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s s -l signal -d 'The stop signal (name or number)' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s w -l timeout -d 'Give up campaigning after this long' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l min-hold -d 'Keep the lease until DUR after it was won, even if the command exits sooner, then release. For cron with -n: hosts that fire later find the lock held and exit with the conflict status (75) instead of running the job again. Measured on this host\'s boot clock, never the wall clock. TERM or INT to s3lead ends the hold at once' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l once-per -d 'Run the command at most once per WINDOW of wall-clock time (15m, 1h, 1d) across all candidates. The record keeps the last run; a candidate that finds a run in the current window exits with the conflict status (75) without running, and says who ran it and when. Windows are aligned on UTC multiples of WINDOW (see --once-per-offset). A run still going, or one whose lease was lost, spends the window; so does a failed one unless --retry-failed' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l once-per-offset -d 'Shift the --once-per windows by DUR from UTC multiples of WINDOW, so that their edges fall far from the time cron fires (a daily 02:00 job in UTC: 14h)' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s E -l conflict-exit-code -d 'Exit status when the lock is busy (-n), the wait timed out (-w), or the command already ran in this window (--once-per)' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l lost-exit-code -d 'Exit status when the lease was lost and the command stopped' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l on-elected -d 'Run CMD with /bin/sh -c once a lease is won, with the command\'s S3LEAD_* environment and S3LEAD_EVENT=elected. Hooks are news, not part of the promise: they run outside the lease, a failing one is logged and changes nothing, and one still running after --hook-timeout is killed with its process group' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l on-lost -d 'Run CMD with /bin/sh -c once the lease is at risk or lost (S3LEAD_EVENT=lost, S3LEAD_LOST_REASON says why), after the command was sent its stop signal or SIGKILL: the hook never delays the stop' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l on-released -d 'Run CMD with /bin/sh -c once the release landed (S3LEAD_EVENT=released)' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l hook-timeout -d 'A hook still running this long after it started is SIGKILLed with its process group. At exit s3lead waits for running hooks, at most this long each' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l peer-listen -d 'Serve a read-only HTTP endpoint on ADDR (127.0.0.1:9464): GET /healthz, GET /metrics (Prometheus text: s3lead_is_leader, s3lead_term, s3lead_leader_changes_total, s3lead_store_requests_total, s3lead_renewals_at_risk_total, s3lead_seconds_since_last_renewal) and GET /v1/lease (the lease as this candidate knows it, JSON). It serves what the candidate has seen and decides nothing' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l quorum -d 'Run the command only while at least N candidates are live, this one included: the leader and the followers it hears long-polling its endpoint (peer mode; needs --peer-listen and --advertise). Below N the command is stopped as on a lost lease (the stop signal, SIGKILL after --kill-after) while the lease is kept and renewed; it starts again, under the same term, once N are live. An availability policy: the promise rests on the store\'s conditional writes, not on this' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l peer-token-file -d 'Ask for `Authorization: Bearer TOKEN` on /metrics and /v1/lease (/healthz stays open), TOKEN being the first line of FILE; a follower also sends it to the leader\'s advertised endpoint. Never on the command line, never logged' -r -F
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l advertise -d 'Write URL (http://HOST:PORT, where other candidates reach this one\'s --peer-listen) into the lock\'s record while leading: followers then long-poll it for each renewal instead of reading the store, and read the store again when it does not answer as leader. No answer of it can cause or hasten a takeover' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s c -l command -d 'Run STRING with $SHELL -c (default /bin/sh) instead of a command after `--`' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l endpoint-url -d 'S3-compatible endpoint (MinIO, Ceph RGW, R2 …) [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l region -d 'AWS region [env: AWS_REGION, AWS_DEFAULT_REGION]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l profile -d 'Profile of the shared AWS config files [env: AWS_PROFILE]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s n -l nonblock -d 'If another holder leads, exit at once without running the command'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l retry-failed -d 'With --once-per: a run that exited with a non-zero status leaves the window open, and the next candidate to fire in it runs the command again'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l stats -d 'At exit, print one line with the store requests made, by kind and outcome (JSON with --log-format json); -v prints it too'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l no-verify-store -d 'Do not prove, once elected, that an S3 store refuses a create of an existing object (If-None-Match) and a replace with a wrong ETag (If-Match). The proof costs two PUTs, once a day per endpoint and bucket (remembered under $XDG_CACHE_HOME/s3lead). Without it, a store that ignores conditions elects every candidate at once: use only for a store proven with `s3lead check`'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -l path-style -d 'Path-style addressing (always on with a custom endpoint)'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s v -l verbose -d 'More logging on stderr (-v: debug; -vv: trace, and the AWS SDK\'s own lines)'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s q -l quiet -d 'Only errors on stderr'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c s3lead -n "__fish_s3lead_using_subcommand run" -s V -l version -d 'Print version'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l every -d 'With --watch, read this often [default: a third of the lease seen, at most 10s]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l peer-token-file -d 'The bearer token of the leader\'s endpoint (the first line of FILE), to list its followers when it asks for one (`run --peer-token-file`)' -r -F
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l endpoint-url -d 'S3-compatible endpoint (MinIO, Ceph RGW, R2 …) [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l region -d 'AWS region [env: AWS_REGION, AWS_DEFAULT_REGION]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l profile -d 'Profile of the shared AWS config files [env: AWS_PROFILE]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l json -d 'Print one JSON object: {"lock", "state": "held"|"released"|"absent", "appears_live": bool, "record", "last_run_age_s", "followers", "followers_error"}; the record\'s "last_run" is the last --once-per run; "followers" lists the candidates the holder\'s endpoint hears (peer mode: each {"id", "last_heard", "heard_ms_ago"}), null when it advertises none or cannot be asked (then "followers_error" says why)'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l watch -d 'Keep reading, and print one line each time the holder, the term or the release state changes (not at renewals), until interrupted (SIGINT or SIGTERM: exit 0). With --json, one object per line: {"at", "lock", "state", "holder", "term", "lease_id"}'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -l path-style -d 'Path-style addressing (always on with a custom endpoint)'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -s v -l verbose -d 'More logging on stderr (-v: debug; -vv: trace, and the AWS SDK\'s own lines)'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -s q -l quiet -d 'Only errors on stderr'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c s3lead -n "__fish_s3lead_using_subcommand status" -s V -l version -d 'Print version'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l rounds -d 'Race rounds: each races --writers creates, then as many replaces, on a fresh scratch key' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l writers -d 'Concurrent writers in each race' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l endpoint-url -d 'S3-compatible endpoint (MinIO, Ceph RGW, R2 …) [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l region -d 'AWS region [env: AWS_REGION, AWS_DEFAULT_REGION]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l profile -d 'Profile of the shared AWS config files [env: AWS_PROFILE]' -r
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l json -d 'Print one JSON object: {"lock", "safe", "verdict", "rounds", "writers", "checks": [{"check", "result": "ok"|"warn"|"fail", "expected", "got", "rtt_ms", and where they apply "anomaly": "not-implemented"|"ignored-precondition", "clock_offset_ms", "clock_uncertainty_ms"}]}'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -l path-style -d 'Path-style addressing (always on with a custom endpoint)'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -s v -l verbose -d 'More logging on stderr (-v: debug; -vv: trace, and the AWS SDK\'s own lines)'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -s q -l quiet -d 'Only errors on stderr'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c s3lead -n "__fish_s3lead_using_subcommand check" -s V -l version -d 'Print version'
complete -c s3lead -n "__fish_s3lead_using_subcommand help; and not __fish_seen_subcommand_from run status check help" -f -a "run" -d 'Campaign for the lock; run the command only while the lease is held'
complete -c s3lead -n "__fish_s3lead_using_subcommand help; and not __fish_seen_subcommand_from run status check help" -f -a "status" -d 'Show who holds the lock (one read; writes nothing)'
complete -c s3lead -n "__fish_s3lead_using_subcommand help; and not __fish_seen_subcommand_from run status check help" -f -a "check" -d 'Prove that the lock\'s store keeps the conditional-write contract, racing writers included (on scratch keys next to the lock; the lock itself is not touched)'
complete -c s3lead -n "__fish_s3lead_using_subcommand help; and not __fish_seen_subcommand_from run status check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
