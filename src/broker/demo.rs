//! The built-in ticker simulator behind `ringcast --demo`: a newcomer starts the broker and sees
//! live market data at once, without a feed of their own.
//!
//! [`TickerFeed`] is sans-IO: the caller passes its clock to [`TickerFeed::poll_due`] and receives
//! each update as a topic (the ticker symbol) and compact JSON, e.g.
//! `{"px":191.23,"bid":191.22,"ask":191.24,"size":300,"ts":1732230000123}`. Updates come at the
//! configured total rate, evenly paced across calls, for symbols drawn at random. Prices are whole
//! cents (exact with two decimals) following a geometric random walk with a weak pull back to
//! where each symbol started, so a demo left running for days still shows plausible prices.
//! After start-up a tick allocates nothing: the JSON is written into one reused buffer.

/// Symbols simulated when the caller does not say.
pub const SYMBOLS_COUNT_DEFAULT: usize = 500;
/// Most symbols a feed simulates: the generated names run out at 26^4 beyond the built-in list,
/// and far more topics than a browser can show would only dilute the updates per symbol.
pub const SYMBOLS_COUNT_MAX: usize = 100_000;
/// Updates per second, all symbols together, when the caller does not say: two per symbol per
/// second with the default symbols, lively on a screen and nothing for the broker.
pub const MESSAGES_PER_SECOND_DEFAULT: u64 = 1_000;
/// Most updates a call to [`TickerFeed::poll_due`] emits. A caller stalled for a while (a paused
/// process, a long loop turn) gets one burst this large, not every update it missed: stale prices
/// in a flood would only fill subscribers' queues.
pub const TICKS_PER_POLL_MAX: u64 = 1_000;
/// Highest total rate: what a caller polling every millisecond receives in full under the burst
/// cap. Above it the burst cap would silently lower the rate.
pub const MESSAGES_PER_SECOND_MAX: u64 = TICKS_PER_POLL_MAX * 1_000;

/// Credit is kept in thousandths of a message: milliseconds elapsed × messages per second.
const MILLIMESSAGES_PER_MESSAGE: u64 = 1_000;

