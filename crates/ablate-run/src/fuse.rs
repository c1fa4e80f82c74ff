//! How many of a fused group's ready members run together (issue 23): a small pure policy,
//! kept out of the scheduler's loop.

/// The size of the group to dispatch now, out of `ready` members of one fused group that are
/// ready (≥ 1), for a stage that allows `max` members per group (≥ 1), when `slots` instances
/// of this size could start now (counting this one).
///
/// The rule: `ready` members are split into `k = max(⌈ready / max⌉, min(slots, ready))` groups
/// of near-equal size, so that no group passes its cap and every free slot gets work (on two
/// cores, 32 members run as two groups of 16, not one of 32 beside an idle core); the first
/// group, `⌈ready / k⌉` members, goes now. The rest are split again by the same rule when
/// they are dispatched, which, while each group takes one of the slots counted here, gives the
/// same sizes (10 members on 4 slots: 3, 3, 2, 2).
pub(crate) fn take(ready: usize, max: usize, slots: usize) -> usize {
    if ready == 0 {
        return 0;
    }
    let k = ready.div_ceil(max.max(1)).max(slots.min(ready)).max(1);
    ready.div_ceil(k)
}

#[cfg(test)]
mod tests {
    use super::take;

    /// The sizes of the groups `ready` members make when each group takes a slot of `slots`.
    fn split(mut ready: usize, max: usize, mut slots: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        while ready > 0 {
            let n = take(ready, max, slots.max(1));
            sizes.push(n);
            ready -= n;
            slots = slots.saturating_sub(1);
        }
        sizes
    }

    #[test]
    fn ready_members_fill_the_free_slots_in_near_equal_groups_within_the_cap() {
        // Every free core gets a group.
        assert_eq!(split(32, usize::MAX, 2), [16, 16]);
        assert_eq!(split(10, usize::MAX, 4), [3, 3, 2, 2]);
        // Fewer members than slots: each runs alone (a group of one is the ordinary path).
        assert_eq!(split(3, usize::MAX, 8), [1, 1, 1]);
        // The cap: more groups than slots; the later ones wait for a slot.
        assert_eq!(split(100, 10, 2), [10; 10]);
        assert_eq!(split(33, 16, 1), [11, 11, 11]);
        // One slot and no cap: one group.
        assert_eq!(split(15, usize::MAX, 1), [15]);
        assert_eq!(take(1, usize::MAX, 4), 1);
        assert_eq!(take(0, 4, 4), 0);
    }
}
