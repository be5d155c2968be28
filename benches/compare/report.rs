//! The comparison's outputs: the printed table, report.json, and two SVG
//! charts (throughput per scenario; latency percentile curves).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::common::{Config, Impl, Sample, Scenario};
use crate::stats::{self, median};

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One measured run.
#[derive(Debug, Serialize)]
pub struct Run {
    pub scenario: Scenario,
    pub implementation: Impl,
    pub round: usize,
    pub pinned: bool,
    pub mode: &'static str,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub latency_ns: Option<Percentiles>,
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
}

impl Run {
    pub fn new(
        scenario: Scenario,
        implementation: Impl,
        round: usize,
        pinned: bool,
        s: &Sample,
    ) -> Self {
        Self {
            scenario,
            implementation,
            round,
            pinned,
            mode: s.mode,
            events: s.events,
            seconds: s.elapsed.as_secs_f64(),
            events_per_sec: s.rate(),
            latency_ns: s.latency.as_ref().map(Percentiles::of),
            histogram: s.latency.clone(),
        }
    }
}

/// Lowest and highest value over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Option<Self> {
        stats::spread(v).map(|(min, max)| Spread { min, max })
    }
}

/// A ratio of ringbus to a peer: the median over the rounds both ran of the
/// ratio within each round, and its spread over those rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Rounds paired.
    pub rounds: usize,
}

/// Medians over the rounds of one implementation in one scenario, their
/// spread, and the median of the per-round ratios of ringbus to it.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The `--scenarios` name.
    pub scenario: Scenario,
    pub title: &'static str,
    /// The `--impls` name.
    pub implementation: Impl,
    pub mode: &'static str,
    pub pinned: bool,
    /// Rounds this implementation ran in this scenario.
    pub rounds: usize,
    pub median_events_per_sec: f64,
    /// Lowest and highest events/s over the rounds.
    pub events_per_sec_spread: Option<Spread>,
    pub median_latency_ns: Option<Percentiles>,
    /// Lowest and highest p50 (ns) over the rounds.
    pub p50_ns_spread: Option<Spread>,
    /// Throughput: median over rounds of (ringbus events/s ÷ this events/s)
    /// in the same round (higher is better for ringbus).
    pub ringbus_throughput_ratio: Option<f64>,
    /// Latency: the same with ringbus p50 ÷ this p50 (lower is better for
    /// ringbus).
    pub ringbus_p50_ratio: Option<f64>,
    /// Latency: ringbus p99 ÷ this p99.
    pub ringbus_p99_ratio: Option<f64>,
    /// The three ratios above with their spread over the rounds.
    pub ringbus_throughput_ratio_spread: Option<Ratio>,
    pub ringbus_p50_ratio_spread: Option<Ratio>,
    pub ringbus_p99_ratio_spread: Option<Ratio>,
    #[serde(skip)]
    pub merged: Option<Histogram<u64>>,
}

/// `f(ringbus run, peer run)` in every round both ran: its median over those
/// rounds and its spread.
fn paired(runs: &[&Run], rb: &[&Run], f: impl Fn(&Run, &Run) -> f64) -> Option<Ratio> {
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|r| rb.iter().find(|b| b.round == r.round).map(|b| f(b, r)))
        .collect();
    let spread = Spread::of(&ratios)?;
    Some(Ratio {
        median: median(&ratios),
        min: spread.min,
        max: spread.max,
        rounds: ratios.len(),
    })
}

