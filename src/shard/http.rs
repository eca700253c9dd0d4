//! A connection's HTTP phase: requests read by the sans-IO `RequestReader` (heads and bodies,
//! keep-alive, pipelining), routed by `broker::http_api`, and answered in request order.
//!
//! A publish is answered only once its topic's owner has numbered it, possibly on another
//! shard; a response waits in `http_pending` until it and every response before it is ready, so
//! pipelined requests are answered in the order they came.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::connection::{BrokerRequest, Connection, Context, Counters, Deadline, Outbound, Phase};
use super::metrics_board::MetricsView;
use crate::broker::http_api::PublishConfig;
use crate::broker::http_api::{
    self, HttpError, Route, write_batch_response, write_http_error, write_publish_response,
};
use crate::config::ServerConfig;
use crate::metrics::METRICS_CONTENT_TYPE;
use crate::protocol::HandshakeError;
use crate::protocol::http1::head::HEADERS_COUNT_MAX;
use crate::protocol::http1::response as handshake;
use crate::protocol::http1::{CONTINUE_RESPONSE, HttpEvent, Request, RequestHead};
use crate::protocol::websocket::frame::FrameEncoder;
use crate::protocol::websocket::upgrade;

/// An HTTP response not sent yet because it, or one before it, waits for seqs.
#[derive(Debug)]
pub struct PendingResponse {
    /// The ticket of the first message of a publish; the others follow on.
    first_ticket: u32,
    seqs: Vec<u64>,
    answered: usize,
    refused: Option<&'static str>,
    /// `POST /publish` (answered with `seqs`) rather than `POST /publish/{topic}` (`seq`).
    batch: bool,
    keep_alive: bool,
    /// A response ready at once but queued behind one that waits.
    ready: Option<Bytes>,
}

impl PendingResponse {
    fn is_complete(&self) -> bool {
        self.answered == self.seqs.len()
    }

    fn write(&self, out: &mut BytesMut) {
        if let Some(ready) = &self.ready {
            return out.extend_from_slice(ready);
        }
        if let Some(reason) = self.refused {
            let body = format!("{{\"error\":\"{reason}\"}}");
            let headers = [("Content-Type", "application/json"), ("Retry-After", "1")];
            return handshake::write_response(503, &headers, body.as_bytes(), self.keep_alive, out);
        }
        match self.batch {
            true => write_batch_response(&self.seqs, self.keep_alive, out),
            false => write_publish_response(self.seqs[0], self.keep_alive, out),
        }
    }
}

/// The HTTP phase's state.
#[derive(Debug, Default)]
pub struct HttpState {
    pub reader: crate::protocol::http1::RequestReader,
    pub responses: Responses,
}

/// Responses waiting for seqs, in request order.
#[derive(Debug, Default)]
pub struct Responses {
    pending: VecDeque<PendingResponse>,
    next_ticket: u32,
    /// The connection closes once the responses queued so far are sent.
    closing_after_responses: bool,
}

/// What answering a request needs while the request reader holds the read and the pool: the
/// other parts of the connection and of the context, borrowed apart.
struct Answer<'a> {
    responses: &'a mut Responses,
    outbound: &'a mut Outbound,
    counters: &'a mut Counters,
    encoder: &'a mut FrameEncoder,
    broker_requests: &'a mut Vec<BrokerRequest>,
    config: &'a ServerConfig,
    publish_config: &'a PublishConfig,
    metrics: &'a mut MetricsView,
}

