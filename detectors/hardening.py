"""Hardening checks: a library of CIS Level 1 kind checks kept as data (detectors/checks/*.yaml, one file
per family), evaluated on what the agent reports (cfg: keys from the config probe, pkg: packages, listen:
sockets), plus vulnerable packages from OSV data (detectors/osv.py).

    library = library_from_documents(docs)      # docs: (name, parsed YAML) pairs; the detectors read no files:
                                                # streams/checks_data.py reads them (hardening_library())
    view = HostView.from_features(features)     # a host's (or an image's majority) feature strings
    for check in library.checks:
        result = check.evaluate(view)           # Result(status "pass" | "fail" | "na", observed values)

A check file:

    family: ssh
    defaults: {platforms: [debian, rhel], when: {present: file.sha256:/etc/ssh/sshd_config}}
    checks:
      - id: ssh-root-login
        title: sshd lets root log in
        cis: "5.2.7"
        severity: high
        key: sshd.permitrootlogin        # or keys: [...], key_glob: [...]: every one must pass
        default: prohibit-password       # sshd's built-in default when the key is not set
        expect: {in: ["no"]}
        rationale: ...
        fix: ...

Expectations (`expect`), all case-insensitive on values: `in`, `not_in`, `min`, `max` (integers),
`mode_max` (no permission bit beyond this octal mode), `owner` ("uid:gid"), `owner_uid`, `has_all` (the
comma-separated value holds every flag), `matches` / `not_matches` (regular expressions), `present`,
`absent`. A missing key takes `default`, else follows `missing`: na (default), fail or pass. Besides
key checks: `packages_absent: [names]` (fails when one is installed), `packages_any: [names]` (fails
when none is), `not_listening: ["tcp/23", ...]` (fails on a listener of that port not bound to
loopback), `package_below: {name: version}` (a version floor: fails when the package is installed older
than that, in the platform's own ordering, detectors/versions.py; such checks give way to OSV data when the
engine has it, so one vulnerable package is one finding), and `all:` / `any:` lists of the above. `when:`
(same forms) makes a check not applicable (na) where it does not hold, e.g. sshd checks on a host without
sshd.

A check's verdict needs the agent's hardening inputs (`cfg:hardening.inputs`): hosts with an older agent,
or whose configuration has not arrived yet, are not judged. Platforms come from os-release (`os.id`,
`os.id_like`): debian (Debian, Ubuntu) or rhel (RHEL, CentOS, Rocky, AlmaLinux, Oracle, Fedora, Amazon).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, Union

from contract.findings import Severity
from detectors.features import kind_of, split_state

if TYPE_CHECKING:
    from detectors.osv import OsvIndex

OsvData = Union["OsvIndex", Callable[[], "OsvIndex | None"], None]
"""OSV data as the engine takes it: an index in memory, a callable returning the current one, or None."""

INPUTS_KEY = "hardening.inputs"
PLATFORMS = ("debian", "rhel")
_DEBIAN = {"debian", "ubuntu", "linuxmint", "raspbian"}
_RHEL = {"rhel", "centos", "rocky", "almalinux", "ol", "fedora", "amzn", "redhat"}
ABSENT = "(absent)"

Status = Literal["pass", "fail", "na"]
_EXPECT_KEYS = {"in", "not_in", "min", "max", "mode_max", "owner", "owner_uid", "has_all", "matches",
                "not_matches", "present", "absent"}
_NODE_KEYS = {"key", "keys", "key_glob", "default", "missing", "expect", "packages_absent", "packages_any",
              "not_listening", "package_below", "all", "any"}


class CheckError(ValueError):
    """A check file is invalid; the message names the file, the check and the fix."""


# ---- what a host shows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostView:
    """A host's (or image's) configuration values, packages and listeners, from feature strings."""

    cfg: Mapping[str, str]
    pkg: Mapping[str, str]
    listen: frozenset[str] = frozenset()
    """proto/port of every listener not bound to loopback ("tcp/23")."""

    @classmethod
    def from_features(cls, features: Iterable[str]) -> HostView:
        cfg: dict[str, str] = {}
        pkg: dict[str, str] = {}
        listen: set[str] = set()
        for f in features:
            kind = kind_of(f)
            if kind == "cfg":
                _, k, v = split_state(f)
                cfg[k] = v
            elif kind == "pkg":
                _, k, v = split_state(f)
                pkg[k.partition(":")[0]] = v
            elif kind == "listen":
                sock = f[len("listen:") :].partition("|")[0]
                port, _, scope = sock.partition("@")
                if scope != "local":
                    listen.add(port)
        return cls(cfg, pkg, frozenset(listen))

    @property
    def ready(self) -> bool:
        """The agent collects the hardening inputs and its configuration has arrived."""
        return INPUTS_KEY in self.cfg

    @property
    def platform(self) -> str | None:
        ids = {self.cfg.get("os.id", ""), *self.cfg.get("os.id_like", "").split()}
        if ids & _DEBIAN:
            return "debian"
        if ids & _RHEL:
            return "rhel"
        return None


# ---- predicates ------------------------------------------------------------------------------------
def _int(v: str) -> int | None:
    try:
        return int(v.strip(), 8 if v.strip().startswith("0") and len(v.strip()) > 1 else 10)
    except ValueError:
        return None


def _number(v: str) -> int | None:
    try:
        return int(v.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class Expect:
    spec: Mapping[str, Any]

    def holds(self, value: str | None) -> bool:
        s = self.spec
        if value is None:
            return bool(s.get("absent"))
        if s.get("absent"):
            return False
        v = value.strip().lower()
        ok = True
        if "in" in s:
            ok &= v in {str(x).lower() for x in s["in"]}
        if "not_in" in s:
            ok &= v not in {str(x).lower() for x in s["not_in"]}
        if "min" in s or "max" in s:
            n = _number(v)
            ok &= n is not None and ("min" not in s or n >= int(s["min"])) and ("max" not in s or n <= int(s["max"]))
        if "mode_max" in s:
            mode = _int(v)
            ok &= mode is not None and mode & ~int(str(s["mode_max"]), 8) == 0
        if "owner" in s:
            ok &= v == str(s["owner"])
        if "owner_uid" in s:
            ok &= v.partition(":")[0] == str(s["owner_uid"])
        if "has_all" in s:
            ok &= {str(x).lower() for x in s["has_all"]} <= set(v.split(","))
        if "matches" in s:
            ok &= re.search(str(s["matches"]), value, re.IGNORECASE) is not None
        if "not_matches" in s:
            ok &= re.search(str(s["not_matches"]), value, re.IGNORECASE) is None
        return ok


@dataclass(frozen=True)
class Node:
    """One predicate of a check: over configuration keys, packages, listeners, or all/any of others."""

    keys: tuple[str, ...] = ()
    key_glob: tuple[str, ...] = ()
    default: str | None = None
    missing: Status = "na"
    expect: Expect | None = None
    packages_absent: tuple[str, ...] = ()
    packages_any: tuple[str, ...] = ()
    not_listening: tuple[str, ...] = ()
    package_below: tuple[tuple[str, str], ...] = ()
    all: tuple[Node, ...] = ()
    any: tuple[Node, ...] = ()

    def evaluate(self, view: HostView, seen: dict[str, str]) -> Status:
        if self.all or self.any:
            results = [n.evaluate(view, seen) for n in (self.all or self.any)]
            known = [r for r in results if r != "na"]
            if not known:
                return "na" if self.missing == "na" else self.missing
            if self.all:
                return "fail" if "fail" in known else "pass"
            return "pass" if "pass" in known else "fail"
        if self.packages_absent:
            installed = [p for p in self.packages_absent if p in view.pkg]
            for p in installed:
                seen[f"package {p}"] = view.pkg[p]
            return "fail" if installed else "pass"
        if self.packages_any:
            found = [p for p in self.packages_any if p in view.pkg]
            seen["packages " + "|".join(self.packages_any)] = ", ".join(f"{p} {view.pkg[p]}" for p in found) or ABSENT
            return "pass" if found else "fail"
        if self.package_below:
            from detectors.versions import Scheme, compare, valid

            scheme: Scheme = "rpm" if view.platform == "rhel" else "dpkg"
            below = False
            for name, floor in self.package_below:
                have = view.pkg.get(name)
                if have is None or not valid(scheme, have):
                    continue
                seen[f"package {name}"] = f"{have} (fixed in {floor})"
                below |= compare(scheme, have, floor) < 0
            return "fail" if below else "pass"
        if self.not_listening:
            bound = [p for p in self.not_listening if p in view.listen]
            for p in bound:
                seen[f"listening {p}"] = "yes"
            return "fail" if bound else "pass"
        keys = list(self.keys)
        for pattern in self.key_glob:  # a link's mode (0777) says nothing: links are reported as file.link
            keys += sorted(k for k in view.cfg if fnmatch.fnmatchcase(k, pattern)
                           and f"file.link:{k.partition(':')[2]}" not in view.cfg)
        if not keys:
            return "na"
        assert self.expect is not None
        status: Status = "pass"
        judged = False
        for k in keys:
            value = view.cfg.get(k)
            seen[k] = ABSENT if value is None else value
            if value is None and not self.expect.spec.get("absent"):
                if self.default is not None:
                    value = self.default
                    seen[k] = f"{ABSENT}, default {value}"
                elif self.missing == "na":
                    continue
                elif self.missing == "pass":
                    judged = True
                    continue
                else:
                    judged, status = True, "fail"
                    continue
            judged = True
            if not self.expect.holds(value):
                status = "fail"
        return status if judged else "na"


def _node(raw: Mapping[str, Any], where: str) -> Node:
    unknown = set(raw) - _NODE_KEYS
    if unknown:
        raise CheckError(f"{where}: unknown field(s) {sorted(unknown)}; a predicate has {sorted(_NODE_KEYS)}")
    if raw.get("all") or raw.get("any"):
        subs = tuple(_node(r, where) for r in (raw.get("all") or raw.get("any") or ()))
        missing = raw.get("missing", "na")  # when none of them can be judged
        if missing not in ("na", "fail", "pass"):
            raise CheckError(f"{where}: missing must be na, fail or pass")
        return Node(all=subs, missing=missing) if raw.get("all") else Node(any=subs, missing=missing)
    if raw.get("package_below"):
        below = raw["package_below"]
        if not isinstance(below, Mapping) or not below:
            raise CheckError(f"{where}: package_below maps package names to the first fixed version")
        return Node(package_below=tuple((str(k), str(v)) for k, v in below.items()))
    if raw.get("packages_absent") or raw.get("packages_any") or raw.get("not_listening"):
        return Node(packages_absent=tuple(raw.get("packages_absent") or ()),
                    packages_any=tuple(raw.get("packages_any") or ()),
                    not_listening=tuple(str(p) for p in raw.get("not_listening") or ()))
    keys = raw.get("keys") or ([raw["key"]] if raw.get("key") else [])
    globs = raw.get("key_glob") or ()
    if not keys and not globs:
        raise CheckError(f"{where}: say what it checks with key, keys, key_glob, packages_absent, packages_any, "
                         f"not_listening, package_below, all or any")
    expect = raw.get("expect")
    if not isinstance(expect, Mapping) or not expect or set(expect) - _EXPECT_KEYS:
        raise CheckError(f"{where}: expect must be a mapping of {sorted(_EXPECT_KEYS)}")
    missing = raw.get("missing", "na")
    if missing not in ("na", "fail", "pass"):
        raise CheckError(f"{where}: missing must be na, fail or pass")
    for rx in (expect.get("matches"), expect.get("not_matches")):
        if rx is not None:
            try:
                re.compile(str(rx))
            except re.error as e:
                raise CheckError(f"{where}: bad regular expression {rx!r}: {e}") from e
    return Node(
        keys=tuple(str(k) for k in keys),
        key_glob=tuple([globs] if isinstance(globs, str) else globs),
        default=None if raw.get("default") is None else str(raw["default"]),
        missing=missing,
        expect=Expect(dict(expect)),
    )


# ---- checks and the library --------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    status: Status
    observed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    id: str
    family: str
    title: str
    rationale: str
    fix: str
    severity: Severity
    platforms: tuple[str, ...]
    predicate: Node
    when: Node | None = None
    cis: str | None = None

    @property
    def version_floor(self) -> bool:
        """A `package_below` check: OSV data, when the engine has it, says the same with every advisory."""
        return _has_floor(self.predicate)

    def evaluate(self, view: HostView) -> Result:
        if not view.ready:
            return Result("na")
        platform = view.platform
        if platform is None and set(self.platforms) != set(PLATFORMS):
            return Result("na")
        if platform is not None and platform not in self.platforms:
            return Result("na")
        if self.when is not None and self.when.evaluate(view, {}) != "pass":
            return Result("na")
        seen: dict[str, str] = {}
        status = self.predicate.evaluate(view, seen)
        return Result(status, seen)


@dataclass(frozen=True)
class Library:
    checks: tuple[Check, ...]

    @property
    def by_id(self) -> dict[str, Check]:
        return {c.id: c for c in self.checks}

    def families(self) -> dict[str, list[Check]]:
        out: dict[str, list[Check]] = {}
        for c in self.checks:
            out.setdefault(c.family, []).append(c)
        return out

    def evaluate(self, view: HostView) -> dict[str, Result]:
        return {c.id: c.evaluate(view) for c in self.checks}


def library_from_documents(documents: Iterable[tuple[str, Any]]) -> Library:
    """Every check of parsed check files: (name, document) pairs, e.g. ("checks/ssh.yaml", yaml.safe_load(...)),
    in order; ids must be unique. The name is the family when the document gives none (its stem) and is named
    in error messages. Reading the files is the caller's (streams/checks_data.py: the worker, the CLI, the
    backtest and the evaluation); the detectors read none."""
    checks: list[Check] = []
    seen: set[str] = set()
    for name, raw in documents:
        for c in checks_from_document(name, raw):
            if c.id in seen:
                raise CheckError(f"{name}: check id {c.id} is used twice; ids must be unique")
            seen.add(c.id)
            checks.append(c)
    return Library(tuple(checks))


def checks_from_document(name: str, raw: Any) -> list[Check]:
    """The checks of one parsed check file (`name`: where it came from, for the family and error messages)."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise CheckError(f"{name}: a check file is a mapping with family, defaults and checks")
    family = str(raw.get("family") or PurePath(name).stem)
    defaults = raw.get("defaults") or {}
    out = []
    if not isinstance(defaults, Mapping):
        raise CheckError(f"{name}: defaults is a mapping of check fields (platforms, when, ...)")
    for i, r in enumerate(raw.get("checks") or []):
        if not isinstance(r, Mapping):
            raise CheckError(f"{name}: check {i + 1} is not a mapping; give it id, title, rationale, fix and a key")
        where = f"{name}: check {i + 1} ({r.get('id', '?')})"
        r = {**defaults, **r}
        for required in ("id", "title", "rationale", "fix"):
            if not r.get(required):
                raise CheckError(f"{where}: every check needs {required}")
        try:
            severity = Severity(r.get("severity", "medium"))
        except ValueError as e:
            raise CheckError(f"{where}: severity must be one of {[s.value for s in Severity]}") from e
        platforms = tuple(r.get("platforms") or PLATFORMS)
        if set(platforms) - set(PLATFORMS):
            raise CheckError(f"{where}: platforms are {list(PLATFORMS)}")
        body = {k: v for k, v in r.items() if k in _NODE_KEYS}
        out.append(
            Check(
                id=str(r["id"]),
                family=family,
                title=str(r["title"]),
                rationale=" ".join(str(r["rationale"]).split()),
                fix=" ".join(str(r["fix"]).split()),
                severity=severity,
                platforms=platforms,
                predicate=_node(body, where),
                when=_node(r["when"], f"{where} when") if r.get("when") else None,
                cis=None if r.get("cis") is None else str(r["cis"]),
            )
        )
    return out


