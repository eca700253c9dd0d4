// The live ticker board at `/`: a tile per symbol with price, change since the board opened, a
// flash on update and a sparkline, over the ringcast client. Updates are applied once per
// animation frame, so 1,000 messages/s over 500 symbols cost one DOM pass per frame.
//
// URL parameters: `symbols=AAPL,MSFT` (default: the demo's symbols from /symbols.txt),
// `transport=socketio` connects through the npm socket.io-client (/board-socketio.js) rather
// than ringcast's own client, loading its bundle from `socketio_client=PATH` (same origin,
// default /socket.io.min.js), `record=1` keeps every seq received per topic in
// `window.board.seqs` (for tests).
import { connect } from "/ringcast.js";
import { connectSocketIo, loadSocketIo } from "/board-socketio.js";

const SPARK_POINTS = 60;
const parameters = new URLSearchParams(location.search);
const recording = parameters.has("record");
const grid = document.getElementById("grid");
/** @type {Map<string, {tile: HTMLElement, price: HTMLElement, change: HTMLElement, spark: HTMLCanvasElement, first: number | null, last: number | null, points: number[], dirty: boolean, direction: number}>} */
const tiles = new Map();
const dirty = new Set();
let received = 0;

const board = { client: null, seqs: {}, resets: [], errors: [], states: [] };
window.board = board;

function addTile(symbol) {
  if (tiles.has(symbol)) return false;
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.dataset.symbol = symbol;
  tile.innerHTML =
    '<div class="row"><span class="symbol"></span><span><span class="price">–</span>' +
    '<span class="change"></span></span></div><canvas width="160" height="24"></canvas>';
  tile.querySelector(".symbol").textContent = symbol;
  grid.append(tile);
  tiles.set(symbol, {
    tile,
    price: tile.querySelector(".price"),
    change: tile.querySelector(".change"),
    spark: tile.querySelector("canvas"),
    first: null,
    last: null,
    points: [],
    direction: 0,
  });
  document.getElementById("symbols").textContent = String(tiles.size);
  return true;
}

function onMessage(message) {
  received += 1;
  if (recording) (board.seqs[message.topic] ??= []).push(message.seq);
  const entry = tiles.get(message.topic);
  const price = typeof message.data === "object" ? Number(message.data?.px) : NaN;
  if (entry === undefined || !Number.isFinite(price)) return;
  entry.direction = entry.last === null ? 0 : Math.sign(price - entry.last);
  entry.first ??= price;
  entry.last = price;
  entry.points.push(price);
  if (entry.points.length > SPARK_POINTS) entry.points.shift();
  dirty.add(entry);
}

function render() {
  for (const entry of dirty) {
    entry.price.textContent = entry.last.toFixed(2);
    const change = ((entry.last - entry.first) / entry.first) * 100;
    entry.change.textContent = `${change >= 0 ? "+" : ""}${change.toFixed(2)}%`;
    entry.change.className = `change ${change >= 0 ? "up" : "down"}`;
    entry.tile.classList.remove("flash-up", "flash-down");
    if (entry.direction !== 0) {
      entry.tile.classList.add(entry.direction > 0 ? "flash-up" : "flash-down");
      // Removed next frame: the tile then fades back by its CSS transition.
      requestAnimationFrame(() => entry.tile.classList.remove("flash-up", "flash-down"));
    }
    drawSpark(entry);
  }
  dirty.clear();
  requestAnimationFrame(render);
}

function drawSpark(entry) {
  const canvas = entry.spark;
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const points = entry.points;
  if (points.length < 2) return;
  const low = Math.min(...points);
  const high = Math.max(...points);
  const span = high - low || 1;
  context.beginPath();
  points.forEach((value, index) => {
    const x = (index / (SPARK_POINTS - 1)) * width;
    const y = height - 2 - ((value - low) / span) * (height - 4);
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.strokeStyle = entry.last >= entry.first ? "#0a7d32" : "#b3261e";
  context.lineWidth = 1.2;
  context.stroke();
}

setInterval(() => {
  document.getElementById("rate").textContent = String(received);
  received = 0;
}, 1000);

function showState(state, transport) {
  board.states.push(`${state}:${transport}`);
  const element = document.getElementById("state");
  element.textContent = state;
  element.dataset.state = state;
  showTransport(transport);
}

function showTransport(transport) {
  document.getElementById("transport").textContent = transport ?? "–";
}

function showError(error) {
  board.errors.push(error.message);
  document.getElementById("notice").textContent = error.message;
}

/** The client the URL asks for, with the board's callbacks. */
async function connectClient(symbols) {
  const callbacks = {
    topics: symbols,
    onMessage,
    onState: showState,
    onTransport: showTransport,
    onReset: (reset) => board.resets.push(reset),
    onError: showError,
  };
  if (parameters.get("transport") !== "socketio") return connect(location.origin, callbacks);
  const io = await loadSocketIo(parameters.get("socketio_client") ?? "/socket.io.min.js");
  return connectSocketIo(io, location.origin, callbacks);
}

function parseSymbols(text) {
  return text
    .split(/[\s,]+/)
    .map((symbol) => symbol.trim().toUpperCase())
    .filter((symbol) => symbol.length > 0);
}

async function symbolsToShow() {
  if (parameters.has("symbols")) return parseSymbols(parameters.get("symbols"));
  const response = await fetch("/symbols.txt");
  return response.ok ? parseSymbols(await response.text()) : ["AAPL", "MSFT"];
}

async function start() {
  const symbols = await symbolsToShow();
  for (const symbol of symbols) addTile(symbol);
  try {
    board.client = await connectClient(symbols);
  } catch (error) {
    showState("closed", null);
    showError(error);
    return;
  }
  document.getElementById("search").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const wanted = parseSymbols(event.target.value);
    const added = wanted.filter(addTile);
    if (added.length > 0) board.client.subscribe(added);
    const first = tiles.get(wanted[0]);
    first?.tile.scrollIntoView({ block: "center" });
    event.target.value = "";
  });
  requestAnimationFrame(render);
}

start();