pub fn summarize(runs: &[Run], plan: &[(Scenario, Vec<Impl>)]) -> Vec<Summary> {
    let mut out = Vec::new();
    for (sc, imps) in plan {
        let rb: Vec<&Run> = runs
            .iter()
            .filter(|r| r.scenario == *sc && r.implementation == Impl::Ringbus)
            .collect();
        for imp in imps {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == *sc && r.implementation == *imp)
                .collect();
            let Some(first) = mine.first() else { continue };
            let lat = |f: fn(&Percentiles) -> u64| {
                let v: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| r.latency_ns.as_ref())
                    .map(|p| f(p) as f64)
                    .collect();
                median(&v) as u64
            };
            let median_latency_ns = first.latency_ns.map(|_| Percentiles {
                p50: lat(|p| p.p50),
                p90: lat(|p| p.p90),
                p99: lat(|p| p.p99),
                p999: lat(|p| p.p999),
                max: lat(|p| p.max),
            });
            let p50s: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.latency_ns.as_ref())
                .map(|p| p.p50 as f64)
                .collect();
            let rates: Vec<f64> = mine.iter().map(|r| r.events_per_sec).collect();
            let merged = first.histogram.as_ref().map(|_| {
                let mut h = crate::common::histogram();
                for r in &mine {
                    if let Some(x) = &r.histogram {
                        let _ = h.add(x);
                    }
                }
                h
            });
            let lat_ratio = |f: fn(&Percentiles) -> u64| {
                paired(&mine, &rb, |b, r| match (&b.latency_ns, &r.latency_ns) {
                    (Some(b), Some(r)) => f(b) as f64 / f(r) as f64,
                    _ => f64::NAN,
                })
            };
            let is_latency = sc.is_latency();
            let throughput_ratio = paired(&mine, &rb, |b, r| b.events_per_sec / r.events_per_sec);
            let p50_ratio = if is_latency {
                lat_ratio(|p| p.p50)
            } else {
                None
            };
            let p99_ratio = if is_latency {
                lat_ratio(|p| p.p99)
            } else {
                None
            };
            out.push(Summary {
                scenario: *sc,
                title: sc.title(),
                implementation: *imp,
                mode: first.mode,
                pinned: first.pinned,
                rounds: mine.len(),
                median_events_per_sec: median(&rates),
                events_per_sec_spread: Spread::of(&rates),
                median_latency_ns,
                p50_ns_spread: Spread::of(&p50s),
                ringbus_throughput_ratio: throughput_ratio.map(|r| r.median),
                ringbus_p50_ratio: p50_ratio.map(|r| r.median),
                ringbus_p99_ratio: p99_ratio.map(|r| r.median),
                ringbus_throughput_ratio_spread: throughput_ratio,
                ringbus_p50_ratio_spread: p50_ratio,
                ringbus_p99_ratio_spread: p99_ratio,
                merged,
            });
        }
    }
    out
}

/// The issue's targets: (scenario, peer, what, bound, at least?).
const TARGETS: &[(Scenario, Impl, &str, f64, bool)] = &[
    (Scenario::Spsc, Impl::Disruptor, "throughput", 1.25, true),
    (Scenario::Batch64, Impl::Disruptor, "throughput", 1.1, true),
    (Scenario::Mp2, Impl::Crossbeam, "throughput", 2.0, true),
    (Scenario::Mp2, Impl::Disruptor, "throughput", 2.0, true),
    (Scenario::Pipeline, Impl::Disruptor, "throughput", 1.5, true),
    (Scenario::Pipeline, Impl::Crossbeam, "throughput", 5.0, true),
    (
        Scenario::Multicast,
        Impl::Disruptor,
        "throughput",
        1.5,
        true,
    ),
    (
        Scenario::Multicast,
        Impl::Crossbeam,
        "throughput",
        5.0,
        true,
    ),
    (Scenario::Diamond, Impl::Disruptor, "throughput", 1.5, true),
    (Scenario::Diamond, Impl::Crossbeam, "throughput", 5.0, true),
    (
        Scenario::PipelineOneThread,
        Impl::Disruptor,
        "throughput",
        2.0,
        true,
    ),
    (
        Scenario::DiamondOneThread,
        Impl::Disruptor,
        "throughput",
        2.0,
        true,
    ),
    (
        Scenario::PipelineOneThread,
        Impl::RingbusOneStage,
        "throughput",
        0.7,
        true,
    ),
    (
        Scenario::DiamondOneThread,
        Impl::RingbusOneStage,
        "throughput",
        0.7,
        true,
    ),
    (Scenario::Latency, Impl::Disruptor, "p50", 0.8, false),
    (Scenario::Latency, Impl::Disruptor, "p99", 0.8, false),
];

