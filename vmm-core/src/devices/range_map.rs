//! Address ranges → devices: the lookup both buses share (ports and MMIO).
//!
//! Built once at VM setup, then only read. Ranges never overlap, are never
//! empty and never wrap; a lookup succeeds only when the whole access
//! (`addr .. addr + size`) lies inside one range.

/// Non-overlapping `[base, base + len)` ranges, each owned by a `T`.
#[derive(Debug)]
pub struct RangeMap<T> {
    entries: Vec<(u64, u64, T)>,
}

impl<T> Default for RangeMap<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> RangeMap<T> {
    /// Add `[base, base + len)` for `value`; false (and nothing added) if the
    /// range is empty, wraps, ends past `limit` or overlaps another.
    pub fn insert(&mut self, base: u64, len: u64, limit: u64, value: T) -> bool {
        let Some(end) = base.checked_add(len) else {
            return false;
        };
        let overlaps = self
            .entries
            .iter()
            .any(|(b, l, _)| base < b + l && *b < end);
        if len == 0 || end > limit || overlaps {
            return false;
        }
        self.entries.push((base, len, value));
        true
    }

    /// The owner of the access `[addr, addr + size)` (`size` 0 counts as 1)
    /// and the access's offset into its range.
    pub fn find(&self, addr: u64, size: usize) -> Option<(&T, u64)> {
        self.entries.iter().find_map(|(base, len, v)| {
            let off = addr.checked_sub(*base)?;
            let end = off.checked_add(size.max(1) as u64)?;
            (end <= *len).then_some((v, off))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_access_inside_one_range() {
        let mut m = RangeMap::default();
        assert!(m.insert(0x10, 8, u64::MAX, 'a'));
        assert!(m.insert(0x18, 8, u64::MAX, 'b'));
        assert!(!m.insert(0x14, 8, u64::MAX, 'c'), "overlap");
        assert!(!m.insert(0x40, 0, u64::MAX, 'c'), "empty");
        assert!(!m.insert(u64::MAX - 2, 8, u64::MAX, 'c'), "wraps");
        assert!(!m.insert(0xfffc, 8, 0x1_0000, 'c'), "past the limit");
        assert_eq!(m.find(0x12, 1), Some((&'a', 2)));
        assert_eq!(m.find(0x17, 1), Some((&'a', 7)));
        assert_eq!(m.find(0x17, 2), None, "straddles two ranges");
        assert_eq!(m.find(0x18, 0), Some((&'b', 0)));
        assert_eq!(m.find(0x0f, 1), None);
        assert_eq!(m.find(u64::MAX, 4), None);
    }
}
