//! The command line, and the loading of the configuration from all of its layers.
//!
//! Each layer overrides the one before: the defaults in `ServerConfig`, the TOML file named by
//! `--config`, the `RINGCAST_*` environment variables, then the flags here. The flags cover the
//! settings people change from run to run; everything else is in the file or the environment.

use std::env::VarError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;
use tracing::warn;

use crate::config::{
    AuthMode, ConfigError, ConfigOverrides, LOG_VARIABLE, ServerConfig, SlowConsumerPolicy,
    unknown_variables,
};

const LONG_ABOUT: &str = "\
ringcast is a WebSocket publish/subscribe broker for market-data fanout. It runs one shard per \
CPU core, each a thread with its own io_uring loop, and bounds every queue, buffer and table \
with a limit from its configuration.

Settings are taken from four layers, each overriding the one before: the built-in defaults, the \
TOML file given with --config (the example ringcast.toml lists every setting, its default and \
why), environment variables, and these flags. Every setting of the file has its variable: \
RINGCAST_ and the setting's name in upper case, whatever its table (RINGCAST_LISTEN, \
RINGCAST_IDLE_TIMEOUT_MS, RINGCAST_FRAME_BYTES_MAX, RINGCAST_TOPICS_PER_SHARD_MAX, ...). Text \
settings take the value as it is; the others take it in TOML syntax (4096, true, [\"a\"]). A \
RINGCAST_ variable that names no setting is reported at start-up with the nearest one.

Examples:
  ringcast --listen 0.0.0.0:8080 --config /etc/ringcast.toml
  RINGCAST_SHARDS=4 ringcast --echo --log debug";

/// The command-line arguments of the `ringcast` binary.
#[derive(Clone, Debug, Parser)]
#[command(name = "ringcast", version, about, long_about = LONG_ABOUT)]
pub struct Arguments {
    /// Address and port to accept WebSocket connections on.
    ///
    /// Default 127.0.0.1:8080, reachable from this machine only; use 0.0.0.0:8080 or [::]:8080
    /// to accept connections from the network. Overrides `listen` in the config file and
    /// RINGCAST_LISTEN. A host name (`localhost:8080`) is resolved, and its first address
    /// taken.
    #[arg(long, value_name = "ADDRESS", value_parser = resolve_listen_address)]
    pub listen: Option<SocketAddr>,

    /// Address and port to accept TLS connections on (wss://, https://).
    ///
    /// Served by the same shards and endpoints as --listen, with the certificate and key of
    /// --tls-certificate and --tls-private-key. The second stdout line names it: `ringcast
    /// listening on ADDRESS (tls)`. SIGHUP reads the certificate and key again. Default none.
    /// Overrides `tls_listen` in the config file and RINGCAST_TLS_LISTEN.
    #[arg(long, value_name = "ADDRESS")]
    pub tls_listen: Option<SocketAddr>,

    /// PEM file of the TLS certificate chain, the server's certificate first.
    ///
    /// Required with --tls-listen. Default none. Overrides `tls_certificate` in the config file
    /// and RINGCAST_TLS_CERTIFICATE.
    #[arg(long, value_name = "PATH")]
    pub tls_certificate: Option<PathBuf>,

    /// PEM file of the TLS private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// Required with --tls-listen. Default none. Overrides `tls_private_key` in the config file
    /// and RINGCAST_TLS_PRIVATE_KEY.
    #[arg(long, value_name = "PATH")]
    pub tls_private_key: Option<PathBuf>,

    /// Shards to run, one thread and one io_uring each.
    ///
    /// Default (or 0): one per CPU this process may use. Overrides `shards` in the config file
    /// and RINGCAST_SHARDS.
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<usize>,

    /// TOML config file to read settings from.
    ///
    /// Default: none, so only the defaults, the environment and the flags apply. An unknown key
    /// in the file is an error, so a misspelled setting cannot pass unnoticed.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Echo every message back instead of brokering it.
    ///
    /// For the Autobahn conformance suite and for benchmarks of the transport alone. Raises the
    /// frame and message limits to 16 MiB unless they are set explicitly. Default off; also
    /// `echo = true` in the config file or RINGCAST_ECHO=true.
    #[arg(long)]
    pub echo: bool,

