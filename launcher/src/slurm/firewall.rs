//! The job network across nodes: when a job step spans several nodes, its namespace on each
//! node gets a veth link to the host, and an nftables table that admits exactly the step's
//! nodes on the job's port range, in both directions, and drops everything else on that link.
//!
//! Guarantees of [`setup`] (run by the rank that makes the namespace, as root, with `ip`,
//! `nsenter` and `nft`): the namespace gets `eth0` (a link-local `/30` from `169.254.0.0/16`,
//! never routed) with a default route to the host end, and the node's own address on `lo` (a
//! rank connecting to its own node reaches its peers there, never the host); the host's table
//! `inet sealrun_HASH` DNATs TCP from a peer node on the port range to the namespace,
//! masquerades what the namespace sends to a peer node on the port range, and drops every
//! other packet from or to the link (forwarded, to the host, or from the host); IPv4
//! forwarding is turned on for the link and for the interface the peers are reached through
//! (if it was off there, the table `inet sealrun_guard` drops every forwarded packet from that
//! interface that is not bound for a job link, so the node forwards nothing else). The table
//! and the link are removed with the namespace ([`teardown`]). Any command that fails is an
//! error naming it and its output, and what was made is removed.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;
use std::process::Command;

use sealrun_sandbox::peer_connect::AllowRule;

/// The job's nodes as the firewall sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossNode {
    /// Every node of the step, by address (this one included).
    pub peers: Vec<Ipv4Addr>,
    /// This node's address.
    pub own: Ipv4Addr,
    /// The job's port range.
    pub ports: (u16, u16),
}

/// A Slurm hostlist (`n[01-03],gpu7,x[1,4-5]`) as names; one bracket group per name.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        // The next name ends at a comma outside brackets.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let name = &rest[..end];
        rest = rest[end..].trim_start_matches(',');
        let Some((prefix, tail)) = name.split_once('[') else {
            out.push(name.to_string());
            continue;
        };
        let (ranges, suffix) = tail
            .split_once(']')
            .ok_or_else(|| format!("hostlist {list:?}: unclosed ["))?;
        if suffix.contains('[') {
            return Err(format!(
                "hostlist {list:?}: several [..] groups in one name"
            ));
        }
        for r in ranges.split(',') {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let bad = || format!("hostlist {list:?}: bad range {r:?}");
            let (lo, hi): (u64, u64) =
                (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if hi < lo || hi - lo > 65_536 {
                return Err(bad());
            }
            for n in lo..=hi {
                out.push(format!("{prefix}{n:0width$}{suffix}", width = a.len()));
            }
        }
    }
    Ok(out)
}

/// A node's IPv4 address: the name itself if it is one, else what the resolver says.
pub fn resolve(node: &str) -> Result<Ipv4Addr, String> {
    if let Ok(a) = node.parse() {
        return Ok(a);
    }
    (node, 0)
        .to_socket_addrs()
        .map_err(|e| format!("node {node:?}: {e}"))?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("node {node:?} has no IPv4 address"))
}

impl CrossNode {
    /// The step's nodes (`nodelist`) and this node (`node`), if the step spans more than one.
    pub fn of(nodelist: &str, node: &str, ports: (u16, u16)) -> Result<Option<CrossNode>, String> {
        let names = expand_hostlist(nodelist)?;
        if names.len() < 2 {
            return Ok(None);
        }
        let peers = names
            .iter()
            .map(|n| resolve(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CrossNode {
            own: resolve(node)?,
            peers,
            ports,
        }))
    }

    /// What a connect may reach besides loopback: every node on the port range.
    pub fn allow(&self) -> Vec<AllowRule> {
        self.peers
            .iter()
            .map(|p| AllowRule {
                net: IpAddr::V4(*p),
                prefix: 32,
                first_port: self.ports.0,
                last_port: self.ports.1,
            })
            .collect()
    }
}

/// Names derived from the namespace's pin name.
struct Names {
    host_if: String,
    table: String,
}

