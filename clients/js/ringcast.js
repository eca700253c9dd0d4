// ringcast.js: the browser (and Node 18+) client of a ringcast server. One ES module, no
// dependencies. See README.md beside it.
//
// It keeps the last seq and epoch of every topic and resumes with them after any reconnect, so
// the application sees each seq of a topic once and in order (a `reset` says when the server's
// history could not fill a gap). It reconnects with capped exponential backoff and full jitter,
// takes silence for a dead connection, and falls back WebSocket → SSE → long polling when a
// transport fails to open; from a fallback it tries the first transport again now and then.

/** @typedef {"websocket" | "sse" | "poll"} Transport */
/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} State */

/**
 * A message of a topic, as the server sent it.
 * @typedef {object} Message
 * @property {string} topic
 * @property {number} seq     the topic's sequence number: 1, 2, 3, … within one epoch
 * @property {*} data         the published JSON value
 */

/**
 * The server could not continue a topic where the client stood (history no longer holds the
 * next seq, or the topic began a new epoch, say after a server restart): the messages from
 * `seq` on follow, and those in between are lost.
 * @typedef {object} Reset
 * @property {string} topic
 * @property {number} seq     the topic's latest seq, which follows
 * @property {string} epoch
 */

/**
 * Where the client stands in a topic.
 * @typedef {object} Position
 * @property {number} seq
 * @property {string | undefined} epoch
 */

/**
 * How a transport's connection ended.
 * @typedef {object} End
 * @property {boolean} opened    it had opened
 * @property {string} reason
 * @property {number} [code]     the WebSocket close code
 * @property {boolean} [refused] the server (or a proxy) answered and refused this transport
 * @property {number} [status]   that answer's HTTP status
 */

/**
 * @typedef {object} Options
 * @property {string[]} [topics]            topics to subscribe to at once
 * @property {string} [token]               sent as `?token=` on every connection
 * @property {() => (string | Promise<string>)} [refreshToken]
 *   called when the token expired (WebSocket close 4001, SSE's `expired` event, 401 to a
 *   stream or poll, or a JWT past its `exp` when reconnecting); the new token is used to
 *   reconnect
 * @property {(message: Message) => void} [onMessage]
 * @property {(reset: Reset) => void} [onReset]
 * @property {(state: State, transport: Transport | null) => void} [onState]
 * @property {(error: Error) => void} [onError]   refusals and failures worth showing
 * @property {Transport[]} [transports]     tried in this order; default all three
 * @property {number} [backoffInitialMs]    first reconnect delay ceiling (default 500)
 * @property {number} [backoffMaxMs]        cap of the delay ceiling (default 30000)
 * @property {number} [silenceMs]           quiet this long: ask the server (default 20000)
 * @property {number} [deadAfterMs]         and no answer this long after: dead (default 10000)
 * @property {number} [openTimeoutMs]       a transport not open by then failed (default 10000)
 * @property {number} [pollWaitMs]          how long a long poll waits (default 25000)
 * @property {number} [streamTopicsMax]     most topics SSE and polling carry (default 64)
 * @property {number} [fallbackAfterFailures]  rounds a transport that has opened before is
 *   retried before the next is tried (default 3)
 * @property {number} [upgradeProbeMs]      on a fallback, first try of the first transport
 *   again after this long, doubling up to `backoffMaxMs` (default 15000)
 */

const DEFAULTS = {
  transports: /** @type {Transport[]} */ (["websocket", "sse", "poll"]),
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
  silenceMs: 20_000,
  deadAfterMs: 10_000,
  openTimeoutMs: 10_000,
  pollWaitMs: 25_000,
  // The server's `stream_topics_max`: one SSE or poll request names at most this many topics.
  streamTopicsMax: 64,
  // To a browser an outage and a proxy that breaks WebSocket look the same (close 1006), so a
  // transport that has worked here is given a few rounds before the client falls back.
  fallbackAfterFailures: 3,
  upgradeProbeMs: 15_000,
};

/** Close codes with their own handling. */
const CLOSE_GOING_AWAY = 1001;
const CLOSE_TOKEN_EXPIRED = 4001;
/** A stream or poll refused for its token (missing, bad or expired). */
const HTTP_UNAUTHORIZED = 401;