/// Millions of events per second, without the unit (the column or label
/// carries it).
fn fmt_mrate(r: f64) -> String {
    let m = r / 1e6;
    if m.is_nan() {
        "?".into()
    } else if m >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

/// The unit a latency is shown in: (divisor from ns, name).
fn ns_unit(ns: f64) -> (f64, &'static str) {
    if ns >= 1_000_000.0 {
        (1e6, "ms")
    } else if ns >= 10_000.0 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    }
}

fn fmt_ns(ns: u64) -> String {
    match ns_unit(ns as f64) {
        (_, "ns") => format!("{ns} ns"),
        (div, unit) => format!("{:.1} {unit}", ns as f64 / div),
    }
}

/// `lo–hi unit`, both ends in the unit of the higher.
fn fmt_ns_spread(s: &Spread) -> String {
    match ns_unit(s.max) {
        (_, "ns") => format!("{:.0}–{:.0} ns", s.min, s.max),
        (div, unit) => format!("{:.1}–{:.1} {unit}", s.min / div, s.max / div),
    }
}

/// A ratio to two decimals, or to two significant digits below 0.1 (a
/// latency ratio can be 0.0001).
fn fmt_x(v: f64) -> String {
    if v.is_finite() && v > 0.0 && v < 0.1 {
        let decimals = (1.0 - v.log10().floor()) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2}")
    }
}

/// The median ratio and its min–max (a dash from a single round).
fn fmt_ratio(r: Option<Ratio>) -> (String, String) {
    match r {
        Some(r) => (
            format!("{}×", fmt_x(r.median)),
            if r.rounds > 1 {
                format!("{}–{}", fmt_x(r.min), fmt_x(r.max))
            } else {
                "—".into()
            },
        ),
        None => ("?".into(), String::new()),
    }
}

/// How the tables are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Padded, aligned columns for a terminal.
    Plain,
    /// Markdown tables (header separator row included), for a README.
    Markdown,
}