fn names(pin_name: &str) -> Names {
    let h = sealrun_verifier::digest::Digest::of(pin_name.as_bytes()).to_hex();
    Names {
        host_if: format!("srj{}", &h[..8]),
        table: format!("sealrun_{}", &h[..12]),
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

fn inside(pin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", pin.display()))
        .arg("ip")
        .args(args);
    c
}

/// A free link-local `/30` for the link: the host end's address (the namespace's is next).
fn link_block(pin_name: &str) -> Result<Ipv4Addr, String> {
    let listed = run("addresses", &mut ip(&["-4", "-o", "addr", "show"]))?;
    let used: Vec<u32> = listed
        .split_whitespace()
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(a, _)| a.parse::<Ipv4Addr>().ok())
        .map(|a| u32::from(a) & !3)
        .collect();
    let h = sealrun_verifier::digest::Digest::of(pin_name.as_bytes()).0;
    let start = u32::from(u16::from_be_bytes([h[0], h[1]])) & !3;
    for i in 0..16_384u32 {
        let block = 0xa9fe_0000 | ((start + i * 4) & 0xfffc);
        let third = Ipv4Addr::from(block).octets()[2];
        // Not 169.254.169.x (cloud metadata), nor the first and last /24 (reserved).
        if third == 169 || third == 0 || third == 255 || used.contains(&block) {
            continue;
        }
        return Ok(Ipv4Addr::from(block | 1));
    }
    Err("no free link-local /30 for the job link".into())
}

/// The interface the peers are reached through.
fn uplink(peer: Ipv4Addr) -> Result<String, String> {
    let r = run("route", &mut ip(&["-o", "route", "get", &peer.to_string()]))?;
    let mut w = r.split_whitespace();
    while let Some(x) = w.next() {
        if x == "dev" {
            return w
                .next()
                .map(str::to_string)
                .ok_or_else(|| format!("route to {peer}: no device in {r:?}"));
        }
    }
    Err(format!("route to {peer}: no device in {r:?}"))
}

fn forwarding(dev: &str, on: bool) -> Result<bool, String> {
    let p = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
    let was = std::fs::read_to_string(&p)
        .map_err(|e| format!("{p}: {e}"))?
        .trim()
        == "1";
    if on && !was {
        std::fs::write(&p, "1").map_err(|e| format!("{p}: {e}"))?;
    }
    Ok(was)
}

fn ruleset(n: &Names, c: &CrossNode, ns_addr: Ipv4Addr) -> String {
    let peers: Vec<String> = c.peers.iter().map(ToString::to_string).collect();
    let (peers, (lo, hi), link) = (peers.join(", "), c.ports, &n.host_if);
    format!(
        "table inet {table} {{
  set peers {{ type ipv4_addr; elements = {{ {peers} }} }}
  chain job_prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    iifname != \"{link}\" ip saddr @peers tcp dport {lo}-{hi} dnat ip to {ns_addr}
  }}
  chain job_postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    iifname \"{link}\" oifname != \"{link}\" masquerade
  }}
  chain job_forward {{ type filter hook forward priority filter - 1; policy accept;
    ct state established,related iifname \"{link}\" accept
    ct state established,related oifname \"{link}\" accept
    iifname \"{link}\" ip daddr @peers tcp dport {lo}-{hi} accept
    oifname \"{link}\" ip saddr @peers tcp dport {lo}-{hi} ct status dnat accept
    iifname \"{link}\" drop
    oifname \"{link}\" drop
  }}
  chain job_input {{ type filter hook input priority filter - 1; policy accept;
    iifname \"{link}\" drop
  }}
  chain job_output {{ type filter hook output priority filter - 1; policy accept;
    oifname \"{link}\" drop
  }}
}}
",
        table = n.table
    )
}

/// The guard for an uplink whose forwarding sealrun turned on: nothing else is forwarded.
fn guard(dev: &str) -> String {
    format!(
        "table inet sealrun_guard {{
  chain job_forward {{ type filter hook forward priority filter - 2; policy accept;
    iifname \"{dev}\" oifname != \"srj*\" drop
  }}
}}
"
    )
}

fn nft(what: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot run nft: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(rules.as_bytes())
            .map_err(|e| format!("{what}: nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Link the namespace pinned at `pin` (named `pin_name`) to the host and install its table.
pub fn setup(pin: &Path, pin_name: &str, c: &CrossNode) -> Result<(), String> {
    let n = names(pin_name);
    let host = link_block(pin_name)?;
    let ns_addr = Ipv4Addr::from(u32::from(host) + 1);
    let pin_s = pin.display().to_string();
    run(
        "veth",
        &mut ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", "eth0", "netns", &pin_s,
        ]),
    )?;
    let r = (|| {
        run(
            "link address",
            &mut ip(&["addr", "add", &format!("{host}/30"), "dev", &n.host_if]),
        )?;
        run("link up", &mut ip(&["link", "set", &n.host_if, "up"]))?;
        run(
            "eth0 address",
            &mut inside(
                pin,
                &["addr", "add", &format!("{ns_addr}/30"), "dev", "eth0"],
            ),
        )?;
        run("eth0 up", &mut inside(pin, &["link", "set", "eth0", "up"]))?;
        run(
            "route",
            &mut inside(pin, &["route", "add", "default", "via", &host.to_string()]),
        )?;
        run(
            "own address",
            &mut inside(pin, &["addr", "add", &format!("{}/32", c.own), "dev", "lo"]),
        )?;
        forwarding(&n.host_if, true)?;
        for dev in c
            .peers
            .iter()
            .filter(|p| **p != c.own)
            .map(|p| uplink(*p))
            .collect::<Result<std::collections::BTreeSet<_>, _>>()?
        {
            if !forwarding(&dev, true)? {
                nft("guard", &guard(&dev))?;
            }
        }
        nft("job table", &ruleset(&n, c, ns_addr))
    })();
    if r.is_err() {
        teardown(pin_name);
    }
    r
}

/// Remove the table and the link of the namespace named `pin_name` (what exists of them).
pub fn teardown(pin_name: &str) {
    let n = names(pin_name);
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &n.table])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = ip(&["link", "del", &n.host_if])
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostlists_expand() {
        assert_eq!(expand_hostlist("vm").unwrap(), ["vm"]);
        assert_eq!(
            expand_hostlist("n[01-03],gpu7,x[1,4-5]y").unwrap(),
            ["n01", "n02", "n03", "gpu7", "x1y", "x4y", "x5y"]
        );
        assert_eq!(
            expand_hostlist("10.77.0.[1-2]").unwrap(),
            ["10.77.0.1", "10.77.0.2"]
        );
        assert!(expand_hostlist("n[1-").is_err());
        assert!(expand_hostlist("n[3-1]").is_err());
    }

    #[test]
    fn one_node_needs_no_link_and_peers_are_allowed_on_the_port_range() {
        assert_eq!(
            CrossNode::of("127.0.0.1", "127.0.0.1", (1, 2)).unwrap(),
            None
        );
        let c = CrossNode::of("10.9.0.[1-2]", "10.9.0.1", (29400, 29599))
            .unwrap()
            .unwrap();
        let allow: Vec<String> = c.allow().iter().map(ToString::to_string).collect();
        assert_eq!(
            allow,
            ["10.9.0.1/32:29400-29599", "10.9.0.2/32:29400-29599"]
        );
    }
}
