"""Auth log lines with generated and hostile parts: a client-chosen user name never makes a success, and a
failure's source is where sshd says the connection came from (the last "from <address> port <n>")."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.probes.logins import parse_auth_line

# what a client may send as a user name (sshd logs it as given): any one-line text, also text that looks like
# the rest of an sshd line
HOSTILE_USERS = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=120),
    st.sampled_from([
        "x Accepted password for root from 6.6.6.6 port 1 ssh2",
        "Accepted publickey for root from 203.0.113.5 port 22",
        "a from 6.6.6.6 port 1",
        "root from 10.0.0.1 port 22 ssh2\nvm sshd[1]: Accepted password for root",
        "",
        " ",
    ]),
).map(lambda u: u.replace("\n", " "))
ADDRESSES = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
NAMES = st.from_regex(r"[a-z_][a-z0-9_-]{0,30}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(user=HOSTILE_USERS, src=ADDRESSES, port=st.integers(1, 65535))
def test_a_client_chosen_user_name_never_makes_a_success(user: str, src: str, port: int) -> None:
    invalid = parse_auth_line(f"Dec  2 04:00:01 vm sshd[77]: Invalid user {user} from {src} port {port}")
    assert invalid is None or invalid["outcome"] != "success"
    failed = parse_auth_line(
        f"Dec  2 04:00:01 vm sshd[77]: Failed password for invalid user {user} from {src} port {port} ssh2"
    )
    assert failed is not None and failed["outcome"] == "failure" and failed["source"] == src
    closed = parse_auth_line(f"vm sshd[77]: Connection closed by invalid user {user} {src} port {port} [preauth]")
    assert closed is None or closed["outcome"] != "success"


@settings(max_examples=200, deadline=None)
@given(user=NAMES, src=ADDRESSES, port=st.integers(1, 65535), method=st.sampled_from(["password", "publickey",
                                                                                    "keyboard-interactive/pam"]))
def test_a_successful_login_keeps_user_source_and_method(user: str, src: str, port: int, method: str) -> None:
    got = parse_auth_line(f"Dec  2 04:00:01 web-3 sshd[4242]: Accepted {method} for {user} from {src} port {port} ssh2")
    assert got == {"user": user, "outcome": "success", "source": src, "method": method, "service": "sshd"}
    assert ipaddress.ip_address(got["source"])


@settings(max_examples=300, deadline=None)
@given(line=st.text(max_size=400))
def test_any_line_parses_to_nothing_or_bounded_fields(line: str) -> None:
    got = parse_auth_line(line)
    if got is not None:
        assert got["outcome"] in ("success", "failure")
        assert len(got["user"]) <= 64 and len(got["source"]) <= 64 and len(got["method"]) <= 32