/**
 * Connects to the ringcast server at `url` (the page's origin, or an http or https URL of the server; the paths
 * `/ws`, `/sse` and `/poll` are added) and keeps connected until `close()`.
 * @param {string} url
 * @param {Options} [options]
 * @returns {Client}
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export class Client {
  /**
   * @param {string} url
   * @param {Options} options
   */
  constructor(url, options) {
    this.options = { ...DEFAULTS, ...options };
    this.base = new URL(url);
    /** @type {Set<string>} */
    this.topics = new Set(options.topics ?? []);
    /** @type {Map<string, Position & {fresh?: boolean}>} */
    this.positions = new Map();
    /** @type {State} */
    this.state = "connecting";
    /** @type {Transport | null} the transport in use, or last tried */
    this.transport = null;
    /** Index in `transports` of the last one that opened: reconnects start there. */
    this.preferred = 0;
    /** @type {Set<number>} indexes in `transports` of those that have opened at least once */
    this.worked = new Set();
    this.failures = 0;
    /**
     * The last poll answer's cursor and the topic list it is for. Polling says no epoch, but
     * its cursor names each topic's: the next poll of the same topics starts from it, so that
     * a restarted server (a new epoch) answers with a reset rather than from a seq of the old.
     * @type {{topics: string, cursor: string} | null}
     */
    this.pollCursor = null;
    /** The server said the token expired: refresh it before the next connection. */
    this.tokenExpired = false;
    /** A try of the first transport while a fallback is open, and its timer and delay. */
    this.probe = null;
    this.probeTimer = null;
    this.probeDelayMs = 0;
    this.token = options.token;
    this.connection = null;
    this.timer = null;
    this.publishCount = 0;
    /** @type {Map<string, {message: string, resolve: Function, reject: Function}>} */
    this.publishes = new Map();
    this.statistics = { messages: 0, duplicates: 0, resets: 0, reconnects: 0 };
    this.open(this.preferred, 0);
  }

  /** @param {string[]} topics */
  subscribe(topics) {
    const added = topics.filter((topic) => !this.topics.has(topic));
    for (const topic of added) this.topics.add(topic);
    if (added.length === 0) return;
    if (this.connection?.kind === "websocket" && this.connection.isOpen) {
      this.connection.send(subscribeRequest(added, this.positions));
    } else if (this.connection?.isOpen) {
      this.restart(); // SSE and polling name their topics in the URL.
    }
  }

  /** @param {string[]} topics */
  unsubscribe(topics) {
    const removed = topics.filter((topic) => this.topics.delete(topic));
    for (const topic of removed) this.positions.delete(topic);
    if (removed.length === 0) return;
    if (this.connection?.kind === "websocket" && this.connection.isOpen) {
      this.connection.send(JSON.stringify({ op: "unsubscribe", topics: removed }));
    } else if (this.connection?.isOpen) {
      this.restart();
    }
  }

  /**
   * Publishes `data` to `topic`; resolves with its seq. Over WebSocket with an id, else over
   * HTTP with an Idempotency-Key, so that a retry after a cut never publishes twice.
   * @param {string} topic
   * @param {*} data
   * @returns {Promise<number>}
   */
  publish(topic, data) {
    const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${++this
      .publishCount}`;
    if (this.connection?.kind !== "websocket") return this.publishOverHttp(topic, data, id);
    const message = JSON.stringify({ op: "publish", topic, data, id });
    return new Promise((resolve, reject) => {
      this.publishes.set(id, { message, resolve, reject });
      if (this.connection?.isOpen) this.connection.send(message);
    });
  }

  /** Stops for good. */
  close() {
    this.setState("closed");
    clearTimeout(this.timer);
    this.stopProbing();
    this.connection?.stop();
    this.connection = null;
    for (const { reject } of this.publishes.values()) reject(new Error("client closed"));
    this.publishes.clear();
  }

  /** The last seq and epoch of every topic seen so far. @returns {Map<string, Position>} */
  where() {
    return new Map(this.positions);
  }

  // ---- transports ------------------------------------------------------------------------

  /**
   * Opens transport `index`; `tried` transports have failed to open in this round. A probe
   * (see `probeLater`) runs beside the open connection and replaces it only once it opens.
   * @param {number} index
   * @param {number} tried
   * @param {boolean} [probing]
   */
  open(index, tried, probing = false) {
    if (this.state === "closed") return;
    const kind = this.options.transports[index];
    if (!probing) this.transport = kind;
    const opened = () => {
      if (probing) {
        // The first transport works again: it takes over, resuming from where the page stands,
        // and what the fallback still had in flight is dropped as duplicates.
        const fallback = this.connection;
        this.probe = null;
        this.connection = connection;
        clearTimeout(this.timer);
        fallback?.stop();
        this.transport = kind;
      }
      this.preferred = index;
      this.worked.add(index);
      if (kind !== "poll") this.pollCursor = null; // Positions move on without it.
      this.failures = 0;
      this.setState("open");
      if (kind === "websocket") {
        for (const { message } of this.publishes.values()) this.connection?.send(message);
      }
      if (index === 0) this.stopProbing();
      else this.probeLater();
    };
    const ended = (/** @type {End} */ end) => {
      if (probing && this.probe === connection) {
        this.probe = null;
        return this.probeLater();
      }
      if (this.state === "closed" || this.connection !== connection) return;
      this.connection = null;
      this.report(new Error(`${kind}: ${end.reason}`));
      if (end.status === HTTP_UNAUTHORIZED) {
        // The token, not the transport, was refused: the next transport would be refused too.
        this.tokenExpired = true;
        return this.reconnect(end.code);
      }
      if (!end.opened && this.mayFallBack(index, end) && tried + 1 < this.options.transports.length) {
        // This transport cannot open here (a proxy breaks it, or it is refused): the next one.
        const next = (index + 1) % this.options.transports.length;
        return this.open(next, tried + 1);
      }
      this.reconnect(end.code);
    };
    const factory = { websocket: WebSocketConnection, sse: SseConnection, poll: PollConnection }[
      kind
    ];
    const connection = new factory(this, { opened, ended });
    if (probing) this.probe = connection;
    else this.connection = connection;
  }

  /**
   * Whether a transport that failed to open hands over to the next at once. One that has
   * opened here before failed most likely because the server is away (a restart, an outage),
   * which the next transport cannot cure: it is retried for `fallbackAfterFailures` rounds,
   * unless the server answered and refused it.
   * @param {number} index
   * @param {End} end
   */
  mayFallBack(index, end) {
    if (end.refused || !this.worked.has(index)) return true;
    return this.failures >= this.options.fallbackAfterFailures;
  }

  /** While a fallback is open, tries the first transport again later (with backoff). */
  probeLater() {
    if (this.probe !== null || this.state === "closed") return;
    clearTimeout(this.probeTimer);
    this.probeDelayMs =
      this.probeDelayMs === 0
        ? this.options.upgradeProbeMs
        : Math.min(this.options.backoffMaxMs, this.probeDelayMs * 2);
    const delayMs = this.probeDelayMs * (0.5 + Math.random() / 2);
    this.probeTimer = setTimeout(() => {
      if (this.connection?.isOpen && this.transport !== this.options.transports[0]) {
        this.open(0, 0, true);
      }
    }, delayMs);
  }

  stopProbing() {
    clearTimeout(this.probeTimer);
    this.probeDelayMs = 0;
    const probe = this.probe;
    this.probe = null;
    probe?.stop();
  }

  /**
   * Waits (backoff with full jitter, or at once with jitter for 1001), then opens again.
   * @param {number | undefined} code
   */
  async reconnect(code) {
    this.setState("reconnecting");
    this.statistics.reconnects += 1;
    let ceiling = Math.min(
      this.options.backoffMaxMs,
      this.options.backoffInitialMs * 2 ** this.failures,
    );
    this.failures += 1;
    if (code === CLOSE_GOING_AWAY) {
      ceiling = this.options.backoffInitialMs; // A restart: come back at once, spread out.
      this.failures = 0;
    }
    // A browser never sees the 401 that refuses a WebSocket upgrade, so a token that expired
    // while the client was away (or before its first connection) is read here, or the client
    // would retry it forever.
    const expired = code === CLOSE_TOKEN_EXPIRED || this.tokenExpired || jwtExpired(this.token);
    this.tokenExpired = false;
    if (expired && this.options.refreshToken) {
      try {
        this.token = await this.options.refreshToken();
      } catch (error) {
        this.report(/** @type {Error} */ (error));
      }
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(this.preferred, 0), Math.random() * ceiling);
  }

  /** Reopens the current transport at once, for a new topic list. */
  restart() {
    const connection = this.connection;
    this.connection = null;
    connection?.stop();
    this.stopProbing();
    this.open(this.preferred, 0);
  }

  /**
   * An endpoint URL with the token, if any.
   * @param {string} path
   * @param {Record<string, any>} [query]  values are strings, `topics` a list
   */
  endpoint(path, query = {}) {
    const url = new URL(path, this.base);
    if (path === "/ws") url.protocol = this.base.protocol === "https:" ? "wss:" : "ws:";
    const parts = Object.entries(query).map(([key, value]) =>
      // A list of topics keeps its commas; a comma inside a name is encoded (%2C).
      key === "topics"
        ? `topics=${value.map(encodeURIComponent).join(",")}`
        : `${key}=${encodeURIComponent(value)}`,
    );
    if (this.token) parts.push(`token=${encodeURIComponent(this.token)}`);
    url.search = parts.join("&");
    return url.toString();
  }

  /** Topics SSE and polling can carry; past the server's limit the rest are reported. */
  streamTopics() {
    const topics = [...this.topics];
    if (topics.length > this.options.streamTopicsMax) {
      this.report(
        new Error(
          `${topics.length} topics: ${this.transport} carries the first ` +
            `${this.options.streamTopicsMax} only`,
        ),
      );
    }
    return topics.slice(0, this.options.streamTopicsMax);
  }

  // ---- what arrives ----------------------------------------------------------------------

  /**
   * One JSON object from the server, whatever the transport.
   * @param {any} object
   */
  receive(object) {
    if (typeof object !== "object" || object === null) return;
    if (object.op === undefined) return this.deliver(object);
    switch (object.op) {
      case "subscribed":
        return this.subscribed(object);
      case "reset":
        return this.reset(object);
      case "published":
        return this.published(object);
      case "expired":
        // SSE and NDJSON streams cannot refresh in band: the stream ends after this event.
        this.tokenExpired = true;
        return;
      case "error":
        if (object.id !== undefined && this.publishes.has(object.id)) {
          const publish = this.publishes.get(object.id);
          this.publishes.delete(object.id);
          publish?.reject(new Error(object.reason));
        }
        return this.report(new Error(`server: ${object.reason}`));
      default:
        return; // pong, heartbeat, cursor, unsubscribed: heard, nothing to do.
    }
  }

  /** @param {{topic: string, seq: number, epoch: string}} reply */
  subscribed(reply) {
    const position = this.positions.get(reply.topic);
    if (position === undefined) {
      // A fresh subscription: what follows is after `seq`, but for a snapshot of `seq` itself.
      this.positions.set(reply.topic, { seq: reply.seq, epoch: reply.epoch, fresh: true });
    } else if (position.epoch === undefined) {
      position.epoch = reply.epoch; // Known from polling, which does not say the epoch.
    }
    // Same epoch: the replay from where we stand follows. Another epoch: a reset follows.
  }

  /** @param {Reset} reset */
  reset(reset) {
    this.statistics.resets += 1;
    // The latest message, `seq`, follows: take it even though seqs before it were lost.
    this.positions.set(reset.topic, {
      seq: Math.max(0, reset.seq - 1),
      epoch: reset.epoch,
    });
    this.options.onReset?.({ topic: reset.topic, seq: reset.seq, epoch: reset.epoch });
  }

  /** @param {{id: string, seq: number}} reply */
  published(reply) {
    const publish = this.publishes.get(reply.id);
    if (publish === undefined) return;
    this.publishes.delete(reply.id);
    publish.resolve(reply.seq);
  }

  /** @param {Message} message */
  deliver(message) {
    if (!this.topics.has(message.topic)) return;
    const position = this.positions.get(message.topic);
    if (position !== undefined) {
      const snapshot = position.fresh && message.seq === position.seq;
      if (message.seq <= position.seq && !snapshot) {
        this.statistics.duplicates += 1; // Already seen: a replay overlapping the live stream.
        return;
      }
      position.seq = message.seq;
      position.fresh = false;
    } else {
      this.positions.set(message.topic, { seq: message.seq, epoch: undefined });
    }
    this.statistics.messages += 1;
    this.options.onMessage?.(message);
  }

  /** @param {State} state */
  setState(state) {
    if (this.state === state && state !== "open") return;
    this.state = state;
    this.options.onState?.(state, this.transport);
  }

  /** @param {Error} error */
  report(error) {
    this.options.onError?.(error);
  }

  /**
   * @param {string} topic
   * @param {*} data
   * @param {string} id
   */
  async publishOverHttp(topic, data, id) {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(this.endpoint(`/publish/${encodeURIComponent(topic)}`), {
          method: "POST",
          headers: { "Content-Type": "application/json", "Idempotency-Key": id },
          body: JSON.stringify(data),
        });
        const body = await response.json();
        if (response.ok) return body.seq;
        if (response.status < 500 && response.status !== 429) throw new Error(body.error);
      } catch (error) {
        if (attempt >= 5 || !(error instanceof TypeError)) throw error;
      }
      const ceiling = Math.min(this.options.backoffMaxMs, this.options.backoffInitialMs * 2 ** attempt);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
    }
  }
}

/**
 * Whether `token`, read as a JWT, is past its `exp` by this machine's clock. A token of any
 * other shape, or without `exp`, is not known to expire: false.
 * @param {string | undefined} token
 */
function jwtExpired(token) {
  const parts = token?.split(".") ?? [];
  if (parts.length !== 3) return false;
  try {
    const claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof claims?.exp === "number" && claims.exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

/**
 * `{"op":"subscribe"}` with `since` for every topic whose position is known.
 * @param {string[]} topics
 * @param {Map<string, Position>} positions
 */
function subscribeRequest(topics, positions) {
  const since = sinceOf(topics, positions);
  return JSON.stringify(
    Object.keys(since).length > 0 ? { op: "subscribe", topics, since } : { op: "subscribe", topics },
  );
}

/**
 * @param {string[]} topics
 * @param {Map<string, Position>} positions
 */
function sinceOf(topics, positions) {
  /** @type {Record<string, number | Position>} */
  const since = {};
  for (const topic of topics) {
    const position = positions.get(topic);
    if (position === undefined) continue;
    since[topic] =
      position.epoch === undefined ? position.seq : { seq: position.seq, epoch: position.epoch };
  }
  return since;
}

/**
 * Watches a connection for silence: after `silenceMs` without a byte it calls `ask` (if any),
 * and after `deadAfterMs` more it calls `dead`.
 */
class Watchdog {
  /**
   * @param {Client} client
   * @param {(() => void) | null} ask
   * @param {() => void} dead
   */
  constructor(client, ask, dead) {
    this.client = client;
    this.ask = ask;
    this.dead = dead;
    this.heard();
  }

  heard() {
    clearTimeout(this.timer);
    const { silenceMs, deadAfterMs } = this.client.options;
    this.timer = setTimeout(() => {
      this.ask?.();
      this.timer = setTimeout(this.dead, deadAfterMs);
    }, silenceMs);
  }

  stop() {
    clearTimeout(this.timer);
  }
}

/** An HTTP answer that refuses a transport (a status other than 200): the next may work. */
class Refused extends Error {
  /** @param {number} status */
  constructor(status) {
    super(`answered ${status}`);
    this.status = status;
  }
}

/** The three transports share this shape: `kind`, `isOpen`, `send`, `stop`. */
class WebSocketConnection {
  /**
   * @param {Client} client
   * @param {{opened: () => void, ended: (end: End) => void}} events
   */
  constructor(client, events) {
    this.kind = "websocket";
    this.isOpen = false;
    this.client = client;
    this.events = events;
    this.socket = new WebSocket(client.endpoint("/ws"));
    this.openTimer = setTimeout(() => this.end("no open in time"), client.options.openTimeoutMs);
    this.watchdog = null;
    this.socket.onopen = () => {
      clearTimeout(this.openTimer);
      this.isOpen = true;
      const ping = () => this.send('{"op":"ping"}');
      this.watchdog = new Watchdog(client, ping, () => this.end("silent: no pong"));
      events.opened();
      if (client.topics.size > 0) this.send(subscribeRequest([...client.topics], client.positions));
    };
    this.socket.onmessage = (event) => {
      this.watchdog?.heard();
      let object;
      try {
        object = JSON.parse(event.data);
      } catch {
        return client.report(new Error("websocket: a message that is not JSON"));
      }
      client.receive(object);
    };
    this.socket.onclose = (event) => this.end(`closed ${event.code} ${event.reason}`, event.code);
  }

  /** @param {string} text */
  send(text) {
    if (this.isOpen) this.socket.send(text);
  }

  /**
   * @param {string} reason
   * @param {number} [code]
   */
  end(reason, code) {
    const opened = this.isOpen;
    this.stop();
    this.events.ended({ opened, reason, code });
  }

  stop() {
    clearTimeout(this.openTimer);
    this.watchdog?.stop();
    this.isOpen = false;
    this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
    this.socket.close();
  }
}

/** Server-Sent Events read with `fetch`, so that heartbeat comments count as life. */
class SseConnection {
  /**
   * @param {Client} client
   * @param {{opened: () => void, ended: (end: End) => void}} events
   */
  constructor(client, events) {
    this.kind = "sse";
    this.isOpen = false;
    this.client = client;
    this.events = events;
    this.abort = new AbortController();
    this.watchdog = null;
    this.run().catch((error) => this.end(String(error?.message ?? error), error?.status));
  }

  async run() {
    const client = this.client;
    const topics = client.streamTopics();
    /** @type {Record<string, any>} */
    const query = { topics };
    const since = sinceOf(topics, client.positions);
    if (Object.keys(since).length > 0) query.since = JSON.stringify(since);
    const openTimer = setTimeout(() => this.abort.abort(), client.options.openTimeoutMs);
    const response = await fetch(client.endpoint("/sse", query), {
      headers: { Accept: "text/event-stream" },
      cache: "no-store",
      signal: this.abort.signal,
    });
    clearTimeout(openTimer);
    if (response.status !== 200 || response.body === null) {
      throw new Refused(response.status);
    }
    this.isOpen = true;
    this.watchdog = new Watchdog(client, null, () => this.end("silent: no heartbeat"));
    this.events.opened();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    /** @type {{event: string, data: string[]}} */
    let event = { event: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return this.end("stream ended");
      if (!this.isOpen) return;
      this.watchdog.heard();
      buffered += value;
      const lines = buffered.split(/\r\n|\r|\n/);
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "") {
          if (event.data.length > 0) this.dispatch(event.event, event.data.join("\n"));
          event = { event: "message", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          if (field === "event") event.event = text;
        }
      }
    }
  }

  /**
   * @param {string} _event the event's name: the JSON's `op` says the same
   * @param {string} data
   */
  dispatch(_event, data) {
    try {
      this.client.receive(JSON.parse(data));
    } catch {
      this.client.report(new Error("sse: an event that is not JSON"));
    }
  }

  /** @param {string} _text */
  send(_text) {}

  /**
   * @param {string} reason
   * @param {number} [status] the HTTP status of an answer that refused this transport
   */
  end(reason, status) {
    const opened = this.isOpen;
    if (this.abort.signal.aborted && !opened && reason.includes("abort")) reason = "no open in time";
    this.stop();
    this.events.ended({ opened, reason, refused: status !== undefined, status });
  }

  stop() {
    this.watchdog?.stop();
    this.isOpen = false;
    this.abort.abort();
  }
}

/** Long polling: each answer's cursor is the next request's start. */
class PollConnection {
  /**
   * @param {Client} client
   * @param {{opened: () => void, ended: (end: End) => void}} events
   */
  constructor(client, events) {
    this.kind = "poll";
    this.isOpen = false;
    this.client = client;
    this.events = events;
    this.abort = new AbortController();
    this.topics = client.streamTopics();
    const kept = client.pollCursor;
    this.cursor = kept !== null && kept.topics === this.topics.join(",") ? kept.cursor : null;
    this.run().catch((error) => this.end(String(error?.message ?? error), error?.status));
  }

  async run() {
    const client = this.client;
    const topics = this.topics;
    const waitMs = client.options.pollWaitMs;
    while (!this.abort.signal.aborted) {
      /** @type {Record<string, any>} */
      const query = { topics, wait_ms: String(this.isOpen ? waitMs : 0) };
      if (this.cursor !== null) {
        query.cursor = this.cursor;
      } else {
        const since = sinceOf(topics, client.positions);
        if (Object.keys(since).length > 0) query.since = JSON.stringify(since);
      }
      // A poll unanswered well past its wait is a dead connection.
      const limitMs = (this.isOpen ? waitMs : 0) + client.options.deadAfterMs;
      const timer = setTimeout(() => this.abort.abort(), limitMs);
      let response;
      try {
        response = await fetch(client.endpoint("/poll", query), {
          cache: "no-store",
          signal: this.abort.signal,
        });
      } finally {
        clearTimeout(timer);
      }
      if (response.status !== 200) throw new Refused(response.status);
      const answer = await response.json();
      if (!this.isOpen) {
        this.isOpen = true;
        this.events.opened();
      }
      for (const object of answer.messages) client.receive(object);
      this.cursor = answer.cursor;
      client.pollCursor = { topics: topics.join(","), cursor: answer.cursor };
    }
  }

  /** @param {string} _text */
  send(_text) {}

  /**
   * @param {string} reason
   * @param {number} [status] the HTTP status of an answer that refused this transport
   */
  end(reason, status) {
    if (!this.isOpen && this.abort.signal.aborted && this.stopped) return;
    const opened = this.isOpen;
    this.stop();
    this.events.ended({ opened, reason, refused: status !== undefined, status });
  }

  stop() {
    this.stopped = true;
    this.isOpen = false;
    this.abort.abort();
  }
}