def describe_values(observed: Mapping[str, str]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in observed.items()) or "nothing observed"


# ---- judging images and hosts inside the FamilyEngine ------------------------------------------------
PENDING_SUBJECT = "hardening:"
"""The engine's PENDING key of an image's hardening judgement: p|<image>|hardening: (hosts = those that changed)."""
_RANK = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
VULN_SEVERITY = Severity.HIGH
MAX_LISTED = 50


@dataclass(frozen=True)
class Vulnerable:
    """An installed package version with the advisories that affect it."""

    package: str
    installed: str
    fixed: str | None
    advisories: tuple[str, ...]

    def text(self) -> str:
        fixed = f"fixed in {self.fixed}" if self.fixed else "no fixed version yet"
        return f"{self.package} {self.installed} ({', '.join(self.advisories)}; {fixed})"


def vulnerabilities(db: Any, view: HostView) -> dict[str, Vulnerable]:
    """package -> Vulnerable for every installed package OSV data says is affected."""
    from detectors.osv import Platform
    from detectors.versions import compare

    os_id = view.cfg.get("os.id")
    if db is None or not os_id:
        return {}
    platform = Platform(os_id, view.cfg.get("os.version_id", ""))
    out = {}
    for name, version in sorted(view.pkg.items()):
        matches = db.match(platform, name, version)
        if matches:
            ids = tuple(dict.fromkeys(i for m in matches for i in m.ids))
            fixed = None  # the highest fixed version fixes every advisory listed
            for m in matches:
                if m.fixed and (fixed is None or compare(platform.scheme or "dpkg", m.fixed, fixed) > 0):
                    fixed = m.fixed
            out[name] = Vulnerable(name, version, fixed, ids)
    return out