/// Real ticker symbols (well-known US listings and ETFs), one topic each; exactly
/// [`SYMBOLS_COUNT_DEFAULT`] of them, so the default demo uses no generated names.
pub const KNOWN_SYMBOLS: &str = "\
    AAPL MSFT AMZN NVDA GOOGL GOOG META TSLA AVGO JPM LLY V UNH XOM MA JNJ PG HD COST ABBV MRK \
    CVX CRM AMD NFLX PEP KO BAC ADBE WMT TMO ACN MCD CSCO LIN ABT ORCL DHR INTC WFC DIS CMCSA \
    VZ INTU PFE AMGN TXN NKE IBM PM QCOM NOW UNP CAT GE SPGI HON AMAT BA LOW COP NEE RTX UPS \
    BKNG GS ISRG T ELV MS PLD SBUX BLK DE MDT MDLZ TJX GILD LMT ADP SYK AXP CVS MMC VRTX ADI \
    CB C REGN LRCX SCHW AMT CI ETN ZTS BSX MO PANW SO FI BDX PGR DUK SNPS EQIX SLB CME CDNS \
    ITW MU KLAC TGT EOG NOC AON ICE CL SHW WM APD HUM CSX MCK FDX MPC EMR USB ORLY PNC MMM PSX \
    MCO ROP NSC GD MSI HCA AJG APH NXPI PH TT MAR CTAS ECL TDG ADSK WELL PCAR CARR PLTR SNOW \
    UBER ABNB SHOP SQ COIN RBLX HOOD SOFI RIVN LCID NIO BABA TSM ASML SAP TM SONY NVO AZN SHEL \
    BP TTE UL HSBC RY TD BNS DB UBS ING SAN BCS MUFG SMFG BIDU JD PDD NTES SE MELI NU SPOT ZM \
    DOCU CRWD ZS NET DDOG MDB OKTA TWLO PINS SNAP LYFT DASH ROKU U PATH AFRM UPST DKNG PENN \
    CHWY W PTON GME AMC BB NOK ERIC ARM SMCI MSTR MARA RIOT SPY QQQ IWM DIA GLD SLV TLT HYG \
    XLF XLE XLK VTI VOO EEM EFA ARKK SOXX SMH AZO ADM SRE GM F AIG OXY MET TFC AFL HLT MSCI \
    CHTR KMB AEP DXCM EW TEL PSA O MNST COF ROST CCI IDXX DHI JCI NEM TRV ALL KMI FTNT GIS IQV \
    BK WMB SPG HES LHX NUE AMP YUM PAYX CTVA OKE CMI EXC D PRU KHC HSY FAST CPRT BIIB A KDP \
    GWW ODFL LEN CNC SYY AME PCG OTIS CSGP RSG VRSK CTSH KR EA XEL IT GEHC MLM VMC FANG EL DOW \
    BKR ED HAL PEG ON LYB CDW DVN ROK DLR VICI PPG ACGL MTD FICO ANSS DG DD WEC EFX CBRE XYL \
    KEYS HPQ FTV TSCO ZBH AWK WST GPN CAH AVB EIX WTW RMD DAL ULTA STZ MPWR IR WY TROW EBAY \
    HIG GLW CHD TTWO DOV STT WAB NDAQ EQR BR HPE FITB MTB BRO DTE RJF ALGN LUV FE ETR PPL NVR \
    INVH STE IFF HBAN TER BAX EXR VTR ARE CNP WBD CLX PHM TYL DRI ES LH TDY MKC HOLX RF CINF \
    OMC BALL AEE CMS WAT PTC EXPE ILMN CFG GRMN NTAP SWKS VRSN COO J FSLR DGX ATO WDC HUBB SYF \
    BBY TXT MOH NTRS LVS EXPD CCL AKAM FDS ALB PFG SNA IEX AVY TRMB CE MAA ESS LW K IP UAL \
    ENPH EQT STLD POOL LKQ ZBRA EPAM JBHT PODD AMCR CF CAG VTRS MAS SWK TAP PKG HST NDSN KIM \
    WRB SJM L IPG EVRG LNT GEN CPT JKHY AES REG UDR INCY BG TECH KMX CRL PNR MGM FFIV TFX CHRW \
    ALLE APA HRL WYNN QRVO \
";

/// Generated symbols beyond the list: this letter then four more. No listed symbol has five
/// letters and starts with it, so generated names never repeat a listed one.
const GENERATED_FIRST_LETTER: u8 = b'Z';
const GENERATED_LETTERS_COUNT: u32 = 4;
const _: () = assert!(26usize.pow(GENERATED_LETTERS_COUNT) >= SYMBOLS_COUNT_MAX);

