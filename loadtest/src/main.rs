//! ringcast-loadtest: a load generator for WebSocket servers, independent of ringcast's own
//! protocol code.
//!
//! The command a person runs is the coordinator (`coordinator`): it splits the run over worker
//! processes, the same binary started as `ringcast-loadtest worker`, which it drives over their
//! stdin and stdout with line-delimited JSON (`protocol`). A worker (`worker`) opens its share
//! of the connections on tokio-uring runtimes, one per thread, with tungstenite's handshake and
//! frame codec over in-memory buffers, and reports counts and HDR histograms (`histogram`),
//! which the coordinator merges into the JSON result and the markdown summary (`report`).

mod addresses;
mod cli;
mod coordinator;
mod engine;
mod fanout;
mod floor;
mod histogram;
mod live;
mod plots;
mod protocol;
mod publish;
mod ramp;
mod report;
mod system;
mod transport;
mod uring;
mod websocket;
mod worker;

use clap::Parser;

use crate::cli::{Arguments, Scenario};

fn main() {
    let arguments = Arguments::parse();
    let outcome = match arguments.scenario {
        Scenario::Connect(options) => coordinator::connect(options),
        Scenario::Echo(options) => coordinator::echo(options),
        Scenario::Churn(options) => coordinator::churn(options),
        Scenario::Fanout(options) => coordinator::fanout(options),
        Scenario::Publish(options) => publish::publish(options),
        Scenario::Floor(options) => floor::main(options),
        Scenario::Worker => Ok(worker::main()),
    };
    let code = outcome.unwrap_or_else(|error| {
        eprintln!("ringcast-loadtest: {error}");
        2
    });
    std::process::exit(code);
}
