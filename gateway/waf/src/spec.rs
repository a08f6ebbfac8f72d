//! The policy as users write it (file types). [`crate::Policy::compile`] turns a
//! [`PolicySpec`] into the runtime [`crate::Policy`]; nothing at run time reads these.
//!
//! ```yaml
//! mode: block
//! paranoia: 1
//! anomaly_threshold: 5
//! managed: [sqli, xss, lfi, rce]      # omitted = every group
//! body: { limit: 64KiB, over_limit: inspect_partial }
//! exclusions:
//!   - { rules: [sqli], arguments: [json:query], paths: [/graphql] }
//! rules:
//!   - id: no-admin
//!     when:
//!       all:
//!         - path: { prefix: /admin }
//!         - not: { source_ip: { cidr: [10.0.0.0/8] } }
//!     action: { deny: { status: 403, body: "admins only" } }
//!   - { id: bots, when: { header: { name: user-agent, contains: bot } }, action: { label: bot } }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// One WAF policy: managed rule groups, custom rules, scoring and limits.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// `block` denies requests whose anomaly score reaches the threshold (or that hit a
    /// deny rule); `detect` only reports what it would have blocked.
    #[serde(default)]
    pub mode: Mode,
    /// 1 (default, fewest false positives) to 4 (strictest): rules above this level are off.
    #[serde(default = "default_paranoia")]
    pub paranoia: u8,
    /// Block when the summed severities of matched rules reach this score
    /// (critical=5, error=4, warning=3, notice=2). Default 5: one critical match, or
    /// two weaker ones.
    #[serde(default = "default_threshold")]
    pub anomaly_threshold: u32,
    /// Managed rule groups to run; omitted means all of them. Valid names: sqli, xss,
    /// lfi, rfi, rce, php, java, nodejs, ssti, session_fixation, ssrf, xxe, nosqli,
    /// scanners, protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Vec<String>>,
    /// How much of the request body is inspected.
    #[serde(default)]
    pub body: BodySpec,
    /// If set, requests with any other method get a `protocol` match (error, 4).
    /// Off by default: APIs use PUT, PATCH and DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_methods: Option<Vec<String>>,
    /// More query, form and multipart arguments than this is a `protocol` match
    /// (critical, 5); the engine stops inspecting arguments past it. JSON and XML
    /// values are bounded by `body.limit` and a nesting depth of 64 instead.
    #[serde(default = "default_max_arguments")]
    pub max_arguments: u32,
    /// An argument value longer than this (bytes, before decoding) is a `protocol`
    /// match (warning, 3). Default 64KiB.
    #[serde(default = "default_max_argument_length")]
    pub max_argument_length: ByteSize,
    /// Body content types (media type without parameters, lower case; `*` suffix for a
    /// prefix such as `text/*`) that are expected. Others get a low `protocol` score
    /// (notice, 2); they are never denied on their own. Omitted: a default list of
    /// what APIs and browsers send (forms, multipart, JSON and `+json`, XML, text,
    /// octet-stream, GraphQL, protobuf, grpc, msgpack, NDJSON, CSP reports ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_content_types: Option<Vec<String>>,
    /// Client addresses (CIDR or single IP) that skip every check: the outcome is `Allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<String>,
    /// Client addresses (CIDR or single IP) that are denied before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_ips: Vec<String>,
    /// Turn rules or groups off for some arguments and/or paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<ExclusionSpec>,
    /// Custom rules, run in order before the managed groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// Status of the response when a request is blocked by the anomaly score. Default 403.
    #[serde(default = "default_status")]
    pub block_status: u16,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            mode: Mode::Block,
            paranoia: default_paranoia(),
            anomaly_threshold: default_threshold(),
            managed: None,
            body: BodySpec::default(),
            allowed_methods: None,
            max_arguments: default_max_arguments(),
            max_argument_length: default_max_argument_length(),
            allowed_content_types: None,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            exclusions: Vec::new(),
            rules: Vec::new(),
            block_status: default_status(),
        }
    }
}

fn default_paranoia() -> u8 {
    1
}
fn default_threshold() -> u32 {
    5
}
fn default_max_arguments() -> u32 {
    1000
}
fn default_max_argument_length() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_status() -> u16 {
    403
}

/// `block` or `detect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny what the policy matches.
    #[default]
    Block,
    /// Report only; never deny (deny custom rules and deny lists too).
    Detect,
}

