"""PII: e-mail addresses and public IPv4 addresses become placeholders (datatrove's PIIFormatter).

Private, loopback and reserved IPs (10.x, 192.168.x, 127.x, ...) are not personal and stay, as do
strings that only look like an IP (999.1.1.1 is not matched: each part is 0..255, and unlike
datatrove we do not replace the 99.1.1.1 inside it).
"""
import ipaddress
import re

EMAIL_RE = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])")
IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)(?!\d|\.\d)")

# example.com / example.org are reserved for examples; the IPs are datatrove's unrouted picks
EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
IP_PLACEHOLDERS = ("22.214.171.124", "126.96.36.199", "188.8.131.52",
                   "184.108.40.206", "220.127.116.11", "18.104.22.168")


def is_public_ip(s):
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


def anonymise(text):
    """Returns (text, n_emails, n_ips) with placeholders cycled through in order of appearance."""
    counts = [0, 0]

    def email(m):
        counts[0] += 1
        return EMAIL_PLACEHOLDERS[(counts[0] - 1) % len(EMAIL_PLACEHOLDERS)]

    def ip(m):
        if not is_public_ip(m.group(0)):
            return m.group(0)
        counts[1] += 1
        return IP_PLACEHOLDERS[(counts[1] - 1) % len(IP_PLACEHOLDERS)]

    if "@" in text:
        text = EMAIL_RE.sub(email, text)
    text = IPV4_RE.sub(ip, text)
    return text, counts[0], counts[1]
