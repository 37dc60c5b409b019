//! Loopback ports for test servers that are killed and started again on the same port.

/// A free loopback port for a test server, outside the kernel's ephemeral range.
///
/// The kernel hands ports of that range to every outgoing connection and to `bind(:0)`. A
/// server killed and restarted on its port would sometimes find it taken by some client's
/// connection in between (EADDRINUSE, seen in CI). So the port is drawn at random below the
/// range (or above it, where it starts low) and checked by binding it. Another test process
/// could still draw the same port while its server is down: one chance in thousands per draw.
pub fn free_port() -> u16 {
    use rand::Rng;
    let (low, high) = ephemeral_ports();
    let below = 10_000..low;
    let candidates = if below.len() >= 4_000 {
        below
    } else {
        high.saturating_add(1)..u16::MAX
    };
    let mut rng = rand::rng();
    (0..10_000)
        .map(|_| rng.random_range(candidates.clone()))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or_else(|| panic!("no free loopback port in {candidates:?}"))
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999))
}
