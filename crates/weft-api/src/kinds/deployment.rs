//! Deployment: keep N instances of a template running, replacing them gradually on change.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::template::Template;
use crate::meta::Condition;
use crate::validate::Validator;

/// The most replicas one deployment may ask for; a guard against typos like `replicas: 20000`.
pub const MAX_REPLICAS: i32 = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// How many instances to run. Written by the autoscaler when one targets this deployment.
    #[serde(default = "one")]
    pub replicas: i32,
    pub template: Template,
    #[serde(default)]
    pub strategy: Strategy,
}

fn one() -> i32 {
    1
}

impl DeploymentSpec {
    pub(crate) fn apply_defaults(&mut self) {
        self.template.resources.apply_defaults();
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        v.check(
            (0..=MAX_REPLICAS).contains(&self.replicas),
            "spec.replicas",
            format!("must be between 0 and {MAX_REPLICAS}"),
        );
        self.template.validate(v, "spec.template");
        self.strategy.validate(v);
    }
}

/// Rolling update: how far above and below `replicas` the rollout may go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Strategy {
    /// Extra instances allowed during a rollout (count or percent of replicas, rounded up).
    #[serde(default = "surge")]
    pub max_surge: IntOrPercent,
    /// Instances that may be missing during a rollout (count or percent, rounded down).
    #[serde(default = "unavailable")]
    pub max_unavailable: IntOrPercent,
}

fn surge() -> IntOrPercent {
    IntOrPercent::Int(1)
}
fn unavailable() -> IntOrPercent {
    IntOrPercent::Int(0)
}

impl Default for Strategy {
    fn default() -> Strategy {
        Strategy { max_surge: surge(), max_unavailable: unavailable() }
    }
}

impl Strategy {
    fn validate(&self, v: &mut Validator) {
        if let IntOrPercent::Percent(p) = self.max_unavailable
            && p > 100
        {
            v.error("spec.strategy.maxUnavailable", "must be at most 100%");
        }
        if self.max_surge.is_zero() && self.max_unavailable.is_zero() {
            v.error(
                "spec.strategy",
                "maxSurge and maxUnavailable cannot both be 0: a rollout could never make progress",
            );
        }
    }

    /// Absolute surge for `replicas` (percent rounds up, as Kubernetes does).
    pub fn surge_for(&self, replicas: i32) -> i32 {
        self.max_surge.resolve(replicas, true)
    }

    /// Absolute unavailability for `replicas` (percent rounds down).
    pub fn unavailable_for(&self, replicas: i32) -> i32 {
        self.max_unavailable.resolve(replicas, false)
    }
}

/// A count (`1`) or a percentage of replicas (`"25%"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(u32),
    /// Written as a string of the form `"25%"`.
    Percent(u32),
}

impl JsonSchema for IntOrPercent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A count (1) or a percentage of replicas (\"25%\").",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+%?$" }
            ]
        })
    }
}

impl IntOrPercent {
    pub fn is_zero(&self) -> bool {
        matches!(self, IntOrPercent::Int(0) | IntOrPercent::Percent(0))
    }

    pub fn resolve(&self, replicas: i32, round_up: bool) -> i32 {
        match *self {
            IntOrPercent::Int(n) => n as i32,
            IntOrPercent::Percent(p) => {
                let scaled = i64::from(replicas.max(0)) * i64::from(p);
                let n = if round_up { (scaled + 99) / 100 } else { scaled / 100 };
                n as i32
            }
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Int(n) => s.serialize_u32(*n),
            IntOrPercent::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!(
                "{what:?} is not a count or a percentage (use e.g. 1 or \"25%\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => u32::try_from(n).map(IntOrPercent::Int).map_err(|_| bad(&n.to_string())),
            Raw::Text(s) => {
                if let Some(p) = s.strip_suffix('%') {
                    p.parse().map(IntOrPercent::Percent).map_err(|_| bad(&s))
                } else {
                    s.parse().map(IntOrPercent::Int).map_err(|_| bad(&s))
                }
            }
        }
    }
}

/// What the deployment controller observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Instances that exist (any phase but gone).
    #[serde(default)]
    pub replicas: i32,
    /// Instances running the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Instances passing readiness.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready instances running the current template.
    #[serde(default)]
    pub available_replicas: i32,
    /// Hash of the current template; instances carry the hash they were made from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_hash: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_percent_parses_and_prints() {
        let v: IntOrPercent = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(v, IntOrPercent::Percent(25));
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"25%\"");
        let v: IntOrPercent = serde_json::from_str("2").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "2");
        let v: IntOrPercent = serde_json::from_str("\"3\"").unwrap();
        assert_eq!(v, IntOrPercent::Int(3));
        for bad in ["-1", "\"x%\"", "\"abc\"", "1.5"] {
            assert!(serde_json::from_str::<IntOrPercent>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_rounds_like_kubernetes() {
        assert_eq!(IntOrPercent::Percent(25).resolve(10, true), 3);
        assert_eq!(IntOrPercent::Percent(25).resolve(10, false), 2);
        assert_eq!(IntOrPercent::Int(4).resolve(10, false), 4);
    }
}
