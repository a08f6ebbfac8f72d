//! [`PolicySpec`] to [`Policy`]: every pattern compiled once, every name checked, errors
//! naming the field (`rules[2].when.all[0].path.regex: ...`).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use ipnet::IpNet;
use regex::bytes::Regex;

use crate::custom::{compile_rule, parse_net, CustomRule};
use crate::groups::{self, Group, RuleDef, DETECTORS};
use crate::spec::{Mode, OverLimit, PolicySpec};

/// A policy that does not compile. `field` is the path inside the policy
/// (`managed[1]`, `rules[0].when.any[2].query.regex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CompileError {
    /// Where in the policy.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A table rule, compiled.
#[derive(Debug)]
pub(crate) struct Rule {
    pub def: &'static RuleDef,
    pub id: Arc<str>,
    pub re: Option<Regex>,
}

/// A detector, as compiled for this policy.
#[derive(Debug)]
pub(crate) struct Detector {
    pub id: Arc<str>,
    pub group: Group,
    pub severity: groups::Severity,
    pub on: bool,
}

#[derive(Debug)]
pub(crate) enum RuleSel {
    Group(Group),
    Id(String),
}

#[derive(Debug)]
pub(crate) struct Exclusion {
    pub rules: Vec<RuleSel>,
    /// (name, is_prefix)
    pub args: Option<Vec<(String, bool)>>,
    pub paths: Option<Vec<String>>,
}

/// A compiled policy: cheap to share (`Arc<Policy>`), immutable, `Send + Sync`.
/// Build one per route at config load; call [`Policy::inspect`] per request.
#[derive(Debug)]
pub struct Policy {
    pub(crate) detect: bool,
    pub(crate) paranoia: u8,
    pub(crate) threshold: u32,
    pub(crate) block_status: u16,
    pub(crate) groups: u32,
    pub(crate) body_limit: usize,
    pub(crate) over_limit_block: bool,
    pub(crate) allowed_methods: Option<Vec<String>>,
    pub(crate) max_args: u32,
    pub(crate) max_arg_len: usize,
    pub(crate) content_types: Vec<(String, bool)>,
    pub(crate) allow_ips: Vec<IpNet>,
    pub(crate) deny_ips: Vec<IpNet>,
    pub(crate) exclusions: Vec<Exclusion>,
    pub(crate) custom: Vec<CustomRule>,
    pub(crate) custom_uses_body: bool,
    pub(crate) rules: Vec<Rule>,
    pub(crate) detectors: Vec<Detector>,
    pub(crate) ac: Option<AhoCorasick>,
    /// Aho-Corasick pattern index to rule index.
    pub(crate) ac_rule: Vec<u32>,
}

/// What a policy expects in bodies unless told otherwise.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/mixed",
    "multipart/related",
    "application/json",
    "application/*+json",
    "application/x-ndjson",
    "application/jsonl",
    "application/ld+json",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/problem+json",
    "application/vnd.*",
    "application/csp-report",
    "application/reports+json",
    "application/xml",
    "application/*+xml",
    "text/*",
    "application/octet-stream",
    "application/graphql",
    "application/x-protobuf",
    "application/protobuf",
    "application/grpc*",
    "application/x-msgpack",
    "application/msgpack",
    "application/cbor",
    "application/javascript",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/yaml",
    "application/x-yaml",
    "application/sql",
    "application/x-amz-json-1.0",
    "application/x-amz-json-1.1",
    "application/x-thrift",
    "application/avro",
    "application/x-git-upload-pack-request",
    "application/x-git-receive-pack-request",
    "image/*",
    "audio/*",
    "video/*",
    "font/*",
];