/// Price levels in whole dollars of the best-known symbols (their order of magnitude in the
/// mid-2020s), so that a newcomer watching AAPL or SPY sees a familiar figure; each starts
/// within `START_LEVEL_SPREAD` of its level. The others are drawn between the bounds below.
const KNOWN_LEVELS_DOLLARS: [(&str, f64); 60] = [
    ("AAPL", 225.0),
    ("MSFT", 420.0),
    ("AMZN", 190.0),
    ("NVDA", 130.0),
    ("GOOGL", 170.0),
    ("GOOG", 172.0),
    ("META", 560.0),
    ("TSLA", 250.0),
    ("AVGO", 170.0),
    ("JPM", 220.0),
    ("LLY", 880.0),
    ("V", 280.0),
    ("UNH", 580.0),
    ("XOM", 118.0),
    ("MA", 490.0),
    ("JNJ", 160.0),
    ("PG", 170.0),
    ("HD", 400.0),
    ("COST", 890.0),
    ("ABBV", 190.0),
    ("MRK", 110.0),
    ("CVX", 150.0),
    ("CRM", 290.0),
    ("AMD", 150.0),
    ("NFLX", 700.0),
    ("PEP", 170.0),
    ("KO", 70.0),
    ("BAC", 40.0),
    ("ADBE", 510.0),
    ("WMT", 80.0),
    ("ORCL", 170.0),
    ("INTC", 22.0),
    ("WFC", 60.0),
    ("DIS", 95.0),
    ("CSCO", 55.0),
    ("IBM", 220.0),
    ("QCOM", 165.0),
    ("BA", 155.0),
    ("GS", 510.0),
    ("MS", 105.0),
    ("NKE", 80.0),
    ("PFE", 29.0),
    ("T", 22.0),
    ("VZ", 42.0),
    ("UBER", 75.0),
    ("PLTR", 40.0),
    ("SHOP", 80.0),
    ("COIN", 200.0),
    ("F", 11.0),
    ("GM", 48.0),
    ("SPY", 570.0),
    ("QQQ", 490.0),
    ("IWM", 220.0),
    ("DIA", 420.0),
    ("GLD", 245.0),
    ("TLT", 95.0),
    ("ARM", 140.0),
    ("TSM", 190.0),
    ("ASML", 700.0),
    ("MSTR", 200.0),
];
/// How far a known symbol starts from its level, as a fraction either way.
const START_LEVEL_SPREAD: f64 = 0.03;

/// Starting prices are drawn log-uniformly between these, in cents ($5 to $800).
const START_PRICE_CENTS_MIN: f64 = 500.0;
const START_PRICE_CENTS_MAX: f64 = 80_000.0;
/// Largest move of the log price in one update (about 0.1%).
const STEP_LOG_MAX: f64 = 0.001;
/// Fraction of the distance to the starting price taken back each update. With the step above
/// this keeps a symbol within a few percent of where it started (standard deviation about 4%),
/// and bounds it: the log offset never exceeds `STEP_LOG_MAX / REVERSION_PER_UPDATE` = 10.
const REVERSION_PER_UPDATE: f64 = 0.0001;
/// No price goes below $1, so the bid (one cent under at that price) stays positive.
const PRICE_CENTS_MIN: u64 = 100;
/// Half the bid-ask spread is this fraction of the price, and at least one cent.
const HALF_SPREAD_DIVISOR: u64 = 20_000;
/// Sizes are whole round lots of 100 shares, 1 to 10 lots.
const LOT_SHARES: u64 = 100;
const LOTS_MAX: u64 = 10;
/// Room for the longest update, so the buffer never grows after start-up.
const DATA_BYTES_CAPACITY: usize = 128;

/// One simulated symbol.
#[derive(Debug)]
struct Symbol {
    name: Box<str>,
    start_price_cents: f64,
    /// Natural log of price / start price.
    log_offset: f64,
}

/// Simulated market data for the demo. See the module documentation.
#[derive(Debug)]
pub struct TickerFeed {
    symbols: Vec<Symbol>,
    messages_per_second: u64,
    /// Thousandths of a message earned by elapsed time and not yet emitted; always below one
    /// message after a call.
    credit_millimessages: u64,
    /// The clock of the latest call; `None` before the first.
    last_poll_ms: Option<u64>,
    random: fastrand::Rng,
    /// The JSON of the update being emitted, reused for every update.
    data: Vec<u8>,
}

