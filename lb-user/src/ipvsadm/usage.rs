//! `-h` and `-v` texts: ipvsadm's, for xvsadm.
use crate::model::KERNEL_SCHEDULERS;

use super::parse::{DEFAULT_SCHEDULER, PROGRAM};

/// What `-v`/`--version` prints.
pub fn version_text() -> String {
    format!(
        "{PROGRAM} v{} (ipvsadm v1.31 compatible, IPVS v{})\n",
        env!("CARGO_PKG_VERSION"),
        super::format::IPVS_VERSION
    )
}

/// What `-h`/`--help` prints: ipvsadm's help, with the options xvs refuses marked.
pub fn usage_text() -> String {
    let p = PROGRAM;
    let scheds = KERNEL_SCHEDULERS.join("|");
    let mut s = version_text();
    s.push_str(&format!(
        "Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} --start-daemon {{master|backup}} [daemon-options]
  {p} --stop-daemon {{master|backup}}
  {p} -h

"
    ));
    s.push_str(
        "Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon (not supported by xvs)
  --stop-daemon               stop connection sync daemon (not supported by xvs)
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --sctp-service    service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero

",
    );
    s.push_str(&format!(
        "Options:
  --ipv6         -6                   fwmark entry uses IPv6
  --scheduler    -s scheduler         one of {scheds},
                                      the default scheduler is {DEFAULT_SCHEDULER}.
  --pe            engine              alternate persistence engine may be sip,
                                      not set by default (not supported by xvs).
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is ipip (xvs: ipip only).
  --tun-port      port                tunnel destination port (not supported by xvs)
  --tun-nocsum                        tunnel encapsulation without checksum (not supported by xvs)
  --tun-csum                          tunnel encapsulation with checksum (not supported by xvs)
  --tun-remcsum                       tunnel encapsulation with remote checksum (not supported by xvs)
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information (not supported by xvs)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)
  --engine                            (xvs) show the engine serving each service
Daemon Options (not supported by xvs):
  --syncid sid                        syncid for connection sync (default=255)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)
"
    ));
    s
}
