//! Memory figures of this process, read from `/proc/self/status` (Linux).

/// Resident memory now and at its peak, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// Resident set size now (VmRSS).
    pub current: u64,
    /// Highest resident set size so far (VmHWM).
    pub peak: u64,
}

/// Reads this process's resident memory; zeros where `/proc` is not available.
pub fn rss() -> Rss {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_status(&status))
        .unwrap_or_default()
}

fn parse_status(status: &str) -> Rss {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    Rss {
        current: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU time (user + system) this process has used; zero where `/proc` is not
/// available. Linux reports it in clock ticks of 1/100 s.
pub fn cpu_time() -> std::time::Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The command name may hold spaces; fields are counted after its ')'.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(std::time::Duration::from_millis((utime + stime) * 10))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_parsed_in_kib() {
        let status = "Name:\ttenure\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse_status(status),
            Rss {
                current: 1024 * 1024,
                peak: 2048 * 1024
            }
        );
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(rss().current > 0);
    }
}
