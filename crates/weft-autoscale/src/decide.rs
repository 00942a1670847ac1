//! The horizontal decision: current state + metrics + policy + now → desired replicas + reason.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use weft_api::kinds::autoscaler::{MetricType, PolicyType, SelectPolicy};

use crate::Time;
use crate::observe::Observation;
use crate::policy::{Policy, Rules};

/// What the autoscaler remembers between decisions about one deployment: its recent
/// recommendations (for stabilization), its scale events (for rate policies and cooldowns),
/// burst mode, and how long traffic has been absent. One per autoscaler; start with
/// [`ScalerState::new`].
///
/// [`decide`] records its own decision as applied. If the caller could not apply it, the next
/// observation's `current_replicas` says so and decisions carry on from there.
#[derive(Clone, Debug, Default)]
pub struct ScalerState {
    recommendations: VecDeque<(Time, u32)>,
    /// (when, replicas added (+) or removed (-)).
    events: VecDeque<(Time, i64)>,
    last_up: Option<Time>,
    last_down: Option<Time>,
    /// The last time the burst condition held.
    burst_at: Option<Time>,
    /// Since when traffic data has been present and all zero over the stable window.
    quiet_since: Option<Time>,
    /// The first decision. A young state has no recommendation history, so it assumes the
    /// current count was recommended before it started: a restarted controller does not scale
    /// on a few seconds of data.
    since: Option<Time>,
}

impl ScalerState {
    pub fn new() -> ScalerState {
        ScalerState::default()
    }

    /// Whether burst mode holds at `now` (the condition held less than a stable window ago).
    pub fn in_burst(&self, policy: &Policy, now: Time) -> bool {
        self.burst_at.is_some_and(|t| now < t + policy.stable_window)
    }

    /// The last scale event in each direction, as (up, down).
    pub fn last_scale(&self) -> (Option<Time>, Option<Time>) {
        (self.last_up, self.last_down)
    }

    fn prune(&mut self, policy: &Policy, now: Time) {
        let keep = policy.scale_up.stabilization_window.max(policy.scale_down.stabilization_window);
        if let Some(cut) = now.checked_sub(keep) {
            while self.recommendations.front().is_some_and(|(t, _)| *t <= cut) {
                self.recommendations.pop_front();
            }
        }
        let period = [&policy.scale_up, &policy.scale_down]
            .iter()
            .flat_map(|r| r.policies.iter().map(|p| p.period))
            .max()
            .unwrap_or_default();
        if let Some(cut) = now.checked_sub(period) {
            while self.events.front().is_some_and(|(t, _)| *t <= cut) {
                self.events.pop_front();
            }
        }
    }

    fn track_traffic(&mut self, obs: &Observation, policy: &Policy, now: Time) {
        let mut present = false;
        let mut complete = true;
        let mut busy = obs.poked;
        for m in [MetricType::Rps, MetricType::Concurrency] {
            if let Some(r) = obs.reading(m) {
                present = true;
                complete &= r.missing == 0 && r.span >= policy.stable_window;
                busy |= r.stable > QUIET || r.burst > QUIET;
            }
        }
        if busy || !present || !complete {
            self.quiet_since = None;
        } else {
            self.quiet_since.get_or_insert(now);
        }
    }

    fn scaled(&mut self, from: u32, to: u32, now: Time) {
        use std::cmp::Ordering::*;
        match to.cmp(&from) {
            Greater => self.last_up = Some(now),
            Less => self.last_down = Some(now),
            Equal => return,
        }
        self.events.push_back((now, i64::from(to) - i64::from(from)));
    }

    /// Replicas (added, removed) within `period` before `now`.
    fn changes_within(&self, period: Duration, now: Time) -> (i64, i64) {
        let cut = now.checked_sub(period);
        let (mut added, mut removed) = (0, 0);
        for &(t, d) in self.events.iter().rev() {
            if cut.is_some_and(|c| t <= c) {
                break;
            }
            if d > 0 {
                added += d;
            } else {
                removed -= d;
            }
        }
        (added, removed)
    }

