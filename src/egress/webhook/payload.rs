//! What a webhook request carries: each event as `{"type":…,"timestamp":…,"data":…}`, encoded
//! once when the webhook thread takes it from its shard and shared by every endpoint that
//! wants it. A request's body is one event, or a JSON array of events for an endpoint with
//! `batch_max` above 1.
//!
//! | type | data |
//! |---|---|
//! | `topic.occupied`, `topic.vacated` | `{"topic":"AAPL"}` |
//! | `subscription.created`, `subscription.removed` | `{"topic":"AAPL","connection":"1-17"}` |
//! | `message.published` | the message as subscribers get it: `{"topic":"AAPL","seq":42,"data":…}` |
//! | `connection.opened` | `{"connection":"1-17","transport":"websocket"}` (and `"sub"` once authentication exists) |
//! | `connection.closed` | `{"connection":"1-17","transport":"websocket","code":1000,"reason":"bye"}` (and `"sub"`) |
//!
//! `transport` is `websocket`, `sse`, `stream` (NDJSON) or `poll`; `code` is the WebSocket close
//! code, `null` for the others.
//!
//! A connection is named `{shard}-{serial}`: its shard and the how-manieth connection of that
//! shard it is, unique for the life of the process.

use std::io::Write;

use crate::broker::event::{ConnectionId, Event};

/// Encodes `event` as the JSON object a request carries, stamped with `timestamp_ms` (Unix
/// milliseconds) as RFC 3339 UTC.
pub fn encode_event(event: &Event, timestamp_ms: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event.kind().name().as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":\"");
    write_rfc3339(timestamp_ms, out);
    out.extend_from_slice(b"\",\"data\":");
    match event {
        Event::TopicOccupied { topic } | Event::TopicVacated { topic } => {
            out.extend_from_slice(b"{\"topic\":");
            write_string(topic.as_str(), out);
            out.push(b'}');
        }
        Event::SubscriptionCreated { topic, connection }
        | Event::SubscriptionRemoved { topic, connection } => {
            out.extend_from_slice(b"{\"topic\":");
            write_string(topic.as_str(), out);
            write_connection(*connection, out);
            out.push(b'}');
        }
        Event::MessagePublished { message } => out.extend_from_slice(message.body()),
        Event::ConnectionOpened {
            connection,
            transport,
            subject,
        } => {
            out.push(b'{');
            write_connection(*connection, out);
            let _ = write!(out, ",\"transport\":\"{transport}\"");
            write_subject(subject.as_deref(), out);
            out.push(b'}');
        }
        Event::ConnectionClosed {
            connection,
            transport,
            code,
            reason,
            subject,
        } => {
            out.push(b'{');
            write_connection(*connection, out);
            let _ = write!(out, ",\"transport\":\"{transport}\",\"code\":");
            match code {
                Some(code) => {
                    let _ = write!(out, "{code}");
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"reason\":");
            write_string(reason.as_str(), out);
            write_subject(subject.as_deref(), out);
            out.push(b'}');
        }
    }
    out.push(b'}');
}

/// `"connection":"{shard}-{serial}"`, after a `{` or another member (the comma is added when
/// something precedes it in the object).
fn write_connection(connection: ConnectionId, out: &mut Vec<u8>) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    let _ = write!(
        out,
        "\"connection\":\"{}-{}\"",
        connection.shard, connection.serial
    );
}

fn write_subject(subject: Option<&str>, out: &mut Vec<u8>) {
    if let Some(subject) = subject {
        out.extend_from_slice(b",\"sub\":");
        write_string(subject, out);
    }
}

/// A JSON string, escaped as JSON requires.
fn write_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, text).expect("writing a string to a Vec cannot fail");
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn write_rfc3339(timestamp_ms: u64, out: &mut Vec<u8>) {
    let seconds = timestamp_ms / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        timestamp_ms % 1000
    );
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, public domain: days in 400-year eras of 146,097 days, years starting in
/// March so that the leap day ends them).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::event::CloseReason;
    use crate::broker::{Message, TopicName};

    fn text(event: &Event) -> String {
        let mut out = Vec::new();
        encode_event(event, 1_614_265_330_123, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Proves dates across eras, leap days and the epoch itself.
    #[test]
    fn rfc3339_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_614_265_330_123, "2021-02-25T15:02:10.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (milliseconds, expected) in cases {
            let mut out = Vec::new();
            write_rfc3339(milliseconds, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    /// Proves every kind of event encodes as valid JSON of the documented shape, names that
    /// need escaping included, and a message carried verbatim.
    #[test]
    fn events_encode_as_documented() {
        let topic = TopicName::copy_from(br#"A"B\C"#, 128).unwrap();
        let connection = ConnectionId {
            shard: 1,
            serial: 17,
        };
        let cases = [
            (
                Event::TopicOccupied {
                    topic: topic.clone(),
                },
                serde_json::json!({"topic": "A\"B\\C"}),
            ),
            (
                Event::SubscriptionRemoved {
                    topic: topic.clone(),
                    connection,
                },
                serde_json::json!({"topic": "A\"B\\C", "connection": "1-17"}),
            ),
            (
                Event::MessagePublished {
                    message: Message::new(&topic, 42, br#"{"px":1.5}"#),
                },
                serde_json::json!({"topic": "A\"B\\C", "seq": 42, "data": {"px": 1.5}}),
            ),
            (
                Event::ConnectionOpened {
                    connection,
                    transport: "websocket",
                    subject: Some("alice".into()),
                },
                serde_json::json!({"connection": "1-17", "transport": "websocket", "sub": "alice"}),
            ),
            (
                Event::ConnectionClosed {
                    connection,
                    transport: "websocket",
                    code: Some(1000),
                    reason: CloseReason::Peer("bye \u{e9}".into()),
                    subject: None,
                },
                serde_json::json!({"connection": "1-17", "transport": "websocket", "code": 1000,
                    "reason": "bye \u{e9}"}),
            ),
            (
                Event::ConnectionClosed {
                    connection,
                    transport: "sse",
                    code: None,
                    reason: CloseReason::Static(""),
                    subject: None,
                },
                serde_json::json!({"connection": "1-17", "transport": "sse", "code": null,
                    "reason": ""}),
            ),
        ];
        for (event, data) in cases {
            let encoded = text(&event);
            let value: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            assert_eq!(value["type"], event.kind().name(), "{encoded}");
            assert_eq!(value["timestamp"], "2021-02-25T15:02:10.123Z");
            assert_eq!(value["data"], data, "{encoded}");
        }
    }
}