impl Connection {
    /// Reads requests from `input` and answers each; hands over to the WebSocket phase after
    /// an accepted upgrade, with the bytes that followed its head.
    pub(super) fn handle_http_bytes(&mut self, input: &mut [u8], context: &mut Context) {
        let Phase::Http(http) = &mut self.phase else {
            unreachable!()
        };
        let mut answer = Answer {
            responses: &mut http.responses,
            outbound: &mut self.outbound,
            counters: &mut context.counters,
            encoder: &mut context.encoder,
            broker_requests: &mut context.broker_requests,
            config: &context.config,
            publish_config: &context.publish_config,
            metrics: &mut context.metrics,
        };
        let mut upgraded_at = None;
        let mut answered = false;
        let mut events = http
            .reader
            .handle_read(input, &mut context.pool, &context.http_limits);
        while let Some(event) = events.next_event() {
            let keep_going = match event {
                Ok(HttpEvent::Request(request)) => answer.request(&request),
                Ok(HttpEvent::ContinueExpected(head)) => answer.continue_expected(&head),
                Ok(HttpEvent::Upgrade { head, rest_start }) => {
                    upgraded_at = answer.upgrade(&head).then_some(rest_start);
                    false
                }
                Err(error) => answer.refuse(&HttpError::Request(error), false),
            };
            answered = true;
            if !keep_going {
                break;
            }
        }
        self.after_http_read(upgraded_at, answered, input, context);
    }

    fn after_http_read(
        &mut self,
        upgraded_at: Option<usize>,
        answered: bool,
        input: &mut [u8],
        context: &mut Context,
    ) {
        let Phase::Http(http) = &mut self.phase else {
            unreachable!()
        };
        if let Some(rest_start) = upgraded_at {
            http.reader.release_buffers(&mut context.pool);
            return self.start_websocket(&mut input[rest_start..], context);
        }
        if http.responses.closing_after_responses {
            if http.responses.pending.is_empty() {
                self.close_after_flush(context);
            }
            return;
        }
        // After an answer, the next request must come in time, like the first; a request still
        // arriving keeps the deadline it started with (a slowloris client cannot extend it).
        if !answered {
            return;
        }
        self.set_deadline(
            Deadline::Handshake,
            context.now_ms + context.config.handshake_timeout_ms,
        );
    }

    /// Records an owner's answer for HTTP publish `ticket` and sends every response at the
    /// front that is now complete.
    pub fn answer_http_publish(
        &mut self,
        ticket: u32,
        result: Result<u64, &'static str>,
        context: &Context,
    ) {
        let Phase::Http(http) = &mut self.phase else {
            return;
        };
        let responses = &mut http.responses;
        let Some(pending) = responses
            .pending
            .iter_mut()
            .find(|pending| ticket.wrapping_sub(pending.first_ticket) < pending.seqs.len() as u32)
        else {
            return;
        };
        let index = ticket.wrapping_sub(pending.first_ticket) as usize;
        match result {
            Ok(seq) => pending.seqs[index] = seq,
            Err(reason) => pending.refused = Some(reason),
        }
        pending.answered += 1;
        while responses
            .pending
            .front()
            .is_some_and(PendingResponse::is_complete)
        {
            let pending = responses.pending.pop_front().expect("checked");
            let mut response = BytesMut::new();
            pending.write(&mut response);
            self.outbound.push_control(response.freeze());
        }
        if responses.closing_after_responses && responses.pending.is_empty() {
            self.close_after_flush(context);
        }
    }
}