    /// The most replicas the scale-up policies allow now (the HPA's rule).
    fn up_limit(&self, current: u32, rules: &Rules, now: Time) -> u32 {
        let mut out: Option<i64> = None;
        for p in &rules.policies {
            let (added, removed) = self.changes_within(p.period, now);
            let start = (i64::from(current) - added + removed).max(0);
            let v = i64::from(p.value);
            let proposed = match p.kind {
                PolicyType::Instances => start + v,
                PolicyType::Percent => (start as f64 * (1.0 + v as f64 / 100.0)).ceil() as i64,
            };
            out = Some(match (out, rules.select) {
                (None, _) => proposed,
                (Some(o), SelectPolicy::Min) => o.min(proposed),
                (Some(o), _) => o.max(proposed),
            });
        }
        clamp_u32(out.unwrap_or(i64::from(current)))
    }

    /// The fewest replicas the scale-down policies allow now (the HPA's rule).
    fn down_limit(&self, current: u32, rules: &Rules, now: Time) -> u32 {
        let mut out: Option<i64> = None;
        for p in &rules.policies {
            let (added, removed) = self.changes_within(p.period, now);
            let start = (i64::from(current) - added + removed).max(0);
            let v = i64::from(p.value);
            let proposed = match p.kind {
                PolicyType::Instances => start - v,
                PolicyType::Percent => (start as f64 * (1.0 - v as f64 / 100.0)).floor() as i64,
            };
            out = Some(match (out, rules.select) {
                (None, _) => proposed,
                (Some(o), SelectPolicy::Min) => o.max(proposed),
                (Some(o), _) => o.min(proposed),
            });
        }
        clamp_u32(out.unwrap_or(i64::from(current)))
    }
}

/// Below this, a traffic total counts as none.
const QUIET: f64 = 1e-9;

fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

/// `ceil`, forgiving floating-point noise (`3.0000000001` is 3).
fn ceil_count(x: f64) -> u32 {
    if x.is_nan() {
        return 0;
    }
    (x - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Stable or burst: which mode the decision was taken in (`status.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Stable,
    Burst,
}

impl Mode {
    /// As `status.mode` spells it: `stable` or `panic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stable => "stable",
            Mode::Burst => "panic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "scale-up",
            Direction::Down => "scale-down",
        })
    }
}

/// The metric that drove a decision, as observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Basis {
    pub metric: MetricType,
    /// The window the value was averaged over.
    pub window: Duration,
    /// Average per reporting instance.
    pub per_instance: f64,
    /// Target per instance.
    pub target: f64,
    /// For utilisation targets, the per-instance request the percentages are of.
    pub request: Option<f64>,
    /// Replicas this metric alone asks for (HPA math).
    pub proposal: u32,
}

/// What kept a decision from following the metrics all the way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// The most conservative recommendation over the window.
    Stabilization {
        direction: Direction,
        window: Duration,
        recommendation: u32,
    },
    Cooldown {
        direction: Direction,
        remaining: Duration,
    },
    /// A rate policy allows no further than `limit` now.
    Rate {
        direction: Direction,
        limit: u32,
    },
    /// `selectPolicy: Disabled`.
    Disabled {
        direction: Direction,
    },
    MinReplicas(u32),
    MaxReplicas(u32),
}

/// Why a decision came out as it did. `Display` gives the sentence for `status.decisions`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reason {
    /// A request arrived while at zero.
    Poked,
    /// At zero with no request waiting.
    Idle,
    BelowMin(u32),
    AboveMax(u32),
    /// No instance reported any metric the policy uses: hold (never scale on missing data).
    NoMetrics,
    /// Some metrics are missing and the others ask for fewer replicas: hold, as the HPA does.
    MissingMetrics {
        basis: Basis,
    },
    /// The metrics ask for the current count (or are within the tolerance).
    Steady {
        basis: Basis,
    },
    /// The metrics ask for a change; `limit` says what held it back, if anything.
    Metrics {
        basis: Basis,
        limit: Option<Limit>,
    },
    /// Burst mode scaled up at once: the burst window asked for at least `threshold` × current
    /// replicas now (`triggered`), or did less than a burst window ago.
    Burst {
        basis: Basis,
        threshold: f64,
        triggered: bool,
    },
    /// Burst mode: no scaling down until a stable window passes without a burst.
    BurstHold {
        basis: Basis,
        calm_in: Duration,
    },
    /// The stable window is not yet full of data (the controller or the deployment just
    /// started): only bursts and pokes act.
    Warming {
        basis: Basis,
        span: Duration,
    },
    /// No traffic over the stable window for the grace period.
    ScaleToZero {
        idle: Duration,
    },
}