/// A table of text cells; numbers right-aligned.
struct Table {
    head: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as (header, right-aligned?).
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Self {
            head: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.head.len());
        self.rows.push(cells);
    }

    fn render(&self, style: Style) -> String {
        let mut out = String::new();
        match style {
            Style::Markdown => {
                let line = |cells: Vec<String>| {
                    let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
                    format!("| {} |\n", cells.join(" | "))
                };
                out += &line(self.head.iter().map(|h| h.to_string()).collect());
                let sep: Vec<&str> = self
                    .right
                    .iter()
                    .map(|&r| if r { "---:" } else { "---" })
                    .collect();
                out += &format!("|{}|\n", sep.join("|"));
                for row in &self.rows {
                    out += &line(row.clone());
                }
            }
            Style::Plain => {
                let widths: Vec<usize> = (0..self.head.len())
                    .map(|i| {
                        self.rows
                            .iter()
                            .map(|r| r[i].chars().count())
                            .chain([self.head[i].chars().count()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let line = |cells: Vec<String>| {
                    let padded: Vec<String> = cells
                        .iter()
                        .zip(&widths)
                        .zip(&self.right)
                        .map(|((c, &w), &r)| {
                            if r {
                                format!("{c:>w$}")
                            } else {
                                format!("{c:<w$}")
                            }
                        })
                        .collect();
                    format!("{}\n", padded.join("  ").trim_end())
                };
                out += &line(self.head.iter().map(|h| h.to_string()).collect());
                out += &line(widths.iter().map(|&w| "-".repeat(w)).collect());
                for row in &self.rows {
                    out += &line(row.clone());
                }
            }
        }
        out
    }
}

/// The mode, with the pinning said once.
fn mode_cell(s: &Summary) -> String {
    if s.pinned && !s.mode.contains("pinned") {
        format!("{}, pinned", s.mode)
    } else {
        s.mode.to_string()
    }
}

/// One line naming the shape of every scenario in `rows`.
fn scenario_legend(rows: &[&Summary]) -> String {
    let mut seen: Vec<Scenario> = Vec::new();
    for s in rows {
        if !seen.contains(&s.scenario) {
            seen.push(s.scenario);
        }
    }
    let names: Vec<String> = seen
        .iter()
        .map(|sc| format!("{sc} = {}", sc.title()))
        .collect();
    format!("scenarios: {}", names.join("; "))
}

/// Prints legend lines: plain lines in a terminal, a paragraph in Markdown.
fn print_legend(lines: &[String], style: Style) {
    println!();
    for l in lines {
        match style {
            Style::Plain => println!("{l}"),
            Style::Markdown => println!("{l}  "),
        }
    }
}

pub fn print_table(summary: &[Summary], cfg: &Config, rounds: usize, cores: usize, style: Style) {
    println!(
        "\nringbus comparison: {rounds} interleaved round(s); {} events per throughput run, \
         {} per latency run; capacity {}; {cores} core(s); pinning {}; wait family: {}",
        cfg.events,
        cfg.latency_events,
        cfg.capacity,
        if cfg.cores.is_some() {
            "where threads <= cores"
        } else {
            "off"
        },
        cfg.family.id()
    );
    let spread_note = if rounds == 1 {
        " (one round: no spread, shown —)"
    } else {
        ""
    };
    let interleave = format!(
        "each round runs every implementation of a scenario once, one after the other \
         (A B C, A B C, ... over {rounds} round(s))"
    );

    let throughput: Vec<&Summary> = summary
        .iter()
        .filter(|s| !s.scenario.is_latency())
        .collect();
    if !throughput.is_empty() {
        let mut t = Table::new(&[
            ("scenario", false),
            ("implementation", false),
            ("M events/s", true),
            ("min–max", true),
            ("ratio", true),
            ("ratio min–max", true),
            ("mode", false),
        ]);
        for s in &throughput {
            let (ratio, ratio_spread) = if s.implementation == Impl::Ringbus {
                ("—".to_string(), "—".to_string())
            } else {
                fmt_ratio(s.ringbus_throughput_ratio_spread)
            };
            t.row(vec![
                s.scenario.to_string(),
                s.implementation.to_string(),
                fmt_mrate(s.median_events_per_sec),
                match s.events_per_sec_spread {
                    Some(r) if s.rounds > 1 => {
                        format!("{}–{}", fmt_mrate(r.min), fmt_mrate(r.max))
                    }
                    _ => "—".into(),
                },
                ratio,
                ratio_spread,
                mode_cell(s),
            ]);
        }
        println!("\nthroughput\n");
        print!("{}", t.render(style));
        print_legend(
            &[
                format!(
                    "M events/s = median over the rounds of each run's events/s; \
                     min–max = its lowest and highest round{spread_note}"
                ),
                "ratio = median over rounds of (ringbus events/s ÷ peer events/s) in the same \
                 round; >1 means ringbus is faster; ratio min–max = lowest and highest \
                 per-round ratio"
                    .to_string(),
                interleave.clone(),
                scenario_legend(&throughput),
            ],
            style,
        );
    }

    let latency: Vec<&Summary> = summary.iter().filter(|s| s.scenario.is_latency()).collect();
    if !latency.is_empty() {
        let mut t = Table::new(&[
            ("scenario", false),
            ("implementation", false),
            ("p50", true),
            ("p50 min–max", true),
            ("p99", true),
            ("p99.9", true),
            ("max", true),
            ("M events/s", true),
            ("p50 ratio", true),
            ("p50 ratio min–max", true),
            ("p99 ratio", true),
            ("mode", false),
        ]);
        for s in &latency {
            let (p50, p99, p999, max) = match &s.median_latency_ns {
                Some(p) => (fmt_ns(p.p50), fmt_ns(p.p99), fmt_ns(p.p999), fmt_ns(p.max)),
                None => Default::default(),
            };
            let ((r50, r50_spread), r99) = if s.implementation == Impl::Ringbus {
                (("—".to_string(), "—".to_string()), "—".to_string())
            } else {
                (
                    fmt_ratio(s.ringbus_p50_ratio_spread),
                    fmt_ratio(s.ringbus_p99_ratio_spread).0,
                )
            };
            t.row(vec![
                s.scenario.to_string(),
                s.implementation.to_string(),
                p50,
                match &s.p50_ns_spread {
                    Some(r) if s.rounds > 1 => fmt_ns_spread(r),
                    _ => "—".into(),
                },
                p99,
                p999,
                max,
                fmt_mrate(s.median_events_per_sec),
                r50,
                r50_spread,
                r99,
                mode_cell(s),
            ]);
        }
        println!("\nlatency\n");
        print!("{}", t.render(style));
        print_legend(
            &[
                format!(
                    "p50, p99, p99.9, max, M events/s = median over the rounds of each run's \
                     value; p50 min–max = lowest and highest p50 of a round{spread_note}"
                ),
                "p50 ratio = median over rounds of (ringbus p50 ÷ peer p50) in the same round; \
                 <1 means ringbus is faster; p50 ratio min–max = lowest and highest per-round \
                 ratio; p99 ratio likewise with p99"
                    .to_string(),
                interleave.clone(),
                scenario_legend(&latency),
            ],
            style,
        );
    }
}

/// The project's targets (issue #4) and whether this run met them.
pub fn print_targets(summary: &[Summary], style: Style) {
    let mut t = Table::new(&[
        ("scenario", false),
        ("measure", false),
        ("vs", false),
        ("ratio", true),
        ("ratio min–max", true),
        ("target", true),
        ("result", false),
    ]);
    for (sc, peer, what, bound, at_least) in TARGETS {
        let Some(s) = summary
            .iter()
            .find(|s| s.scenario == *sc && s.implementation == *peer)
        else {
            continue;
        };
        let value = match *what {
            "p50" => s.ringbus_p50_ratio_spread,
            "p99" => s.ringbus_p99_ratio_spread,
            _ => s.ringbus_throughput_ratio_spread,
        };
        let Some(v) = value else { continue };
        let met = if *at_least {
            v.median >= *bound
        } else {
            v.median <= *bound
        };
        let (ratio, spread) = fmt_ratio(Some(v));
        t.row(vec![
            sc.to_string(),
            what.to_string(),
            peer.to_string(),
            ratio,
            spread,
            format!("{} {bound}×", if *at_least { ">=" } else { "<=" }),
            if met { "met" } else { "MISSED" }.to_string(),
        ]);
    }
    if !t.rows.is_empty() {
        println!(
            "\nproject targets (issue #4; ratio as above: median over rounds of the per-round ratio)\n"
        );
        print!("{}", t.render(style));
    }
}

#[derive(Serialize)]
struct Report<'a> {
    rounds: usize,
    events_per_throughput_run: u64,
    events_per_latency_run: u64,
    interval_us: u128,
    capacity: usize,
    pinned_cores: Option<(usize, usize)>,
    /// `--family`: best (each library's best mode per row), spin, hint, sleep.
    family: &'static str,
    /// What the summary's medians, spreads and ratios are.
    legend: [&'static str; 3],
    summary: &'a [Summary],
    runs: &'a [Run],
}

pub fn write(
    dir: &Path,
    runs: &[Run],
    summary: &[Summary],
    cfg: &Config,
    rounds: usize,
) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let report = Report {
        rounds,
        events_per_throughput_run: cfg.events,
        events_per_latency_run: cfg.latency_events,
        interval_us: cfg.interval.as_micros(),
        capacity: cfg.capacity,
        pinned_cores: cfg.cores,
        family: cfg.family.id(),
        legend: [
            "median_*: median over the rounds; *_spread {min, max}: lowest and highest round",
            "ringbus_throughput_ratio: median over rounds of (ringbus events/s ÷ peer events/s) \
             in the same round; >1 means ringbus is faster",
            "ringbus_p50_ratio, ringbus_p99_ratio: median over rounds of (ringbus p50 ÷ peer p50), \
             resp. p99, in the same round; <1 means ringbus is faster",
        ],
        summary,
        runs,
    };
    fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    fs::write(dir.join("throughput.svg"), throughput_svg(summary))?;
    fs::write(dir.join("latency.svg"), latency_svg(summary))?;
    Ok(())
}

fn color(imp: Impl) -> &'static str {
    match imp {
        Impl::Ringbus => "#d62728",
        Impl::Disruptor => "#1f77b4",
        Impl::Crossbeam => "#2ca02c",
        Impl::StdMpsc => "#9467bd",
        Impl::Bare => "#7f7f7f",
        Impl::RingbusOneStage => "#ff9896",
        Impl::RingbusBlocking => "#8c564b",
        Impl::TokioBroadcast => "#e377c2",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars of the median, one group per throughput scenario, each
/// group scaled to its own maximum, with a min–max whisker over the rounds.
fn throughput_svg(summary: &[Summary]) -> String {
    let rows: Vec<&Summary> = summary
        .iter()
        .filter(|s| !s.scenario.is_latency())
        .collect();
    let mut scenarios: Vec<Scenario> = Vec::new();
    for s in &rows {
        if !scenarios.contains(&s.scenario) {
            scenarios.push(s.scenario);
        }
    }
    let rounds = rows.iter().map(|s| s.rounds).max().unwrap_or(0);
    let (left, bar_w, bar_h) = (190.0, 400.0, 16.0);
    let mut y = 60.0;
    let mut body = String::new();
    for sc in &scenarios {
        let group: Vec<&&Summary> = rows.iter().filter(|s| s.scenario == *sc).collect();
        let high = |s: &Summary| {
            s.events_per_sec_spread
                .map_or(s.median_events_per_sec, |r| r.max)
        };
        let max = group.iter().map(|s| high(s)).fold(0.0, f64::max);
        let x = |v: f64| {
            if max > 0.0 {
                v / max * bar_w
            } else {
                0.0
            }
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-weight="bold">{} — {}</text>"#,
            y + 12.0,
            sc,
            escape(sc.title())
        );
        y += 18.0;
        for s in group {
            let w = x(s.median_events_per_sec);
            let mid = y + bar_h / 2.0;
            let _ = writeln!(
                body,
                r#"<text x="20" y="{:.0}">{}</text><rect x="{left}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="{}"/>"#,
                y + 12.0,
                s.implementation,
                color(s.implementation),
            );
            let mut label = format!("{} M events/s", fmt_mrate(s.median_events_per_sec));
            if let Some(r) = s.events_per_sec_spread {
                let (lo, hi) = (left + x(r.min), left + x(r.max));
                let _ = writeln!(
                    body,
                    r##"<path d="M{lo:.1},{mid:.1}H{hi:.1}M{lo:.1},{:.1}V{:.1}M{hi:.1},{:.1}V{:.1}" stroke="#000" stroke-width="1" fill="none"/>"##,
                    mid - 4.0,
                    mid + 4.0,
                    mid - 4.0,
                    mid + 4.0,
                );
                if rounds > 1 {
                    label += &format!(" ({}–{})", fmt_mrate(r.min), fmt_mrate(r.max));
                }
            }
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}">{label}</text>"#,
                left + x(high(s)) + 6.0,
                y + 12.0,
            );
            y += bar_h + 4.0;
        }
        y += 10.0;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="820" height="{:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold">Throughput, M events/s (median over {rounds} round(s); longer is better)</text><text x="10" y="38" fill="#444">Each scenario scaled to its own maximum: bar lengths compare only within a scenario. Whisker: min–max over the rounds.</text>
{body}</svg>
"##,
        y + 10.0
    )
}

/// One unit for a whole chart: µs when the largest value reaches 100 µs,
/// else ns. Returns (divisor from ns, name).
fn chart_unit(max_ns: u64) -> (f64, &'static str) {
    if max_ns >= 100_000 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    }
}

