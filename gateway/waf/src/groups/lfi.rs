//! Local file inclusion and path traversal, on the path view (backslashes as slashes,
//! `//` and `/./` collapsed, every URL encoding decoded).

use super::loc::*;
use super::Group::Lfi as G;
use super::Severity::*;
use super::View::Path;
use super::{rule, RuleDef};

/// Literal prefilters of the sensitive-file rules (argument and path views alike).
const SENSITIVE_LITERALS: &[&str] = &[
    "etc/",
    "proc/",
    "win.ini",
    "system.ini",
    "boot.ini",
    "system32",
    ".ssh/",
    ".bash_history",
    "var/log/",
    "/root/",
    "windows/",
    "winnt/",
    "inetpub",
    "web-inf",
    "meta-inf",
    "/dev/",
];

macro_rules! sensitive_files {
    () => {
        r#"(?:etc/(?:passwd|shadow|group|hosts|issue|hostname|crontab|sudoers|master\.passwd|security/|mysql/|httpd/|apache2?/|nginx/|ssh/|ssl/|php\d*/|environment|profile|resolv\.conf|fstab|motd|os-release|redhat-release|lsb-release|passwd-|gshadow|inittab|network/|sysconfig/|pam\.d/|cron\.d/|hosts\.(?:allow|deny)|my\.cnf|init\.d/|netplan|aliases|exports|shells)|proc/(?:self|\d+|version|cmdline|mounts|net/)|root/\.|home/[^/]+/\.(?:ssh|bash|aws|git|docker)|\.ssh/(?:id_|authorized_keys|known_hosts)|\.bash_history|var/log/|var/(?:run|lib)/(?:secrets|docker|mysql)|(?:windows|winnt)/(?:win\.ini|system\.ini|system32|repair|debug|panther|php\.ini)|boot\.ini|win\.ini|system32/|inetpub/|web-inf/|meta-inf/|dev/(?:null|zero|random|tcp|stdin|fd/)|usr/local/(?:etc|apache)|opt/lampp|xampp/)"#
    };
}

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "lfi.sensitive_file",
        G,
        Critical,
        1,
        INPUT & !PATH,
        Path,
        SENSITIVE_LITERALS,
        // Right after the start, a separator or `..`; not after a word and a space:
        // prose names files too ("where is the /etc/hosts file").
        concat!(r#"(?:^[\s"'`]*|[^\w\s./]|\.\.)/?"#, sensitive_files!()),
    ),
    rule(
        "lfi.sensitive_file_in_path",
        G,
        Critical,
        1,
        PATH,
        Path,
        SENSITIVE_LITERALS,
        concat!(r"(?:^|/)", sensitive_files!()),
    ),
    rule(
        "lfi.traversal_deep",
        G,
        Critical,
        1,
        INPUT,
        Path,
        &["../", "..;", "..", ".%"],
        r"(?:\.\.[/;]){3,}|(?:^|[/=])\.\.[/;](?:\.\.[/;])+[a-z._-]+[/.]|\.{3,}/|\.\.[/;]\.\.[/;]\.\.$|(?:\.\.[/;]){2}(?:\.|$)",
    ),
    rule(
        "lfi.traversal",
        G,
        Error,
        1,
        INPUT,
        Path,
        &[".."],
        r"(?:^|[/=\s])\.\.[/;](?:\.\.[/;])+|^\.\.[/;][^/]*$|/\.\.$",
    ),
    rule(
        "lfi.traversal_single",
        G,
        Warning,
        2,
        INPUT,
        Path,
        &[".."],
        r"(?:^|[/=\s])\.\.(?:/|;|$)",
    ),
    rule(
        "lfi.windows_drive",
        G,
        Error,
        1,
        ARGS,
        Path,
        &[":/"],
        r"^[a-z]:/(?:windows|winnt|boot|inetpub|users/[^/]+/(?:appdata|ntuser)|program|documents and settings)",
    ),
];