/// The outcome of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// `current_replicas` when deciding.
    pub from: u32,
    /// Desired replicas.
    pub replicas: u32,
    pub mode: Mode,
    pub reason: Reason,
}

impl Decision {
    /// Whether the decision changes the replica count.
    pub fn changed(&self) -> bool {
        self.replicas != self.from
    }
}

struct Proposal {
    replicas: u32,
    basis: Basis,
}

/// Decides the replica count for one deployment. Pure apart from `state`, which it updates
/// (recommendation history, scale events, burst mode, quiet time); the clock is `now`.
///
/// In order: at zero, a poke scales to 1 at once; out-of-range counts are brought to
/// min/max; each metric proposes `ceil(current × usage / target)` with the HPA's handling of
/// missing and not-ready instances, and the largest proposal wins. A burst-window proposal of at
/// least `threshold × current` starts a surge: for a burst window after it, the larger of the
/// burst and stable proposals scales up at once (no cooldown, stabilization or rate policy),
/// and for a stable window after it nothing scales down (burst mode). Otherwise the stable
/// proposal, once the stable window is full of data, goes through stabilization (scale-up
/// takes the lowest recommendation over its window, scale-down the highest), the direction's
/// cooldown, its rate policies, and min/max. With `min_replicas` 0, no traffic over a full
/// stable window for the grace period scales to zero.
pub fn decide(state: &mut ScalerState, obs: &Observation, policy: &Policy, now: Time) -> Decision {
    let cur = obs.current_replicas;
    let since = *state.since.get_or_insert(now);
    state.prune(policy, now);
    state.track_traffic(obs, policy, now);
    let done = |state: &mut ScalerState, replicas: u32, mode: Mode, reason: Reason| {
        state.scaled(cur, replicas, now);
        Decision { from: cur, replicas, mode, reason }
    };

    if cur == 0 {
        if policy.min_replicas > 0 {
            let min = policy.min_replicas;
            return done(state, min, Mode::Stable, Reason::BelowMin(min));
        }
        if obs.poked {
            return done(state, 1, Mode::Stable, Reason::Poked);
        }
        return done(state, 0, Mode::Stable, Reason::Idle);
    }
    if cur > policy.max_replicas {
        let max = policy.max_replicas;
        return done(state, max, Mode::Stable, Reason::AboveMax(max));
    }
    if cur < policy.min_replicas {
        let min = policy.min_replicas;
        return done(state, min, Mode::Stable, Reason::BelowMin(min));
    }

    let stable = propose(obs, policy, cur, Figure::Stable);
    let mut burst = None;
    let mut triggered = false;
    if let Some(b) = policy.burst {
        // The burst window's average triggers, or the newest rounds' (a step shows there a
        // round or two before it moves the window's average enough); the larger sizes the
        // surge.
        let window = propose(obs, policy, cur, Figure::Burst).best;
        let recent = propose(obs, policy, cur, Figure::Recent).best;
        burst = match (window, recent) {
            (Some(w), Some(r)) => Some(if r.replicas > w.replicas { r } else { w }),
            (w, r) => w.or(r),
        };
        if let Some(p) = &burst
            && f64::from(p.replicas) >= b.threshold * f64::from(cur)
        {
            state.burst_at = Some(now);
            triggered = true;
        }
    }
    let in_burst = state.in_burst(policy, now);
    // Burst mode scales up at once for as long as it lasts (as Knative's panic mode does): a
    // surge that outgrows the first scale-up follows it without cooldown or rate policy.
    let surging = in_burst;
    let mode = if in_burst { Mode::Burst } else { Mode::Stable };
    let (floor, max) = (policy.floor(), policy.max_replicas);
    let warm = stable.span >= policy.stable_window;
    if let Some(p) = &stable.best
        && warm
    {
        state.recommendations.push_back((now, p.replicas.clamp(floor, max)));
    }

    if policy.min_replicas == 0
        && !in_burst
        && policy.scale_down.select != SelectPolicy::Disabled
        && let Some(q) = state.quiet_since
        && now >= q + policy.scale_to_zero_grace
    {
        let idle = now - q + policy.stable_window;
        return done(state, 0, mode, Reason::ScaleToZero { idle });
    }

    if surging {
        let best = match (&stable.best, &burst) {
            (Some(a), Some(b)) => Some(if b.replicas > a.replicas { b } else { a }),
            (a, b) => a.as_ref().or(b.as_ref()),
        };
        if let Some(best) = best
            && best.replicas.min(max) > cur
        {
            let threshold = policy.burst.map_or(0.0, |b| b.threshold);
            let reason = Reason::Burst { basis: best.basis, threshold, triggered };
            return done(state, best.replicas.min(max), mode, reason);
        }
    }

    let Some(p) = stable.best else {
        return done(state, cur, mode, Reason::NoMetrics);
    };
    let basis = p.basis;
    if !warm {
        return done(state, cur, mode, Reason::Warming { basis, span: stable.span });
    }
    if stable.partial && p.replicas < cur {
        return done(state, cur, mode, Reason::MissingMetrics { basis });
    }
    let (to, reason) = follow(state, policy, cur, p, now, since);
    if in_burst && to < cur {
        let calm_in = state
            .burst_at
            .map_or(Duration::ZERO, |t| (t + policy.stable_window).saturating_sub(now));
        return done(state, cur, mode, Reason::BurstHold { basis, calm_in });
    }
    done(state, to, mode, reason)
}