impl TickerFeed {
    /// A feed of `symbols_count` symbols updated `messages_per_second_total` times per second in
    /// all. The same seed gives the same symbols, prices and order for the same calls.
    ///
    /// # Panics
    /// If `symbols_count` is not in 1..=[`SYMBOLS_COUNT_MAX`] or the rate not in
    /// 1..=[`MESSAGES_PER_SECOND_MAX`]: configuration validation refuses those first.
    pub fn new(symbols_count: usize, messages_per_second_total: u64, seed: u64) -> TickerFeed {
        assert!((1..=SYMBOLS_COUNT_MAX).contains(&symbols_count));
        assert!((1..=MESSAGES_PER_SECOND_MAX).contains(&messages_per_second_total));
        let mut random = fastrand::Rng::with_seed(seed);
        let (low, high) = (START_PRICE_CENTS_MIN.ln(), START_PRICE_CENTS_MAX.ln());
        let symbols = symbol_names()
            .take(symbols_count)
            .map(|name| {
                let drawn = (low + (high - low) * random.f64()).exp();
                let level = KNOWN_LEVELS_DOLLARS
                    .iter()
                    .find(|(symbol, _)| *symbol == &*name)
                    .map(|(_, dollars)| {
                        dollars * 100.0 * (1.0 + START_LEVEL_SPREAD * (2.0 * random.f64() - 1.0))
                    });
                Symbol {
                    name,
                    start_price_cents: level.unwrap_or(drawn),
                    log_offset: 0.0,
                }
            })
            .collect();
        TickerFeed {
            symbols,
            messages_per_second: messages_per_second_total,
            credit_millimessages: 0,
            last_poll_ms: None,
            random,
            data: Vec::with_capacity(DATA_BYTES_CAPACITY),
        }
    }

    /// The topics this feed publishes to, in a fixed order.
    pub fn symbols(&self) -> impl ExactSizeIterator<Item = &str> {
        self.symbols.iter().map(|symbol| &*symbol.name)
    }

    /// Emits the updates due by `now_ms` through `emit(topic, json_data)`, stamped `now_ms`, and
    /// returns how many. The first call only starts the clock. At most [`TICKS_PER_POLL_MAX`]
    /// per call; whole updates owed beyond that are forgotten, fractions carry over. A clock
    /// that goes back earns nothing until it passes the latest call again.
    pub fn poll_due(&mut self, now_ms: u64, emit: &mut impl FnMut(&str, &[u8])) -> u64 {
        let Some(last_poll_ms) = self.last_poll_ms else {
            self.last_poll_ms = Some(now_ms);
            return 0;
        };
        let elapsed_ms = now_ms.saturating_sub(last_poll_ms);
        self.last_poll_ms = Some(last_poll_ms.max(now_ms));
        let earned_millimessages = elapsed_ms.saturating_mul(self.messages_per_second);
        self.credit_millimessages = self
            .credit_millimessages
            .saturating_add(earned_millimessages);
        let owed = self.credit_millimessages / MILLIMESSAGES_PER_MESSAGE;
        self.credit_millimessages %= MILLIMESSAGES_PER_MESSAGE;
        let due = owed.min(TICKS_PER_POLL_MAX);
        for _ in 0..due {
            self.emit_update(now_ms, emit);
        }
        due
    }

    /// When the next update falls due, for arming a timer; `None` before the first call.
    pub fn next_due_ms(&self) -> Option<u64> {
        let missing_millimessages = MILLIMESSAGES_PER_MESSAGE - self.credit_millimessages;
        let wait_ms = missing_millimessages.div_ceil(self.messages_per_second);
        self.last_poll_ms.map(|last_poll_ms| last_poll_ms + wait_ms)
    }

