//! The comparison run: `ringbus` against the `disruptor` crate,
//! crossbeam-channel and (for SPSC) `std::sync::mpsc`, interleaved round by
//! round on the same machine, with every run's result checked. A bare ring
//! (`bare.rs`, the same design without a library) runs beside them on the
//! throughput rows, a yardstick for what the library's own code costs.
//!
//! ```sh
//! cargo bench --bench compare                      # all scenarios, ~2 minutes
//! cargo bench --bench compare -- --scenarios spsc,latency --rounds 9
//! cargo bench --bench compare -- --quick           # tiny smoke run (CI)
//! cargo bench --bench compare -- --markdown        # tables as Markdown
//! cargo bench --bench compare -- --help
//! ```

mod bare;
mod chan;
mod common;
mod dis;
mod rb;
mod report;
#[path = "../common/stats.rs"]
mod stats;
mod tokb;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use common::{Config, Impl, Sample, Scenario};

const HELP: &str = "\
compare: ringbus vs disruptor vs crossbeam-channel (vs std mpsc on SPSC), beside a bare ring

options:
  --scenarios a,b,..   spsc batch64 mp2 mp3 pipeline multicast diamond pipeline-1t
                       diamond-1t fanout latency pingpong
                       (default: all)
  --impls a,b,..       ringbus disruptor crossbeam-channel std-mpsc bare-ring
                       ringbus-1-stage ringbus-blocking tokio-broadcast (default: all;
                       bare-ring is the design without a library, a yardstick,
                       on the throughput rows; ringbus-1-stage is ringbus's
                       pinned SPSC run, beside the rows whose stages share one
                       thread; ringbus-blocking is ringbus with Blocking on the
                       rows with more threads than cores)
  --events N           events per throughput run (default 10000000)
  --latency-events N   events or round trips per latency run (default 100000)
  --interval-us N      gap between idle-latency events, µs (default 5)
  --rounds N           interleaved rounds (default 7)
  --capacity N         ring / channel capacity (default 65536)
  --no-pin             do not pin threads, even where threads <= cores
  --oversubscribed S   ringbus's strategy where threads > cores: auto (default:
                       sleeping, measured best for every such row), yielding,
                       blocking, phased, sleeping (1 µs, no spin, as the
                       disruptor crate's Sleep), yield-then-sleep
  --family F           how both libraries wait on every row: best (default: each
                       library's best mode per row, as measured on 2 cores: busy spin
                       on the two-thread rows, 1 µs naps on the others), spin (plain
                       busy spin everywhere), hint
                       (busy spin with a spin-loop hint), sleep (1 µs naps everywhere);
                       channels and the bare ring have no such choice
  --out DIR            report folder (default target/compare/<unix time>); the
                       link target/compare/latest is pointed at it after the run
  --markdown           print the tables as Markdown (default: aligned plain text)
  --targets            also print the project's performance targets and whether each was met
  --quick              tiny sizes, one round: a smoke test, not a measurement

The table shows the median over rounds and its spread (min–max over rounds);
ratios are ringbus ÷ peer per round (same round, runs interleaved), median
over rounds.
";

struct Args {
    scenarios: Vec<Scenario>,
    impls: Vec<Impl>,
    rounds: usize,
    pin: bool,
    out: Option<PathBuf>,
    markdown: bool,
    targets: bool,
    config: Config,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        scenarios: Scenario::ALL.to_vec(),
        impls: Impl::ALL.to_vec(),
        rounds: 7,
        pin: true,
        out: None,
        markdown: false,
        targets: false,
        config: Config {
            events: 10_000_000,
            latency_events: 100_000,
            interval: Duration::from_micros(5),
            capacity: 1 << 16,
            cores: None,
            oversubscribed: rb::Oversubscribed::Auto,
            family: common::Family::Best,
        },
    };
    let mut p = lexopt::Parser::from_env();
    // A count, `_` allowed as a digit separator (`10_000_000`).
    let number = |p: &mut lexopt::Parser| -> Result<u64, lexopt::Error> {
        p.value()?.parse_with(|s| s.replace('_', "").parse::<u64>())
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("bench") => {} // passed by `cargo bench`
            Long("help") | Short('h') => {
                print!("{HELP}");
                std::process::exit(0);
            }
            Long("scenarios") => {
                args.scenarios = p.value()?.parse_with(|list| {
                    list.split(',')
                        .map(|s| pick(s, "scenario", &Scenario::ALL, Scenario::id))
                        .collect::<Result<_, _>>()
                })?
            }
            Long("impls") => {
                args.impls = p.value()?.parse_with(|list| {
                    list.split(',')
                        .map(|s| pick(s, "implementation", &Impl::ALL, Impl::id))
                        .collect::<Result<_, _>>()
                })?
            }
            Long("events") => args.config.events = number(&mut p)?,
            Long("latency-events") => args.config.latency_events = number(&mut p)?,
            Long("interval-us") => args.config.interval = Duration::from_micros(number(&mut p)?),
            Long("rounds") => args.rounds = number(&mut p)?.max(1) as usize,
            Long("capacity") => args.config.capacity = number(&mut p)? as usize,
            Long("no-pin") => args.pin = false,
            Long("oversubscribed") => {
                args.config.oversubscribed = p.value()?.parse_with(|s| {
                    rb::Oversubscribed::parse(s).ok_or(format!(
                        "unknown strategy `{s}`: auto, yielding, blocking, phased, sleeping, \
                         yield-then-sleep"
                    ))
                })?
            }
            Long("family") => {
                args.config.family = p
                    .value()?
                    .parse_with(|s| pick(s, "family", &common::Family::ALL, common::Family::id))?
            }
            Long("out") => args.out = Some(p.value()?.into()),
            Long("markdown") => args.markdown = true,
            Long("targets") => args.targets = true,
            Long("quick") => {
                args.config.events = 200_000;
                args.config.latency_events = 2_000;
                args.rounds = 1;
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if args.config.family != common::Family::Best
        && args.config.oversubscribed != rb::Oversubscribed::Auto
    {
        return Err(
            "--oversubscribed chooses ringbus's mode in --family best only; \
                    the other families set it"
                .into(),
        );
    }
    if !args.config.capacity.is_power_of_two() {
        return Err("--capacity must be a power of two".into());
    }
    Ok(args)
}

/// The one of `all` whose `id` is `name`.
fn pick<T: Copy>(
    name: &str,
    what: &str,
    all: &[T],
    id: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|&x| id(x) == name).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&x| id(x)).collect();
        format!("unknown {what} `{name}`; one of: {}", names.join(", "))
    })
}