    /// Run the built-in ticker simulator: live market data at once.
    ///
    /// Publishes random-walk quotes for `demo_symbols` ticker symbols (default 500: AAPL, MSFT,
    /// ...) at `--demo-messages-per-second` in total, as if a publisher were connected. Subscribe
    /// at /ws to see them. Default off; also `demo = true` in [broker] or RINGCAST_DEMO=true.
    #[arg(long)]
    pub demo: bool,

    /// Messages per second the demo feed publishes, over all its symbols.
    ///
    /// Default 1000. Overrides `demo_messages_per_second` in [broker] and
    /// RINGCAST_DEMO_MESSAGES_PER_SECOND.
    #[arg(long, value_name = "COUNT")]
    pub demo_messages_per_second: Option<u64>,

    /// What to do with a subscriber that cannot keep up: conflate, drop or disconnect.
    ///
    /// Default conflate: keep only the newest message per topic until its queue drains (the
    /// subscriber sees seq jump). drop: drop the newest (counted). disconnect: close with 1008.
    /// Overrides `slow_consumer_policy` in [broker] and RINGCAST_SLOW_CONSUMER_POLICY.
    #[arg(long, value_name = "POLICY")]
    pub slow_consumer_policy: Option<SlowConsumerPolicy>,

    /// Whether connections must present a JWT: none (default) or jwt.
    ///
    /// With jwt, set one key (jwt_hs256_secret_file or jwt_public_key_file in [auth], or their
    /// RINGCAST_ variables). Overrides `auth_mode` in [auth] and RINGCAST_AUTH_MODE.
    #[arg(long, value_name = "MODE")]
    pub auth_mode: Option<AuthMode>,

    /// Connections one shard holds at once.
    ///
    /// Default 16384. Each shard registers a file table of this many slots plus a few reserved,
    /// which must fit under the soft open-files limit (`ulimit -n`). Overrides
    /// `connections_per_shard_max` in the config file and RINGCAST_CONNECTIONS_PER_SHARD_MAX.
    #[arg(long, value_name = "COUNT")]
    pub connections_per_shard_max: Option<usize>,

    /// Milliseconds without traffic from a client before the server pings it.
    ///
    /// Default 30000 (30 s), below the idle timeouts of common NATs and load balancers. A ping
    /// unanswered for `pong_timeout_ms` closes the connection. Overrides `idle_timeout_ms` in
    /// the config file and RINGCAST_IDLE_TIMEOUT_MS.
    #[arg(long, value_name = "MILLISECONDS")]
    pub idle_timeout_ms: Option<u64>,

    /// Milliseconds a client has to complete the upgrade request after connecting.
    ///
    /// Default 10000 (10 s), so that a slowloris client cannot hold a slot for long. Overrides
    /// `handshake_timeout_ms` in the config file and RINGCAST_HANDSHAKE_TIMEOUT_MS.
    #[arg(long, value_name = "MILLISECONDS")]
    pub handshake_timeout_ms: Option<u64>,

    /// Largest frame payload a client may send, in bytes.
    ///
    /// Default 1048576 (1 MiB), or 16777216 (16 MiB) with --echo; never above the message
    /// limit. Overrides `frame_bytes_max` under [protocol] in the config file and
    /// RINGCAST_FRAME_BYTES_MAX.
    #[arg(long, value_name = "BYTES")]
    pub frame_bytes_max: Option<usize>,

    /// Largest message (all its fragments together) a client may send, in bytes.
    ///
    /// Default 1048576 (1 MiB), or 16777216 (16 MiB) with --echo. Overrides `message_bytes_max`
    /// under [protocol] in the config file and RINGCAST_MESSAGE_BYTES_MAX.
    #[arg(long, value_name = "BYTES")]
    pub message_bytes_max: Option<usize>,

    /// Negotiate permessage-deflate with clients that offer it.
    ///
    /// Each message is compressed once per shard (at `compression_level`, when at least
    /// `compression_message_bytes_min` long) and shared by every compressing subscriber;
    /// clients' compressed messages are inflated up to `message_bytes_max`. Default off; also
    /// `websocket_compression = true` under [protocol] or RINGCAST_WEBSOCKET_COMPRESSION=true.
    #[arg(long)]
    pub websocket_compression: bool,

