"""The iptables-restore language, as far as a mesh's redirection script uses it.

`parse` reads `iptables-restore` input the way iptables-restore does (comments, `*nat`,
`:CHAIN` declarations, `-A`/`-I` lines tokenised as its add_param_to_argv does, `COMMIT`) and
plays the `-A`/`-I` commands, so what comes out is each chain's final rule list, every rule
reduced to what it means (`Rule`: matches and target) and remembering its line. Anything
outside that subset is refused with a ConfigError naming the line, its text and why: nothing
is skipped or guessed. What the rules add up to is nftredir.sources.mesh_script's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from nftredir import cidr
from nftredir.cidr import Cidr
from nftredir.config import Item, parse_cidr, parse_ifname, parse_pod_ip, parse_port, parse_uid
from nftredir.errors import ConfigError

BUILTIN_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")  # the nat table's
_CHAIN_MAX = 28  # XT_EXTENSION_MAXNAMELEN - 1: iptables' longest chain name
_TARGETS = ("RETURN", "ACCEPT", "REDIRECT", "DNAT")


@dataclass(frozen=True)
class Match:
    """One rule's matches; None where the rule does not match on that field."""

    proto: str | None = None
    dport: int | None = None  # after expanding a multiport list: one port per Match
    dst: Cidr | None = None
    dst_negated: bool = False
    iif: str | None = None
    oif: str | None = None
    uid: int | None = None
    uid_negated: bool = False


@dataclass(frozen=True)
class Target:
    """`-j NAME`: a verdict (RETURN, ACCEPT), a jump to a chain, REDIRECT port or DNAT address."""

    name: str
    port: int | None = None  # REDIRECT --to-ports
    address: IPv4Address | None = None  # DNAT --to-destination


@dataclass(frozen=True)
class Rule:
    """A rule as it ends up in its chain. `dports` keeps a multiport list as written (the
    configuration is made of such lists); `atoms()` is the same rule as one Match per port,
    since `--dports 30,40` means exactly `--dport 30` followed by `--dport 40`."""

    chain: str
    match: Match
    dports: tuple[int, ...]
    multiport: bool
    target: Target
    where: str  # "<stdin>:12"
    text: str

    def atoms(self) -> tuple[Match, ...]:
        return tuple(replace(self.match, dport=port) for port in self.dports) or (self.match,)


@dataclass
class Script:
    """The nat table's chains after the script, in the order they were declared or used."""

    name: str
    chains: dict[str, list[Rule]] = field(default_factory=dict)
    declared: dict[str, tuple[str, str]] = field(default_factory=dict)  # chain -> (where, text)
    table: tuple[str, str] | None = None  # the `*nat` line
    commit: tuple[str, str] | None = None  # the `COMMIT` line


def refuse(where: str, text: str, why: str) -> ConfigError:
    return ConfigError(where, text, why)


def tokenise(line: str, where: str) -> list[str]:
    """Split a rule line as iptables-restore's add_param_to_argv does: on spaces and tabs,
    with `"..."` quoting a word and `\\` escaping inside quotes only."""
    if '"' not in line:  # FSM's lines: a plain split (str.split() would also split on Unicode spaces)
        return [word for word in line.replace("\t", " ").split(" ") if word]
    words: list[str] = []
    word: list[str] = []
    quoted = escaped = started = False
    for char in line:
        if quoted:
            if escaped:
                word.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                word.append(char)
        elif char == '"':
            quoted = started = True
        elif char in " \t":
            if word or started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    if quoted:
        raise refuse(where, line, "unterminated quote")
    if word or started:
        words.append("".join(word))
    return words