    /// Moves one random symbol's price a step and emits its update.
    fn emit_update(&mut self, now_ms: u64, emit: &mut impl FnMut(&str, &[u8])) {
        let index = self.random.usize(..self.symbols.len());
        let symbol = &mut self.symbols[index];
        let step = STEP_LOG_MAX * (2.0 * self.random.f64() - 1.0);
        symbol.log_offset = symbol.log_offset * (1.0 - REVERSION_PER_UPDATE) + step;
        // `as` saturates; the reversion bound keeps the product far from u64's range anyway.
        let exact_cents = symbol.start_price_cents * symbol.log_offset.exp();
        let price_cents = (exact_cents.round() as u64).max(PRICE_CENTS_MIN);
        let half_spread_cents = (price_cents / HALF_SPREAD_DIVISOR).max(1);
        let size = LOT_SHARES * self.random.u64(1..=LOTS_MAX);
        let data = &mut self.data;
        data.clear();
        data.extend_from_slice(b"{\"px\":");
        write_cents(data, price_cents);
        data.extend_from_slice(b",\"bid\":");
        write_cents(data, price_cents - half_spread_cents);
        data.extend_from_slice(b",\"ask\":");
        write_cents(data, price_cents + half_spread_cents);
        data.extend_from_slice(b",\"size\":");
        data.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
        data.extend_from_slice(b",\"ts\":");
        data.extend_from_slice(itoa::Buffer::new().format(now_ms).as_bytes());
        data.push(b'}');
        emit(&symbol.name, data);
    }
}

/// Writes whole cents as dollars with exactly two decimals: 19123 → `191.23`.
fn write_cents(data: &mut Vec<u8>, cents: u64) {
    data.extend_from_slice(itoa::Buffer::new().format(cents / 100).as_bytes());
    let fraction = (cents % 100) as u8;
    data.extend_from_slice(&[b'.', b'0' + fraction / 10, b'0' + fraction % 10]);
}

/// Symbol names: the built-in list, then generated ones (`ZAAAA`, `ZAAAB`, …).
fn symbol_names() -> impl Iterator<Item = Box<str>> {
    let known = KNOWN_SYMBOLS.split_ascii_whitespace().map(Box::from);
    known.chain((0..).map(generated_symbol_name))
}

