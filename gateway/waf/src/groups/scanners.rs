//! Known scanners by User-Agent, and paths that only scanners and attackers ask for
//! (secrets in dot files, installers, admin tools, known exploit endpoints).

use super::loc::*;
use super::Group::Scanners as G;
use super::Severity::*;
use super::View::{Norm, Path};
use super::{rule, RuleDef};

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "scanners.user_agent",
        G,
        Critical,
        1,
        UA,
        Norm,
        &[
            "sqlmap", "nikto", "nmap", "masscan", "nuclei", "dirbuster", "dirb", "gobuster", "ffuf", "feroxbuster",
            "wpscan", "acunetix", "netsparker", "nessus", "openvas", "w3af", "arachni", "zgrab", "zmeu", "havij",
            "jaeles", "whatweb", "wfuzz", "commix", "skipfish", "appscan", "webinspect", "paros", "burp",
            "hydra", "sqlninja", "bsqlbf", "xsser", "jbrofuzz", "metasploit", "morfeus", "grabber", "owasp",
            "zap", "httpx", "interactsh", "fuzz faster", "brutus", "qualys", "nexpose", "vega", "pangolin",
            "crimscanner", "webshag", "uniscan", "wapiti", "netlab", "mozlila", "x-scan", "xenu", "nsauditor",
            "dotdotpwn", "blackwidow", "struts", "log4j", "shellshock", "pmafind", "muieblackcat", "fimap",
            "joomscan", "droopescan", "cmsmap", "vulnscan", "scanbot", "bbqsql", "nosqlmap", "tplmap",
            "dalfox", "xsstrike", "kadimus", "gospider", "hakrawler", "katana", "wafw00f", "zmap", "l9explore",
            "l9tcpid", "censysinspect", "expanse", "internet-measurement", "leakix", "netsystemsresearch",
        ],
        r"\b(?:sqlmap|nikto|nmap|masscan|nuclei|dirbuster|dirb|gobuster|ffuf|feroxbuster|wpscan|acunetix|netsparker|nessus|openvas|w3af|arachni|zgrab|zmeu|havij|jaeles|whatweb|wfuzz|commix|skipfish|appscan|webinspect|paros|burp(?:suite|collaborator)?|hydra|sqlninja|bsqlbf|xsser|jbrofuzz|metasploit|morfeus|grabber|owasp[\s_-]?zap|zap/|httpx - open-source|interactsh|fuzz faster u fool|brutus|qualys|nexpose|pangolin|crimscanner|webshag|uniscan|wapiti|mozlila|x-scan|nsauditor|dotdotpwn|black\s?widow|pmafind|muieblackcat|fimap|joomscan|droopescan|cmsmap|vulnscan|bbqsql|nosqlmap|tplmap|dalfox|xsstrike|kadimus|wafw00f|zmap|l9explore|l9tcpid|leakix|netsystemsresearch)\b",
    ),
    rule(
        "scanners.probe_path",
        G,
        Critical,
        1,
        PATH,
        Path,
        &[
            "/.env", "/.git", "/.svn", "/.hg", "/.ds_store", "/.aws", "/.ht", "/.ssh", "/.docker", "/.vscode",
            "/.idea", "/.npmrc", "/.bash", "/wp-admin/", "/wp-config", "phpmyadmin", "/pma", "/myadmin",
            "adminer", "phpinfo", "/server-status", "/server-info", "/actuator", "eval-stdin", "/solr/admin",
            "/manager/html", "/jmx-console", "/invoker/", "/hnap1", "/boaform", "/cgi-bin/", "/.well-known/",
            "/backup", "dump.sql", "/id_rsa", "/web.config", "/config.php", "/setup.php", "/install.php",
            "/xmlrpc.php", "/phpunit", "/telescope", "/_profiler", "/debug/", "/console", "/.circleci",
            "/.travis", "/.gitlab", "/sftp-config", "/composer.", "/.kube", "/.terraform", "/.s3cfg",
            "/wlwmanage", "/shell", "/cmd.", "/c99.", "/r57.", "/webshell", "/autodiscover", "/owa/", "/ecp/",
            "/vpn/", "/remote/fgt", "/dana-", "/hudson", "/jenkins/script", "/script", "/cgi-mod", "/.user.ini",
        ],
        r"/\.(?:env(?:\.[\w.-]*)?|git|svn|hg|bzr|ds_store|aws|htpasswd|htaccess|ssh|docker|dockercfg|vscode|idea|npmrc|bash_history|bashrc|circleci|travis\.yml|gitlab-ci\.yml|kube|terraform|s3cfg|user\.ini|pgpass|netrc|git-credentials|my\.cnf|boto|azure)(?:/|$)|/wp-admin/(?:setup-config|install)\.php|/wp-config\.php(?:\.|~|\.bak|\.old|\.save|\.swp|\.txt)?$|/(?:phpmyadmin|phpmyadmin\d*|pma|myadmin|mysqladmin|dbadmin|sqladmin|phppgadmin)(?:/|$)|/adminer(?:-[\d.]+)?\.php|/(?:phpinfo|info|test|i)\.php$|/server-(?:status|info)$|/actuator/(?:env|heapdump|gateway|jolokia|configprops|mappings|threaddump|loggers|trace|httptrace|shutdown|restart)|/vendor/phpunit/.*eval-stdin\.php|/solr/admin/|/manager/html|/jmx-console|/invoker/(?:jmxinvokerservlet|ejbinvokerservlet)|/hnap1|/boaform/|/cgi-bin/(?:php\d?|test-cgi|printenv|\.%2e|luci)|/(?:backup|dump|db|database|site|www|data|sql)\.(?:sql|zip|tar|tar\.gz|tgz|rar|7z|bak)$|/id_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?$|/web\.config$|/_profiler/phpinfo|/telescope/requests|/sftp-config\.json|/(?:c99|r57|c100|wso|b374k|shell|cmd|webshell|alfa)\.(?:php|asp|aspx|jsp)$|/remote/fgt_lang|/dana-na/|/jenkins/script|/hudson/script|/script$|/console/(?:login/loginform\.jsp|css/)|/\.well-known/(?:.*\.php)|/autodiscover/autodiscover\.json|/ecp/.*\.js$|/owa/auth/.*\.(?:js|aspx)",
    ),
];
