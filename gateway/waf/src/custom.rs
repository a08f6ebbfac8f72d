//! Custom rules: compiled conditions and their evaluation.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;

use crate::compile::CompileError;
use crate::spec::{ActionSpec, ConditionSpec, FullAction, OperatorSpec, SimpleAction};
use crate::Deny;

#[derive(Debug)]
pub(crate) struct CustomRule {
    pub id: Arc<str>,
    pub when: Cond,
    pub action: CustomAction,
}

#[derive(Debug)]
pub(crate) enum CustomAction {
    Deny(Deny),
    Allow,
    Count,
    Score(u32),
    Label(Arc<str>),
}

#[derive(Debug)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Leaf(Field, Op),
}

#[derive(Debug)]
pub(crate) enum Field {
    SourceIp,
    Path,
    Method,
    Host,
    Header(String),
    Cookie(String),
    /// `None`: any argument.
    Query(Option<String>),
    Body(Option<String>),
    Label,
}

#[derive(Debug)]
pub(crate) enum Op {
    Equals(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
    In(Vec<String>, bool),
    Cidr(Vec<IpNet>),
    LengthGt(u64),
    Gt(f64),
    Lt(f64),
    Eq(f64),
}

impl Op {
    /// Whether `v` satisfies the operator.
    pub(crate) fn test(&self, v: &str) -> bool {
        fn eq(a: &str, b: &str, ci: bool) -> bool {
            if ci {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        }
        match self {
            Op::Equals(s, ci) => eq(v, s, *ci),
            Op::Prefix(s, ci) => v.get(..s.len()).is_some_and(|p| eq(p, s, *ci)),
            Op::Suffix(s, ci) => v
                .len()
                .checked_sub(s.len())
                .and_then(|i| v.get(i..))
                .is_some_and(|p| eq(p, s, *ci)),
            Op::Contains(s, ci) => {
                if *ci {
                    s.is_empty()
                        || v.as_bytes()
                            .windows(s.len())
                            .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
                } else {
                    v.contains(s.as_str())
                }
            }
            Op::Regex(r) => r.is_match(v),
            Op::In(list, ci) => list.iter().any(|s| eq(v, s, *ci)),
            Op::Cidr(nets) => v
                .parse::<IpAddr>()
                .is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Op::LengthGt(n) => v.len() as u64 > *n,
            Op::Gt(n) => num(v).is_some_and(|x| x > *n),
            Op::Lt(n) => num(v).is_some_and(|x| x < *n),
            Op::Eq(n) => num(v).is_some_and(|x| x == *n),
        }
    }

    pub(crate) fn test_ip(&self, ip: IpAddr) -> bool {
        match self {
            Op::Cidr(nets) => nets.iter().any(|n| n.contains(&ip)),
            _ => self.test(&ip.to_string()),
        }
    }
}

fn num(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Parse a CIDR or a single address (as a /32 or /128).
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

pub(crate) fn compile_rule(
    spec: &crate::spec::RuleSpec,
    at: &str,
) -> Result<CustomRule, CompileError> {
    if spec.id.trim().is_empty() {
        return Err(CompileError::new(format!("{at}.id"), "must not be empty"));
    }
    let when = compile_cond(&spec.when, &format!("{at}.when"))?;
    let action = match &spec.action {
        ActionSpec::Simple(SimpleAction::Deny) => CustomAction::Deny(Deny {
            status: 403,
            body: None,
            headers: Arc::new([]),
        }),
        ActionSpec::Simple(SimpleAction::Allow) => CustomAction::Allow,
        ActionSpec::Simple(SimpleAction::Count) => CustomAction::Count,
        ActionSpec::Full(FullAction {
            deny: Some(d),
            score: None,
            label: None,
        }) => {
            if !(100..=599).contains(&d.status) {
                return Err(CompileError::new(
                    format!("{at}.action.deny.status"),
                    format!("{} is not an HTTP status (100-599)", d.status),
                ));
            }
            CustomAction::Deny(Deny {
                status: d.status,
                body: d.body.as_deref().map(Arc::from),
                headers: d
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
                    .into(),
            })
        }
        ActionSpec::Full(FullAction {
            deny: None,
            score: Some(n),
            label: None,
        }) => CustomAction::Score(*n),
        ActionSpec::Full(FullAction {
            deny: None,
            score: None,
            label: Some(l),
        }) => {
            if l.trim().is_empty() {
                return Err(CompileError::new(
                    format!("{at}.action.label"),
                    "must not be empty",
                ));
            }
            CustomAction::Label(Arc::from(l.as_str()))
        }
        ActionSpec::Full(_) => {
            return Err(CompileError::new(
                format!("{at}.action"),
                "needs exactly one of deny, score, label (or the words deny, allow, count)",
            ))
        }
    };
    Ok(CustomRule {
        id: Arc::from(spec.id.as_str()),
        when,
        action,
    })
}

fn compile_cond(c: &ConditionSpec, at: &str) -> Result<Cond, CompileError> {
    let list = |v: &[ConditionSpec], key: &str| -> Result<Vec<Cond>, CompileError> {
        if v.is_empty() {
            return Err(CompileError::new(
                format!("{at}.{key}"),
                "must not be empty",
            ));
        }
        v.iter()
            .enumerate()
            .map(|(i, c)| compile_cond(c, &format!("{at}.{key}[{i}]")))
            .collect()
    };
    let set = [
        c.all.is_some(),
        c.any.is_some(),
        c.not.is_some(),
        c.source_ip.is_some(),
        c.path.is_some(),
        c.method.is_some(),
        c.host.is_some(),
        c.header.is_some(),
        c.cookie.is_some(),
        c.query.is_some(),
        c.body.is_some(),
        c.label.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(CompileError::new(
            at.to_owned(),
            "needs exactly one of all, any, not, source_ip, path, method, host, header, cookie, query, body, label",
        ));
    }
    if let Some(v) = &c.all {
        return Ok(Cond::All(list(v, "all")?));
    }
    if let Some(v) = &c.any {
        return Ok(Cond::Any(list(v, "any")?));
    }
    if let Some(n) = &c.not {
        return Ok(Cond::Not(Box::new(compile_cond(n, &format!("{at}.not"))?)));
    }
    let simple = [
        (&c.source_ip, Field::SourceIp, "source_ip"),
        (&c.path, Field::Path, "path"),
        (&c.method, Field::Method, "method"),
        (&c.host, Field::Host, "host"),
        (&c.label, Field::Label, "label"),
    ];
    for (o, f, key) in simple {
        if let Some(o) = o {
            return leaf(f, o, &format!("{at}.{key}"), false);
        }
    }
    if let Some(o) = &c.header {
        let name = required_name(o, &format!("{at}.header"), false)?;
        return leaf(
            Field::Header(name.to_ascii_lowercase()),
            o,
            &format!("{at}.header"),
            true,
        );
    }
    if let Some(o) = &c.cookie {
        let name = required_name(o, &format!("{at}.cookie"), false)?;
        return leaf(
            Field::Cookie(name.to_owned()),
            o,
            &format!("{at}.cookie"),
            true,
        );
    }
    if let Some(o) = &c.query {
        let name = required_name(o, &format!("{at}.query"), true)?;
        let f = Field::Query((name != "*").then(|| name.to_owned()));
        return leaf(f, o, &format!("{at}.query"), true);
    }
    if let Some(o) = &c.body {
        let name = required_name(o, &format!("{at}.body"), true)?;
        let f = Field::Body((name != "*").then(|| name.to_owned()));
        return leaf(f, o, &format!("{at}.body"), true);
    }
    Err(CompileError::new(at.to_owned(), "empty condition"))
}

fn required_name<'a>(o: &'a OperatorSpec, at: &str, star: bool) -> Result<&'a str, CompileError> {
    match o.name.as_deref() {
        Some(n) if !n.is_empty() && (star || n != "*") => Ok(n),
        _ => Err(CompileError::new(
            format!("{at}.name"),
            if star {
                "required: the argument name, or `*` for any"
            } else {
                "required: which one to test"
            },
        )),
    }
}

fn leaf(field: Field, o: &OperatorSpec, at: &str, named: bool) -> Result<Cond, CompileError> {
    if !named && o.name.is_some() {
        return Err(CompileError::new(
            format!("{at}.name"),
            "only header, cookie, query and body take a name",
        ));
    }
    // Method and host compare case-insensitively whatever the rule says.
    let ci = o.ignore_case || matches!(field, Field::Method | Field::Host);
    let s = |v: &String| {
        if ci {
            v.to_ascii_lowercase()
        } else {
            v.clone()
        }
    };
    let mut ops: Vec<Op> = Vec::new();
    if let Some(v) = &o.equals {
        ops.push(Op::Equals(s(v), ci));
    }
    if let Some(v) = &o.prefix {
        ops.push(Op::Prefix(s(v), ci));
    }
    if let Some(v) = &o.suffix {
        ops.push(Op::Suffix(s(v), ci));
    }
    if let Some(v) = &o.contains {
        ops.push(Op::Contains(s(v), ci));
    }
    if let Some(v) = &o.regex {
        let re = regex::RegexBuilder::new(v)
            .case_insensitive(ci)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| CompileError::new(format!("{at}.regex"), e.to_string()))?;
        ops.push(Op::Regex(re));
    }
    if let Some(v) = &o.in_list {
        ops.push(Op::In(v.iter().map(s).collect(), ci));
    }
    if let Some(v) = &o.cidr {
        let mut nets = Vec::with_capacity(v.len());
        for (i, n) in v.iter().enumerate() {
            nets.push(parse_net(n).ok_or_else(|| {
                CompileError::new(
                    format!("{at}.cidr[{i}]"),
                    format!("{n:?} is not a CIDR or IP address"),
                )
            })?);
        }
        ops.push(Op::Cidr(nets));
    }
    if let Some(v) = o.length_gt {
        ops.push(Op::LengthGt(v));
    }
    if let Some(v) = o.gt {
        ops.push(Op::Gt(v));
    }
    if let Some(v) = o.lt {
        ops.push(Op::Lt(v));
    }
    if let Some(v) = o.eq {
        ops.push(Op::Eq(v));
    }
    let mut ops = ops.into_iter();
    match (ops.next(), ops.next()) {
        (Some(op), None) => Ok(Cond::Leaf(field, op)),
        (None, _) => Err(CompileError::new(
            at.to_owned(),
            "needs one operator: equals, prefix, suffix, contains, regex, in, cidr, length_gt, gt, lt or eq",
        )),
        (Some(_), Some(_)) => Err(CompileError::new(
            at.to_owned(),
            "has more than one operator; combine conditions with all/any",
        )),
    }
}
