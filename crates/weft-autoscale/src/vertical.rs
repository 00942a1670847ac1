//! Vertical recommendations: how much cpu and memory a deployment's instances should request,
//! from decaying histograms of what they used (the approach of the Kubernetes VPA's
//! recommender).

use std::time::Duration;

use crate::Time;

/// Weights are stored relative to `2^((t - reference) / half_life)`; past this exponent the
/// reference moves forward and the weights are scaled down, so they never overflow.
const MAX_EXPONENT: f64 = 100.0;

/// A histogram with exponentially growing buckets whose samples lose half their weight every
/// `half_life`. Bucket `i` starts at `first × (ratio^i − 1) / (ratio − 1)` (the VPA's layout):
/// the first buckets are about `first` wide, later ones `ratio − 1` of their start, so a
/// percentile errs high by at most one bucket (10% at 20 × `first`, 6% at 100 ×, tending
/// to `ratio − 1`).
#[derive(Clone, Debug)]
pub struct DecayingHistogram {
    first: f64,
    ratio: f64,
    weights: Vec<f64>,
    total: f64,
    half_life: Duration,
    reference: Option<Time>,
}

impl DecayingHistogram {
    /// Buckets from 0 up to `max_value` (larger values land in the last bucket), the first one
    /// `first_bucket` wide, each next one `ratio` times wider.
    ///
    /// # Panics
    /// If `first_bucket` or `max_value` is not positive, `ratio` is not more than 1, or
    /// `half_life` is zero: these are programming errors, not input.
    pub fn new(first_bucket: f64, ratio: f64, max_value: f64, half_life: Duration) -> Self {
        assert!(first_bucket > 0.0 && max_value > 0.0 && ratio > 1.0 && !half_life.is_zero());
        let n =
            ((max_value * (ratio - 1.0) / first_bucket + 1.0).ln() / ratio.ln()).ceil() as usize;
        DecayingHistogram {
            first: first_bucket,
            ratio,
            weights: vec![0.0; n.max(1) + 1],
            total: 0.0,
            half_life,
            reference: None,
        }
    }

    /// Cpu in cores: 10 millicores to 1000 cores, 5% buckets (the VPA's).
    pub fn cpu(half_life: Duration) -> Self {
        DecayingHistogram::new(0.01, 1.05, 1000.0, half_life)
    }

    /// Memory in bytes: 10 MB to 1 TB, 5% buckets (the VPA's).
    pub fn memory(half_life: Duration) -> Self {
        DecayingHistogram::new(1e7, 1.05, 1e12, half_life)
    }

    fn bucket(&self, value: f64) -> usize {
        if value < self.first {
            return 0;
        }
        let i = ((value * (self.ratio - 1.0) / self.first + 1.0).ln() / self.ratio.ln()) as usize;
        i.min(self.weights.len() - 1)
    }

    fn bucket_start(&self, i: usize) -> f64 {
        self.first * (self.ratio.powi(i as i32) - 1.0) / (self.ratio - 1.0)
    }

    /// Adds `value` with `weight` as of time `at`. Negative, NaN or infinite values and
    /// non-positive weights are ignored.
    pub fn add(&mut self, value: f64, weight: f64, at: Time) {
        if !(value.is_finite() && value >= 0.0 && weight.is_finite() && weight > 0.0) {
            return;
        }
        let reference = *self.reference.get_or_insert(at);
        let mut exp = self.exponent(reference, at);
        if exp > MAX_EXPONENT {
            // Move the reference to `at`: every stored weight shrinks by 2^exp.
            let scale = (-exp).exp2();
            self.weights.iter_mut().for_each(|w| *w *= scale);
            self.total *= scale;
            self.reference = Some(at);
            exp = 0.0;
        }
        let w = weight * exp.exp2();
        let i = self.bucket(value);
        self.weights[i] += w;
        self.total += w;
    }

    fn exponent(&self, reference: Time, at: Time) -> f64 {
        let hl = self.half_life.as_secs_f64();
        if at >= reference {
            (at - reference).as_secs_f64() / hl
        } else {
            -((reference - at).as_secs_f64() / hl)
        }
    }

    /// Whether nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// The total weight as seen at `now` (decayed).
    pub fn weight(&self, now: Time) -> f64 {
        match self.reference {
            None => 0.0,
            Some(r) => self.total * (-self.exponent(r, now)).exp2(),
        }
    }

    /// The value below which `p` (0..=1) of the weight lies, as the end of its bucket (so it
    /// errs high by at most a bucket); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        // A hair under, so that p × total landing exactly on a bucket's cumulative weight is
        // not pushed into the next bucket by rounding.
        let want = p.clamp(0.0, 1.0) * self.total * (1.0 - 1e-12);
        let mut sum = 0.0;
        let last = self.weights.len() - 1;
        for (i, w) in self.weights.iter().enumerate() {
            sum += w;
            if sum >= want && *w > 0.0 {
                return Some(if i == last {
                    self.bucket_start(i)
                } else {
                    self.bucket_start(i + 1)
                });
            }
        }
        Some(self.bucket_start(last))
    }
}

/// How recommendations are made. The defaults follow the Kubernetes VPA.
#[derive(Clone, Debug, PartialEq)]
pub struct VerticalConfig {
    /// Samples lose half their weight every this long (default 24 h).
    pub half_life: Duration,
    /// Percentiles for the lower bound, target and upper bound (defaults 0.5, 0.9, 0.95).
    pub lower_percentile: f64,
    pub target_percentile: f64,
    pub upper_percentile: f64,
    /// Added on top of every percentile (default 0.15, +15%).
    pub margin: f64,
    /// After an out-of-memory kill, memory is at least `max(peak, limit) × oom_bump`
    /// (default 1.2) ...
    pub oom_bump: f64,
    /// ... for this long (default 24 h).
    pub oom_hold: Duration,
    /// Recommendations never go below these (defaults 10 millicores, 16 MiB).
    pub min_cpu_cores: f64,
    pub min_memory_bytes: f64,
}

