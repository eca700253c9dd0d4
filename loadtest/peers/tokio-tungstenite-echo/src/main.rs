//! A WebSocket echo server on tokio-tungstenite, the Rust baseline that
//! `loadtest/compare-echo` measures ringcast against: the common way to write a WebSocket
//! server in Rust (a multi-threaded tokio runtime, a task per connection), with nothing tuned.
//!
//! Usage: `ringcast-peer-tokio-tungstenite PORT`. Listens on 127.0.0.1:PORT, echoes every text
//! and binary message, answers pings and closes (tungstenite does), and prints
//! `tokio-tungstenite listening on PORT` once it accepts connections.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    let port = match arguments.as_slice() {
        [_, port] => match port.parse::<u16>() {
            Ok(port) => port,
            Err(error) => return usage(&format!("bad port {port:?}: {error}")),
        },
        _ => return usage("expected one argument"),
    };
    // Loopback only: this peer exists for measurements on this machine.
    let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("tokio-tungstenite: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("tokio-tungstenite listening on {port}");
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(serve(stream));
            }
            // Out of descriptors or a connection reset while queued: the listener still
            // works, so keep accepting (a load test may push it past its limits on purpose).
            Err(error) => eprintln!("tokio-tungstenite: accept failed: {error}"),
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("tokio-tungstenite: {problem}\nusage: ringcast-peer-tokio-tungstenite PORT");
    ExitCode::from(2)
}

/// One connection: upgrade, then echo data messages until the client closes or breaks it.
async fn serve(stream: TcpStream) {
    // Echo round trips are small messages in a closed loop; Nagle would delay each one.
    let _ = stream.set_nodelay(true);
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    // Reading also flushes the pongs and the close reply tungstenite queues by itself.
    while let Some(Ok(message)) = socket.next().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}