/// Percentile curves (log-scaled latency) per latency scenario, from the
/// histograms merged over all rounds; at p50, a bar per implementation spans
/// the lowest to highest p50 of a round.
fn latency_svg(summary: &[Summary]) -> String {
    const QUANTILES: [(f64, &str); 6] = [
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (0.9999, "p99.99"),
        (1.0, "max"),
    ];
    let rows: Vec<&Summary> = summary.iter().filter(|s| s.merged.is_some()).collect();
    let mut scenarios: Vec<Scenario> = Vec::new();
    for s in &rows {
        if !scenarios.contains(&s.scenario) {
            scenarios.push(s.scenario);
        }
    }
    let all_max = rows
        .iter()
        .filter_map(|s| s.merged.as_ref())
        .map(|h| h.max())
        .max()
        .unwrap_or(1);
    let (div, unit) = chart_unit(all_max);
    let rounds = rows.iter().map(|s| s.rounds).max().unwrap_or(0);
    let (pw, ph, left, top) = (560.0, 260.0, 90.0, 80.0);
    let mut body = String::new();
    for (k, sc) in scenarios.iter().enumerate() {
        let y0 = top + k as f64 * (ph + 80.0);
        let group: Vec<&&Summary> = rows.iter().filter(|s| s.scenario == *sc).collect();
        let values: Vec<u64> = group
            .iter()
            .filter_map(|s| s.merged.as_ref())
            .flat_map(|h| {
                QUANTILES
                    .iter()
                    .map(move |(q, _)| h.value_at_quantile(*q).max(1))
            })
            .chain(
                group
                    .iter()
                    .filter_map(|s| s.p50_ns_spread)
                    .flat_map(|r| [r.min.max(1.0) as u64, r.max.max(1.0) as u64]),
            )
            .collect();
        let lo = (*values.iter().min().unwrap_or(&1) as f64).log10().floor();
        let hi = (*values.iter().max().unwrap_or(&10) as f64)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let ypos = |ns: f64| y0 + ph - (ns.max(1.0).log10() - lo) / (hi - lo) * ph;
        let xpos = |i: usize| left + i as f64 * pw / (QUANTILES.len() - 1) as f64;
        let _ = writeln!(
            body,
            r##"<text x="10" y="{:.0}" font-weight="bold">{} — {} ({unit}, log scale; lower is better)</text><rect x="{left}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
            y0 - 14.0,
            sc,
            escape(sc.title())
        );
        for d in lo as i32..=hi as i32 {
            let ns = 10f64.powi(d);
            let _ = writeln!(
                body,
                r##"<line x1="{left}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.0}" y="{:.1}" text-anchor="end">{} {unit}</text>"##,
                left + pw,
                left - 6.0,
                ypos(ns) + 4.0,
                ns / div,
                y = ypos(ns)
            );
        }
        for (i, (_, label)) in QUANTILES.iter().enumerate() {
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">{label}</text>"#,
                xpos(i),
                y0 + ph + 20.0
            );
        }
        for (j, s) in group.iter().enumerate() {
            let Some(h) = &s.merged else { continue };
            let c = color(s.implementation);
            let points: Vec<String> = QUANTILES
                .iter()
                .enumerate()
                .map(|(i, (q, _))| {
                    format!("{:.1},{:.1}", xpos(i), ypos(h.value_at_quantile(*q) as f64))
                })
                .collect();
            let _ = writeln!(
                body,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/><text x="{:.0}" y="{:.0}" fill="{c}">{}</text>"#,
                points.join(" "),
                left + pw + 10.0,
                y0 + 14.0 + j as f64 * 16.0,
                s.implementation,
            );
            if let (Some(r), true) = (s.p50_ns_spread, rounds > 1) {
                let x = xpos(0) + 6.0 + j as f64 * 5.0;
                let _ = writeln!(
                    body,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/>"#,
                    ypos(r.min),
                    ypos(r.max)
                );
            }
        }
    }
    let height = top + scenarios.len() as f64 * (ph + 80.0);
    let spread = if rounds > 1 {
        " Bars beside p50: lowest to highest p50 of a round."
    } else {
        ""
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{height:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold">Latency percentiles, {unit} (histograms of {rounds} round(s) merged)</text><text x="10" y="38" fill="#444">Each scenario on its own log scale.{spread}</text>
{body}</svg>
"##
    )
}