fn run_one(imp: Impl, sc: Scenario, cfg: &Config, pins: Option<(usize, usize)>) -> Sample {
    match imp {
        Impl::Ringbus => rb::run(sc, cfg, pins),
        Impl::Disruptor => dis::run(sc, cfg, pins),
        Impl::Crossbeam => chan::run(sc, cfg, pins),
        Impl::StdMpsc => chan::run_std(cfg, pins),
        Impl::Bare => bare::run(sc, cfg, pins),
        Impl::RingbusOneStage => rb::one_stage(cfg, pins),
        Impl::RingbusBlocking => rb::blocking(sc, cfg, pins),
        Impl::TokioBroadcast => tokb::run(sc, cfg),
    }
}

fn main() {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare: {e}; see --help");
            std::process::exit(2);
        }
    };
    // Read the core list once, before any thread pins itself.
    let cores = ringbus::available_cores().to_vec();
    if args.pin && cores.len() >= 2 {
        args.config.cores = Some((cores[0], cores[1]));
    }
    let cfg = &args.config;
    let plan: Vec<(Scenario, Vec<Impl>)> = args
        .scenarios
        .iter()
        .map(|&sc| {
            (
                sc,
                args.impls.iter().copied().filter(|i| i.runs(sc)).collect(),
            )
        })
        .collect();
    let total: usize = plan.iter().map(|(_, imps)| imps.len() * args.rounds).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );

    let mut runs = Vec::new();
    for (sc, imps) in &plan {
        let pins = cfg.pin_for(*sc, cores.len());
        for round in 0..args.rounds {
            // A B C, A B C, ...: peers measured side by side in every round.
            for &imp in imps {
                bar.set_message(format!("{} / {} / round {}", sc.id(), imp.id(), round + 1));
                let sample = run_one(imp, *sc, cfg, pins);
                // The disruptor crate cannot share a thread: it runs the
                // graph of a `-1t` row on a thread per stage, unpinned.
                let pinned =
                    pins.is_some() && sc.pins() && !(sc.one_thread() && imp == Impl::Disruptor);
                runs.push(report::Run::new(*sc, imp, round, pinned, &sample));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("target/compare/{stamp}"))
    });
    let summary = report::summarize(&runs, &plan);
    let style = if args.markdown {
        report::Style::Markdown
    } else {
        report::Style::Plain
    };
    report::print_table(&summary, cfg, args.rounds, cores.len(), style);
    if args.targets {
        report::print_targets(&summary, style);
    }
    match report::write(&out, &runs, &summary, cfg, args.rounds) {
        Ok(()) => {
            println!(
                "\nreport: {}/report.json, {0}/throughput.svg, {0}/latency.svg",
                out.display()
            );
            match link_latest(&out) {
                Ok(Some((link, to))) => {
                    println!("latest: {} -> {}", link.display(), to.display())
                }
                Ok(None) => {}
                Err(e) => eprintln!("compare: could not point {LATEST} at the report: {e}"),
            }
        }
        Err(e) => {
            eprintln!(
                "compare: could not write the report to {}: {e}",
                out.display()
            );
            std::process::exit(1);
        }
    }
}

/// The stable name of the newest report folder.
const LATEST: &str = "target/compare/latest";

/// Points `target/compare/latest` at `out`: a relative link when `out` is
/// inside target/compare, else the absolute path. The link is made under a
/// temporary name and renamed over the old one, so it never dangles midway.
/// Refuses to replace a `latest` that is not a symlink. Returns the link and
/// where it points, `None` where symlinks are not supported here.
fn link_latest(out: &Path) -> std::io::Result<Option<(PathBuf, PathBuf)>> {
    let link = PathBuf::from(LATEST);
    let parent = link.parent().expect("LATEST has a parent");
    fs::create_dir_all(parent)?;
    let out_abs = fs::canonicalize(out)?;
    let parent_abs = fs::canonicalize(parent)?;
    let to = match out_abs.strip_prefix(&parent_abs) {
        Ok(rel) if rel.as_os_str().is_empty() => out_abs.clone(),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => out_abs.clone(),
    };
    if let Ok(meta) = fs::symlink_metadata(&link) {
        if !meta.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a symlink; left alone",
                link.display()
            )));
        }
    }
    #[cfg(unix)]
    {
        let tmp = parent.join(format!(".latest.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&to, &tmp)?;
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Some((link, to)))
    }
    #[cfg(not(unix))]
    {
        let _ = to;
        Ok(None)
    }
}
