//! `sidecar iptables install | uninstall`: the nftables rules that redirect the app's
//! outbound TCP to the sidecar's interception listener ([`crate::intercept`]), run
//! once per pod by an init container with `NET_ADMIN` (as Istio's `istio-init` and
//! Linkerd's `proxy-init` do). Named `iptables` after what those tools are known by;
//! it speaks nftables through the `nft` binary.
//!
//! The rules live in tables of their own (`ip tollgate`, `ip6 tollgate`), in a `nat`
//! chain on the `output` hook (connections this pod makes), so that uninstalling is
//! deleting those tables and nothing else in the ruleset is touched. Each install
//! replaces the tables in one `nft -f` transaction (add, delete, create: no window
//! without rules, no error when they are already there); uninstall is idempotent.
//!
//! Not redirected, in this order: anything but TCP; the sidecar's own connections
//! (`meta skuid` / `meta skgid`: without that exclusion its connections to peers and
//! passed-through destinations would loop back into itself); loopback destinations
//! (the app talking to its own sidecar's ports, or to itself); destination ports and
//! CIDRs given with `--exclude-ports` / `--exclude-cidrs`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, ExitCode, Stdio};

use clap::{Args, Subcommand};
use ipnet::IpNet;

#[derive(Debug, Args)]
#[command(
    about = "Install or remove the nftables rules that redirect this pod's outbound TCP to the sidecar"
)]
pub struct IptablesCli {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Install (or replace) the redirect rules.
    Install(InstallArgs),
    /// Delete the rules' tables; nothing else is touched. Succeeds when they are absent.
    Uninstall(UninstallArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The interception port (`intercept.listen`'s port; IPv6: `listen_v6`, same port).
    #[arg(long, default_value_t = 15006)]
    pub port: u16,
    /// The sidecar's uid: its own connections are never redirected. Repeatable.
    #[arg(long = "uid")]
    pub uids: Vec<u32>,
    /// Or its gid (a group only the sidecar runs with). Repeatable.
    #[arg(long = "gid")]
    pub gids: Vec<u32>,
    /// Destination ports never redirected, comma-separated (e.g. a database's 5432).
    #[arg(long, value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,
    /// Destination CIDRs never redirected, comma-separated (e.g. the node's 169.254.169.254/32).
    #[arg(long, value_delimiter = ',')]
    pub exclude_cidrs: Vec<IpNet>,
    /// IPv4 only: no `ip6 tollgate` table (when the sidecar has no `listen_v6`).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Print the nft script instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Name of the tables.
    #[arg(long, default_value = "tollgate")]
    pub table: String,
}

#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Print the nft script instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Name of the tables.
    #[arg(long, default_value = "tollgate")]
    pub table: String,
}

/// A refused set of arguments.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("give the sidecar's --uid or --gid: without it the sidecar's own connections would be redirected back into it")]
    NoOwner,
    #[error("--table {0:?}: use letters, digits, `_` and `-`")]
    BadTable(String),
    #[error("--port must be 1..65535")]
    BadPort,
}

fn check_table(name: &str) -> Result<(), RulesError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(RulesError::BadTable(name.to_owned()))
    }
}

fn set<T: std::fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The nft script `install` runs.
pub fn install_script(a: &InstallArgs) -> Result<String, RulesError> {
    if a.uids.is_empty() && a.gids.is_empty() {
        return Err(RulesError::NoOwner);
    }
    if a.port == 0 {
        return Err(RulesError::BadPort);
    }
    check_table(&a.table)?;
    let mut s = String::new();
    let families: &[(&str, &str, &str)] = if a.no_ipv6 {
        &[("ip", "ip", "127.0.0.0/8")]
    } else {
        &[("ip", "ip", "127.0.0.0/8"), ("ip6", "ip6", "::1")]
    };
    for (family, proto, loopback) in families {
        let t = &a.table;
        // add + delete first: replaces an existing table, and is no error without one.
        let _ = writeln!(s, "add table {family} {t}");
        let _ = writeln!(s, "delete table {family} {t}");
        let _ = writeln!(s, "table {family} {t} {{");
        let _ = writeln!(s, "\tchain output {{");
        let _ = writeln!(s, "\t\ttype nat hook output priority -100; policy accept;");
        let _ = writeln!(s, "\t\tmeta l4proto != tcp return");
        for uid in &a.uids {
            let _ = writeln!(s, "\t\tmeta skuid {uid} return");
        }
        for gid in &a.gids {
            let _ = writeln!(s, "\t\tmeta skgid {gid} return");
        }
        let _ = writeln!(s, "\t\t{proto} daddr {loopback} return");
        if !a.exclude_ports.is_empty() {
            let _ = writeln!(s, "\t\ttcp dport {} return", set(&a.exclude_ports));
        }
        let cidrs: Vec<&IpNet> = a
            .exclude_cidrs
            .iter()
            .filter(|c| matches!((c, *family), (IpNet::V4(_), "ip") | (IpNet::V6(_), "ip6")))
            .collect();
        if !cidrs.is_empty() {
            let _ = writeln!(s, "\t\t{proto} daddr {} return", set(&cidrs));
        }
        let _ = writeln!(s, "\t\tmeta l4proto tcp redirect to :{}", a.port);
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
    }
    Ok(s)
}

