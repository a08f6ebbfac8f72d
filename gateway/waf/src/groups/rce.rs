//! Remote command execution on the shell view (quotes and backslashes inside words
//! dropped, `$IFS` as a space, brace lists as spaces): a command separator followed by
//! a command used the way an attacker uses it, reverse shells, Shellshock, Windows
//! `cmd /c` and PowerShell.

use super::loc::*;
use super::Group::Rce as G;
use super::Severity::*;
use super::View::{Norm, Shell};
use super::{rule, RuleDef};

// Commands as an attacker chains them: `;cat /etc/passwd`, `|id`, `$(whoami)`.
macro_rules! commands {
    () => {
        r"(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|csh|dash|python[23]?|perl|ruby|php|nslookup|dig|ping|sleep|echo|printf|rm|chmod|chown|ps|ifconfig|ipconfig|netstat|telnet|base64|xxd|find|awk|gawk|sed|tftp|ftp|powershell|pwsh|cmd|certutil|bitsadmin|wmic|systeminfo|dir|net|tasklist|mkfifo|socat|nmap|ssh|scp|sh|getent|lsof|lwp-download|tclsh|wish|openssl|busybox|php-cgi|icacls|reg|sc|timeout|schtasks|taskkill|whoami\.exe|cmd\.exe|powershell\.exe|type)"
    };
}

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "rce.command_chain",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Shell,
        &[";", "|", "&", "$("],
        // After the command: the end, another separator, an option, a path, a number,
        // a URL or a quote: what a command line has and prose rarely does. Backticks
        // are not separators here: Markdown quotes commands in them (`ls -la`).
        concat!(
            r"(?:[;|]|&&|\|\||\$\(|^&|&\s)\s*(?:(?:/usr)?(?:/local)?/s?bin/)?",
            commands!(),
            r#"(?:\.exe)?(?:\s*$|\s*[;|&)\n]|\s+[-/~.$%\d'"<>]|\s+[a-z]:(?:[\\/]|\s|$)|\s+\w+://|\s+[\w.-]+\.(?:sh|py|pl|php|txt|exe|bat|ps1)\b)|(?:[;|]|&&|\|\||\$\(|^&|&\s)\s*(?:(?:echo|printf|sleep|ping|nslookup|curl|wget|nc|ncat|telnet|ssh|dig|host|ftp|tftp)\s+\S|net\s+(?:user|localgroup|group|view|share|use|accounts|session|config|start|stop)\b|reg\s+(?:query|add|delete)\b|sc\s+(?:query|create|config)\b)"#
        ),
    ),
    rule(
        "rce.newline_command",
        G,
        Critical,
        1,
        INPUT | NAMES,
        Shell,
        &["\n"],
        // One line of text, then a command on a second line: `%0acat /etc/passwd`.
        // Multi-line text (Markdown with a shell block) is left to the weaker rules.
        concat!(
            r"^[^\n]*\n\s*(?:(?:/usr)?(?:/local)?/s?bin/)?",
            commands!(),
            r#"(?:\s*$|\s*[;|&`)]|\s+[-/~.$\d'"<>]|\s+\w+://)[^\n]*$"#
        ),
    ),
    rule(
        "rce.command_word",
        G,
        Warning,
        1,
        INPUT,
        Shell,
        &[";", "|", "&", "$("],
        r"(?:[;|]|&&|\$\()\s*(?:cat|ls|id|whoami|uname|wget|curl|nc|bash|sh|python|perl|ping|sleep|echo|rm|chmod|ps|dir|type|net|powershell|cmd)\b",
    ),
    rule(
        "rce.backtick_command",
        G,
        Critical,
        1,
        INPUT,
        Shell,
        &["`"],
        // A command in backticks that is the whole value or glued to data before it
        // (`x`id``, `1;`whoami``). Markdown puts a space before inline code.
        concat!(
            r"(?:^\s*|[\w'=;|&)(])`\s*(?:(?:/usr)?(?:/local)?/s?bin/)?",
            commands!(),
            r"(?:\s[^`]*)?`"
        ),
    ),
    rule(
        "rce.glob_path",
        G,
        Critical,
        1,
        INPUT,
        Shell,
        &["?", "*"],
        // `/???/??t /???/p??s??`: a command and its file spelled with wildcards.
        r"(?:^|[\s;|&$(`])/[\w?*\[\]]*[?*][\w?*\[\]]*/[\w?*\[\]]*[?*]",
    ),
    rule(
        "rce.shellshock",
        G,
        Critical,
        1,
        ALL,
        Norm,
        &["()"],
        r"^\s*\(\s*\)\s*\{",
    ),
    rule(
        "rce.reverse_shell",
        G,
        Critical,
        1,
        INPUT,
        Shell,
        &[
            "bash",
            "/dev/",
            "nc ",
            "ncat",
            "mkfifo",
            "python",
            "perl",
            "ruby",
            "socat",
            "powershell",
            "iex",
            "invoke-",
            "downloadstring",
            "frombase64string",
            "sh -",
            "telnet",
            "xterm",
            "-e ",
        ],
        r"\bbash\s+-[ic]\b|/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)(?:\.exe)?\s+(?:-[a-z]*[elcv]|\d{1,3}\.\d)|\bmkfifo\s|\bpython[23]?\s+-c\s+.?\s*import|\bperl\s+-(?:e|mio|msocket)\b|\bruby\s+-(?:rsocket|e)\b|\bsocat\s+(?:exec|tcp|-)|\bpowershell(?:\.exe)?\s+-(?:e|ec|enc|encodedcommand|nop|noni|w|windowstyle|c|command|exec|executionpolicy|noprofile)\b|\biex\s*\(|invoke-(?:expression|webrequest|shellcode|mimikatz)|downloadstring\s*\(|frombase64string\s*\(|\bsh\s+-c\s|\btelnet\s+\d|\bxterm\s+-display|\b(?:sh|bash|zsh)\s+-i\b|\b(?:curl|wget)\s+[^|;]*\|\s*(?:ba)?sh\b",
    ),
    rule(
        "rce.windows_shell",
        G,
        Critical,
        1,
        INPUT,
        Shell,
        &[
            "cmd",
            "powershell",
            "wscript",
            "cscript",
            "rundll32",
            "regsvr32",
            "mshta",
            "certutil",
        ],
        r"\bcmd(?:\.exe)?\s*/[ckr]\b|\bpowershell(?:\.exe)?\s+[-/]|\b(?:wscript|cscript|rundll32|regsvr32|mshta)(?:\.exe)?\s|\bcertutil(?:\.exe)?\s+-(?:urlcache|decode)",
    ),
    rule(
        "rce.unix_shell_path",
        G,
        Error,
        1,
        INPUT,
        Shell,
        &["/bin/", "/usr/bin/", "/sbin/"],
        r"(?:^|[\s;|&`($=])/(?:usr/)?(?:local/)?s?bin/(?:[a-z]*sh|cat|id|ls|nc|wget|curl|python\d?|perl|php|echo|uname|whoami|busybox|ping|env|rm|chmod)\b",
    ),
    rule(
        "rce.substitution",
        G,
        Error,
        1,
        INPUT,
        Shell,
        &["$(", "`"],
        r"\$\(\s*(?:[a-z]+\s+)?[/~.a-z][^)]{0,80}\)|`\s*(?:id|whoami|uname|cat|ls|curl|wget|sleep|ping|nslookup|echo|nc)(?:\s[^`]{0,80})?`",
    ),
    rule(
        "rce.redirect",
        G,
        Warning,
        1,
        INPUT,
        Shell,
        &[">", "<"],
        r"[>]\s*/(?:tmp|var|dev|etc|usr)/|\d?>&\d|<\s*/etc/",
    ),
];