/// Body inspection limits.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodySpec {
    /// Bytes of body inspected (`64KiB`, `1MiB` or a number of bytes). Default 64KiB.
    /// (AWS WAF inspects only the first 8 KB on an ALB.)
    #[serde(default = "default_body_limit")]
    pub limit: ByteSize,
    /// What to do with a body longer than `limit`: inspect the first `limit` bytes
    /// (default) or block.
    #[serde(default)]
    pub over_limit: OverLimit,
}

impl Default for BodySpec {
    fn default() -> Self {
        Self {
            limit: default_body_limit(),
            over_limit: OverLimit::default(),
        }
    }
}

fn default_body_limit() -> ByteSize {
    ByteSize(64 * 1024)
}

/// What to do with a body over the inspection limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Inspect the first `limit` bytes, let the rest through unseen.
    #[default]
    InspectPartial,
    /// Deny (a `protocol` deny rule).
    Block,
}

/// Turn rules off where they misfire.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExclusionSpec {
    /// Rule ids (`sqli.libinjection`) or group names (`sqli`).
    pub rules: Vec<String>,
    /// Argument names as reported in matches (`query:q`, `json:user.bio`,
    /// `header:user-agent`); a trailing `*` makes a prefix (`json:items*`).
    /// Omitted: every argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Path prefixes (`/api/cms/`). Omitted: every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

/// A custom rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Reported in matches and logs; unique within the policy.
    pub id: String,
    /// When the rule applies.
    pub when: ConditionSpec,
    /// What it does then.
    pub action: ActionSpec,
}

/// A condition: exactly one of `all`, `any`, `not`, or a field (`path`, `header` ...)
/// with one operator: `{ path: { prefix: /admin } }`,
/// `{ header: { name: user-agent, contains: bot } }`, `{ not: { source_ip: { cidr: [10.0.0.0/8] } } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// Every condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionSpec>>,
    /// At least one condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionSpec>>,
    /// The condition does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionSpec>>,
    /// The client address (`cidr`, `equals`, `in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<OperatorSpec>,
    /// The path, percent-decoded once, with `//`, `.` and `..` resolved (no query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<OperatorSpec>,
    /// The method (compared ignoring case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<OperatorSpec>,
    /// The Host header without port (compared ignoring case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<OperatorSpec>,
    /// A header by `name` (case-insensitive); a missing header never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<OperatorSpec>,
    /// A cookie by `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<OperatorSpec>,
    /// A query argument by `name` (URL-decoded), or `*` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<OperatorSpec>,
    /// A form, JSON (path as in matches without `json:`, e.g. `user.name`), multipart or XML body argument by `name`, or `*` for any. String values only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<OperatorSpec>,
    /// A label set by an earlier rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<OperatorSpec>,
}

/// `name` (for header, cookie, query, body) and exactly one operator.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Which header/cookie/argument; `*` = any (query, body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exact match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Matches this regular expression (Rust `regex` syntax, linear time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Equals one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_list: Option<Vec<String>>,
    /// Is an IP address inside one of these networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Vec<String>>,
    /// Longer than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_gt: Option<u64>,
    /// Parses as a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Parses as a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Parses as a number equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<f64>,
    /// Compare strings ignoring ASCII case (default false; `method` and `host` are
    /// compared case-insensitively anyway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// `deny`, `allow`, `count`, or `{ deny: {...} }`, `{ score: N }`, `{ label: NAME }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ActionSpec {
    /// `deny` (403), `allow` or `count`.
    Simple(SimpleAction),
    /// An action with arguments.
    Full(FullAction),
}

/// Actions without arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimpleAction {
    /// Deny with 403.
    Deny,
    /// Let the request through: skip later rules and the managed groups.
    Allow,
    /// Report the match, change nothing.
    Count,
}

/// Actions with arguments: exactly one of `deny`, `score`, `label`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FullAction {
    /// Deny with this response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<DenySpec>,
    /// Add this many points to the anomaly score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    /// Attach a label: later rules can test it (`label`), and it is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The response of a deny.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenySpec {
    /// Status code (default 403).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A size in bytes, written `64KiB`, `1MiB`, `512`, `2KB` (KB = 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `64KiB`, `1 MiB`, `100`, `8KB`, `1GiB`.
    pub fn parse(s: &str) -> Option<ByteSize> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" | "kB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n != 0 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 64KiB, 1MiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {v:?}: expected e.g. 64KiB, 1MiB or a number of bytes"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or a number with KiB, MiB, GiB (1024) or KB, MB, GB (1000)",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+ ?(B|K|k|M|G|KiB|MiB|GiB|KB|kB|MB|GB)?$" }
            ]
        })
    }
}