    /// NATS servers to join other ringcast nodes through (JetStream), comma-separated.
    ///
    /// `nats://HOST:PORT` or `HOST:PORT`. Every node on the same stream shares topics, seqs and
    /// history; the server must run JetStream (`nats-server -js`). Default none: a single node.
    /// Overrides `nats_urls` in [nats] and RINGCAST_NATS_URLS.
    #[arg(long = "nats", value_name = "URL[,URL...]")]
    pub nats_urls: Option<String>,

    /// Which log lines to print, as a tracing filter.
    ///
    /// A level (error, warn, info, debug, trace), or directives per module such as
    /// `info,ringcast::shard=debug`. Default info. Overrides RINGCAST_LOG, which overrides
    /// RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The log filter when neither the flag nor a variable gives one.
pub const LOG_DEFAULT: &str = "info";

/// `--listen`: an address as written (`127.0.0.1:8080`, `[::]:8080`) or a host name and port
/// (`localhost:8080`), resolved once at start-up to its first address.
fn resolve_listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| format!("not HOST:PORT or an address ({error})"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

impl Arguments {
    /// The settings given on the command line, as the top layer of overrides. Each flag is
    /// named after its setting, and its value is checked like the file's.
    pub fn overrides(&self) -> Result<ConfigOverrides, ConfigError> {
        let mut overrides = ConfigOverrides::default();
        if let Some(listen) = self.listen {
            overrides.set_flag("listen", listen)?;
        }
        if let Some(tls_listen) = self.tls_listen {
            overrides.set_flag("tls_listen", tls_listen)?;
        }
        if let Some(path) = &self.tls_certificate {
            overrides.set_flag("tls_certificate", path)?;
        }
        if let Some(path) = &self.tls_private_key {
            overrides.set_flag("tls_private_key", path)?;
        }
        if let Some(shards) = self.shards {
            overrides.set_flag("shards", shards)?;
        }
        if let Some(count) = self.connections_per_shard_max {
            overrides.set_flag("connections_per_shard_max", count)?;
        }
        // These two flags can only turn their setting on; without them, the lower layers decide.
        if self.echo {
            overrides.set_flag("echo", true)?;
        }
        if self.demo {
            overrides.set_flag("demo", true)?;
        }
        if self.websocket_compression {
            overrides.set_flag("websocket_compression", true)?;
        }
        if let Some(count) = self.demo_messages_per_second {
            overrides.set_flag("demo_messages_per_second", count)?;
        }
        if let Some(policy) = self.slow_consumer_policy {
            overrides.set_flag("slow_consumer_policy", policy)?;
        }
        if let Some(mode) = self.auth_mode {
            overrides.set_flag("auth_mode", mode)?;
        }
        if let Some(milliseconds) = self.handshake_timeout_ms {
            overrides.set_flag("handshake_timeout_ms", milliseconds)?;
        }
        if let Some(milliseconds) = self.idle_timeout_ms {
            overrides.set_flag("idle_timeout_ms", milliseconds)?;
        }
        if let Some(bytes) = self.frame_bytes_max {
            overrides.set_flag("frame_bytes_max", bytes)?;
        }
        if let Some(bytes) = self.message_bytes_max {
            overrides.set_flag("message_bytes_max", bytes)?;
        }
        if let Some(urls) = &self.nats_urls {
            overrides.set_flag("nats_urls", urls)?;
        }
        Ok(overrides)
    }

    /// The log filter: `--log`, else RINGCAST_LOG, else RUST_LOG, else info. Read through
    /// `environment` like the settings.
    pub fn log_filter(&self, environment: impl Fn(&str) -> Option<String>) -> String {
        self.log
            .clone()
            .or_else(|| environment(LOG_VARIABLE))
            .or_else(|| environment("RUST_LOG"))
            .unwrap_or_else(|| LOG_DEFAULT.to_owned())
    }
}

/// Loads the configuration from every layer (the file named by `--config`, the process's
/// environment, the flags) and validates it, including against the process's RLIMIT_NOFILE.
pub fn load_config(arguments: &Arguments) -> Result<ServerConfig, ConfigError> {
    let file_text = match &arguments.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileRead {
                path: path.clone(),
                source,
            })?;
            Some(text)
        }
        None => None,
    };
    let config = load_config_from(arguments, file_text.as_deref(), process_environment)?;
    config.validate()?;
    Ok(config)
}