/// The generated name number `index`: the first letter, then `index` in base 26 as letters.
fn generated_symbol_name(index: usize) -> Box<str> {
    let mut rest = index;
    let mut letters = [b'A'; 1 + GENERATED_LETTERS_COUNT as usize];
    letters[0] = GENERATED_FIRST_LETTER;
    for letter in letters[1..].iter_mut().rev() {
        *letter = b'A' + (rest % 26) as u8;
        rest /= 26;
    }
    assert!(rest == 0, "SYMBOLS_COUNT_MAX fits the generated names");
    Box::from(std::str::from_utf8(&letters).expect("ASCII letters"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Polls `feed` at every time in `times_ms` and returns each update as (topic, data).
    fn collect(
        feed: &mut TickerFeed,
        times_ms: impl IntoIterator<Item = u64>,
    ) -> Vec<(String, Vec<u8>)> {
        let mut updates = Vec::new();
        for now_ms in times_ms {
            feed.poll_due(now_ms, &mut |topic, data| {
                updates.push((topic.to_owned(), data.to_vec()))
            });
        }
        updates
    }

    /// Poll times from 0 to `end_ms` at irregular intervals of 1 to `gap_ms_max` milliseconds.
    fn irregular_times(end_ms: u64, gap_ms_max: u64, seed: u64) -> Vec<u64> {
        let mut random = fastrand::Rng::with_seed(seed);
        let mut times = vec![0];
        while *times.last().expect("not empty") < end_ms {
            let next = times.last().expect("not empty") + random.u64(1..=gap_ms_max);
            times.push(next.min(end_ms));
        }
        times
    }

    #[test]
    fn the_default_symbols_are_real_tickers_and_all_names_are_unique() {
        // Proves the built-in list holds exactly the default count of plain tickers and that
        // generated names up to the maximum never repeat one.
        let known: Vec<&str> = KNOWN_SYMBOLS.split_ascii_whitespace().collect();
        assert_eq!(known.len(), SYMBOLS_COUNT_DEFAULT);
        for symbol in &known {
            assert!((1..=5).contains(&symbol.len()), "{symbol}");
            assert!(
                symbol.bytes().all(|letter| letter.is_ascii_uppercase()),
                "{symbol}"
            );
        }
        let all: HashSet<Box<str>> = symbol_names().take(SYMBOLS_COUNT_MAX).collect();
        assert_eq!(all.len(), SYMBOLS_COUNT_MAX);
        let feed = TickerFeed::new(SYMBOLS_COUNT_DEFAULT + 2, 1, 0);
        let names: Vec<&str> = feed.symbols().collect();
        assert_eq!(names[..3], ["AAPL", "MSFT", "AMZN"]);
        assert_eq!(names[SYMBOLS_COUNT_DEFAULT..], ["ZAAAA", "ZAAAB"]);
    }

    #[test]
    fn well_known_symbols_start_near_their_price_level() {
        // Proves AAPL, SPY and every other listed level start within the spread of it, and
        // that every listed symbol is one the demo publishes.
        let feed = TickerFeed::new(SYMBOLS_COUNT_DEFAULT, 1, 7);
        for (symbol, dollars) in KNOWN_LEVELS_DOLLARS {
            let start = feed
                .symbols
                .iter()
                .find(|candidate| &*candidate.name == symbol)
                .unwrap_or_else(|| panic!("{symbol} is not a demo symbol"))
                .start_price_cents;
            let ratio = start / (dollars * 100.0);
            assert!(
                (ratio - 1.0).abs() <= START_LEVEL_SPREAD + 1e-9,
                "{symbol}: {start}"
            );
        }
    }

    #[test]
    fn updates_follow_the_rate_for_any_poll_pattern() {
        // Proves pacing: after polls at irregular times, the count emitted is rate × elapsed
        // time within one update, for rates below and above one per millisecond.
        for (rate, gap_ms_max) in [(1, 50), (7, 20), (333, 9), (1_000, 3), (12_345, 9)] {
            for end_ms in [1, 999, 1_001, 30_000] {
                let mut feed = TickerFeed::new(50, rate, rate);
                let emitted = collect(&mut feed, irregular_times(end_ms, gap_ms_max, end_ms)).len();
                let expected = rate as f64 * end_ms as f64 / 1_000.0;
                let difference = (emitted as f64 - expected).abs();
                assert!(
                    difference <= 1.0,
                    "rate {rate}, {end_ms} ms: {emitted} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn a_stalled_caller_gets_one_capped_burst() {
        // Proves the burst cap: after a long stall one call emits the maximum, the missed backlog
        // is forgotten, and pacing then resumes at the rate.
        let mut feed = TickerFeed::new(10, 100_000, 1);
        let mut ignore = |_: &str, _: &[u8]| {};
        assert_eq!(
            feed.poll_due(5_000, &mut ignore),
            0,
            "the first call starts the clock"
        );
        assert_eq!(feed.poll_due(65_000, &mut ignore), TICKS_PER_POLL_MAX);
        assert_eq!(feed.poll_due(65_000, &mut ignore), 0);
        assert_eq!(feed.poll_due(65_001, &mut ignore), 100);
    }

    #[test]
    fn the_clock_going_back_earns_nothing() {
        // Proves that a clock stepping backwards emits nothing and does not pay twice for the
        // time it repeats.
        let mut feed = TickerFeed::new(10, 1_000, 2);
        let mut ignore = |_: &str, _: &[u8]| {};
        feed.poll_due(1_000, &mut ignore);
        assert_eq!(feed.poll_due(1_010, &mut ignore), 10);
        assert_eq!(feed.poll_due(900, &mut ignore), 0);
        assert_eq!(feed.poll_due(1_010, &mut ignore), 0);
        assert_eq!(feed.poll_due(1_015, &mut ignore), 5);
    }

    #[test]
    fn next_due_is_when_the_next_update_falls_due() {
        // Proves next_due_ms: a call one millisecond before it emits nothing, a call at it emits.
        let mut ignore = |_: &str, _: &[u8]| {};
        for rate in [1, 3, 999, 1_000, 5_000] {
            let mut feed = TickerFeed::new(10, rate, 3);
            assert_eq!(feed.next_due_ms(), None);
            feed.poll_due(10_000, &mut ignore);
            for _ in 0..5 {
                let due_ms = feed.next_due_ms().expect("clock started");
                assert!(due_ms > 10_000);
                if due_ms > 10_001 {
                    assert_eq!(feed.poll_due(due_ms - 1, &mut ignore), 0, "rate {rate}");
                }
                assert!(feed.poll_due(due_ms, &mut ignore) >= 1, "rate {rate}");
            }
        }
    }

    #[test]
    fn every_update_is_compact_json_with_a_consistent_quote() {
        // Proves each data is valid JSON with the five fields, two-decimal prices, a bid below
        // and an ask above the price, round-lot sizes and the caller's timestamp.
        let mut feed = TickerFeed::new(SYMBOLS_COUNT_DEFAULT, 10_000, 4);
        let times: Vec<u64> = (0..=2_000).map(|step| 1_732_230_000_000 + step).collect();
        let updates = collect(&mut feed, times.iter().copied());
        assert_eq!(updates.len(), 20_000);
        let symbols: HashSet<&str> = feed.symbols().collect();
        for (topic, data) in &updates {
            assert!(symbols.contains(topic.as_str()));
            let text = std::str::from_utf8(data).expect("UTF-8");
            assert!(!text.contains(' '), "compact: {text}");
            let value: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
            let object = value.as_object().expect("an object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 5, "{text}");
            let cents = |key: &str| {
                let raw = text
                    .split(&format!("\"{key}\":"))
                    .nth(1)
                    .expect("key present");
                let raw = raw.split([',', '}']).next().expect("a number");
                let (dollars, fraction) = raw.split_once('.').expect("two decimals");
                assert_eq!(fraction.len(), 2, "{text}");
                dollars.parse::<u64>().expect("dollars") * 100
                    + fraction.parse::<u64>().expect("cents")
            };
            let (price, bid, ask) = (cents("px"), cents("bid"), cents("ask"));
            assert!(0 < bid && bid < price && price < ask, "{text}");
            let price_parsed = object["px"].as_f64().expect("px");
            assert_eq!((price_parsed * 100.0).round() as u64, price, "{text}");
            let size = object["size"].as_u64().expect("size");
            assert!(size > 0 && size.is_multiple_of(LOT_SHARES), "{text}");
            let ts = object["ts"].as_u64().expect("ts");
            assert!(times.contains(&ts), "{text}");
        }
    }

    #[test]
    fn prices_stay_positive_and_near_their_start_over_a_long_run() {
        // Proves the walk neither reaches zero nor drifts away: one symbol, a million updates
        // (days of a busy demo), the price stays within a factor of two of where it started.
        let mut feed = TickerFeed::new(1, MESSAGES_PER_SECOND_MAX, 5);
        let start_price_cents = feed.symbols[0].start_price_cents;
        let (mut lowest, mut highest) = (f64::MAX, 0.0_f64);
        let mut ignore = |_: &str, _: &[u8]| {};
        for now_ms in 0..=1_000 {
            feed.poll_due(now_ms, &mut ignore);
            let price = start_price_cents * feed.symbols[0].log_offset.exp();
            lowest = lowest.min(price);
            highest = highest.max(price);
        }
        assert!(
            lowest > start_price_cents / 2.0,
            "{lowest} from {start_price_cents}"
        );
        assert!(
            highest < start_price_cents * 2.0,
            "{highest} from {start_price_cents}"
        );
        assert!(lowest < highest, "the price moves");
    }

    #[test]
    fn the_same_seed_gives_the_same_feed() {
        // Proves determinism: equal seeds and calls give byte-identical updates; another seed
        // gives other prices.
        let times = irregular_times(5_000, 7, 6);
        let run = |seed| {
            collect(
                &mut TickerFeed::new(200, 2_000, seed),
                times.iter().copied(),
            )
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