/// The normal path: stabilization, cooldown, rate policies and min/max applied to the stable
/// proposal `p`.
fn follow(
    state: &ScalerState,
    policy: &Policy,
    cur: u32,
    p: Proposal,
    now: Time,
    since: Time,
) -> (u32, Reason) {
    let (floor, max) = (policy.floor(), policy.max_replicas);
    let basis = p.basis;
    let raw = p.replicas.clamp(floor, max);
    let clamp_limit = if p.replicas > max {
        Some(Limit::MaxReplicas(max))
    } else if p.replicas < floor {
        Some(Limit::MinReplicas(floor))
    } else {
        None
    };

    // Stabilization: scale up to the lowest, down to the highest recommendation in the window.
    // A state younger than a window has no history for it, so it counts the current count as
    // recommended throughout (a restarted controller does not act on a few seconds of data).
    let up_cut = now.checked_sub(policy.scale_up.stabilization_window);
    let down_cut = now.checked_sub(policy.scale_down.stabilization_window);
    let (mut up_rec, mut down_rec) = (raw, raw);
    let age = now.saturating_sub(since);
    if age < policy.scale_up.stabilization_window {
        up_rec = up_rec.min(cur);
    }
    if age < policy.scale_down.stabilization_window {
        down_rec = down_rec.max(cur);
    }
    for &(t, r) in &state.recommendations {
        if up_cut.is_none_or(|c| t > c) {
            up_rec = up_rec.min(r);
        }
        if down_cut.is_none_or(|c| t > c) {
            down_rec = down_rec.max(r);
        }
    }
    let mut rec = cur;
    if rec < up_rec {
        rec = up_rec;
    }
    if rec > down_rec {
        rec = down_rec;
    }
    let stab = |direction: Direction| {
        let window = match direction {
            Direction::Up => policy.scale_up.stabilization_window,
            Direction::Down => policy.scale_down.stabilization_window,
        };
        Limit::Stabilization { direction, window, recommendation: rec }
    };

    if rec == cur {
        if raw == cur {
            return match clamp_limit {
                None => (cur, Reason::Steady { basis }),
                limit => (cur, Reason::Metrics { basis, limit }),
            };
        }
        let dir = if raw > cur { Direction::Up } else { Direction::Down };
        return (cur, Reason::Metrics { basis, limit: Some(stab(dir)) });
    }
    let held = if rec != raw {
        Some(stab(if rec > cur { Direction::Up } else { Direction::Down }))
    } else {
        clamp_limit
    };

    let (direction, rules, last) = if rec > cur {
        (Direction::Up, &policy.scale_up, state.last_up)
    } else {
        (Direction::Down, &policy.scale_down, state.last_down)
    };
    if rules.select == SelectPolicy::Disabled {
        let limit = Some(Limit::Disabled { direction });
        return (cur, Reason::Metrics { basis, limit });
    }
    if let Some(last) = last
        && now < last + rules.cooldown
    {
        let remaining = last + rules.cooldown - now;
        let limit = Some(Limit::Cooldown { direction, remaining });
        return (cur, Reason::Metrics { basis, limit });
    }
    let (to, limit) = match direction {
        Direction::Up => {
            let rate = state.up_limit(cur, rules, now).max(cur);
            let allowed = rate.min(max);
            if rec <= allowed {
                (rec, held)
            } else if rate > max {
                (allowed, Some(Limit::MaxReplicas(max)))
            } else {
                (allowed, Some(Limit::Rate { direction, limit: rate }))
            }
        }
        Direction::Down => {
            let rate = state.down_limit(cur, rules, now).min(cur);
            let allowed = rate.max(floor);
            if rec >= allowed {
                (rec, held)
            } else if rate < floor {
                (allowed, Some(Limit::MinReplicas(floor)))
            } else {
                (allowed, Some(Limit::Rate { direction, limit: rate }))
            }
        }
    };
    (to, Reason::Metrics { basis, limit })
}

