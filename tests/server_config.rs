//! Proves the settings reach the real binary from the environment the way the file and the
//! flags do: nested settings apply, the log filter has its variables, and a misspelled
//! `RINGCAST_*` variable is reported on stderr with the nearest valid one.

mod support;

use support::server::{RawClient, ServerProcess};

/// Publishes `1` to `topic` over HTTP on a fresh connection and returns the status.
fn publish_status(server: &ServerProcess, topic: &str) -> u16 {
    let mut client = RawClient::connect(server.address);
    let request = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: ringcast\r\nContent-Type: application/json\r\n\
         Content-Length: 1\r\nConnection: close\r\n\r\n1"
    );
    client.write(request.as_bytes());
    client.read_response().status
}

/// Proves a `[broker]` setting the hand-kept variable list once ignored takes effect from its
/// variable: with RINGCAST_TOPICS_PER_SHARD_MAX=1 the second topic is refused with 503.
#[test]
fn nested_setting_applies_from_its_variable() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_TOPICS_PER_SHARD_MAX", "1")],
    );
    assert_eq!(publish_status(&server, "FIRST"), 200);
    assert_eq!(publish_status(&server, "SECOND"), 503);
}

/// Proves a misspelled variable is not silent: the server warns on stderr, naming it and the
/// variable it most likely meant, and still starts.
#[test]
fn misspelled_variable_is_warned_about_with_the_nearest() {
    let mut server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_TOPIC_PER_SHARD_MAX", "1")],
    );
    let log = server.stderr_text();
    let warning = log
        .lines()
        .find(|line| line.contains("RINGCAST_TOPIC_PER_SHARD_MAX"))
        .unwrap_or_else(|| panic!("no warning about the misspelled variable:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("did you mean RINGCAST_TOPICS_PER_SHARD_MAX"),
        "{warning}"
    );
    // The misspelled setting stayed at its default: a second topic is accepted.
    assert_eq!(publish_status(&server, "FIRST"), 200);
    assert_eq!(publish_status(&server, "SECOND"), 200);
    assert_eq!(server.terminate().code(), Some(0));
}

/// Proves --log has its variables: RINGCAST_LOG, and RUST_LOG only when RINGCAST_LOG is unset.
#[test]
fn log_filter_comes_from_ringcast_log_then_rust_log() {
    // An info line the server logs before it prints its address, so it is in the log by now.
    const INFO_LINE: &str = "open files limit";
    let quiet = ServerProcess::start_with_environment(&[], &[("RINGCAST_LOG", "warn")]);
    let log = quiet.stderr_text();
    assert!(
        !log.contains(INFO_LINE),
        "RINGCAST_LOG=warn let info through:\n{log}"
    );
    let quiet = ServerProcess::start_with_environment(&[], &[("RUST_LOG", "warn")]);
    let log = quiet.stderr_text();
    assert!(
        !log.contains(INFO_LINE),
        "RUST_LOG=warn let info through:\n{log}"
    );
    let both = [("RINGCAST_LOG", "info"), ("RUST_LOG", "warn")];
    let loud = ServerProcess::start_with_environment(&[], &both);
    let log = loud.stderr_text();
    assert!(
        log.contains(INFO_LINE),
        "RINGCAST_LOG did not win over RUST_LOG:\n{log}"
    );
}
