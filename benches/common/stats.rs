//! The figures every bench reports over its rounds: the median, the spread
//! (min–max) and per-round ratios. Each bench is a crate of its own and
//! takes this file in with `#[path = ".../common/stats.rs"] mod stats;`.
#![allow(dead_code)] // each bench uses a part

/// The median; with an even count, the mean of the middle two; NaN when
/// there is nothing.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[m],
        _ => (v[m - 1] + v[m]) / 2.0,
    }
}

/// The lowest and highest value, NaNs left out; `None` when none is left.
pub fn spread(v: &[f64]) -> Option<(f64, f64)> {
    let mut it = v.iter().copied().filter(|x| !x.is_nan());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

/// Per-round ratios as the benches' tables print them: the median and its
/// spread, `1.23x (1.10-1.40)`.
pub fn ratio_cell(ratios: &[f64]) -> String {
    let (lo, hi) = spread(ratios).unwrap_or((f64::NAN, f64::NAN));
    format!("{:.2}x ({lo:.2}-{hi:.2})", median(ratios))
}