/// Loads the configuration from the given file text and environment lookup instead of the real
/// ones, so that the layering can be tested. Validates every setting except the fit under the
/// process's RLIMIT_NOFILE, which `load_config` adds.
pub fn load_config_from(
    arguments: &Arguments,
    file_text: Option<&str>,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError> {
    let layers = [
        ConfigOverrides::from_environment(environment)?,
        arguments.overrides()?,
    ];
    let config = ServerConfig::from_layers(file_text, &layers)
        .map_err(|error| error.in_file(arguments.config.as_deref()))?;
    config.validate_settings()?;
    Ok(config)
}

/// Warns about every `RINGCAST_*` variable of the process that names no setting, with the
/// nearest one: a misspelled variable would otherwise leave its setting at the default without
/// a word. Call once logging is set up.
pub fn warn_unknown_variables() {
    let names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for unknown in unknown_variables(names.iter().map(String::as_str)) {
        warn!(
            "environment variable {} names no setting and is ignored; did you mean {}?",
            unknown.variable, unknown.nearest
        );
    }
}

/// Looks a variable up in the process's environment. A value that is not UTF-8 is passed on
/// (lossily) rather than treated as unset, so that it fails to parse with the variable named.
pub fn process_environment(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) => Some(value),
        Err(VarError::NotPresent) => None,
        Err(VarError::NotUnicode(value)) => Some(value.to_string_lossy().into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory;

    use super::*;
    use crate::config::Setting;

    fn parse(flags: &[&str]) -> Arguments {
        Arguments::try_parse_from(std::iter::once("ringcast").chain(flags.iter().copied())).unwrap()
    }

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// Proves clap accepts the argument definitions (no clashing names or bad defaults).
    #[test]
    fn arguments_are_well_formed() {
        Arguments::command().debug_assert();
    }

    /// Proves no flags, no file and no environment give the defaults.
    #[test]
    fn nothing_given_yields_defaults() {
        let config = load_config_from(&parse(&[]), None, environment(&[])).unwrap();
        assert_eq!(config, ServerConfig::default());
        assert_eq!(parse(&[]).log_filter(environment(&[])), "info");
    }

    /// Proves `--listen` takes a host name (resolved) as well as an address.
    #[test]
    fn listen_resolves_host_names() {
        let address = parse(&["--listen", "localhost:8081"]).listen.unwrap();
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 8081);
        let error = Arguments::try_parse_from(["ringcast", "--listen", "localhost"]).unwrap_err();
        assert!(error.to_string().contains("HOST:PORT"), "{error}");
    }

    /// Proves each flag reaches its setting.
    #[test]
    fn flags_set_their_settings() {
        let arguments = parse(&[
            "--listen=0.0.0.0:9000",
            "--shards=3",
            "--connections-per-shard-max=100",
            "--idle-timeout-ms=1500",
            "--handshake-timeout-ms=2500",
            "--frame-bytes-max=4096",
            "--message-bytes-max=65536",
            "--log=debug",
        ]);
        let config = load_config_from(&arguments, None, environment(&[])).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.shards, 3);
        assert_eq!(config.connections_per_shard_max, 100);
        assert_eq!(config.idle_timeout_ms, 1500);
        assert_eq!(config.handshake_timeout_ms, 2500);
        assert_eq!(config.protocol.frame_bytes_max, 4096);
        assert_eq!(config.protocol.message_bytes_max, 65536);
        assert_eq!(arguments.log_filter(environment(&[])), "debug");
    }

    /// Proves the precedence: defaults < file < environment < command line, setting by setting.
    #[test]
    fn layers_override_in_order() {
        let file = "idle_timeout_ms = 1000\npong_timeout_ms = 1000\nclose_timeout_ms = 1000\n";
        let variables = environment(&[
            ("RINGCAST_IDLE_TIMEOUT_MS", "2000"),
            ("RINGCAST_PONG_TIMEOUT_MS", "2000"),
        ]);
        let arguments = parse(&["--idle-timeout-ms", "3000"]);
        let config = load_config_from(&arguments, Some(file), variables).unwrap();
        assert_eq!(
            config.idle_timeout_ms, 3000,
            "the flag beats environment and file"
        );
        assert_eq!(
            config.pong_timeout_ms, 2000,
            "the environment beats the file"
        );
        assert_eq!(config.close_timeout_ms, 1000, "the file beats the default");
        assert_eq!(
            config.drain_timeout_ms, 5000,
            "the default stays when nothing is given"
        );
    }

    /// Proves the protocol limits follow the same precedence through their own variables.
    #[test]
    fn protocol_limits_override_in_order() {
        let file = "[protocol]\nframe_bytes_max = 1000\nmessage_bytes_max = 1000\n";
        let variables = environment(&[
            ("RINGCAST_FRAME_BYTES_MAX", "2000"),
            ("RINGCAST_MESSAGE_BYTES_MAX", "3000"),
        ]);
        let arguments = parse(&["--message-bytes-max", "4000"]);
        let config = load_config_from(&arguments, Some(file), variables).unwrap();
        assert_eq!(config.protocol.frame_bytes_max, 2000);
        assert_eq!(config.protocol.message_bytes_max, 4000);
    }

    /// Proves an environment value that does not parse is refused, naming the variable.
    #[test]
    fn bad_environment_value_names_the_variable() {
        let variables = environment(&[("RINGCAST_SHARDS", "four")]);
        let error = load_config_from(&parse(&[]), None, variables).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("RINGCAST_SHARDS"), "{message}");
        assert!(message.contains("four"), "{message}");
    }

    /// Proves an absent --echo keeps the file's `echo = true`, and --echo turns it on.
    #[test]
    fn echo_flag_only_turns_echo_on() {
        let config = load_config_from(&parse(&[]), Some("echo = true"), environment(&[]));
        assert!(config.unwrap().echo);
        let config = load_config_from(&parse(&["--echo"]), None, environment(&[]));
        assert!(config.unwrap().echo);
    }

    /// Proves compression is off by default and turned on by the flag, the variable or the
    /// file, each read into the protocol limits.
    #[test]
    fn websocket_compression_from_every_layer() {
        let config = load_config_from(&parse(&[]), None, environment(&[])).unwrap();
        assert!(!config.protocol.websocket_compression);
        let flag = parse(&["--websocket-compression"]);
        let config = load_config_from(&flag, None, environment(&[])).unwrap();
        assert!(config.protocol.websocket_compression);
        let variable = environment(&[("RINGCAST_WEBSOCKET_COMPRESSION", "true")]);
        let config = load_config_from(&parse(&[]), None, variable).unwrap();
        assert!(config.protocol.websocket_compression);
        let file = "[protocol]\nwebsocket_compression = true\ncompression_level = 6\n";
        let config = load_config_from(&parse(&[]), Some(file), environment(&[])).unwrap();
        assert!(config.protocol.websocket_compression);
        assert_eq!(config.protocol.compression_level, 6);
        let file = "[protocol]\ncompression_level = 10\n";
        assert!(load_config_from(&parse(&[]), Some(file), environment(&[])).is_err());
    }

    /// Proves --echo raises the frame and message limits to 16 MiB, but an explicit flag wins.
    #[test]
    fn echo_raises_limits_unless_set() {
        let mebibytes_16 = 16 * 1024 * 1024;
        let config = load_config_from(&parse(&["--echo"]), None, environment(&[])).unwrap();
        assert_eq!(config.protocol.frame_bytes_max, mebibytes_16);
        assert_eq!(config.protocol.message_bytes_max, mebibytes_16);
        let arguments = parse(&["--echo", "--frame-bytes-max", "65536"]);
        let config = load_config_from(&arguments, None, environment(&[])).unwrap();
        assert_eq!(config.protocol.frame_bytes_max, 65536);
        assert_eq!(config.protocol.message_bytes_max, mebibytes_16);
    }

    /// Proves a file error names the file given with --config.
    #[test]
    fn file_error_names_the_file() {
        let arguments = parse(&["--config", "/etc/ringcast.toml"]);
        let error = load_config_from(&arguments, Some("shard = 2"), environment(&[]));
        let message = error.unwrap_err().to_string();
        assert!(message.contains("/etc/ringcast.toml"), "{message}");
        assert!(message.contains("unknown field `shard`"), "{message}");
    }

    /// Proves a missing config file is an error naming the path.
    #[test]
    fn missing_file_is_an_error() {
        let arguments = parse(&["--config", "/nonexistent/ringcast.toml"]);
        let message = load_config(&arguments).unwrap_err().to_string();
        assert!(message.contains("/nonexistent/ringcast.toml"), "{message}");
    }

    /// Proves --help explains every option, and states each default as the code has it.
    #[test]
    fn help_states_every_default() {
        let command = Arguments::command();
        let defaults = ServerConfig::default();
        let long_help = |id: &str| {
            let argument = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            argument.get_long_help().unwrap().to_string()
        };
        let expected = [
            ("listen", defaults.listen.to_string()),
            (
                "connections_per_shard_max",
                defaults.connections_per_shard_max.to_string(),
            ),
            ("idle_timeout_ms", defaults.idle_timeout_ms.to_string()),
            (
                "handshake_timeout_ms",
                defaults.handshake_timeout_ms.to_string(),
            ),
            (
                "frame_bytes_max",
                defaults.protocol.frame_bytes_max.to_string(),
            ),
            (
                "message_bytes_max",
                defaults.protocol.message_bytes_max.to_string(),
            ),
        ];
        for (id, default) in expected {
            let help = long_help(id);
            assert!(help.contains(&format!("Default {default}")), "{id}: {help}");
        }
        for argument in command.get_arguments() {
            assert!(argument.get_long_help().is_some(), "{}", argument.get_id());
        }
        let rendered = Arguments::command().render_long_help().to_string();
        assert!(rendered.contains("ringcast is a WebSocket"), "{rendered}");
        assert!(long_help("log").contains(&format!("Default {LOG_DEFAULT}")));
    }

    /// Proves the log filter's precedence: --log, then RINGCAST_LOG, then RUST_LOG, then info.
    #[test]
    fn log_filter_layers_like_the_settings() {
        let both = environment(&[("RINGCAST_LOG", "debug"), ("RUST_LOG", "trace")]);
        assert_eq!(parse(&["--log", "warn"]).log_filter(&both), "warn");
        assert_eq!(parse(&[]).log_filter(&both), "debug");
        let rust_log = environment(&[("RUST_LOG", "trace")]);
        assert_eq!(parse(&[]).log_filter(rust_log), "trace");
        assert_eq!(parse(&[]).log_filter(environment(&[])), LOG_DEFAULT);
    }

    /// Text settings that samples are drawn from: a string setting's sample is the first one
    /// its type accepts that differs from its default. A new string setting that none fits
    /// fails `every_setting_round_trips` until one is added here.
    const STRING_SAMPLES: &[&str] = &["127.0.0.1:9", "drop", "disconnect", "jwt"];

    /// A value of `setting`'s type other than its default, derived from the default alone.
    fn sample_value(setting: &Setting) -> toml::Value {
        use toml::Value;
        let accepted = |value: &Value| {
            let mut overrides = ConfigOverrides::default();
            overrides.set_flag(setting.name(), value).is_ok()
        };
        match &setting.default {
            Value::Integer(number) => Value::Integer(number + 1),
            Value::Boolean(flag) => Value::Boolean(!flag),
            Value::String(default) => STRING_SAMPLES
                .iter()
                .map(|sample| Value::String(sample.to_string()))
                .find(|sample| sample.as_str() != Some(default) && accepted(sample))
                .unwrap_or_else(|| panic!("no sample string fits {}", setting.name())),
            // The webhook endpoints: one table, every field written out as it reads back.
            Value::Array(items) if items.is_empty() && setting.name() == "webhook" => {
                let endpoint = crate::config::WebhookConfig {
                    url: "https://hooks.example.com/ringcast".into(),
                    events: vec!["topic.occupied".into()],
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                    ..Default::default()
                };
                Value::Array(vec![Value::try_from(endpoint).unwrap()])
            }
            Value::Array(items) if items.is_empty() => {
                Value::Array(vec![Value::String("sample*".into())])
            }
            // A non-empty array (of tables: the pool's classes): one more of its last element.
            Value::Array(items) => {
                let mut items = items.clone();
                let mut last = items.last().cloned().expect("not empty");
                if let Some(table) = last.as_table_mut() {
                    for (_, value) in table.iter_mut() {
                        if let Value::Integer(number) = value {
                            *number *= 2;
                        }
                    }
                }
                items.push(last);
                Value::Array(items)
            }
            other => panic!("{}: no sample for a {}", setting.name(), other.type_str()),
        }
    }

    /// The value of `setting` in `config`, read back through the same serialization.
    fn value_in(config: &ServerConfig, setting: &Setting) -> toml::Value {
        let mut value = toml::Value::Table(toml::Table::try_from(config).unwrap());
        for key in &setting.path {
            value = value.get(key).cloned().unwrap();
        }
        value
    }

    /// The TOML text of a document that sets only `setting` to `value`.
    fn file_setting(setting: &Setting, value: &toml::Value) -> String {
        let mut value = value.clone();
        for key in setting.path.iter().rev() {
            let mut table = toml::Table::new();
            table.insert(key.clone(), value);
            value = toml::Value::Table(table);
        }
        toml::to_string(&value).unwrap()
    }

    /// Proves every setting of the table, not a hand-kept list, reaches the configuration from
    /// the file, from its RINGCAST_ variable, and from its flag where it has one: each layer
    /// set alone to a value other than the default yields exactly that value.
    #[test]
    fn every_setting_round_trips_through_file_environment_and_flag() {
        let command = Arguments::command();
        let mut flags_tested = 0;
        for setting in crate::config::settings() {
            let name = setting.name();
            let sample = sample_value(&setting);
            assert_ne!(sample, setting.default, "{name}");
            let file = file_setting(&setting, &sample);
            let config = ServerConfig::from_toml(&file).unwrap();
            assert_eq!(
                value_in(&config, &setting),
                sample,
                "{name} in the file:\n{file}"
            );

            let text = match &sample {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let variable = setting.variable();
            let pairs = [(variable.as_str(), text.as_str())];
            let variables = environment(&pairs);
            let overrides = ConfigOverrides::from_environment(variables).unwrap();
            let config = ServerConfig::from_layers(None, &[overrides]).unwrap();
            assert_eq!(value_in(&config, &setting), sample, "{variable}={text}");

            let Some(argument) = command.get_arguments().find(|a| a.get_id() == name) else {
                continue;
            };
            let flag = format!("--{}", argument.get_long().unwrap());
            let arguments = match argument.get_action() {
                clap::ArgAction::SetTrue => {
                    assert_eq!(sample, toml::Value::Boolean(true), "{flag} only sets true");
                    parse(&[&flag])
                }
                _ => parse(&[&format!("{flag}={text}")]),
            };
            let overrides = arguments.overrides().unwrap();
            let config = ServerConfig::from_layers(None, &[overrides]).unwrap();
            assert_eq!(value_in(&config, &setting), sample, "{flag} {text}");
            flags_tested += 1;
        }
        // Every flag but these two is a setting, and so was tested above.
        let other_flags = ["config", "log", "help", "version"];
        let setting_flags = command
            .get_arguments()
            .filter(|argument| !other_flags.contains(&argument.get_id().as_str()))
            .count();
        assert_eq!(flags_tested, setting_flags, "a flag names no setting");
    }

    /// Proves a flag value the setting cannot hold is refused naming the flag, not a panic.
    #[test]
    fn flag_value_out_of_range_names_the_flag() {
        let arguments = parse(&["--connections-per-shard-max", &u64::MAX.to_string()]);
        let message = arguments.overrides().unwrap_err().to_string();
        assert!(message.contains("--connections-per-shard-max"), "{message}");
    }
}
