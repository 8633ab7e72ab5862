//! A sliding replay window over explicit nonces: each nonce is accepted once, and
//! nonces far behind the highest seen are refused.

/// Nonces tracked behind the highest.
pub const WINDOW: u64 = 1024;

/// The nonces seen in one session.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    seen: [u64; (WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Whether `nonce` is new; records it if so.
    pub fn accept(&mut self, nonce: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(nonce);
            self.mark(0);
            return true;
        };
        if nonce > highest {
            let shift = nonce - highest;
            self.shift(shift);
            self.highest = Some(nonce);
            self.mark(0);
            return true;
        }
        let behind = highest - nonce;
        if behind >= WINDOW || self.is_marked(behind) {
            return false;
        }
        self.mark(behind);
        true
    }

    fn mark(&mut self, behind: u64) {
        if let Some(word) = self.seen.get_mut((behind / 64) as usize) {
            *word |= 1 << (behind % 64);
        }
    }

    fn is_marked(&self, behind: u64) -> bool {
        self.seen
            .get((behind / 64) as usize)
            .is_some_and(|word| word & (1 << (behind % 64)) != 0)
    }

    /// Moves the window forward by `by` positions.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = Default::default();
            return;
        }
        let old = self.seen;
        self.seen = Default::default();
        for behind in 0..WINDOW - by {
            let word = old.get((behind / 64) as usize).copied().unwrap_or(0);
            if word & (1 << (behind % 64)) != 0 {
                self.mark(behind + by);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nonce_once_and_none_from_far_behind() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(w.accept(2000));
        assert!(!w.accept(3)); // now far behind
        assert!(w.accept(1999));
        assert!(!w.accept(1999));
        assert!(w.accept(2000 - WINDOW + 1));
        assert!(!w.accept(2000 - WINDOW));
    }
}