impl Answer<'_> {
    /// Answers one whole request; returns whether the connection reads on.
    fn request(&mut self, request: &Request<'_>) -> bool {
        self.counters.http_requests += 1;
        let keep_alive = request.head.keep_alive();
        let is_head = request.head.method() == "HEAD";
        match http_api::route(request, self.publish_config) {
            Route::Health => self.respond_ok(&[], b"ok\n", is_head, keep_alive),
            Route::Metrics => {
                let body = self.metrics.render();
                let headers = [("Content-Type", METRICS_CONTENT_TYPE)];
                self.respond_ok(&headers, body.as_bytes(), is_head, keep_alive);
            }
            Route::PublishOne { topic, data } => {
                let first_ticket = self.responses.next_ticket;
                self.publish(&topic, data.get().as_bytes());
                self.queue_publish(first_ticket, 1, false, keep_alive);
            }
            Route::PublishBatch { items } if items.is_empty() => {
                let mut response = BytesMut::new();
                write_batch_response(&[], keep_alive, &mut response);
                self.respond(response.freeze());
            }
            Route::PublishBatch { items } => {
                let first_ticket = self.responses.next_ticket;
                for (topic, data) in &items {
                    self.publish(topic, data.get().as_bytes());
                }
                self.queue_publish(first_ticket, items.len(), true, keep_alive);
            }
            Route::Refuse(error) => return self.refuse(&error, keep_alive),
        }
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        keep_alive
    }

    fn respond_ok(
        &mut self,
        headers: &[(&str, &str)],
        body: &[u8],
        is_head: bool,
        keep_alive: bool,
    ) {
        let mut response = BytesMut::new();
        if is_head {
            handshake::write_response_head(200, headers, body.len(), keep_alive, &mut response);
        } else {
            handshake::write_response(200, headers, body, keep_alive, &mut response);
        }
        self.respond(response.freeze());
    }

    /// A client waiting on `Expect: 100-continue`: 100 if the head is acceptable, or the
    /// refusal (and close: the body it would send next is not read).
    fn continue_expected(&mut self, head: &RequestHead<'_>) -> bool {
        match http_api::check_head(head, self.publish_config) {
            Ok(()) => {
                self.respond(Bytes::from_static(CONTINUE_RESPONSE));
                true
            }
            Err(error) => self.refuse(&error, false),
        }
    }

    /// Hands one message to the shard for its owner, under the next ticket.
    fn publish(&mut self, topic: &str, data: &[u8]) {
        self.counters.publish_requests += 1;
        let message = self.encoder.copy_parts(&[topic.as_bytes(), data]);
        self.broker_requests.push(BrokerRequest::HttpPublish {
            message,
            topic_bytes: topic.len(),
            ticket: self.responses.next_ticket,
        });
        self.responses.next_ticket = self.responses.next_ticket.wrapping_add(1);
    }

    fn queue_publish(&mut self, first_ticket: u32, count: usize, batch: bool, keep_alive: bool) {
        self.responses.pending.push_back(PendingResponse {
            first_ticket,
            seqs: vec![0; count],
            answered: 0,
            refused: None,
            batch,
            keep_alive,
            ready: None,
        });
    }

    /// Sends `response` now, or queues it behind responses still waiting for seqs.
    fn respond(&mut self, response: Bytes) {
        if self.responses.pending.is_empty() {
            return self.outbound.push_control(response);
        }
        self.responses.pending.push_back(PendingResponse {
            first_ticket: 0,
            seqs: Vec::new(),
            answered: 0,
            refused: None,
            batch: false,
            keep_alive: true,
            ready: Some(response),
        });
    }

    /// Answers a refused request; returns whether the connection reads on.
    fn refuse(&mut self, error: &HttpError, keep_alive: bool) -> bool {
        self.counters.request_errors += 1;
        debug!(%error, status = error.status(), "refusing HTTP request");
        let mut response = BytesMut::new();
        let keep_alive = write_http_error(error, keep_alive, &mut response);
        self.respond(response.freeze());
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        keep_alive
    }

    /// Answers an upgrade request with 101 or a refusal; returns whether it was accepted.
    fn upgrade(&mut self, head: &RequestHead<'_>) -> bool {
        if !self.responses.pending.is_empty() {
            // Responses to earlier requests still wait for seqs, and after a 101 there is no
            // HTTP left to send them in.
            let error = HandshakeError::MalformedRequest("upgrade pipelined behind a publish");
            self.refuse(&HttpError::Request(error), false);
            return false;
        }
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let config = self.config;
        let accepted = upgrade::parse_request(head.bytes(), &mut headers, &config.protocol)
            .and_then(|request| {
                request.ok_or(HandshakeError::MalformedRequest("incomplete upgrade head"))
            })
            .and_then(|request| {
                if !config.echo && request.path() != "/ws" {
                    return Err(HandshakeError::NotFound);
                }
                upgrade::accept_upgrade(&request, &config.protocol)
            });
        let mut response = BytesMut::new();
        match accepted {
            Ok(upgrade) => {
                upgrade::write_switching_protocols(&upgrade, &mut response);
                self.respond(response.freeze());
                true
            }
            Err(error) => {
                debug!(%error, status = error.status(), "refusing upgrade");
                self.counters.handshake_errors += 1;
                handshake::write_error_response(&error, &mut response);
                self.respond(response.freeze());
                self.responses.closing_after_responses = true;
                false
            }
        }
    }
}