/// The nft script `uninstall` runs: both tables gone, no error if they were.
pub fn uninstall_script(a: &UninstallArgs) -> Result<String, RulesError> {
    check_table(&a.table)?;
    let mut s = String::new();
    for family in ["ip", "ip6"] {
        let _ = writeln!(s, "add table {family} {}", a.table);
        let _ = writeln!(s, "delete table {family} {}", a.table);
    }
    Ok(s)
}

/// Run `nft -f -` on `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install the nftables package): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `sidecar iptables ...`
pub fn run(cli: &IptablesCli) -> ExitCode {
    let (script, dry_run, what) = match &cli.action {
        Action::Install(a) => (install_script(a), a.dry_run, "installed"),
        Action::Uninstall(a) => (uninstall_script(a), a.dry_run, "removed"),
    };
    let script = match script {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidecar iptables: {e}");
            return ExitCode::from(2);
        }
    };
    if dry_run {
        print!("{script}");
        return ExitCode::SUCCESS;
    }
    match nft(&script) {
        Ok(()) => {
            println!("sidecar iptables: rules {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidecar iptables: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The subcommand, for the shared command line.
pub fn command() -> clap::Command {
    IptablesCli::augment_args(clap::Command::new("iptables"))
}

/// Run from the shared command line's matches.
pub fn run_matches(m: &clap::ArgMatches) -> ExitCode {
    use clap::FromArgMatches;
    match IptablesCli::from_arg_matches(m) {
        Ok(cli) => run(&cli),
        Err(e) => e.exit(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> InstallArgs {
        InstallArgs {
            port: 15006,
            uids: vec![1337],
            gids: vec![],
            exclude_ports: vec![15001, 15000],
            exclude_cidrs: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
            no_ipv6: false,
            dry_run: true,
            table: "tollgate".into(),
        }
    }

    #[test]
    fn install_replaces_both_tables_with_the_exclusions_first() {
        let s = install_script(&args()).unwrap();
        let want = "add table ip tollgate
delete table ip tollgate
table ip tollgate {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta l4proto != tcp return
\t\tmeta skuid 1337 return
\t\tip daddr 127.0.0.0/8 return
\t\ttcp dport { 15001, 15000 } return
\t\tip daddr { 169.254.169.254/32 } return
\t\tmeta l4proto tcp redirect to :15006
\t}
}
add table ip6 tollgate
delete table ip6 tollgate
table ip6 tollgate {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta l4proto != tcp return
\t\tmeta skuid 1337 return
\t\tip6 daddr ::1 return
\t\ttcp dport { 15001, 15000 } return
\t\tip6 daddr { fd00::/8 } return
\t\tmeta l4proto tcp redirect to :15006
\t}
}
";
        assert_eq!(s, want);
    }

    #[test]
    fn ipv4_only_and_a_gid() {
        let mut a = args();
        a.no_ipv6 = true;
        a.uids.clear();
        a.gids = vec![1337];
        a.exclude_ports.clear();
        let s = install_script(&a).unwrap();
        assert!(!s.contains("ip6"), "{s}");
        assert!(s.contains("meta skgid 1337 return"), "{s}");
        assert!(!s.contains("dport"), "{s}");
    }

    #[test]
    fn refused_without_an_owner_or_with_a_strange_table() {
        let mut a = args();
        a.uids.clear();
        assert!(matches!(install_script(&a), Err(RulesError::NoOwner)));
        let mut a = args();
        a.table = "x; flush ruleset".into();
        assert!(matches!(install_script(&a), Err(RulesError::BadTable(_))));
        let u = UninstallArgs {
            dry_run: true,
            table: "tollgate".into(),
        };
        assert_eq!(
            uninstall_script(&u).unwrap(),
            "add table ip tollgate\ndelete table ip tollgate\nadd table ip6 tollgate\ndelete table ip6 tollgate\n"
        );
    }
}