impl Default for VerticalConfig {
    fn default() -> Self {
        VerticalConfig {
            half_life: Duration::from_secs(24 * 3600),
            lower_percentile: 0.5,
            target_percentile: 0.9,
            upper_percentile: 0.95,
            margin: 0.15,
            oom_bump: 1.2,
            oom_hold: Duration::from_secs(24 * 3600),
            min_cpu_cores: 0.01,
            min_memory_bytes: 16.0 * 1024.0 * 1024.0,
        }
    }
}

/// A recommended request with its bounds: below `lower` the deployment is starved, above
/// `upper` it wastes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub lower: f64,
    pub target: f64,
    pub upper: f64,
}

/// Per-instance requests to recommend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerticalRecommendation {
    pub cpu_cores: Bounds,
    pub memory_bytes: Bounds,
    /// Whether the memory figures were raised after an out-of-memory kill.
    pub oom_bumped: bool,
}

/// Usage history of one deployment's instances and the requests it suggests. Pure: every call
/// takes the time from the caller.
#[derive(Clone, Debug)]
pub struct VerticalRecommender {
    config: VerticalConfig,
    cpu: DecayingHistogram,
    memory: DecayingHistogram,
    /// (when, memory floor) after the last out-of-memory kill.
    oom: Option<(Time, f64)>,
}

impl VerticalRecommender {
    pub fn new(config: VerticalConfig) -> Self {
        VerticalRecommender {
            cpu: DecayingHistogram::cpu(config.half_life),
            memory: DecayingHistogram::memory(config.half_life),
            config,
            oom: None,
        }
    }

    /// One instance's cpu usage (cores, averaged over the scrape interval) at `at`.
    pub fn record_cpu(&mut self, at: Time, cores: f64) {
        self.cpu.add(cores, 1.0, at);
    }

    /// One instance's memory usage (bytes) at `at`. Feeding peaks (the largest value per
    /// scrape interval) rather than samples makes the recommendation safer.
    pub fn record_memory(&mut self, at: Time, bytes: f64) {
        self.memory.add(bytes, 1.0, at);
    }

    /// An instance was killed for running out of memory at `at`, having used `peak_bytes` under
    /// a limit of `limit_bytes`: memory recommendations are raised to at least
    /// `max(peak, limit) × oom_bump` for `oom_hold`, and the raised figure is also recorded
    /// as a sample.
    pub fn record_oom(&mut self, at: Time, peak_bytes: f64, limit_bytes: f64) {
        let base = peak_bytes.max(limit_bytes);
        if !(base.is_finite() && base > 0.0) {
            return;
        }
        let bump = base * self.config.oom_bump;
        let floor = match self.oom {
            Some((t, f)) if at < t + self.config.oom_hold => f.max(bump),
            _ => bump,
        };
        self.oom = Some((at, floor));
        self.memory.add(bump, 1.0, at);
    }

    /// How many samples the recommendation rests on at `now` (decayed; the smaller of cpu and
    /// memory): acting on a handful would size requests on a start-up blip.
    pub fn samples(&self, now: Time) -> f64 {
        self.cpu.weight(now).min(self.memory.weight(now))
    }

    /// The recommendation at `now`; `None` until both cpu and memory have samples.
    pub fn recommend(&self, now: Time) -> Option<VerticalRecommendation> {
        let c = &self.config;
        let m = 1.0 + c.margin;
        let bounds = |h: &DecayingHistogram, min: f64| -> Option<Bounds> {
            let lower = (h.percentile(c.lower_percentile)? * m).max(min);
            let target = (h.percentile(c.target_percentile)? * m).max(lower);
            let upper = (h.percentile(c.upper_percentile)? * m).max(target);
            Some(Bounds { lower, target, upper })
        };
        let cpu_cores = bounds(&self.cpu, c.min_cpu_cores)?;
        let mut memory_bytes = bounds(&self.memory, c.min_memory_bytes)?;
        let mut oom_bumped = false;
        if let Some((t, floor)) = self.oom
            && now < t + c.oom_hold
            && memory_bytes.target < floor
        {
            memory_bytes.target = floor;
            memory_bytes.upper = memory_bytes.upper.max(floor);
            oom_bumped = true;
        }
        Some(VerticalRecommendation { cpu_cores, memory_bytes, oom_bumped })
    }
}

impl Default for VerticalRecommender {
    fn default() -> Self {
        VerticalRecommender::new(VerticalConfig::default())
    }
}

/// Whether requests of `cpu_cores` and `memory_bytes` (`None`: not set) should be replaced by
/// `rec`'s targets: one is unset, or outside its recommended bounds. Requests within the bounds
/// stay, so that small drifts of the recommendation do not restart instances.
pub fn outside_bounds(
    cpu_cores: Option<f64>,
    memory_bytes: Option<f64>,
    rec: &VerticalRecommendation,
) -> bool {
    let out = |v: Option<f64>, b: &Bounds| v.is_none_or(|v| v < b.lower || v > b.upper);
    out(cpu_cores, &rec.cpu_cores) || out(memory_bytes, &rec.memory_bytes)
}
