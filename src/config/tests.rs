//! Tests of the configuration: defaults, layering, validation and the file-table fit.

use super::*;
use crate::protocol::pool::BufferClass;

/// Proves the defaults and the conformance preset pass validation.
#[test]
fn defaults_are_valid() {
    let protocol = ProtocolLimits::default();
    protocol.validate().unwrap();
    PoolLimits::default()
        .validate(protocol.message_bytes_max)
        .unwrap();
    let conformance = ProtocolLimits::conformance();
    conformance.validate().unwrap();
    PoolLimits::for_message_bytes_max(conformance.message_bytes_max)
        .validate(conformance.message_bytes_max)
        .unwrap();
}

/// Proves incoherent limits are refused with a message naming the setting.
#[test]
fn incoherent_limits_are_refused() {
    let protocol = ProtocolLimits {
        frame_bytes_max: 10,
        message_bytes_max: 5,
        ..Default::default()
    };
    assert!(protocol.validate().unwrap_err().contains("frame_bytes_max"));
    let beyond_32_bits = ProtocolLimits {
        frame_bytes_max: 1 << 32,
        message_bytes_max: 1 << 33,
        ..Default::default()
    };
    assert!(
        beyond_32_bits
            .validate()
            .unwrap_err()
            .contains("above 4 GiB")
    );
    let pool = PoolLimits::default();
    assert!(
        pool.validate(64 * 1024 * 1024)
            .unwrap_err()
            .contains("message_bytes_max")
    );
}

/// Limits under which the default file table (16,384 + 8 slots) fits.
const LIMITS_GENEROUS: NofileLimits = NofileLimits {
    soft: 1 << 20,
    hard: 1 << 20,
};

fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.clone())
    }
}

/// Proves the server defaults pass validation, given a limit the file table fits under.
#[test]
fn server_defaults_validate() {
    let config = ServerConfig::default();
    config.validate_settings().unwrap();
    check_file_table_fits(
        config.shards,
        config.connections_per_shard_max,
        LIMITS_GENEROUS,
    )
    .unwrap();
    assert!(config.shards >= 1);
    assert_eq!(ServerConfig::from_toml("").unwrap(), config);
}

/// Proves a file with top-level keys, a nested [protocol] and [[pool.classes]] parses.
#[test]
fn toml_with_nested_sections_parses() {
    let text = r#"
        listen = "0.0.0.0:9001"
        shards = 2
        idle_timeout_ms = 15000

        [protocol]
        frame_bytes_max = 65536
        message_bytes_max = 262144
        origins_allowed = ["https://example.com"]

        [[pool.classes]]
        buffer_bytes = 128
        buffers_max = 1024

        [[pool.classes]]
        buffer_bytes = 262144
        buffers_max = 16
    "#;
    let config = ServerConfig::from_toml(text).unwrap();
    assert_eq!(config.listen, "0.0.0.0:9001".parse().unwrap());
    assert_eq!(config.shards, 2);
    assert_eq!(config.idle_timeout_ms, 15_000);
    assert_eq!(
        config.pong_timeout_ms, 10_000,
        "an absent key keeps its default"
    );
    assert_eq!(config.protocol.frame_bytes_max, 65536);
    assert_eq!(config.protocol.message_bytes_max, 262_144);
    assert_eq!(config.protocol.origins_allowed, ["https://example.com"]);
    assert_eq!(config.protocol.header_bytes_max, 8 * 1024);
    let classes = [(128, 1024), (262_144, 16)].map(|(buffer_bytes, buffers_max)| BufferClass {
        buffer_bytes,
        buffers_max,
    });
    assert_eq!(
        config.pool.classes, classes,
        "a written pool is kept as written"
    );
    config.validate_settings().unwrap();
}

/// Proves a misspelled key, top-level or nested, is refused with the valid keys listed.
#[test]
fn unknown_keys_are_refused() {
    let message = ServerConfig::from_toml("shard = 4")
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field `shard`"), "{message}");
    assert!(message.contains("`shards`"), "{message}");
    assert!(message.contains("line 1"), "{message}");
    let text = "[protocol]\nframe_byte_max = 10\n";
    let message = ServerConfig::from_toml(text).unwrap_err().to_string();
    assert!(
        message.contains("unknown field `frame_byte_max`"),
        "{message}"
    );
    assert!(message.contains("`frame_bytes_max`"), "{message}");
    let text = "[[pool.classes]]\nbuffer_bytes = 128\nbuffers = 4\n";
    let message = ServerConfig::from_toml(text).unwrap_err().to_string();
    assert!(message.contains("unknown field `buffers`"), "{message}");
}