def image_features(counts: Mapping[str, list[float]], n: int, majority: float) -> list[str]:
    """An image's view from its cohort: per configuration key or package the value most hosts have (ties: the
    value seen first, i.e. the image's first hosts), plus the behaviour most hosts show."""
    best: dict[tuple[str, str], tuple[float, float, str]] = {}
    out = []
    for f, (count, first) in counts.items():
        kind = kind_of(f)
        if kind in ("cfg", "pkg"):
            _, key, _ = split_state(f)
            cur = best.get((kind, key))
            if cur is None or (count, -first) > (cur[0], -cur[1]):
                best[(kind, key)] = (count, first, f)
        elif kind == "listen" and n and count / n >= majority:
            out.append(f)
    return out + [f for _, _, f in best.values()]


class HardeningJudge:
    """The engine's hardening work: an image is assessed once from its first hosts (image-level findings name
    the image and its bake pipeline); a host is reported only where it is weaker than its image (drift, with
    the image's and the host's values); the new image of a rollout is compared with the image it replaces
    (one finding at its first host for what it newly fails or newly brings vulnerable)."""

    def __init__(self, engine: Any, library: Library, osv: OsvData, delay_s: float) -> None:
        """`library`: the checks, parsed (streams/checks_data.py reads them); `osv`: OSV data in memory (an
        OsvIndex, or a callable returning the current one: the worker's `streams.osv_data.OsvSource` reloads it
        when it changes on disk); None: no vulnerable packages."""
        self.engine = engine
        self.library = library
        self.osv = osv
        self.delay_s = float(delay_s)
        self._ports = {p for c in self.library.checks for p in _ports(c.predicate)}

    def osv_index(self) -> Any:
        """The OSV index to match against now (None without data)."""
        osv = self.osv
        return osv() if callable(osv) else osv

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    # ---- scheduling --------------------------------------------------------------------------------
    def relevant(self, obs: Any) -> bool:
        for f in (*obs.added, *obs.removed):
            kind = kind_of(f)
            if kind in ("cfg", "pkg"):
                return True
            if kind == "listen" and f[len("listen:") :].partition("@")[0] in self._ports:
                return True
        return False

    def observe(self, obs: Any, t: float) -> None:
        """A host's configuration, packages or relevant listeners changed: judge its image and it soon."""
        if obs.gone or not self.relevant(obs):
            return
        import heapq
        from dataclasses import replace

        from detectors.records import PendingJudgement
        from detectors.store_keys import PENDING

        eng = self.engine
        key = PENDING.key(obs.image_id, PENDING_SUBJECT)
        stored = eng.store.get(key)
        if stored is None:
            e = PendingJudgement(first=t, grown=t, delay=self.delay_s, hosts={obs.host_id: t})
            heapq.heappush(eng._heap, (e.due(0.0), obs.image_id, PENDING_SUBJECT))
        else:
            old = PendingJudgement.from_json(stored)
            if obs.host_id in old.hosts:
                return
            e = replace(old, hosts={**old.hosts, obs.host_id: t})
        eng.store[key] = e.to_json()

    # ---- judging -----------------------------------------------------------------------------------
    def evaluate(self, view: HostView, osv: Any) -> dict[str, Result]:
        """Every check's result on `view`; with OSV data, version floors are not applicable (OSV reports it)."""
        results = self.library.evaluate(view)
        if osv is not None:
            for c in self.library.checks:
                if c.version_floor:
                    results[c.id] = Result("na")
        return results

    def view(self, image: str) -> HostView:
        b = self.engine.baseline
        return HostView.from_features(image_features(b.counts.get(image, {}), b.n(image), self.engine.majority))

    def judge(self, image: str, hosts: Iterable[str], now: float) -> list[Any]:
        eng = self.engine
        b = eng.baseline
        members = sorted(b.members.get(image, ()), key=lambda h: (b.hosts[h].first, h))
        if not members:
            return []
        osv = self.osv_index()
        family = b.hosts[members[0]].family
        first = members[0]
        view = self.view(image)
        if not view.ready:
            return []
        results = self.evaluate(view, osv)
        vulns = vulnerabilities(osv, view)
        out: list[Any] = []
        st = eng.rollout.state(family)
        if st is not None and st.new == image and st.old != image:
            out += self._qualify(image, st.old, family, first, view, results, vulns, osv, now)
        else:
            out += self._image_findings(image, family, first, results, vulns, now)
        for h in hosts:
            rec = b.hosts.get(h)
            if rec is not None and rec.image == image:
                out += self._host_findings(h, image, family, view, results, vulns, osv, now)
        return out

    def _image_findings(self, image: str, family: str, host: str, results: Mapping[str, Result],
                        vulns: Mapping[str, Vulnerable], now: float) -> list[Any]:
        from contract.findings import FindingKind
        from detectors.store_keys import IMAGE_SUBJECT_PREFIX

        eng = self.engine
        out: list[Any] = []
        n = eng.baseline.n(image)
        for check in self.library.checks:
            r = results[check.id]
            if r.status != "fail":
                continue
            cis = f" (CIS {check.cis})" if check.cis else ""
            text = (
                f"{check.title}{cis} on image {image}: {describe_values(r.observed)}. Assessed once for the image "
                f"(first seen on host {host}; {n} host(s) run it): every host cloned from it has this, so fix it "
                f"where image {image} is built (its bake pipeline), not host by host: {check.fix}. Why: "
                f"{check.rationale}"
            )
            out += eng._emit(
                FindingKind.POLICY_VIOLATION, host, image, family, now, _score(check.severity), check.severity,
                f"hardening:{check.id}", text,
                {"check": check.id, "family": check.family, "cis": check.cis, "scope": "image",
                 "observed": r.observed, "fix_in": f"bake pipeline of image {image}"},
                suppress_as=IMAGE_SUBJECT_PREFIX + image, suppress_for=float("inf"),
            )
        for v in vulns.values():
            hosts = self._hosts_with(image, f"pkg:{v.package}={v.installed}")
            others = self._other_images(image, family, v)
            text = (
                f"vulnerable package {v.text()} in image {image} (first seen on host {host}); on host(s) "
                f"{_few(hosts)}" + (f"; also in image(s) {_few(others)}" if others else "")
                + f". Rebuild image {image} with the fixed version and replace its hosts."
            )
            out += eng._emit(
                FindingKind.POLICY_VIOLATION, host, image, family, now, _score(VULN_SEVERITY), VULN_SEVERITY,
                f"vuln:{v.package}={v.installed}", text,
                {"scope": "image", "package": v.package, "installed": v.installed, "fixed": v.fixed,
                 "advisories": list(v.advisories), "hosts": hosts[:MAX_LISTED], "images": [image, *others],
                 "fix_in": f"bake pipeline of image {image}"},
                suppress_as=IMAGE_SUBJECT_PREFIX + image, suppress_for=float("inf"),
            )
        return out

    def _qualify(self, image: str, old: str, family: str, host: str, view: HostView, results: Mapping[str, Result],
                 vulns: Mapping[str, Vulnerable], osv: Any, now: float) -> list[Any]:
        """The new image of a rollout against the image it replaces: one finding for what it makes worse."""
        from contract.findings import FindingKind
        from detectors.store_keys import IMAGE_SUBJECT_PREFIX

        eng = self.engine
        old_view = self.view(old)
        if not old_view.ready:
            return []
        old_results = self.evaluate(old_view, osv)
        old_vulns = vulnerabilities(osv, old_view)
        who = IMAGE_SUBJECT_PREFIX + image
        worse = [c for c in self.library.checks
                 if results[c.id].status == "fail" and old_results[c.id].status != "fail"
                 and eng.suppress.allow(who, f"hardening:{c.id}", now, float("inf"))]
        new_vulns = [v for v in vulns.values()
                     if not set(v.advisories) <= set(old_vulns[v.package].advisories if v.package in old_vulns else ())
                     and eng.suppress.allow(who, f"vuln:{v.package}={v.installed}", now, float("inf"))]
        if not worse and not new_vulns:
            return []
        parts = []
        for c in worse:
            before = describe_values(old_results[c.id].observed)
            after = describe_values(results[c.id].observed)
            parts.append(f"{c.id}: {c.title} (was {before}; now {after})")
        for v in new_vulns:
            was = old_view.pkg.get(v.package)
            parts.append(f"vulnerable {v.text()}" + (f" (image {old} has {was})" if was else " (new package)"))
        severity = max([c.severity for c in worse] + [VULN_SEVERITY] * bool(new_vulns), key=_RANK.__getitem__)
        text = (
            f"rollout of image {image} in family {family}, replacing image {old}, makes hardening worse (seen on "
            f"its first host {host}, {eng.baseline.n(image)} host(s) so far): " + "; ".join(parts)
            + f". Hold the rollout and fix the bake pipeline of image {image}; everything else it brings is as "
            f"image {old} had it."
        )
        return eng._emit(
            FindingKind.POLICY_VIOLATION, host, image, family, now, _score(severity), severity,
            "hardening:rollout", text,
            {"scope": "image", "rollout": {"old": old, "new": image},
             "checks": [{"check": c.id, "cis": c.cis, "before": old_results[c.id].observed,
                         "after": results[c.id].observed} for c in worse],
             "vulnerable": [{"package": v.package, "installed": v.installed, "fixed": v.fixed,
                             "advisories": list(v.advisories), "before": old_view.pkg.get(v.package)}
                            for v in new_vulns],
             "fix_in": f"bake pipeline of image {image}"},
            suppress_as=who, suppress_for=0.0,
        )

    def _host_findings(self, host: str, image: str, family: str, image_view: HostView,
                       image_results: Mapping[str, Result], image_vulns: Mapping[str, Vulnerable],
                       osv: Any, now: float) -> list[Any]:
        from contract.findings import FindingKind

        eng = self.engine
        view = HostView.from_features(eng.baseline.host_features(host))
        if not view.ready:
            return []
        out: list[Any] = []
        for check in self.library.checks:
            if image_results[check.id].status == "fail" or (osv is not None and check.version_floor):
                continue  # the image's problem, reported once for the image; or OSV data's
            r = check.evaluate(view)
            if r.status != "fail":
                continue
            before = image_results[check.id].observed or {k: ABSENT for k in r.observed}
            changed = {k: v for k, v in r.observed.items() if before.get(k) != v} or r.observed
            text = (
                f"{check.title} on host {host}, unlike its image {image}: "
                + ", ".join(f"{k} = {v} (image: {before.get(k, ABSENT)})" for k, v in changed.items())
                + f". The image passes this check; the host changed after it was cloned. Fix: {check.fix}, and "
                f"find out who changed it."
            )
            out += eng._emit(
                FindingKind.POLICY_VIOLATION, host, image, family, now, _score(check.severity), check.severity,
                f"hardening:{check.id}", text,
                {"check": check.id, "family": check.family, "cis": check.cis, "scope": "host",
                 "before": {k: before.get(k, ABSENT) for k in changed}, "after": changed},
            )
        for v in vulnerabilities(osv, view).values():
            mine = image_vulns.get(v.package)
            if mine is not None and mine.installed == v.installed:
                continue
            was = image_view.pkg.get(v.package)
            text = (
                f"vulnerable package {v.text()} on host {host}, unlike its image {image} "
                f"({'which has ' + was if was else 'which does not have it'}). Upgrade it or replace the host."
            )
            out += eng._emit(
                FindingKind.POLICY_VIOLATION, host, image, family, now, _score(VULN_SEVERITY), VULN_SEVERITY,
                f"vuln:{v.package}={v.installed}", text,
                {"scope": "host", "package": v.package, "installed": v.installed, "fixed": v.fixed,
                 "advisories": list(v.advisories), "before": was, "hosts": [host], "images": [image]},
            )
        return out

    def _hosts_with(self, image: str, feature: str) -> list[str]:
        b = self.engine.baseline
        return sorted(h for h in b.members.get(image, ()) if feature in b.host_features(h))

    def _other_images(self, image: str, family: str, v: Vulnerable) -> list[str]:
        b = self.engine.baseline
        f = f"pkg:{v.package}={v.installed}"
        return sorted(i for i in b.images.get(family, {}) if i != image and b.count(i, f) > 0)


def _has_floor(node: Node) -> bool:
    return bool(node.package_below) or any(_has_floor(n) for n in (*node.all, *node.any))


def _ports(node: Node) -> set[str]:
    out = set(node.not_listening)
    for n in (*node.all, *node.any):
        out |= _ports(n)
    return out


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:10])
    return shown + (f" and {len(items) - 10} more" if len(items) > 10 else "") if items else "none"


def _score(severity: Severity) -> float:
    return {Severity.INFO: 0.1, Severity.LOW: 0.3, Severity.MEDIUM: 0.5, Severity.HIGH: 0.75,
            Severity.CRITICAL: 0.95}[severity]


def markdown(lib: Library) -> str:
    """The check table of docs/detection.md (`python -m streams.checks_data` prints the shipped one)."""
    lines = []
    for family, checks in lib.families().items():
        lines += [f"**{family}** ({len(checks)})", "", "| id | CIS | platforms | severity | fails when |",
                  "|---|---|---|---|---|"]
        for c in checks:
            lines.append(f"| `{c.id}` | {c.cis or ''} | {', '.join(c.platforms)} | {c.severity.value} | "
                         f"{c.title.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
