"""The words nft's parser reads as keywords where a table name stands, which a table name must
not be.

`nft list ruleset` prints table names bare, so a table named `ip` or `counter` makes the whole
namespace's listing unloadable with `nft -f`. The list: each bison token name of libnftables
1.0.6 (`strings libnftables.so.1 | grep '^"[a-z][a-z0-9_]*"$'`) that `nft -c` refuses in
`table inet NAME`, plus `destroy`, a command since nftables 1.0.8. tests/test_trust.py checks it
against the installed nft.
"""

KEYWORDS = frozenset(
    """
    accept add ah all arp bridge cgroup chain comment comp constant continue counter cpu create
    ct day dccp define delete describe destroy device devices dnat drop dst dup dynamic ecn
    element elements esp ether exists expires export exthdr fib flags flow flowtable flush frag
    fwd get goto handle hbh hook hour ibriport ibrname icmp icmpv6 igmp iif iifgroup iifname
    iiftype import include index inet insert interval ip ip6 ipsec jhash jump limit list log map
    mark masquerade meta meter mh missing monitor netdev nftrace notrack numgen obriport obrname
    offload oif oifgroup oifname oiftype osf pkttype policy position priority queue quota random
    redefine redirect reject rename replace reset return rt rt0 rt2 rtclassid rule ruleset sctp
    secmark set size skgid skuid snat socket srh symhash synproxy table tcp th time timeout
    tproxy type typeof udp udplite undefine update vlan vmap xt
    """.split()
)
# Refused although the installed nft may accept them (words later releases made keywords).
NEWER_KEYWORDS = frozenset({"destroy"})