def _lines(data: bytes, name: str) -> Iterator[tuple[str, str]]:
    """(where, text) per line; a line that is not printable UTF-8 text is refused."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{name}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(where, raw.decode("utf-8", "replace"), "not UTF-8 text (binary input?)") from None
        if not text.replace("\t", " ").isprintable():
            bad = next(c for c in text if not c.isprintable() and c != "\t")
            raise refuse(where, text, f"control character {bad!r}: not iptables-restore text")
        yield where, text


def parse(data: bytes, name: str) -> Script:
    """Read a whole iptables-restore input (one `*nat` table) into its final chains."""
    script = Script(name)
    last = (f"{name}:1", "")
    for where, text in _lines(data, name):
        if not text or text.startswith("#"):
            continue  # iptables-restore skips a line that is empty or starts with '#'
        last = (where, text)
        if script.commit is not None:
            raise refuse(where, text, "after COMMIT: only one *nat table is understood")
        if text.startswith("*"):
            if script.table is not None:
                raise refuse(where, text, f"a second table while {script.table[1]!r} is open (no COMMIT before it)")
            if text.strip() != "*nat":
                raise refuse(where, text, "only the nat table is understood: a mesh's redirection is all in *nat")
            script.table = (where, text)
            continue
        if script.table is None:
            raise refuse(where, text, "outside a table: the script must start with *nat")
        if text.strip() == "COMMIT":
            script.commit = (where, text)
        elif text.startswith(":"):
            _declare(script, where, text)
        else:
            _command(script, where, text)
    if script.table is None:
        raise refuse(*last, "no *nat table: not a mesh's redirection script")
    if script.commit is None:
        raise refuse(*script.table, "no COMMIT: iptables-restore would apply nothing of this table")
    return script


def _declare(script: Script, where: str, text: str) -> None:
    words = text[1:].split()
    if len(words) not in (2, 3) or (len(words) == 3 and not _is_counters(words[2])):
        raise refuse(where, text, "a chain declaration is ':NAME POLICY [packets:bytes]'")
    chain, policy = words[0], words[1]
    if chain in BUILTIN_CHAINS:
        raise refuse(where, text, "setting a built-in chain's policy is not part of a mesh's redirection")
    if policy != "-":
        raise refuse(where, text, f"{policy!r}: a user-defined chain's policy is '-'")
    _check_chain_name(chain, where, text)
    if chain in script.declared:
        raise refuse(where, text, f"{chain!r} is declared twice")
    script.declared[chain] = (where, text)
    script.chains.setdefault(chain, [])


def _is_counters(word: str) -> bool:
    packets, _, octets = word.removeprefix("[").removesuffix("]").partition(":")
    return word.startswith("[") and word.endswith("]") and packets.isdigit() and octets.isdigit()


def _check_chain_name(chain: str, where: str, text: str) -> None:
    if not chain or len(chain) > _CHAIN_MAX or chain.startswith(("-", "!")) or not chain.isascii():
        raise refuse(where, text, f"{chain!r} is not a valid chain name")


def _known_chain(script: Script, chain: str, where: str, text: str) -> str:
    if chain not in BUILTIN_CHAINS and chain not in script.declared:
        raise refuse(where, text, f"chain {chain!r} is neither built in nor declared in this script")
    return chain


# Long options iptables spells two ways; each maps to the spelling used below.
_ALIASES = {
    "--append": "-A", "--insert": "-I", "--protocol": "-p", "--destination": "-d", "--dst": "-d",
    "--in-interface": "-i", "--out-interface": "-o", "--jump": "-j", "--match": "-m",
    "--destination-port": "--dport", "--destination-ports": "--dports",
    "--to-port": "--to-ports",  # getopt's abbreviation of --to-ports; FSM writes it
}
# The module (-p tcp's implicit one, -m NAME, -j NAME) that must be loaded before an option.
_NEEDS = {"--dport": ("tcp", "-p tcp"), "--dports": ("multiport", "-m multiport"),
          "--uid-owner": ("owner", "-m owner"), "--comment": ("comment", "-m comment"),
          "--to-ports": ("REDIRECT", "-j REDIRECT"), "--to-destination": ("DNAT", "-j DNAT")}
_NEGATABLE = ("-d", "--uid-owner")
_MODULES = ("tcp", "multiport", "owner", "comment")


class _Words:
    def __init__(self, words: list[str], where: str, text: str) -> None:
        self.words, self.where, self.text, self.i = words, where, text, 0

    def next(self) -> str | None:
        word = self.words[self.i] if self.i < len(self.words) else None
        self.i += 1
        return word

    def value(self, option: str) -> str:
        word = self.next()
        if word is None or word == "":
            raise self.refuse(f"{option} needs a value (an empty $POD_IP or list?)")
        return word

    def refuse(self, why: str) -> ConfigError:
        return refuse(self.where, self.text, why)

    def item(self, word: str) -> Item:
        return Item(word, self.where)

    def parsed(self, parse: Callable[[Item], object], word: str, option: str) -> object:
        try:
            return parse(self.item(word))
        except ConfigError as exc:
            raise self.refuse(f"{option} {word!r}: {exc.reason}") from None


_VERDICTS = {name: Target(name) for name in ("RETURN", "ACCEPT")}


def _exclusion(script: Script, where: str, text: str) -> Rule | None:
    """`-A CHAIN -d a.b.c.d/len -j RETURN` (or ACCEPT) into a declared chain, written as FSM
    writes it, as the rule the general parser makes of it; None for any other line. A script
    with 10,000 ranges is 10,000 such lines: this is 5 times faster than the general parser."""
    words = text.split(" ")
    if (len(words) != 6 or words[0] != "-A" or words[2] != "-d" or words[4] != "-j" or words[5] not in _VERDICTS
            or words[1] not in script.declared or "\t" in text or '"' in text):
        return None
    try:
        dst = cidr.parse(words[3])
    except ValueError:
        return None  # the general parser says why
    return Rule(words[1], Match(dst=dst), (), False, _VERDICTS[words[5]], where, text)


def _command(script: Script, where: str, text: str) -> None:
    """One `-A`/`-I` line: parse it and put the rule where iptables would."""
    rule = _exclusion(script, where, text)
    if rule is not None:
        script.chains[rule.chain].append(rule)
        return
    words = _Words(tokenise(text, where), where, text)
    verb = words.next()
    verb = _ALIASES.get(verb or "", verb)
    if verb not in ("-A", "-I"):
        raise words.refuse(f"{verb!r}: only -A and -I rules are understood")
    chain = _known_chain(script, words.value(verb), where, text)
    position = 1
    if verb == "-I" and words.i < len(words.words) and words.words[words.i].isdigit():
        position = int(words.value(verb))
    rule = _rule(chain, words)
    if rule.target.name in BUILTIN_CHAINS:
        raise words.refuse(f"-j {rule.target.name}: iptables cannot jump to a built-in chain")
    if rule.target.name not in _TARGETS and rule.target.name not in script.declared:
        raise words.refuse(f"-j {rule.target.name}: neither a target nftredir reproduces "
                           f"({', '.join(_TARGETS)}) nor a chain declared in this script")
    rules = script.chains.setdefault(chain, [])
    if verb == "-A":
        rules.append(rule)
    elif not 1 <= position <= len(rules) + 1:
        raise words.refuse(f"-I {chain} {position}: index of insertion too big (the chain has {len(rules)} rules)")
    else:
        rules.insert(position - 1, rule)


def _rule(chain: str, words: _Words) -> Rule:
    fields: dict[str, object] = {}
    loaded: set[str] = set()
    seen: set[str] = set()
    dports: tuple[int, ...] = ()
    multiport = False
    target: str | None = None
    target_args: dict[str, object] = {}
    negated = False
    while (word := words.next()) is not None:
        if word == "!":
            if negated:
                raise words.refuse("'!' twice")
            negated = True
            continue
        option = _ALIASES.get(word, word)
        if option in seen and option != "-m":
            raise words.refuse(f"{word} given twice")
        seen.add(option)
        if negated and option not in _NEGATABLE:
            raise words.refuse(f"'! {word}': negating {word} is not part of a mesh's redirection")
        needs, spelled = _NEEDS.get(option, (None, ""))
        if needs is not None and needs not in loaded:
            raise words.refuse(f"{word} needs {spelled} before it")
        if option == "-p":
            proto = words.value(word)
            if proto.lower() not in ("tcp", "6"):
                raise words.refuse(f"-p {proto!r}: only TCP is redirected")
            fields["proto"] = "tcp"
            loaded.add("tcp")
        elif option == "-m":
            module = words.value(word)
            if module not in _MODULES:
                raise words.refuse(f"-m {module!r}: a match nftredir does not reproduce")
            if module in ("tcp", "multiport") and fields.get("proto") != "tcp":
                raise words.refuse(f"-m {module} needs -p tcp before it")
            loaded.add(module)
        elif option == "-d":
            fields["dst"] = words.parsed(parse_cidr, words.value(word), word)
            fields["dst_negated"] = negated
        elif option in ("-i", "-o"):
            name = words.value(word)
            fields["iif" if option == "-i" else "oif"] = words.parsed(parse_ifname, name, word)
        elif option == "--uid-owner":
            fields["uid"] = words.parsed(parse_uid, words.value(word), word)
            fields["uid_negated"] = negated
        elif option == "--comment":
            words.value(word)  # a comment changes nothing the rule does
        elif option in ("--dport", "--dports"):
            if dports:
                raise words.refuse(f"{word}: a second port match")
            text = words.value(word)
            parts = text.split(",") if option == "--dports" else [text]
            if option == "--dports" and len(parts) > 15:
                raise words.refuse(f"{word}: {len(parts)} ports, but multiport takes at most 15")
            dports = tuple(int(words.parsed(parse_port, part, word)) for part in parts)  # type: ignore[call-overload]
            multiport = option == "--dports"
        elif option == "-j":
            if target is not None:
                raise words.refuse("a second -j")
            target = words.value(word)
            loaded.add(target)
        elif option == "--to-ports":
            target_args["port"] = words.parsed(parse_port, words.value(word), word)
        elif option == "--to-destination":
            target_args["address"] = words.parsed(parse_pod_ip, words.value(word), word)
        else:
            what = "a target option" if target in ("REDIRECT", "DNAT") else "an option"
            raise words.refuse(f"{word!r}: {what} nftredir does not reproduce")
        negated = False
    if negated:
        raise words.refuse("'!' at the end of the rule")
    if target is None:
        raise words.refuse("no -j target: a rule that only counts is not part of a mesh's redirection")
    if target == "REDIRECT" and "port" not in target_args:
        raise words.refuse("REDIRECT without --to-ports")
    if target == "DNAT" and "address" not in target_args:
        raise words.refuse("DNAT without --to-destination")
    if target in ("REDIRECT", "DNAT") and fields.get("proto") != "tcp":
        raise words.refuse(f"{target} without -p tcp: only TCP is redirected")
    return Rule(chain, Match(**fields), dports, multiport, Target(target, **target_args),  # type: ignore[arg-type]
                words.where, words.text)
