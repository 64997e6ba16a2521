//! Wake-on-LAN: the magic packet (6 x `0xFF`, then the MAC 16 times: 102 bytes) over UDP.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::net::UdpSocket;

/// Where a magic packet goes unless the runbook says otherwise.
pub const DEFAULT_ADDRESS: &str = "255.255.255.255";
/// The discard port, the usual one for Wake-on-LAN.
pub const DEFAULT_PORT: u16 = 9;
/// The packet's length.
pub const PACKET_LEN: usize = 102;

/// A 48-bit hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a MAC address: write six hex pairs, as aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff"
)]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, either case, one separator throughout.
    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let bad = || BadMac(s.chars().take(40).collect());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut mac = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            Some(_) => Err(bad()),
            None => Ok(Mac(mac)),
        }
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The magic packet for `mac`.
pub fn magic_packet(mac: Mac) -> [u8; PACKET_LEN] {
    let mut packet = [0xFF; PACKET_LEN];
    for chunk in packet[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    packet
}

#[derive(Debug, thiserror::Error)]
pub enum WolError {
    #[error("cannot resolve `{address}`: {reason}")]
    Resolve { address: String, reason: String },
    #[error("cannot send the magic packet to {to}: {reason}")]
    Send { to: SocketAddr, reason: String },
}

/// Sends the magic packet for `mac` to `address:port` (an IP address or a host name) and
/// returns where it went. `SO_BROADCAST` is set only when the kernel says the address is a
/// broadcast one (it refuses the plain send with `EACCES`).
pub async fn send(mac: Mac, address: &str, port: u16) -> Result<SocketAddr, WolError> {
    let to = resolve(address, port).await?;
    let local: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let failed = |e: std::io::Error| WolError::Send {
        to,
        reason: e.to_string(),
    };
    let socket = UdpSocket::bind((local, 0)).await.map_err(failed)?;
    let packet = magic_packet(mac);
    let sent = match socket.send_to(&packet, to).await {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            socket.set_broadcast(true).map_err(failed)?;
            socket.send_to(&packet, to).await
        }
        other => other,
    };
    match sent.map_err(failed)? {
        PACKET_LEN => Ok(to),
        n => Err(WolError::Send {
            to,
            reason: format!("only {n} of {PACKET_LEN} bytes were sent"),
        }),
    }
}

async fn resolve(address: &str, port: u16) -> Result<SocketAddr, WolError> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |reason: String| WolError::Resolve {
        address: address.to_string(),
        reason,
    };
    tokio::net::lookup_host((address, port))
        .await
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_notations() {
        let want = Mac([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]);
        assert_eq!("aa:bb:cc:0d:ee:ff".parse(), Ok(want));
        assert_eq!("AA-BB-CC-0D-EE-FF".parse(), Ok(want));
        assert_eq!(want.to_string(), "aa:bb:cc:0d:ee:ff");
    }

    #[test]
    fn refuses_what_is_not_a_mac() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aabb.ccdd.eeff",
            "aabbccddeeff",
            "a:bb:cc:dd:ee:fff",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff:",
            "é:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_packet_is_six_ff_then_sixteen_macs() {
        let mac = Mac([1, 2, 3, 4, 5, 6]);
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xFF; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + 6 * i..12 + 6 * i], &[1, 2, 3, 4, 5, 6], "copy {i}");
        }
    }
}