/// Proves a value of the wrong type is refused with the key's position.
#[test]
fn wrong_types_are_refused() {
    let message = ServerConfig::from_toml("listen = 8080")
        .unwrap_err()
        .to_string();
    assert!(message.contains("listen"), "{message}");
    let message = ServerConfig::from_toml("echo = \"yes\"")
        .unwrap_err()
        .to_string();
    assert!(message.contains("echo"), "{message}");
}

/// Proves `shards = 0` means one shard per CPU.
#[test]
fn zero_shards_means_one_per_cpu() {
    let config = ServerConfig::from_toml("shards = 0").unwrap();
    assert_eq!(config.shards, ServerConfig::default().shards);
    assert!(config.shards >= 1);
}

/// Proves every leaf key is unique across the tables, so that `RINGCAST_` + the key names
/// one setting, and that the table holds the nested settings the hand-kept list once missed.
#[test]
fn setting_names_are_unique_across_tables() {
    let table = settings();
    for (index, setting) in table.iter().enumerate() {
        let clash = table[index + 1..]
            .iter()
            .find(|other| other.name() == setting.name());
        assert!(
            clash.is_none(),
            "{} and {} share a name",
            setting.dotted_path(),
            clash.unwrap().dotted_path()
        );
        assert_eq!(
            setting.variable(),
            format!("RINGCAST_{}", setting.name().to_uppercase())
        );
    }
    for path in [
        "broker.topics_per_shard_max",
        "broker.history_shard_bytes_max",
        "protocol.origins_allowed",
        "pool.classes",
        "listen",
    ] {
        assert!(
            table.iter().any(|setting| setting.dotted_path() == path),
            "{path} is not in the table"
        );
    }
}

/// Proves variables of every kind reach their settings, nested ones included, and that the
/// values written are explicit: no derived value replaces them.
#[test]
fn environment_variables_of_every_kind_apply() {
    let variables = environment(&[
        ("RINGCAST_LISTEN", "[::1]:9002"),
        ("RINGCAST_ECHO", "true"),
        ("RINGCAST_TOPICS_PER_SHARD_MAX", "7"),
        ("RINGCAST_HISTORY_SHARD_BYTES_MAX", "1_000_000"),
        ("RINGCAST_SLOW_CONSUMER_POLICY", "disconnect"),
        (
            "RINGCAST_ORIGINS_ALLOWED",
            r#"["https://a.example", "https://b.example"]"#,
        ),
        ("RINGCAST_FRAME_BYTES_MAX", "1000"),
        (
            "RINGCAST_CLASSES",
            "[{ buffer_bytes = 128, buffers_max = 4 }, { buffer_bytes = 16777216, buffers_max = 2 }]",
        ),
    ]);
    let overrides = ConfigOverrides::from_environment(variables).unwrap();
    let config = ServerConfig::from_layers(None, &[overrides]).unwrap();
    assert_eq!(config.listen, "[::1]:9002".parse().unwrap());
    assert!(config.echo);
    assert_eq!(config.broker.topics_per_shard_max, 7);
    assert_eq!(config.broker.history_shard_bytes_max, 1_000_000);
    assert_eq!(
        config.broker.slow_consumer_policy,
        SlowConsumerPolicy::Disconnect
    );
    assert_eq!(
        config.protocol.origins_allowed,
        ["https://a.example", "https://b.example"]
    );
    // Echo raises the frame limit unless a layer set it; the environment did.
    assert_eq!(config.protocol.frame_bytes_max, 1000);
    assert_eq!(config.pool.classes.len(), 2, "a pool set is not re-derived");
    config.validate_settings().unwrap();
}