/// The proposals of one window.
struct Proposals {
    /// The largest across the policy's metrics.
    best: Option<Proposal>,
    /// Whether some metric had no data.
    partial: bool,
    /// The shortest history among the metrics with data.
    span: Duration,
}

/// The proposals of the policy's metrics over one window.
/// Which average of a reading a proposal is made from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Figure {
    Stable,
    Burst,
    Recent,
}

fn propose(obs: &Observation, policy: &Policy, cur: u32, figure: Figure) -> Proposals {
    let mut out = Proposals { best: None, partial: false, span: Duration::MAX };
    for t in &policy.metrics {
        let Some(r) = obs.reading(t.metric) else {
            out.partial = true;
            continue;
        };
        out.span = out.span.min(r.span);
        let (total, window) = match figure {
            Figure::Stable => (r.stable, policy.stable_window),
            Figure::Burst => (r.burst, policy.burst_window()),
            // Readings built without a recent figure carry the burst one.
            Figure::Recent if r.recent_window.is_zero() => (r.burst, policy.burst_window()),
            Figure::Recent => (r.recent, r.recent_window),
        };
        let replicas = hpa_replicas(
            cur,
            r.reporting,
            r.missing,
            obs.unready,
            total,
            t.target,
            policy.tolerance,
        );
        let basis = Basis {
            metric: t.metric,
            window,
            per_instance: total / f64::from(r.reporting),
            target: t.target,
            request: t.request,
            proposal: replicas,
        };
        if out.best.as_ref().is_none_or(|b| replicas > b.replicas) {
            out.best = Some(Proposal { replicas, basis });
        }
    }
    out
}

/// The HPA's replica calculation for one metric (`GetResourceReplicas`), with `total` the sum
/// over the `ready` reporting instances: on a scale-up, missing and not-ready instances count
/// as using nothing; on a scale-down, missing ones as using exactly the target and not-ready
/// ones are left out; if filling them in flips the direction or lands within the tolerance,
/// hold.
pub(crate) fn hpa_replicas(
    current: u32,
    ready: u32,
    missing: u32,
    unready: u32,
    total: f64,
    target: f64,
    tolerance: f64,
) -> u32 {
    let n = f64::from(ready);
    let ratio = total / (n * target);
    let up_with_unready = unready > 0 && ratio > 1.0;
    // A hair of slack so that exactly `1 ± tolerance` counts as within it despite rounding.
    let tolerance = tolerance + 1e-9;
    if !up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            return current;
        }
        return ceil_count(total / target);
    }
    let (mut sum, mut count) = (total, n);
    if missing > 0 {
        if ratio < 1.0 {
            sum += f64::from(missing) * target;
            count += f64::from(missing);
        } else if ratio > 1.0 {
            count += f64::from(missing);
        }
    }
    if up_with_unready {
        count += f64::from(unready);
    }
    let new_ratio = sum / (count * target);
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let desired = ceil_count(sum / target);
    if (new_ratio < 1.0 && desired > current) || (new_ratio > 1.0 && desired < current) {
        return current;
    }
    desired
}

struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole milliseconds read better than nanoseconds in a reason.
        let ms = Duration::from_millis(self.0.as_millis().min(u128::from(u64::MAX)) as u64);
        match weft_api::duration::Duration::from_std(ms) {
            Some(d) => write!(f, "{d}"),
            None => write!(f, "{:?}", self.0),
        }
    }
}

fn fmt_value(f: &mut fmt::Formatter<'_>, metric: MetricType, v: f64) -> fmt::Result {
    match metric {
        MetricType::Memory => write!(f, "{:.1}MiB", v / (1024.0 * 1024.0)),
        MetricType::Cpu => write!(f, "{v:.3} cores"),
        _ => write!(f, "{v:.2}"),
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.metric)?;
        match self.request {
            Some(req) => write!(
                f,
                "{:.0}% of request (target {:.0}%)",
                100.0 * self.per_instance / req,
                100.0 * self.target / req
            )?,
            None => {
                fmt_value(f, self.metric, self.per_instance)?;
                f.write_str(" per instance (target ")?;
                fmt_value(f, self.metric, self.target)?;
                f.write_str(")")?;
            }
        }
        write!(f, " over {} asks for {}", Dur(self.window), self.proposal)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Limit::Stabilization { direction, window, recommendation } => write!(
                f,
                "{direction} stabilization: the {} recommendation over {} is {recommendation}",
                if direction == Direction::Up { "lowest" } else { "highest" },
                Dur(window)
            ),
            Limit::Cooldown { direction, remaining } => {
                write!(f, "{direction} cooldown, {} left", Dur(remaining))
            }
            Limit::Rate { direction, limit } => {
                write!(f, "{direction} policies allow {limit} for now")
            }
            Limit::Disabled { direction } => write!(f, "{direction} is disabled"),
            Limit::MinReplicas(n) => write!(f, "minReplicas {n}"),
            Limit::MaxReplicas(n) => write!(f, "maxReplicas {n}"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Poked => f.write_str("a request arrived while at zero"),
            Reason::Idle => f.write_str("at zero with no request waiting"),
            Reason::BelowMin(n) => write!(f, "below minReplicas {n}"),
            Reason::AboveMax(n) => write!(f, "above maxReplicas {n}"),
            Reason::NoMetrics => f.write_str("no metrics from any instance; holding"),
            Reason::MissingMetrics { basis } => {
                write!(f, "{basis}, but some metrics are missing, so not scaling down")
            }
            Reason::Steady { basis } => write!(f, "{basis}"),
            Reason::Metrics { basis, limit: None } => write!(f, "{basis}"),
            Reason::Metrics { basis, limit: Some(l) } => write!(f, "{basis}; held by {l}"),
            Reason::Burst { basis, threshold, triggered: true } => write!(
                f,
                "burst: {basis}, at least {threshold}x the current replicas; scaling up at once"
            ),
            Reason::Burst { basis, triggered: false, .. } => {
                write!(f, "burst mode: {basis}; scaling up at once")
            }
            Reason::BurstHold { basis, calm_in } => write!(
                f,
                "burst mode: {basis}; not scaling down until calm for a stable window ({} more)",
                Dur(*calm_in)
            ),
            Reason::Warming { basis, span } => write!(
                f,
                "{basis}, but only {} of the stable window has data yet; holding",
                Dur(*span)
            ),
            Reason::ScaleToZero { idle } => {
                write!(f, "no traffic for {}; scaling to zero", Dur(*idle))
            }
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed() {
            write!(f, "{} -> {}: {}", self.from, self.replicas, self.reason)
        } else {
            write!(f, "hold at {}: {}", self.from, self.reason)
        }
    }
}
