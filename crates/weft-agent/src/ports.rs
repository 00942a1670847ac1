//! Ports and loopback addresses for instances.
//!
//! A port is allocated by binding port 0, reading the port the kernel chose, and closing the
//! socket; the number is then handed to the sidecar or the app, which binds it. Between the
//! close and their bind another process may take it (the kernel hands out the same range to
//! outgoing connections and other binders). That race is accepted: the sidecar is restarted
//! with fresh ports when it reports "address in use" (see `supervise`), and an app that cannot
//! bind crashes with its own message, which the instance status shows. Ports handed out here
//! stay reserved until their instance is gone, so two instances never get the same one.
//!
//! Each instance also gets its own loopback address (`WEFT_IP`) from 127.1.0.0/16, so fixed
//! upstream ports (`upstreams[].localPort`) of different instances do not collide. Linux routes
//! all of 127.0.0.0/8 to the loopback interface, so nothing needs configuring.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

/// First and last usable host numbers in 127.1.0.0/16 (skipping .0.0 and .255.255).
const IP_FIRST: u32 = u32::from_be_bytes([127, 1, 0, 1]);
const IP_LAST: u32 = u32::from_be_bytes([127, 1, 255, 254]);

/// Hands out ports and instance addresses, remembering which are in use.
#[derive(Debug)]
pub(crate) struct Allocator {
    ips: BTreeSet<Ipv4Addr>,
    /// Next address to try: addresses are handed out round-robin so a just-freed one is not
    /// reused at once (a late packet or a lingering process may still use it).
    next_ip: u32,
    ports: BTreeSet<u16>,
}

impl Allocator {
    pub(crate) fn new() -> Allocator {
        Allocator { ips: BTreeSet::new(), next_ip: IP_FIRST, ports: BTreeSet::new() }
    }

    /// A loopback address no live instance uses.
    pub(crate) fn ip(&mut self) -> Option<Ipv4Addr> {
        let span = IP_LAST - IP_FIRST + 1;
        for _ in 0..span {
            let candidate = Ipv4Addr::from(self.next_ip);
            self.next_ip = if self.next_ip >= IP_LAST { IP_FIRST } else { self.next_ip + 1 };
            if self.ips.insert(candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// A free TCP port on `on` (use 0.0.0.0 for a port that must be free on every address,
    /// as for app ports: apps may bind 127.0.0.1, their `WEFT_IP` or 0.0.0.0).
    pub(crate) fn port(&mut self, on: IpAddr) -> io::Result<u16> {
        // The kernel may offer a port we handed out but whose owner has not bound it yet;
        // ask again then (bounded, in case the ephemeral range is nearly exhausted).
        let mut last = None;
        for _ in 0..64 {
            let port = TcpListener::bind(SocketAddr::new(on, 0))?.local_addr()?.port();
            if self.ports.insert(port) {
                return Ok(port);
            }
            last = Some(port);
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free port on {on} (the kernel keeps offering reserved port {last:?})"),
        ))
    }

    /// Marks an address and ports as used (after adopting an instance).
    pub(crate) fn reserve(&mut self, ip: Option<Ipv4Addr>, ports: impl IntoIterator<Item = u16>) {
        if let Some(ip) = ip {
            self.ips.insert(ip);
        }
        self.ports.extend(ports);
    }

    pub(crate) fn release(&mut self, ip: Option<Ipv4Addr>, ports: impl IntoIterator<Item = u16>) {
        if let Some(ip) = ip {
            self.ips.remove(&ip);
        }
        for p in ports {
            self.ports.remove(&p);
        }
    }
}

/// Whether `addr` can be bound right now (for fixed ports the template asks for).
pub(crate) fn check_free(addr: SocketAddr) -> io::Result<()> {
    TcpListener::bind(addr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_and_round_robin() {
        let mut a = Allocator::new();
        let x = a.ip().unwrap();
        let y = a.ip().unwrap();
        assert_eq!(x, Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(y, Ipv4Addr::new(127, 1, 0, 2));
        a.release(Some(x), []);
        // Not handed out again at once.
        assert_eq!(a.ip().unwrap(), Ipv4Addr::new(127, 1, 0, 3));
    }

    #[test]
    fn ports_are_not_handed_out_twice() {
        let mut a = Allocator::new();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ports: BTreeSet<u16> = (0..50).map(|_| a.port(lo).unwrap()).collect();
        assert_eq!(ports.len(), 50);
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check_free(held.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