/// Proves a value that does not parse, or parses to something its setting cannot hold, is
/// refused, naming the variable and the value.
#[test]
fn unparsable_variable_is_named() {
    for (variable, value) in [
        ("RINGCAST_LISTEN", "localhost"),
        ("RINGCAST_ECHO", "yes"),
        ("RINGCAST_IDLE_TIMEOUT_MS", "-1"),
        ("RINGCAST_FRAME_BYTES_MAX", ""),
        ("RINGCAST_FRAME_BYTES_MAX", "1\nshards = 2"),
        ("RINGCAST_TOPICS_PER_SHARD_MAX", "\"7\""),
        ("RINGCAST_SLOW_CONSUMER_POLICY", "fast"),
        ("RINGCAST_CLASSES", "[{ buffer_bytes = 128 }]"),
        ("RINGCAST_SNAPSHOT_TOPICS", "AAPL"),
    ] {
        let error = ConfigOverrides::from_environment(environment(&[(variable, value)]));
        let message = error.unwrap_err().to_string();
        assert!(message.contains(variable), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
    }
}

/// Proves misspelled variables are found with the nearest valid one, in any case, while valid
/// ones, RINGCAST_LOG and other programs' variables pass.
#[test]
fn unknown_variables_name_the_nearest() {
    let found = unknown_variables([
        "RINGCAST_TOPIC_PER_SHARD_MAX",
        "ringcast_shards",
        "RINGCAST_SHARDS",
        "RINGCAST_LOG",
        "RINGCAST_HISTORY_SHARD_BYTES_MAX",
        "HOME",
        "RUST_LOG",
    ]);
    let pairs: Vec<(&str, &str)> = found
        .iter()
        .map(|unknown| (unknown.variable.as_str(), unknown.nearest.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            (
                "RINGCAST_TOPIC_PER_SHARD_MAX",
                "RINGCAST_TOPICS_PER_SHARD_MAX"
            ),
            ("ringcast_shards", "RINGCAST_SHARDS"),
        ]
    );
    assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
    assert_eq!(edit_distance(b"", b"abc"), 3);
    assert_eq!(edit_distance(b"same", b"same"), 0);
}

/// Proves echo mode raises the frame and message limits to 16 MiB, sizes the pool and the
/// outbound queue for them, and yields to limits a layer wrote.
#[test]
fn echo_raises_limits_unless_set() {
    let conformance = ProtocolLimits::conformance();
    let config = ServerConfig::from_toml("echo = true").unwrap();
    assert_eq!(config.protocol.frame_bytes_max, conformance.frame_bytes_max);
    assert_eq!(
        config.protocol.message_bytes_max,
        conformance.message_bytes_max
    );
    let pool = PoolLimits::for_message_bytes_max(conformance.message_bytes_max);
    assert_eq!(config.pool, pool);
    assert_eq!(
        config.outbound_queue_bytes_max,
        conformance.message_bytes_max
    );
    config.validate_settings().unwrap();

    let text = "echo = true\n[protocol]\nframe_bytes_max = 65536\n";
    let config = ServerConfig::from_toml(text).unwrap();
    assert_eq!(config.protocol.frame_bytes_max, 65536);
    assert_eq!(
        config.protocol.message_bytes_max,
        conformance.message_bytes_max
    );
    config.validate_settings().unwrap();

    // A lower message limit set explicitly pulls the unset frame limit down with it.
    let mut overrides = ConfigOverrides::default();
    overrides
        .set_flag("message_bytes_max", 2 * 1024 * 1024)
        .unwrap();
    let config = ServerConfig::from_layers(Some("echo = true"), &[overrides]).unwrap();
    assert_eq!(config.protocol.message_bytes_max, 2 * 1024 * 1024);
    assert_eq!(config.protocol.frame_bytes_max, 2 * 1024 * 1024);
    config.validate_settings().unwrap();

    let config = ServerConfig::from_toml("").unwrap();
    assert_eq!(
        config.protocol,
        ProtocolLimits::default(),
        "no echo, no change"
    );
}

/// Proves a pool written in the file is kept even when it cannot hold echo's messages, and
/// that validation then names the pool.
#[test]
fn written_pool_is_not_resized() {
    let text = "echo = true\n[[pool.classes]]\nbuffer_bytes = 4096\nbuffers_max = 8\n";
    let config = ServerConfig::from_toml(text).unwrap();
    assert_eq!(config.pool.classes.len(), 1);
    let error = config.validate_settings().unwrap_err();
    assert!(error.to_string().contains("invalid pool"), "{error}");
}

/// Proves out-of-range values are refused, naming the setting.
#[test]
fn invalid_values_name_the_setting() {
    let cases = [
        ("shards = 1025", "shards"),
        ("connections_per_shard_max = 0", "connections_per_shard_max"),
        ("receive_buffers_count = 3000", "receive_buffers_count"),
        ("receive_buffers_count = 65536", "receive_buffers_count"),
        ("receive_buffer_bytes = 0", "receive_buffer_bytes"),
        (
            "outbound_queue_bytes_max = 1000",
            "outbound_queue_bytes_max",
        ),
        ("outbound_queue_frames_max = 0", "outbound_queue_frames_max"),
        ("send_batch_frames_max = 2048", "send_batch_frames_max"),
        ("handshake_timeout_ms = 0", "handshake_timeout_ms"),
        ("idle_timeout_ms = 0", "idle_timeout_ms"),
        ("pong_timeout_ms = 0", "pong_timeout_ms"),
        ("close_timeout_ms = 0", "close_timeout_ms"),
        ("drain_timeout_ms = 0", "drain_timeout_ms"),
        ("log_interval_ms = 0", "log_interval_ms"),
        ("[protocol]\nheader_bytes_max = 10", "protocol"),
        (
            "[socketio]\nengineio_echo_path = \"engine.io\"",
            "engineio_echo_path",
        ),
        (
            "[socketio]\nengineio_echo_path = \"/socket.io\"",
            "engineio_echo_path",
        ),
        (
            "[socketio]\nsocketio_cors_origins = [\"https://a.example/\"]",
            "socketio_cors_origins",
        ),
        (
            "[socketio]\nsocketio_polling_sessions_per_address_max = 0",
            "socketio_polling_sessions_per_address_max",
        ),
    ];
    for (text, setting) in cases {
        let config = ServerConfig::from_toml(text).unwrap();
        match config.validate_settings() {
            Err(ConfigError::Invalid { setting: named, .. }) => {
                assert_eq!(named, setting, "{text}")
            }
            other => panic!("{text}: expected an invalid {setting}, got {other:?}"),
        }
    }
    let config = ServerConfig::from_toml("receive_buffers_count = 3000").unwrap();
    let message = config.validate_settings().unwrap_err().to_string();
    assert!(message.contains("try 4096"), "{message}");
}

/// Proves the file table check passes when the table fits, also with no limit at all.
#[test]
fn file_table_fits_under_soft_limit() {
    check_file_table_fits(2, 16_384, LIMITS_GENEROUS).unwrap();
    let exact = NofileLimits {
        soft: 16_392,
        hard: 16_392,
    };
    check_file_table_fits(2, 16_384, exact).unwrap();
    let unlimited = NofileLimits {
        soft: NofileLimits::UNLIMITED,
        hard: NofileLimits::UNLIMITED,
    };
    check_file_table_fits(2, 16_384, unlimited).unwrap();
}

/// Proves the misfit message names the limit, the numbers and every fix, with a shard
/// suggestion that keeps the total connection count.
#[test]
fn file_table_misfit_explains_the_fixes() {
    let limits = NofileLimits {
        soft: 1024,
        hard: 524_288,
    };
    let message = check_file_table_fits(2, 16_384, limits)
        .unwrap_err()
        .to_string();
    for expected in [
        "RLIMIT_NOFILE",
        "16392 slots",
        "soft RLIMIT_NOFILE, which is 1024",
        "hard limit 524288",
        "`ulimit -n 16392`",
        // 1024 - 8 = 1016 fit a shard; 32768 in total need 33 shards of 993.
        "--shards 33 --connections-per-shard-max 993",
        "keeps 32768 connections",
        "lower --connections-per-shard-max to 1016",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in: {message}"
        );
    }
}

