//! `waf:` policies and `routes[i].waf`: each policy compiled once at load (a policy
//! that does not compile refuses the file with the field that is wrong), and again for
//! a route that adds exclusions of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use tollgate_waf::{Policy, PolicySpec};

use crate::error::Problems;
use crate::gateway::file::RouteWafFile;
use crate::gateway::RouteWaf;

/// The compiled policies, by name, and their specs (for routes' exclusions).
#[derive(Default)]
pub struct Policies {
    compiled: BTreeMap<String, (PolicySpec, Arc<Policy>)>,
}

impl Policies {
    pub fn compile(specs: &BTreeMap<String, PolicySpec>, p: &mut Problems) -> Self {
        let mut compiled = BTreeMap::new();
        for (name, spec) in specs {
            match Policy::compile(spec) {
                Ok(policy) => {
                    compiled.insert(name.clone(), (spec.clone(), Arc::new(policy)));
                }
                Err(e) => p.push(format!("waf.{name}.{}", e.field), e.message),
            }
        }
        Self { compiled }
    }

    /// Every policy, by name (as written, without any route's exclusions).
    pub fn by_name(&self) -> BTreeMap<String, Arc<Policy>> {
        self.compiled
            .iter()
            .map(|(n, (_, p))| (n.clone(), p.clone()))
            .collect()
    }

    /// The policy a route names, with the route's exclusions added.
    pub fn for_route(&self, at: &str, w: &RouteWafFile, p: &mut Problems) -> Option<RouteWaf> {
        let (name, extra, field) = match w {
            RouteWafFile::Name(n) => (n, &[][..], at.to_owned()),
            RouteWafFile::WithExclusions(f) => {
                (&f.policy, f.exclusions.as_slice(), format!("{at}.policy"))
            }
        };
        let Some((spec, policy)) = self.compiled.get(name) else {
            let defined: Vec<&str> = self.compiled.keys().map(String::as_str).collect();
            p.push(
                field,
                format!(
                    "WAF policy {name:?} is not defined under `waf` (defined: {})",
                    defined.join(", ")
                ),
            );
            return None;
        };
        if extra.is_empty() {
            return Some(RouteWaf {
                name: name.clone(),
                policy: policy.clone(),
            });
        }
        let mut spec = spec.clone();
        let before = spec.exclusions.len();
        spec.exclusions.extend(extra.iter().cloned());
        match Policy::compile(&spec) {
            Ok(policy) => Some(RouteWaf {
                name: name.clone(),
                policy: Arc::new(policy),
            }),
            Err(e) => {
                // Point at the route's own exclusion when that is what failed.
                let field = match e.field.strip_prefix("exclusions[").and_then(|r| {
                    let (i, rest) = r.split_once(']')?;
                    Some((i.parse::<usize>().ok()?.checked_sub(before)?, rest))
                }) {
                    Some((i, rest)) => format!("{at}.exclusions[{i}]{rest}"),
                    None => format!("waf.{name}.{}", e.field),
                };
                p.push(field, e.message);
                None
            }
        }
    }
}