impl Policy {
    /// Compile a policy.
    pub fn compile(spec: &PolicySpec) -> Result<Policy, CompileError> {
        if !(1..=4).contains(&spec.paranoia) {
            return Err(CompileError::new("paranoia", "must be 1, 2, 3 or 4"));
        }
        if spec.anomaly_threshold == 0 {
            return Err(CompileError::new("anomaly_threshold", "must be at least 1"));
        }
        if !(100..=599).contains(&spec.block_status) {
            return Err(CompileError::new(
                "block_status",
                "must be an HTTP status (100-599)",
            ));
        }
        let valid = || {
            Group::MANAGED
                .iter()
                .map(|g| g.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let groups = match &spec.managed {
            None => Group::MANAGED.iter().fold(0, |m, g| m | g.bit()),
            Some(list) => {
                let mut m = 0;
                for (i, name) in list.iter().enumerate() {
                    let g = Group::parse(name.trim()).ok_or_else(|| {
                        CompileError::new(
                            format!("managed[{i}]"),
                            format!("unknown group {name:?}; valid groups: {}", valid()),
                        )
                    })?;
                    m |= g.bit();
                }
                m
            }
        };
        let on = |g: Group, level: u8| groups & g.bit() != 0 && level <= spec.paranoia;

        let mut rules = Vec::new();
        let mut patterns: Vec<&'static str> = Vec::new();
        let mut ac_rule = Vec::new();
        for def in groups::table() {
            if !on(def.group, def.paranoia) {
                continue;
            }
            let re = if def.re.is_empty() {
                None
            } else {
                Some(
                    // ASCII classes: every view is lower case, and what the rules look
                    // for is ASCII; Unicode `\w` and `\b` only cost compile time.
                    regex::bytes::RegexBuilder::new(def.re)
                        .unicode(false)
                        .size_limit(8 << 20)
                        .build()
                        .map_err(|e| {
                            CompileError::new(format!("managed rule {}", def.id), e.to_string())
                        })?,
                )
            };
            let idx = u32::try_from(rules.len()).unwrap_or(u32::MAX);
            for lit in def.lits {
                patterns.push(lit);
                ac_rule.push(idx);
            }
            rules.push(Rule {
                def,
                id: Arc::from(def.id),
                re,
            });
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&patterns)
                    .map_err(|e| CompileError::new("managed", e.to_string()))?,
            )
        };
        let detectors = DETECTORS
            .iter()
            .map(|&(id, group, severity, level)| Detector {
                id: Arc::from(id),
                group,
                severity,
                on: on(group, level),
            })
            .collect();

        let allowed_methods = spec.allowed_methods.as_ref().map(|m| {
            m.iter()
                .map(|s| s.trim().to_ascii_uppercase())
                .collect::<Vec<_>>()
        });
        let content_types = match &spec.allowed_content_types {
            Some(list) => list.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
            None => DEFAULT_CONTENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        }
        .into_iter()
        .map(|s| match s.strip_suffix('*') {
            Some(p) => (p.to_owned(), true),
            None => (s, false),
        })
        .collect();

        let nets = |list: &[String], field: &str| -> Result<Vec<IpNet>, CompileError> {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    parse_net(s).ok_or_else(|| {
                        CompileError::new(
                            format!("{field}[{i}]"),
                            format!("{s:?} is not a CIDR or IP address"),
                        )
                    })
                })
                .collect()
        };
        let allow_ips = nets(&spec.allow_ips, "allow_ips")?;
        let deny_ips = nets(&spec.deny_ips, "deny_ips")?;

        let mut custom = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if spec.rules[..i].iter().any(|p| p.id == r.id) {
                return Err(CompileError::new(
                    format!("{at}.id"),
                    format!("duplicate rule id {:?}", r.id),
                ));
            }
            custom.push(compile_rule(r, &at)?);
        }
        let custom_uses_body = spec.rules.iter().any(|r| uses_body(&r.when));

        let mut exclusions = Vec::with_capacity(spec.exclusions.len());
        for (i, x) in spec.exclusions.iter().enumerate() {
            let mut sels = Vec::new();
            if x.rules.is_empty() {
                return Err(CompileError::new(
                    format!("exclusions[{i}].rules"),
                    "must not be empty",
                ));
            }
            for (j, r) in x.rules.iter().enumerate() {
                let r = r.trim();
                if let Some(g) = Group::parse(r) {
                    sels.push(RuleSel::Group(g));
                } else if groups::table().any(|d| d.id == r)
                    || DETECTORS.iter().any(|d| d.0 == r)
                    || spec.rules.iter().any(|c| c.id == r)
                {
                    sels.push(RuleSel::Id(r.to_owned()));
                } else {
                    return Err(CompileError::new(
                        format!("exclusions[{i}].rules[{j}]"),
                        format!("unknown rule id or group {r:?}; groups: {}", valid()),
                    ));
                }
            }
            let args = x.arguments.as_ref().map(|a| {
                a.iter()
                    .map(|s| match s.strip_suffix('*') {
                        Some(p) => (p.to_owned(), true),
                        None => (s.clone(), false),
                    })
                    .collect()
            });
            exclusions.push(Exclusion {
                rules: sels,
                args,
                paths: x.paths.clone(),
            });
        }

        Ok(Policy {
            detect: spec.mode == Mode::Detect,
            paranoia: spec.paranoia,
            threshold: spec.anomaly_threshold,
            block_status: spec.block_status,
            groups,
            body_limit: usize::try_from(spec.body.limit.0).unwrap_or(usize::MAX),
            over_limit_block: spec.body.over_limit == OverLimit::Block,
            allowed_methods,
            max_args: spec.max_arguments,
            max_arg_len: usize::try_from(spec.max_argument_length.0)
                .unwrap_or(usize::MAX)
                .max(1),
            content_types,
            allow_ips,
            deny_ips,
            exclusions,
            custom,
            custom_uses_body,
            rules,
            detectors,
            ac,
            ac_rule,
        })
    }

    /// Bytes of body the policy inspects (`body.limit`). The gateway pre-reads at most
    /// this much (plus one byte, to know whether there was more).
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Whether the policy is in detect mode.
    pub fn is_detect_only(&self) -> bool {
        self.detect
    }

    /// The paranoia level.
    pub fn paranoia(&self) -> u8 {
        self.paranoia
    }

    /// Whether a managed group is on.
    pub fn group_enabled(&self, g: Group) -> bool {
        self.groups & g.bit() != 0
    }

    /// Ids of every rule this policy runs (managed rules at its paranoia level, then
    /// custom rules): for metrics registration and docs.
    pub fn rule_ids(&self) -> Vec<Arc<str>> {
        self.rules
            .iter()
            .map(|r| r.id.clone())
            .chain(self.detectors.iter().filter(|d| d.on).map(|d| d.id.clone()))
            .chain(self.custom.iter().map(|c| c.id.clone()))
            .collect()
    }
}

fn uses_body(c: &crate::spec::ConditionSpec) -> bool {
    c.body.is_some()
        || c.all.iter().chain(c.any.iter()).flatten().any(uses_body)
        || c.not.as_deref().is_some_and(uses_body)
}