/// Proves that when the hard limit is too low as well, the message says to raise it as root,
/// and that no shard suggestion beyond SHARDS_MAX is made.
#[test]
fn file_table_misfit_under_low_hard_limit() {
    let limits = NofileLimits { soft: 64, hard: 64 };
    let message = check_file_table_fits(64, 16_384, limits)
        .unwrap_err()
        .to_string();
    assert!(message.contains("raise the hard limit to at least 16392 as root"));
    assert!(!message.contains("--shards"), "{message}");
    assert!(
        message.contains("lower --connections-per-shard-max to 56"),
        "{message}"
    );
}

/// Proves the real limits can be read, and that raising soft to hard leaves soft = hard.
#[test]
fn nofile_limits_are_readable_and_raisable() {
    let before = NofileLimits::current().unwrap();
    assert!(before.soft <= before.hard);
    let after = raise_nofile_soft_limit_to_hard().unwrap();
    assert_eq!(after.soft, after.hard);
    assert_eq!(after.hard, before.hard);
}

const EXAMPLE: &str = include_str!("../../ringcast.toml");

/// Proves the example ringcast.toml parses and validates as shipped (every setting
/// commented out, so the defaults).
#[test]
fn example_file_parses_and_validates() {
    let config = ServerConfig::from_toml(EXAMPLE).unwrap();
    config.validate_settings().unwrap();
    assert_eq!(config, ServerConfig::default());
}

/// Proves the defaults the example documents are the real ones and its keys all exist:
/// uncommenting every setting line (`#key = value`, `#[section]`) changes nothing.
#[test]
fn example_file_documents_the_defaults() {
    let uncommented: String = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = ServerConfig::from_toml(&uncommented).unwrap();
    assert_eq!(config, ServerConfig::default());
    let table = toml::Value::Table(uncommented.parse().unwrap());
    for setting in settings() {
        let mut value = Some(&table);
        for key in &setting.path {
            value = value.and_then(|value| value.get(key));
        }
        let path = setting.dotted_path();
        assert!(value.is_some(), "the example does not document {path}");
    }
    assert_eq!(table["pool"]["classes"].as_array().unwrap().len(), 4);
}
