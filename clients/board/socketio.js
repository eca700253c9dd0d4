// The board's second way in: the npm `socket.io-client` (v4), the very client many apps
// already ship, against ringcast's Socket.IO endpoint, behind the same small interface the
// board uses of clients/js/ringcast.js: `positions`, `subscribe`, `publish`, `close`, and the
// callbacks `onMessage`, `onReset`, `onState`, `onTransport`, `onError`.
//
// The client's bundle is not ringcast's to ship (see the README, "The board and the browser
// client"): the page loads it from a same-origin path, `/socket.io.min.js` unless the URL
// names another with `socketio_client=`. Same-origin only, so that a crafted link cannot make
// the board run a script from elsewhere with the page's cookies.
//
// Recovery: socket.io-client sends back the last offset ringcast gave it (the `cursor`
// event, or a message's last argument for a client of one topic) and ringcast resubscribes it from there (`socket.recovered`). When it does not (a
// new session), the board subscribes again with `since` from its own positions, as
// ringcast.js does. Either way a message already seen is dropped by its seq, so the
// application sees each seq once and in order.

/** How long a publish waits for its acknowledgement before it is reported as failed. */
const PUBLISH_ACK_TIMEOUT_MS = 10_000;

/**
 * Loads socket.io-client's browser bundle from `path` (same origin) once; resolves with `io`.
 * @param {string} path
 * @returns {Promise<Function>}
 */
export async function loadSocketIo(path) {
  const url = new URL(path, location.origin);
  if (url.origin !== location.origin) {
    throw new Error(`socketio_client must be a path of this server, not ${url.origin}`);
  }
  if (typeof window.io === "function") return window.io;
  const script = document.createElement("script");
  script.src = url.href;
  await new Promise((resolve, reject) => {
    script.onload = resolve;
    script.onerror = () =>
      reject(new Error(`socket.io-client not found at ${url.pathname}: serve its ` +
        "dist/socket.io.min.js there or name it with ?socketio_client=PATH"));
    document.head.append(script);
  });
  if (typeof window.io !== "function") throw new Error(`${url.pathname} did not define io`);
  return window.io;
}

/**
 * Connects to `origin`'s Socket.IO endpoint with `io` and subscribes to `options.topics`.
 * @param {Function} io the `io` function of socket.io-client
 * @param {string} origin
 * @param {{topics?: string[], onMessage?: Function, onReset?: Function, onState?: Function,
 *   onTransport?: Function, onError?: Function}} options
 */
export function connectSocketIo(io, origin, options) {
  return new SocketIoClient(io, origin, options);
}

class SocketIoClient {
  constructor(io, origin, options) {
    this.options = options;
    /** @type {Set<string>} */
    this.topics = new Set(options.topics ?? []);
    /** @type {Map<string, {seq: number, epoch?: string, fresh?: boolean}>} */
    this.positions = new Map();
    this.recoveries = 0;
    // The client's defaults: long polling first, then the upgrade to WebSocket.
    this.socket = io(origin);
    this.socket.on("connect", () => this.connected());
    this.socket.on("disconnect", (reason) => this.disconnected(reason));
    this.socket.on("connect_error", (error) => options.onError?.(error));
    this.socket.on("subscribed", (reply) => this.subscribed(reply));
    this.socket.on("reset", (reset) => this.reset(reset));
    this.socket.on("message", (message) => this.deliver(message));
    this.socket.on("error", (error) => options.onError?.(new Error(`server: ${error.reason}`)));
  }

  connected() {
    const engine = this.socket.io.engine;
    this.options.onState?.("open", "socket.io");
    this.options.onTransport?.(`socket.io ${engine.transport.name}`);
    engine.once("upgrade", (transport) => {
      this.options.onTransport?.(`socket.io ${transport.name}`);
    });
    if (this.socket.recovered) {
      this.recoveries += 1; // The server resumed every topic from the offset it gave us.
    } else if (this.topics.size > 0) {
      this.socket.emit("subscribe", this.subscribeRequest([...this.topics]));
    }
  }

  disconnected(reason) {
    this.options.onState?.("reconnecting", "socket.io");
    // The only disconnection the client does not retry by itself is the server's own.
    if (reason === "io server disconnect") this.socket.connect();
  }

  /** @param {string[]} topics */
  subscribe(topics) {
    const added = topics.filter((topic) => !this.topics.has(topic));
    for (const topic of added) this.topics.add(topic);
    // While disconnected, the reconnect subscribes to every topic (or recovers the others
    // and this emit, buffered by the client, adds these).
    if (added.length > 0) this.socket.emit("subscribe", this.subscribeRequest(added));
  }

  /** @param {string[]} topics */
  unsubscribe(topics) {
    const removed = topics.filter((topic) => this.topics.delete(topic));
    for (const topic of removed) this.positions.delete(topic);
    if (removed.length > 0) this.socket.emit("unsubscribe", { topics: removed });
  }

  /**
   * Publishes `data` to `topic`; resolves with its seq once the topic's owner numbered it.
   * @returns {Promise<number>}
   */
  async publish(topic, data) {
    const ack = await this.socket
      .timeout(PUBLISH_ACK_TIMEOUT_MS)
      .emitWithAck("publish", { topic, data });
    if (ack?.op !== "published") throw new Error(ack?.reason ?? JSON.stringify(ack));
    return ack.seq;
  }

  close() {
    this.socket.close();
    this.options.onState?.("closed", "socket.io");
  }

  /** `{topics, since}` with each topic's known position. @param {string[]} topics */
  subscribeRequest(topics) {
    const since = {};
    for (const topic of topics) {
      const position = this.positions.get(topic);
      if (position === undefined) continue;
      since[topic] =
        position.epoch === undefined ? position.seq : { seq: position.seq, epoch: position.epoch };
    }
    return Object.keys(since).length > 0 ? { topics, since } : { topics };
  }

  subscribed(reply) {
    const position = this.positions.get(reply.topic);
    if (position === undefined) {
      // A fresh subscription: what follows is after `seq`, but for a snapshot of `seq` itself.
      this.positions.set(reply.topic, { seq: reply.seq, epoch: reply.epoch, fresh: true });
    } else if (position.epoch === undefined) {
      position.epoch = reply.epoch;
    }
  }

  reset(reset) {
    // The latest message, `seq`, follows: take it even though seqs before it were lost.
    this.positions.set(reset.topic, { seq: Math.max(0, reset.seq - 1), epoch: reset.epoch });
    this.options.onReset?.({ topic: reset.topic, seq: reset.seq, epoch: reset.epoch });
  }

  deliver(message) {
    if (!this.topics.has(message.topic)) return;
    const position = this.positions.get(message.topic);
    if (position !== undefined) {
      const snapshot = position.fresh && message.seq === position.seq;
      // Seen already: recovery replays what came after the last offset the client kept.
      if (message.seq <= position.seq && !snapshot) return;
      position.seq = message.seq;
      position.fresh = false;
    } else {
      this.positions.set(message.topic, { seq: message.seq });
    }
    this.options.onMessage?.(message);
  }
}
