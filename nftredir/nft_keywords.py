"""The words nft's parser reads as keywords, which a table name must not be.

`nft list ruleset` prints table names bare, so a table named `ip` or `counter` makes the
whole namespace's listing unloadable with `nft -f`. The list is the bison token names of
libnftables 1.0.6 (`strings libnftables.so.1 | grep '^"[a-z][a-z0-9_]*"$'`) plus the words
later releases added; tests/test_config.py checks it against the installed library.
"""

KEYWORDS = frozenset(
    """
    abort accept ackseq add addr ah all arp asconf avgpkt bridge burst bypass bytes cfi cgroup
    cgroupv2 chain chains checksum chunk classid code colon comma comment comp constant continue
    count counter counters cpi cpu create csumcov ct cwr daddr data day dccp define dei delete
    describe destroy device devices direction dnat doff dport drop dscp dst dup dynamic echo ecn
    ecne element elements eol error esp ether event exists expectation expiration expires export
    exthdr fanout fastopen fib flags flow flowlabel flowtable flowtables flush frag fwd gateway
    geneve get goto gre gretap group handle hbh hdrlength heartbeat helper helpers hlen hook
    hooks hoplimit hour htype ibriport ibrname icmp icmpv6 icmpx id igmp ih iif iifgroup iifname
    iiftype import in inc include index inet init inner insert interval ip ip6 ipsec jhash json
    jump junk l3proto label last left length level limit limits list ll log lsrr map maps mark
    masquerade md5sig memory meta meter meters mh minute missing mod monitor mptcp mrt mss mtu
    name netdev newline nexthdr nexthop nftrace nh nop notrack num number numgen obriport
    obrname offload offset oif oifgroup oifname oiftype operation option options original osf
    out over packets pcp performance persistent pkttype plen policy port position ppid prefix
    priority protocol ptr ptype queue quota quotas ra random rate redefine redirect reject
    rename replace reply reqid reserved reserved2 reset return right rr rt rt0 rt2 rtclassid
    rule rules ruleset sack sack0 sack1 sack2 sack3 saddr sctp secmark secmarks second seed
    semicolon seq seqno set sets shutdown sid size skgid skuid snaplen snat socket spi spnum
    sport srh ssn ssrr state status stream string subtype symhash synproxy synproxys table
    tables tag tcp th time timeout timestamp to tproxy trace transparent tsecr tsn tsval ttl
    type typeof udp udplite undefine until update urgptr used value version vlan vm vmap vtag
    vxlan week wildcard window with wscale xml xt zone
    """.split()
)
