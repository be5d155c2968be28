//! The comparison's outputs: the printed table, report.json, and two SVG
//! charts (throughput per scenario; latency percentile curves).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::common::{Config, Impl, Sample, Scenario};

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

/// Medians over the rounds of one implementation in one scenario, and the
/// median of the per-round ratios of ringbus to it.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub title: &'static str,
    pub implementation: Impl,
    pub mode: &'static str,
    pub pinned: bool,
    pub median_events_per_sec: f64,
    pub median_latency_ns: Option<Percentiles>,
    /// Throughput: ringbus ÷ this (higher is better for ringbus).
    pub ringbus_throughput_ratio: Option<f64>,
    /// Latency: ringbus p50 ÷ this p50 (lower is better for ringbus).
    pub ringbus_p50_ratio: Option<f64>,
    /// Latency: ringbus p99 ÷ this p99.
    pub ringbus_p99_ratio: Option<f64>,
    #[serde(skip)]
    pub merged: Option<Histogram<u64>>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Median of `f(ringbus run, peer run)` over the rounds both ran.
fn paired(runs: &[&Run], rb: &[&Run], f: impl Fn(&Run, &Run) -> f64) -> Option<f64> {
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|r| rb.iter().find(|b| b.round == r.round).map(|b| f(b, r)))
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
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
                median(
                    mine.iter()
                        .filter_map(|r| r.latency_ns.as_ref())
                        .map(|p| f(p) as f64)
                        .collect(),
                ) as u64
            };
            let median_latency_ns = first.latency_ns.map(|_| Percentiles {
                p50: lat(|p| p.p50),
                p90: lat(|p| p.p90),
                p99: lat(|p| p.p99),
                p999: lat(|p| p.p999),
                max: lat(|p| p.max),
            });
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
            out.push(Summary {
                scenario: *sc,
                title: sc.title(),
                implementation: *imp,
                mode: first.mode,
                pinned: first.pinned,
                median_events_per_sec: median(mine.iter().map(|r| r.events_per_sec).collect()),
                median_latency_ns,
                ringbus_throughput_ratio: paired(&mine, &rb, |b, r| {
                    b.events_per_sec / r.events_per_sec
                }),
                ringbus_p50_ratio: if is_latency {
                    lat_ratio(|p| p.p50)
                } else {
                    None
                },
                ringbus_p99_ratio: if is_latency {
                    lat_ratio(|p| p.p99)
                } else {
                    None
                },
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
    (Scenario::Latency, Impl::Disruptor, "p50", 0.8, false),
    (Scenario::Latency, Impl::Disruptor, "p99", 0.8, false),
];

fn fmt_rate(r: f64) -> String {
    format!("{:.1} M/s", r / 1e6)
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 10_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

pub fn print_table(summary: &[Summary], cfg: &Config, rounds: usize, cores: usize) {
    println!(
        "\nringbus comparison: {rounds} interleaved round(s); {} events per throughput run, \
         {} per latency run; capacity {}; {cores} core(s); pinning {}",
        cfg.events,
        cfg.latency_events,
        cfg.capacity,
        if cfg.cores.is_some() {
            "where threads <= cores"
        } else {
            "off"
        }
    );
    println!(
        "\n| scenario | implementation | mode | events/s | p50 | p99 | p99.9 | max | ringbus ÷ it |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in summary {
        let (p50, p99, p999, max) = match &s.median_latency_ns {
            Some(p) => (fmt_ns(p.p50), fmt_ns(p.p99), fmt_ns(p.p999), fmt_ns(p.max)),
            None => Default::default(),
        };
        let ratio = if s.implementation == Impl::Ringbus {
            "—".to_string()
        } else if s.scenario.is_latency() {
            format!(
                "p50 {:.2}×, p99 {:.2}×, rate {:.2}×",
                s.ringbus_p50_ratio.unwrap_or(f64::NAN),
                s.ringbus_p99_ratio.unwrap_or(f64::NAN),
                s.ringbus_throughput_ratio.unwrap_or(f64::NAN)
            )
        } else {
            format!("{:.2}×", s.ringbus_throughput_ratio.unwrap_or(f64::NAN))
        };
        println!(
            "| {} | {} | {}{} | {} | {p50} | {p99} | {p999} | {max} | {ratio} |",
            s.title,
            s.implementation.id(),
            s.mode,
            if s.pinned && !s.mode.contains("pinned") {
                ", pinned"
            } else {
                ""
            },
            fmt_rate(s.median_events_per_sec),
        );
    }
    println!("\ntargets (median of per-round ratios):");
    for (sc, peer, what, bound, at_least) in TARGETS {
        let Some(s) = summary
            .iter()
            .find(|s| s.scenario == *sc && s.implementation == *peer)
        else {
            continue;
        };
        let value = match *what {
            "p50" => s.ringbus_p50_ratio,
            "p99" => s.ringbus_p99_ratio,
            _ => s.ringbus_throughput_ratio,
        };
        let Some(v) = value else { continue };
        let met = if *at_least { v >= *bound } else { v <= *bound };
        println!(
            "  {:<24} {what:<10} vs {:<18} {v:>6.2}×  (target {} {bound}×)  {}",
            sc.title(),
            peer.id(),
            if *at_least { ">=" } else { "<=" },
            if met { "met" } else { "MISSED" }
        );
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
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars, one group per throughput scenario, scaled to the group's
/// fastest implementation.
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
    let (left, bar_w, bar_h) = (190.0, 420.0, 16.0);
    let mut y = 40.0;
    let mut body = String::new();
    for sc in &scenarios {
        let group: Vec<&&Summary> = rows.iter().filter(|s| s.scenario == *sc).collect();
        let max = group
            .iter()
            .map(|s| s.median_events_per_sec)
            .fold(0.0, f64::max);
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-weight="bold">{}</text>"#,
            y + 12.0,
            escape(sc.title())
        );
        y += 18.0;
        for s in group {
            let w = if max > 0.0 {
                s.median_events_per_sec / max * bar_w
            } else {
                0.0
            };
            let _ = writeln!(
                body,
                r#"<text x="20" y="{:.0}">{}</text><rect x="{left}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="{}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
                y + 12.0,
                s.implementation.id(),
                color(s.implementation),
                left + w + 6.0,
                y + 12.0,
                fmt_rate(s.median_events_per_sec)
            );
            y += bar_h + 4.0;
        }
        y += 10.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold">Throughput (median events/s; longer is better)</text>
{body}</svg>
"#,
        y + 10.0
    )
}

/// Percentile curves (log-scaled latency) per latency scenario, from the
/// histograms merged over all rounds.
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
    let (pw, ph, left, top) = (560.0, 260.0, 80.0, 50.0);
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
            .collect();
        let lo = (*values.iter().min().unwrap_or(&1) as f64).log10().floor();
        let hi = (*values.iter().max().unwrap_or(&10) as f64)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let ypos = |ns: u64| y0 + ph - ((ns.max(1) as f64).log10() - lo) / (hi - lo) * ph;
        let xpos = |i: usize| left + i as f64 * pw / (QUANTILES.len() - 1) as f64;
        let _ = writeln!(
            body,
            r##"<text x="10" y="{:.0}" font-weight="bold">{} (ns, log scale; lower is better)</text><rect x="{left}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
            y0 - 8.0,
            escape(sc.title())
        );
        for d in lo as i32..=hi as i32 {
            let ns = 10f64.powi(d) as u64;
            let _ = writeln!(
                body,
                r##"<line x1="{left}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                ypos(ns) + 4.0,
                fmt_ns(ns),
                y = ypos(ns)
            );
        }
        for (i, (_, label)) in QUANTILES.iter().enumerate() {
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">{label}</text>"#,
                xpos(i),
                y0 + ph + 16.0
            );
        }
        for (j, s) in group.iter().enumerate() {
            let Some(h) = &s.merged else { continue };
            let points: Vec<String> = QUANTILES
                .iter()
                .enumerate()
                .map(|(i, (q, _))| format!("{:.1},{:.1}", xpos(i), ypos(h.value_at_quantile(*q))))
                .collect();
            let _ = writeln!(
                body,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/><text x="{:.0}" y="{:.0}" fill="{c}">{}</text>"#,
                points.join(" "),
                left + pw + 10.0,
                y0 + 14.0 + j as f64 * 16.0,
                s.implementation.id(),
                c = color(s.implementation)
            );
        }
    }
    let height = top + scenarios.len() as f64 * (ph + 80.0);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="780" height="{height:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold">Latency percentiles (all rounds merged)</text>
{body}</svg>
"#
    )
}
